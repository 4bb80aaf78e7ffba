"""mkdocs hooks of graphc's docs site (mkdocs.yml: ``hooks: [docs/hooks.py]``).

The spec reference is generated here, at build time, from the JSON schema of the pydantic models
(``graphc.json_schema()``, what ``graphc schema`` prints), so it cannot drift from the code: the
page ``spec-reference.md`` holds only its introduction and the marker ``<!-- spec-reference -->``,
which :func:`on_page_markdown` replaces with a section per node kind and per table. New node kinds
appear by themselves: they are read from the discriminated union of ``[[nodes]]`` in the schema.
The schema itself is published next to the page as ``spec-schema.json``.

``tests/test_docs.py`` imports :func:`reference_markdown` to check the page names every kind and field.
"""

from __future__ import annotations

import json
from typing import Any

MARKER = "<!-- spec-reference -->"
PAGE = "spec-reference.md"
SCHEMA_FILE = "spec-schema.json"


# --------------------------------------------------------------------------- mkdocs events


def on_files(files, config):
    """Publish the spec's JSON schema as a file of the site (linked from the reference page)."""
    from mkdocs.structure.files import File

    import graphc

    files.append(File.generated(config, SCHEMA_FILE, content=json.dumps(graphc.json_schema(), indent=2) + "\n"))
    return files


def on_page_markdown(markdown: str, page, config, files):
    """Replace the reference page's marker with the reference generated from the schema."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"docs/{PAGE} lost its marker {MARKER}: the spec reference has nowhere to go")
    import graphc

    return markdown.replace(MARKER, reference_markdown(graphc.json_schema()))


def on_page_content(html: str, page, config, files):
    """Mark the reference page's HTML, for its style (docs/stylesheets/extra.css)."""
    if page.file.src_uri != PAGE:
        return html
    return f'<div class="spec-reference">\n{html}\n</div>'


# --------------------------------------------------------------------------- the reference


def reference_markdown(schema: dict) -> str:
    """Markdown for every table and node kind of the spec format, from its JSON schema."""
    return _Reference(schema).render()


