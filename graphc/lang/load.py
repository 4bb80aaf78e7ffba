"""Reading a spec: TOML text -> templates merged -> pydantic validation -> Spec.

Also turns every TOML and pydantic error into a :class:`SpecError` problem that
names the file, line, node and field, says what was expected and what was found,
and gives a hint (the closest valid name, the field's description, ...).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from graphc.errors import Problem, SpecError, closest, did_you_mean
from graphc.lang.builtin import builtin_specs, resolve_spec_path
from graphc.lang.spec import NAME_PATTERN, NODE_CLASSES, Spec


class SourceMap:
    """Line numbers of tables and keys in a spec's TOML text, for error messages.

    Records ``(section, key) -> line`` where section is e.g. ``('nodes', 3)``,
    ``('data',)``, ``('data', 'augment')`` or ``('templates', 'dense')``.
    """

    _header = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _key = re.compile(r"^\s*([A-Za-z0-9_\"'.-]+)\s*=")

    def __init__(self, text: str):
        self.keys: dict[tuple, int] = {}
        self.sections: dict[tuple, int] = {}
        counts: dict[str, int] = {}
        section: tuple = ()
        for lineno, line in enumerate(text.splitlines(), start=1):
            header = self._header.match(line)
            if header:
                parts = tuple(p.strip().strip("\"'") for p in header.group(2).split("."))
                if header.group(1) == "[[":
                    index = counts.get(parts[0], -1) + 1
                    counts[parts[0]] = index
                    section = (parts[0], index) + parts[1:]
                else:
                    section = parts
                self.sections.setdefault(section, lineno)
                continue
            key = self._key.match(line)
            if key:
                parts = tuple(p.strip("\"'") for p in key.group(1).split("."))
                self.keys.setdefault(section + parts[:-1] + (parts[-1],), lineno)

    def line(self, *path) -> int | None:
        """Line of the deepest known prefix of ``path`` (a key, else its table)."""
        for end in range(len(path), 0, -1):
            prefix = tuple(path[:end])
            if prefix in self.keys:
                return self.keys[prefix]
            if prefix in self.sections:
                return self.sections[prefix]
        return None


def _merge_templates(raw: dict, path: Path | None, where: SourceMap) -> dict:
    """Replace each node's ``use = "NAME"`` by the template's fields under the node's own."""
    templates = raw.get("templates", {})
    nodes = raw.get("nodes")
    if not isinstance(templates, dict) or not isinstance(nodes, list):
        return raw
    for name, template in templates.items():
        if isinstance(template, dict) and "name" in template:
            # Every node that used it would get the same name: a duplicate waiting to happen.
            raise SpecError(
                Problem(
                    f"template '{name}' sets `name`, but a name belongs to one node, not to a template.",
                    file=path,
                    line=where.line("templates", name, "name"),
                    field=f"templates.{name}.name",
                    hint="remove `name` from the template and write it on each node that uses it.",
                )
            )
        if isinstance(template, dict) and "use" in template:
            # The node's own `use` would replace it when merged: say so instead of dropping it.
            raise SpecError(
                Problem(
                    f"template '{name}' uses template {template['use']!r}, but templates cannot be chained.",
                    file=path,
                    line=where.line("templates", name, "use"),
                    field=f"templates.{name}.use",
                    hint=f"copy the fields you need into [templates.{name}].",
                )
            )
    merged = []
    for index, node in enumerate(nodes):
        if isinstance(node, dict) and "use" in node:
            template = templates.get(node["use"]) if isinstance(node["use"], str) else None
            if not isinstance(template, dict):
                defined = node["use"] in templates if isinstance(node["use"], str) else False
                raise SpecError(
                    Problem(
                        f"uses template {node['use']!r}, which is "
                        + ("not a table." if defined else "not defined."),
                        file=path,
                        line=where.line("nodes", index, "use"),
                        node=str(node.get("name", f"#{index + 1}")),
                        field="use",
                        hint=f"write it as a [templates.{node['use']}] table of node fields."
                        if defined
                        else did_you_mean(str(node["use"]), templates) or "define it as [templates.NAME].",
                    )
                )
            node = {**template, **node}
        merged.append(node)
    return {**raw, "nodes": merged}


