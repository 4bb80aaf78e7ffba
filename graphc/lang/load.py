"""Reading a spec: TOML text -> templates merged -> pydantic validation -> hierarchy
tables checked against each other -> repeats expanded -> Spec.

Also turns every TOML and pydantic error into a :class:`SpecError` problem that
names the file, line, node and field, says what was expected and what was found,
and gives a hint (the closest valid name, the field's description, ...).
"""

from __future__ import annotations

import functools
import os
import re
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, TypeAdapter, ValidationError

from graphc.errors import Problem, SpecError, closest, did_you_mean
from graphc.lang.builtin import builtin_specs, resolve_spec_path, specs_dir
from graphc.lang.hierarchy import hierarchy_problems
from graphc.lang.hints import hint_for
from graphc.lang.spec import NAME_PATTERN, NODE_CLASSES, NodeSpec, Spec


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
            first = line.lstrip()[:1]
            if first in ("", "#"):  # most lines of a long spec are keys: skip the rest quickly
                continue
            header = self._header.match(line) if first == "[" else None
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


MAX_NESTING = 32  # arrays and tables inside each other; a spec needs 5 ([data.hierarchy.coarse] lists)


def _nesting(value: Any) -> int:
    """How deeply arrays and tables nest in ``value`` (a plain value is 0), without recursion."""
    deepest, stack = 0, [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack and deepest <= MAX_NESTING:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return deepest


def _too_deep(text: str, path: Path | None) -> Problem:
    """The problem, on the first line where brackets open past the limit (found by counting
    them, strings and comments included: a hint, not a parse)."""
    opened, found = 0, None
    for lineno, line in enumerate(text.splitlines(), start=1):
        for char in line:
            opened += (char in "[{") - (char in "]}")
            if opened > MAX_NESTING:
                found = lineno
                break
        if found:
            break
    return Problem(
        f"the TOML is nested too deeply: arrays or tables inside each other more than {MAX_NESTING} levels "
        "down (a spec needs at most 5).",
        file=path,
        line=found,
        hint="look for runaway brackets; graphc reads nothing this deep.",
    )


@functools.lru_cache(maxsize=4)
def source_map(text: str) -> SourceMap:
    """The :class:`SourceMap` of ``text``, made once: reading a spec and building its graph both
    need it, and on a spec of 20,000 nodes each map takes a second."""
    return SourceMap(text)


def _merge_templates(raw: dict, path: Path | None, where: SourceMap) -> dict:
    """Replace each node's ``use = "NAME"`` by the template's fields under the node's own."""
    templates = raw.get("templates", {})
    nodes = raw.get("nodes")
    if not isinstance(templates, dict) or not isinstance(nodes, list):
        return raw
    for name, template in templates.items():
        # `name`: every node that used it would get the same name, a duplicate waiting to happen.
        # `use`: the node's own `use` would replace it when merged; say so instead of dropping it.
        refused = (
            {
                "name": (
                    f"template '{name}' sets `name`, but a name belongs to one node, not to a template.",
                    "remove `name` from the template and write it on each node that uses it.",
                ),
                "use": (
                    f"template '{name}' uses template {template.get('use')!r}, but templates cannot be chained.",
                    f"copy the fields you need into [templates.{name}].",
                ),
            }
            if isinstance(template, dict)
            else {}
        )
        for key, (message, hint) in refused.items():
            if key in template:
                raise SpecError(
                    Problem(
                        message,
                        file=path,
                        line=where.line("templates", name, key),
                        field=f"templates.{name}.{key}",
                        hint=hint,
                    )
                )
    _check_templates(templates, path, where)
    merged = []
    for index, node in enumerate(nodes):
        if isinstance(node, dict) and "use" in node:
            template = templates.get(node["use"]) if isinstance(node["use"], str) else None
            if not isinstance(template, dict):
                defined = node["use"] in templates if isinstance(node["use"], str) else False
                raise SpecError(
                    Problem(
                        f"uses template {node['use']!r}, which is " + ("not a table." if defined else "not defined."),
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


def _renamed(node, names: dict[str, str], **update):
    """A copy of ``node`` with its references renamed by ``names`` (and ``update`` applied)."""
    field = node.reference_field()
    if field is not None:
        renamed = [names.get(name, name) for name in node.reads]
        update.setdefault(field, renamed[0] if isinstance(getattr(node, field), str) else renamed)
    return node.model_copy(update=update) if update else node


def _references(node) -> list[str]:
    return list(node.reads)


def _residual_unit(total, by_name: dict, readers: dict[str, list[str]]) -> tuple[str, list[str]] | str:
    """The shortcut input X of a repeated sum and the names of the nodes between X and the sum
    (its unit, which must be read from X alone and nowhere else); or why there is none."""

    def reach(start: str, step) -> set[str]:  # iterative: a spec may be thousands of nodes deep
        seen, todo = set(), [start]
        while todo:
            for name in step(todo.pop()):
                if name in by_name and name not in seen:
                    seen.add(name)
                    todo.append(name)
        return seen

    def above(name: str) -> set[str]:
        return reach(name, lambda n: _references(by_name[n]))

    inputs = list(dict.fromkeys(total.inputs))
    upstream = {name: above(name) for name in inputs}
    shortcut = next((x for x in inputs if all(x == other or x in upstream[other] for other in inputs)), None)
    if shortcut is None:
        return (
            "a repeated sum needs one input that all its others are computed from (the shortcut X, as in "
            f'inputs = ["X", "branch"] with branch reading X); none of {inputs} is'
        )
    below = reach(shortcut, lambda n: readers.get(n, []))
    unit = [n for n in by_name if n in below and n in above(total.name) and n != shortcut]
    for name in unit:
        outside = [r for r in _references(by_name[name]) if r not in unit and r != shortcut and r in by_name]
        if outside:
            return f"'{name}', inside the residual unit from '{shortcut}', also reads '{outside[0]}' from outside it"
        escaping = [r for r in readers.get(name, []) if r not in unit and r != total.name]
        if escaping:
            return f"'{escaping[0]}' reads '{name}', which is inside the residual unit and is copied; read '{total.name}' instead"
        if getattr(by_name[name], "repeat", 1) > 1:
            return f"'{name}' inside the repeated residual unit has its own repeat; write repeat on the sum or on its blocks, not both"
    return shortcut, unit


def _expand_repeats(spec: Spec, path: Path | None, where: SourceMap) -> Spec:
    """Expand ``repeat``: a block with ``repeat = N`` becomes the chain NAME_1 -> ... -> NAME_N;
    a sum with ``repeat = N`` repeats the residual unit it closes N times.

    NAME_1 (or the first unit) reads what the node read, each copy reads the one before, and
    every node that reads NAME reads NAME_N instead. ``Spec.origins`` keeps, for each node,
    the table it came from, so later messages about NAME_3 point at NAME's line.
    """
    if all(getattr(node, "repeat", 1) == 1 for node in spec.nodes):
        return spec
    tables = {node.name: i for i, node in enumerate(spec.nodes)}
    by_name = {node.name: node for node in spec.nodes}
    readers: dict[str, list[str]] = {}
    for node in spec.nodes:
        for ref in _references(node):
            readers.setdefault(ref, []).append(node.name)

    def fail(index: int, message: str, hint: str) -> None:
        raise SpecError(
            Problem(
                message,
                file=path,
                line=where.line("nodes", index, "repeat"),
                node=spec.nodes[index].name,
                field="repeat",
                hint=hint,
            )
        )

    def check_free(index: int, names: list[str], count: int) -> None:
        clash = next((name for name in names if name in tables), None)
        if clash is not None:
            fail(
                index,
                f"repeat = {count} names the copies {names[0]} .. {names[-1]}, but '{clash}' is also "
                f"the name of node #{tables[clash] + 1}.",
                f"rename '{spec.nodes[index].name}' or '{clash}'.",
            )

    last: dict[str, str] = {}  # repeated name -> its last copy
    copies: dict[int, list[tuple[int, Any]]] = {}  # table index -> the (origin, node) pairs replacing it
    dropped: set[str] = set()  # unit members, emitted with their sum
    for index, node in enumerate(spec.nodes):
        count = getattr(node, "repeat", 1)
        if count == 1 or node.repeats != "unit" or any(ref not in by_name for ref in node.reads):
            continue  # (a reference to no node is build's to report, by name)
        found = _residual_unit(node, by_name, readers)
        if isinstance(found, str):
            fail(
                index,
                f"repeat = {count} cannot repeat this sum's residual unit: {found}.",
                "a repeatable unit is a branch reading X and a sum of X and the branch; see docs/spec-language.md, "
                "'Modern topologies'.",
            )
        shortcut, unit = found
        members = [name for name in by_name if name in unit] + [node.name]
        check_free(index, [f"{m}_{k}" for m in members for k in range(1, count + 1)], count)
        pairs, entry = [], shortcut
        for k in range(1, count + 1):
            names = {m: f"{m}_{k}" for m in members} | {shortcut: entry}
            pairs += [(tables[m], _renamed(by_name[m], names, name=names[m], repeat=1)) for m in members]
            entry = names[node.name]
        copies[index] = pairs
        dropped.update(unit)
        last[node.name] = entry
    for index, node in enumerate(spec.nodes):
        count = getattr(node, "repeat", 1)
        if count == 1 or node.repeats != "chain":
            continue
        names = [f"{node.name}_{k}" for k in range(1, count + 1)]
        check_free(index, names, count)
        (source,) = node.reads  # a chain's kinds read one node: the first copy reads it, each next the one before
        copies[index], previous = [], source
        for name in names:
            copies[index].append((index, _renamed(node, {source: previous}, name=name, repeat=1)))
            previous = name
        last[node.name] = names[-1]

    nodes, origins = [], []
    for index, node in enumerate(spec.nodes):
        if node.name in dropped:
            continue
        for origin, copy in copies.get(index, [(index, node)]):
            # Every reference to a repeated name, from anywhere, means its last copy. Copies
            # read each other by their numbered names, which no original name equals (checked).
            nodes.append(_renamed(copy, last))
            origins.append(origin)
    return spec.model_copy(update={"nodes": nodes, "origins": tuple(origins)})


def _check_templates(templates: dict, path: Path | None, where: SourceMap) -> None:
    """Validate every template on its own, as a partial node of its kind (its missing fields
    are the nodes' to give), so that a typo in a template no node uses yet is an error now,
    not a surprise when a node first uses it. A template without `kind` may serve several
    kinds: only its field names are checked."""
    problems = []
    any_kind = sorted({field for model in NODE_CLASSES.values() for field in model.model_fields} - {"name"})
    for name, template in templates.items():
        if not isinstance(template, dict):
            continue  # reported where a node uses it
        if "kind" not in template:
            problems += [
                Problem(
                    f"unknown field '{key}' (no node kind has it).",
                    file=path,
                    line=where.line("templates", name, key),
                    field=f"templates.{name}.{key}",
                    hint=hint_for(key) or did_you_mean(key, any_kind),
                )
                for key in template
                if key not in any_kind
            ]
            continue
        candidate = {**template, "name": "template"}  # a valid name: templates have none of their own
        try:
            _NODE.validate_python(candidate)
        except ValidationError as exc:
            for error in _merge_union_errors([{**e, "loc": ("nodes", 0, *e["loc"])} for e in exc.errors()]):
                if error["type"] == "missing":
                    continue
                problem = _problem_from_pydantic(error, {"nodes": [candidate]}, path, where)
                key = (problem.field or "kind").split(".")[0].split("[")[0]
                problems.append(
                    replace(
                        problem,
                        node=None,
                        field=f"templates.{name}.{problem.field or 'kind'}",
                        line=where.line("templates", name, key),
                    )
                )
    if problems:
        raise SpecError(problems)


_NODE = TypeAdapter(NodeSpec)


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
        node_name = (
            str(raw_node.get("name", f"#{index + 1} (unnamed)")) if isinstance(raw_node, dict) else f"#{index + 1}"
        )
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
        valid = [v for v in valid if v not in ("source", "text", "origins")]
        message = f"unknown field '{bad}'."
        hint = hint_for(bad, section=str(loc[0]) if loc else None) or did_you_mean(bad, valid)
    elif kind == "union_tag_invalid":
        tag = error.get("ctx", {}).get("tag")
        expected = error.get("ctx", {}).get("expected_tags", "")
        if not rest:  # the node's kind itself
            field = "kind"
            line = where.line(*line_path, "kind")
        what = "node kind" if field == "kind" else field
        message = f"unknown {what} {tag!r}; expected one of {expected}."
        choices = [t.strip().strip("'") for t in str(expected).split(",")]
        hint = hint_for(tag, field) or did_you_mean(str(tag), choices)
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
            name = next((str(p) for p in reversed(rest) if not isinstance(p, int)), None)
            hint = hint_for(found, name) or did_you_mean(str(found), choices)
        if hint is None and rest:
            owner = _owner_model(model, [p for p in rest[:-1] if not isinstance(p, int)], table)
            name = next((str(p) for p in reversed(rest) if not isinstance(p, int)), None)
            info = owner.model_fields.get(name) if owner is not None and name else None
            if info is not None and info.description:
                hint = f"'{name}' is: {info.description}"
    reads_one = model is not None and model is not Spec and model.reference_field() == "input"
    if reads_one and (rest == ["inputs"] or (rest == ["input"] and isinstance(found, list))):
        # inputs = [...] on a kind that reads one node, or input = [...]: say that reading several
        # needs a concat (not "did you mean 'input'?", which then fails as "a valid string")
        names = table.get(rest[0]) if isinstance(table, dict) else None
        message, hint = _several_inputs(kind_tag or "node", rest[0], names)
    return Problem(message, file=path, line=line, node=node_name, field=field, hint=hint)


def _input_missing_beside_inputs(error: dict, raw: dict) -> bool:
    """A node that reads one node but was given `inputs`: its missing `input` is the same mistake,
    which the `inputs` problem explains (one message, not two)."""
    loc = error["loc"]
    if error["type"] != "missing" or len(loc) < 3 or loc[0] != "nodes" or loc[-1] != "input":
        return False
    nodes = raw.get("nodes")
    node = nodes[loc[1]] if isinstance(nodes, list) and isinstance(loc[1], int) and loc[1] < len(nodes) else None
    return isinstance(node, dict) and "inputs" in node


def _several_inputs(kind: str, field: str, names: Any) -> tuple[str, str]:
    """Message and hint for a list of nodes given to a kind that reads one (``field``: inputs or input)."""
    names = [name for name in names if isinstance(name, str)] if isinstance(names, list) else []
    what = "unknown field 'inputs'" if field == "inputs" else f"'input' names one node, but found a list {names}"
    if len(names) == 1:
        return f'{what}: this {kind} reads one node, written input = "NAME".', f'write input = "{names[0]}".'
    listed = ", ".join(f'"{name}"' for name in names or ["a", "b"])
    return (
        f'{what}: this {kind} reads one node (input = "NAME"); reading several needs a concat node that joins '
        "them first.",
        f'add [[nodes]] name = "joined", kind = "concat", inputs = [{listed}] (mode = "features" flattens and joins, '
        '"channels" stacks feature maps, "sum" adds maps of one shape), then write input = "joined" here.',
    )


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
    return not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part) or part in (
        "int",
        "str",
        "float",
        "bool",
        "list",
        "tuple",
        "dict",
    )


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
        error
        for loc, error in merged.items()
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
        candidates = [
            c
            for c in (annotation, *getattr(annotation, "__args__", ()))
            if isinstance(c, type) and issubclass(c, BaseModel)
        ]
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
    except RecursionError:  # tomllib recurses once per level; its limit comes long before ours
        raw = None
    if raw is None or _nesting(raw) > MAX_NESTING:
        raise SpecError(_too_deep(text, path))
    where = source_map(text)
    raw = _merge_templates(raw, path, where)
    named = "name" in raw
    raw.setdefault("name", name or (path.stem if path is not None else "spec"))
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        errors = [e for e in _merge_union_errors(exc.errors()) if not _input_missing_beside_inputs(e, raw)]
        problems = [_problem_from_pydantic(e, raw, path, where) for e in errors]
        if not named:  # the name came from the file: say so, or the user looks for a line that is not there
            hint = 'the spec has no `name`, so it is named after its file; add name = "..." or rename the file.'
            problems = [replace(p, hint=hint) if p.field == "name" and p.node is None else p for p in problems]
        raise SpecError(problems) from None
    # The [data.hierarchy] tables against each other (no data needed): train and check both read
    # specs through here, so they reject the same tables with the same words.
    problems = [
        replace(p, file=path, line=where.line("data", "hierarchy", p.field.rsplit(".", 1)[-1]))
        for p in hierarchy_problems(spec.data.label, spec.data.hierarchy)
    ]
    if problems:
        raise SpecError(problems)
    spec = _expand_repeats(spec, path, where)
    return spec.model_copy(update={"source": path, "text": text})


def locate(error: SpecError, spec: Spec) -> SpecError:
    """``error`` with the spec's file, and the line of each problem's field, filled in where a problem
    has none: for the checks that read the data set (``graphc check --data``, ``graphc train``),
    which name a field of [data] (``resize``, ``hierarchy.coarse``, ``normalize.mean``) or the input
    node's ``shape`` without knowing the file."""
    where = source_map(spec.text)
    problems = []
    for problem in error.problems:
        if problem.file is not None or spec.source is None:
            problems.append(problem)
            continue
        line = problem.line
        if line is None and problem.field:
            parts = problem.field.removeprefix("data.").split(".")
            inputs = [i for i, node in enumerate(spec.nodes) if node.kind == "input"]
            if parts == ["shape"] and inputs:
                line = where.line("nodes", spec.origin(inputs[0]), "shape")
            else:
                line = where.line("data", *parts)  # the field's key, else the nearest table that holds it
        problems.append(replace(problem, file=spec.source, line=line))
    return SpecError(problems)


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
                hint=f"did you mean the built-in spec '{near}'?"
                if near
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


def resolve_data_root(spec: Spec) -> tuple[Spec, str | None]:
    """``spec`` with a relative ``[data] root`` made absolute, and a one-line note or None.

    A relative root is read from the folder of the spec file that names it (a spec and its data
    move together, and the run does not depend on where it was started). For compatibility, a root
    that exists from the working directory but not from the spec's folder is still read from the
    working directory, with a note saying so. Built-in specs (graphc's package data) and specs
    without a file keep the root as written: theirs are relative to the working directory
    (``data/cifar10``).
    """
    root, source = spec.data.root, spec.source
    if root is None or source is None or Path(root).expanduser().is_absolute() or _is_builtin(Path(source)):
        return spec, None
    relative = Path(root).expanduser()
    beside = Path(os.path.abspath(Path(source).parent / relative))
    note = None
    resolved = beside
    if not beside.exists() and relative.exists():
        resolved = Path(os.path.abspath(relative))
        note = (
            f"note: [data] root = {root!r} in {source} is read from the working directory ({resolved}), as graphc "
            f"0.3 read every root; a relative root is now read from the spec's folder, where {beside} does not exist. "
            "Write an absolute root (or pass --data-dir) to silence this."
        )
    data = spec.data.model_copy(update={"root": str(resolved)})
    return spec.model_copy(update={"data": data}), note


def _is_builtin(path: Path) -> bool:
    """A spec file of graphc's own (``graphc specs``): under the built-in specs' folder."""
    try:
        return path.resolve().is_relative_to(specs_dir().resolve())
    except OSError:
        return False