class _Reference:
    def __init__(self, schema: dict):
        self.schema = schema
        self.defs: dict[str, dict] = schema.get("$defs", {})
        self.anchors: dict[str, str] = {}  # $defs name -> the anchor of its section
        self.titles: dict[str, str] = {}  # $defs name -> its TOML path, e.g. `[train.schedule]`
        self.done: set[str] = set()  # $defs rendered (a model two fields share gets one section)
        self.sections: list[str] = []

    # ----------------------------------------------------------------- walking the schema

    def render(self) -> str:
        props = self.schema["properties"]
        nodes = props.get("nodes", {})
        kinds = self._variants(nodes.get("items", {}))
        self._plan_anchors(kinds)

        out = ["## The file", "", _text(self.schema.get("description", ""))]
        out += ["", "Top-level keys of a spec file:", "", self._table(self.schema)]

        # [[nodes]]: the fields every kind has, then one section per kind
        common = self._common_fields([self.defs[ref] for _, ref in kinds])
        out += ["", "## Nodes `[[nodes]]` {#nodes}", "", _text(nodes.get("description", ""))]
        out += [
            "",
            "Every node has a `kind`, which says which of the tables below applies, and these fields:",
            "",
            self._table(self.defs[kinds[0][1]], only=common),
            "",
            "Kinds: " + ", ".join(f"[`{tag}`](#{self.anchors[ref]})" for tag, ref in kinds) + ".",
        ]
        # a kind's own fields first, then those it inherits (trainable, repeat, ...): in the schema a
        # class's inherited fields come before its own, which start with its tag, `kind`
        for tag, ref in kinds:
            keys = list(self.defs[ref]["properties"])
            inherited = set(keys[: keys.index("kind")]) if "kind" in keys else set()
            out += self._section(f'### `kind = "{tag}"`', ref, skip=common | {"kind"}, last=inherited)

        # the tables: [layers], [data], [train] and the tables inside them
        out += ["", "## Tables", ""]
        for key, prop in props.items():
            if key == "nodes":
                continue
            for tag, ref in self._targets(prop):
                out += self._tables(f"[{key}]", tag, ref, level=3)
        return "\n".join(out) + "\n"

    def _tables(self, path: str, tag: tuple[str, str] | None, ref: str, level: int) -> list[str]:
        """The section of the table at TOML path ``path`` (``tag``: the discriminator that selects it),
        then the sections of the tables inside it."""
        if ref in self.done:
            return []
        self.done.add(ref)
        title = f"`{path}`" + (f' with `{tag[0]} = "{tag[1]}"`' if tag else "")
        out = self._section("#" * level + " " + title, ref, skip={tag[0]} if tag else set())
        for key, prop in self.defs[ref].get("properties", {}).items():
            for inner_tag, inner_ref in self._targets(prop):
                out += self._tables(f"{path[:-1]}.{key}]", inner_tag, inner_ref, level + 1)
        return out

    def _section(self, heading: str, ref: str, skip: set[str], last: set[str] = frozenset()) -> list[str]:
        model = self.defs[ref]
        return [
            "",
            f"{heading} {{#{self.anchors[ref]}}}",
            "",
            _text(model.get("description", "")),
            "",
            self._table(model, skip=skip, last=last),
        ]

    def _plan_anchors(self, kinds: list[tuple[str, str]]) -> None:
        for tag, ref in kinds:
            self.anchors[ref], self.titles[ref] = f"kind-{tag}", f"`{tag}`"

        def visit(path: str, tag, ref: str) -> None:
            if ref in self.anchors:
                return
            self.anchors[ref] = path.strip("[]").replace(".", "-") + (f"-{tag[1]}" if tag else "")
            self.titles[ref] = f"`{path}`" + (f" `{tag[1]}`" if tag else "")
            for key, prop in self.defs[ref].get("properties", {}).items():
                for inner_tag, inner_ref in self._targets(prop):
                    visit(f"{path[:-1]}.{key}]", inner_tag, inner_ref)

        for key, prop in self.schema["properties"].items():
            if key != "nodes":
                for tag, ref in self._targets(prop):
                    visit(f"[{key}]", tag, ref)

    # ----------------------------------------------------------------- schema helpers

    @staticmethod
    def _ref_name(ref: str) -> str:
        return ref.rsplit("/", 1)[-1]

    def _variants(self, union: dict) -> list[tuple[str, str]]:
        """``[(tag value, $defs name)]`` of a discriminated union, in the union's order."""
        disc = union.get("discriminator")
        if not disc:
            return []
        by_ref = {self._ref_name(r): tag for tag, r in disc.get("mapping", {}).items()}
        refs = [self._ref_name(o["$ref"]) for o in union.get("oneOf", []) if "$ref" in o]
        return [(by_ref[r], r) for r in refs if r in by_ref]

    def _targets(self, prop: dict) -> list[tuple[tuple[str, str] | None, str]]:
        """The tables a property holds: ``[(discriminator (key, value) or None, $defs name)]``."""
        found: list[tuple[tuple[str, str] | None, str]] = []
        for option in [prop, *prop.get("anyOf", [])]:
            if "$ref" in option:
                found.append((None, self._ref_name(option["$ref"])))
            elif option.get("discriminator"):
                key = option["discriminator"]["propertyName"]
                found += [((key, tag), ref) for tag, ref in self._variants(option)]
        return [(tag, ref) for tag, ref in found if self.defs.get(ref, {}).get("type") == "object"]

    def _common_fields(self, models: list[dict]) -> set[str]:
        names = [set(m.get("properties", {})) for m in models]
        return set.intersection(*names) - {"kind"} if names else set()

    # ----------------------------------------------------------------- tables

    def _table(
        self, model: dict, skip: set[str] = frozenset(), only: set[str] | None = None, last: set[str] = frozenset()
    ) -> str:
        required = set(model.get("required", []))
        rows = ["| field | type | default | description |", "|---|---|---|---|"]
        fields = sorted(model.get("properties", {}).items(), key=lambda item: item[0] in last)  # stable
        for key, prop in fields:
            if key in skip or (only is not None and key not in only):
                continue
            default = "required" if key in required else self._default(prop)
            rows.append(f"| `{key}` | {self._type(prop)} | {default} | {_cell(prop.get('description', ''))} |")
        if len(rows) == 2:
            return "No other fields."
        return "\n".join(rows)

    def _default(self, prop: dict) -> str:
        if "default" not in prop:
            targets = self._targets(prop)
            return "the table's defaults" if targets else "empty"
        value = prop["default"]
        if value is None:
            return "omitted"
        return f"`{_toml(value)}`"

    def _type(self, prop: dict) -> str:
        if "$ref" in prop:
            ref = self._ref_name(prop["$ref"])
            return f"table: [{self.titles[ref]}](#{self.anchors[ref]})" if ref in self.anchors else "table"
        if prop.get("discriminator"):
            key = prop["discriminator"]["propertyName"]
            links = ", ".join(f"[`{tag}`](#{self.anchors.get(ref, '')})" for tag, ref in self._variants(prop))
            return f"table by `{key}`: {links}"
        if "anyOf" in prop:
            options = [o for o in prop["anyOf"] if o.get("type") != "null"]
            return " or ".join(self._type(o) for o in options)
        if "const" in prop:
            return f'`"{prop["const"]}"`'
        if "enum" in prop:
            return " or ".join(f"`{_toml(v)}`" for v in prop["enum"])
        kind = prop.get("type")
        if kind == "array":
            if "prefixItems" in prop:
                return "[" + ", ".join(self._type(p) for p in prop["prefixItems"]) + "]"
            item = self._type(prop.get("items", {}))
            text = "list of " + (f"({item})" if " or " in item else item)
            if prop.get("minItems"):
                text += f" (at least {prop['minItems']})"
            return text
        if kind == "object":
            values = prop.get("additionalProperties")
            if values is None and prop.get("patternProperties"):
                values = next(iter(prop["patternProperties"].values()))
            return f"table of NAME = {self._type(values)}" if isinstance(values, dict) and values else "table"
        names = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}
        return names.get(kind, "any") + _bounds(prop)


def _bounds(prop: dict) -> str:
    parts = []
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in prop:
            parts.append(f"{sign} {_toml(prop[key])}")
    if "maxLength" in prop:
        parts.append(f"at most {prop['maxLength']} characters")
    return f" ({', '.join(parts)})" if parts else ""


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return str(value)


def _text(text: str) -> str:
    """A model's docstring as one paragraph."""
    return " ".join(text.split()).replace("<", "&lt;").replace(">", "&gt;")


def _cell(text: str) -> str:
    """Text for a table cell: one line, no bare pipes, no angle brackets read as HTML (runs/<name>/)."""
    return _text(text).replace("|", "\\|")