def _problem_from_pydantic(error: dict, raw: dict, path: Path | None, where: SourceMap) -> Problem:
    """Turn one pydantic error into a Problem that names node, field, expectation and hint."""
    loc = list(error["loc"])
    kind = error["type"]
    node_name = None
    model: type[BaseModel] | None = Spec
    table: Any = raw  # the raw TOML table that ``model`` validates
    line_path: list = []
    if loc and loc[0] == "nodes" and len(loc) > 1 and isinstance(loc[1], int):
        index = loc[1]
        raw_node = raw["nodes"][index] if index < len(raw.get("nodes", [])) else {}
        node_name = str(raw_node.get("name", f"#{index + 1} (unnamed)")) if isinstance(raw_node, dict) else f"#{index + 1}"
        line_path = ["nodes", index]
        rest = loc[2:]
        kind_tag = raw_node.get("kind") if isinstance(raw_node, dict) else None
        kind_tag = kind_tag if isinstance(kind_tag, str) else None  # kind = ["input"] is an error, not a key
        if rest and rest[0] == kind_tag:
            rest = rest[1:]
        model, table = NODE_CLASSES.get(kind_tag), raw_node
        # A field a template supplied is located in the template, not the node.
        template = raw_node.get("use") if isinstance(raw_node, dict) else None
        if template and rest and where.line("nodes", index, rest[0]) == where.line("nodes", index):
            line_path = ["templates", template]
    else:
        rest = loc
    field = ".".join(str(p) for p in rest if not isinstance(p, int)) or None
    if rest and isinstance(rest[-1], int) and field:
        field += f"[{rest[-1]}]"
    line = where.line(*line_path, *[p for p in rest if not isinstance(p, int)])
    found = error.get("input")
    hint = None

    if kind == "extra_forbidden":
        bad = str(rest[-1]) if rest else "?"
        owner = _owner_model(model, rest[:-1], table)
        valid = list(owner.model_fields) if owner is not None else []
        valid = [v for v in valid if v not in ("source", "text")]
        message = f"unknown field '{bad}'."
        hint = did_you_mean(bad, valid)
    elif kind == "union_tag_invalid":
        tag = error.get("ctx", {}).get("tag")
        expected = error.get("ctx", {}).get("expected_tags", "")
        if not rest:  # the node's kind itself
            field = "kind"
            line = where.line(*line_path, "kind")
        what = "node kind" if field == "kind" else field
        message = f"unknown {what} {tag!r}; expected one of {expected}."
        choices = [t.strip().strip("'") for t in str(expected).split(",")]
        hint = did_you_mean(str(tag), choices)
    elif kind == "union_tag_not_found":
        tag_name = error.get("ctx", {}).get("discriminator", "kind").strip("'")
        field = ".".join([*(str(p) for p in rest), tag_name]) if rest else tag_name
        message = f"missing required field '{tag_name}'."
        if tag_name == "kind":
            hint = "set kind to one of " + ", ".join(f"'{k}'" for k in NODE_CLASSES) + "."
    elif kind == "missing" and len(rest) > 1 and isinstance(rest[-1], int):
        # A tuple given too few values, e.g. shape = [3, 32]: name the tuple, not "field '2'".
        index, rest = rest[-1], rest[:-1]
        field = ".".join(str(p) for p in rest if not isinstance(p, int))
        message = f"value {index + 1} is missing; found {found!r}."
        owner = _owner_model(model, rest[:-1], table)
        info = owner.model_fields.get(str(rest[-1])) if owner is not None else None
        if info is not None and info.description:
            hint = f"'{rest[-1]}' is: {info.description}"
    elif kind == "missing":
        message = f"missing required field '{rest[-1] if rest else '?'}'."
        owner = _owner_model(model, rest[:-1], table)
        info = owner.model_fields.get(str(rest[-1])) if owner is not None and rest else None
        if info is not None and info.description:
            hint = f"'{rest[-1]}' is: {info.description}"
    else:
        message = error["msg"].removeprefix("Value error, ").rstrip(".")
        # A model-level check receives the whole table as input; repeating it helps nobody.
        message += "." if isinstance(found, dict) else f"; found {found!r}."
        if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            hint = "see `graphc schema` for the allowed range."
        elif kind == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NAME_PATTERN:
            hint = "names are Python identifiers: letters, digits and _, not starting with a digit."
        elif kind == "string_pattern_mismatch":  # the spec's own name
            hint = "spec names use letters, digits, '_', '.' and '-' only."
        elif kind == "literal_error":
            choices = re.findall(r"'([^']*)'", error["msg"])
            hint = did_you_mean(str(found), choices)
        if hint is None and rest:
            owner = _owner_model(model, [p for p in rest[:-1] if not isinstance(p, int)], table)
            name = next((str(p) for p in reversed(rest) if not isinstance(p, int)), None)
            info = owner.model_fields.get(name) if owner is not None and name else None
            if info is not None and info.description:
                hint = f"'{name}' is: {info.description}"
    return Problem(message, file=path, line=line, node=node_name, field=field, hint=hint)


# Tags of discriminated unions and names of union members that pydantic puts in an
# error's location (e.g. ('nodes', 2, 'conv_block', 'channels') or ('classes', 'constrained-int')).
_UNION_TAGS = frozenset(NODE_CLASSES) | {"keras_affine", "flip_crop", "none", "adam", "adamw", "sgd"}


def _is_union_member(part: Any, previous: Any) -> bool:
    if not isinstance(part, str):
        return False
    if part in _UNION_TAGS:
        # A tag only right after the union field (a node's kind tag stays: it is stripped
        # later); elsewhere it is a field, e.g. a head's 'input'.
        return previous in ("augment", "optimizer")
    return not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part) or part in ("int", "str", "float", "bool", "list", "tuple", "dict")


def _merge_union_errors(errors: list[dict]) -> list[dict]:
    """One error per location: a value that fits no member of a union (``5 | 'auto'``)
    gets one message listing what each member expected."""
    merged: dict[tuple, dict] = {}
    for error in errors:
        loc = list(error["loc"])
        # Keep the first element (always a Spec field) and node indices; drop member names.
        clean = tuple(p for i, p in enumerate(loc) if i < 2 or not _is_union_member(p, loc[i - 1]))
        if clean in merged:
            first = merged[clean]
            if error["msg"] not in first["msg"]:
                first["msg"] = f"{first['msg']}, or {error['msg'][:1].lower()}{error['msg'][1:]}"
            continue
        merged[clean] = {**error, "loc": clean, "union": clean != tuple(loc)}
    # A list that fits its union member but for one item (padding = ["same", -1]) is
    # reported at that item; "not a string or an integer" about the whole list is noise.
    return [
        error for loc, error in merged.items()
        if not (error["union"] and any(len(other) > len(loc) and other[: len(loc)] == loc for other in merged))
    ]


def _owner_model(model: type[BaseModel] | None, path: list, table: Any = None) -> type[BaseModel] | None:
    """The pydantic model that owns the field at ``path`` below ``model``; ``table`` (the raw
    TOML under ``model``) picks the member of a tagged union, e.g. flip_crop for augment."""
    for part in path:
        if model is None or isinstance(part, int):
            continue
        info = model.model_fields.get(str(part))
        if info is None:
            return None
        table = table.get(str(part)) if isinstance(table, dict) else None
        annotation = info.annotation
        candidates = [c for c in (annotation, *getattr(annotation, "__args__", ())) if isinstance(c, type) and issubclass(c, BaseModel)]
        model = next((c for c in candidates if _is_tagged(c, table)), candidates[0] if candidates else None)
    return model


def _is_tagged(model: type[BaseModel], table: Any) -> bool:
    """Whether ``table`` carries the tag (kind, preset or name) of this member of a tagged union."""
    return isinstance(table, dict) and any(
        field in model.model_fields and get_args(model.model_fields[field].annotation) == (table.get(field),)
        for field in ("kind", "preset", "name")
    )


def parse_spec(text: str, path: Path | None = None, name: str | None = None) -> Spec:
    """Parse and form-validate spec text. ``path`` is only used in messages and as default name."""
    if not text.strip():
        raise SpecError(
            Problem(
                "the file is empty.",
                file=path,
                hint="a spec needs at least an input node and a head; see `graphc schema` or the files in specs/.",
            )
        )
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        position = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        line, column = (int(position.group(1)), int(position.group(2))) if position else (None, None)
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", msg)
        raise SpecError(
            Problem(
                f"TOML syntax error: {msg}.",
                file=path,
                line=line,
                column=column,
                hint="check quotes, brackets and `key = value` pairs on that line.",
            )
        ) from None
    where = SourceMap(text)
    raw = _merge_templates(raw, path, where)
    named = "name" in raw
    raw.setdefault("name", name or (path.stem if path is not None else "spec"))
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        problems = [_problem_from_pydantic(e, raw, path, where) for e in _merge_union_errors(exc.errors())]
        if not named:  # the name came from the file: say so, or the user looks for a line that is not there
            hint = "the spec has no `name`, so it is named after its file; add name = \"...\" or rename the file."
            problems = [replace(p, hint=hint) if p.field == "name" and p.node is None else p for p in problems]
        raise SpecError(problems) from None
    return spec.model_copy(update={"source": path, "text": text})


def load_spec(path: str | Path) -> Spec:
    """Read and form-validate a spec file, or a built-in spec by name (``shared_conv``; see
    ``graphc specs``). Raises :class:`SpecError` on any problem."""
    path = resolve_spec_path(path)
    if not path.exists():
        names = [spec.name for spec in builtin_specs()]
        near = closest(path.stem, names)
        raise SpecError(
            Problem(
                "no such file, and no built-in spec of that name.",
                file=path,
                hint=f"did you mean the built-in spec '{near}'?" if near
                else f"check the path, or name a built-in spec (e.g. {', '.join(names[:3])}; `graphc specs` lists them).",
            )
        )
    if path.is_dir():
        raise SpecError(Problem("is a directory, not a spec file.", file=path, hint="name a .toml file."))
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(Problem(f"cannot be read: {exc}.", file=path, hint="is it a UTF-8 text file?")) from None
    return parse_spec(text, path)
