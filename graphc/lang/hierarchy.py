"""Label hierarchies: which field each ``[data.hierarchy.FIELD]`` table maps from, the chains the
tables form, and what can be checked of them without the data.

A table ``[data.hierarchy.PARENT]`` lists, per group (a class of the new label field PARENT),
the classes of a CHILD field that belong to it. CHILD is the folder label (``data.label``),
unless every class the table lists is a group of one other table: then the tables nest, e.g.::

    [data.hierarchy.coarse]   vehicle = ["airplane", "ship"], animal = ["cat", "dog"]     # fine -> coarse
    [data.hierarchy.super]    thing = ["vehicle", "animal"]                                # coarse -> super

Each table is one link (child, parent); links chain (fine -> coarse -> super), and
:func:`hierarchy_paths` lists every link and every chain of links, so metrics can be
computed for the composed mapping fine -> super too. Any number of tables, in any order.

Everything here works on plain dicts and strings (no pydantic, no torch): the spec
checks it when it is read (``graphc check``, ``graphc train``), the image-folder
loader derives its labels from it, and the metric names come from its paths.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from graphc.errors import Problem, closest

Tables = Mapping[str, Mapping[str, Sequence[str]]]  # parent field -> group -> member classes


def table_children(label: str, tables: Tables) -> dict[str, str]:
    """Parent field -> the child field its table maps from (``label`` or another table's field).

    A table nests under another when every class it lists is a group of that one other table;
    when that holds for several tables, the first in the file is taken (:func:`hierarchy_problems`
    reports the ambiguity).
    """
    groups = {field: set(table) for field, table in tables.items()}
    children = {}
    for field, table in tables.items():
        members = {m for listed in table.values() for m in listed}
        under = [other for other in tables if other != field and members and members <= groups[other]]
        children[field] = under[0] if under else label
    return children


def hierarchy_links(label: str, tables: Tables) -> list[tuple[str, str]]:
    """``(child field, parent field)`` per table, in the file's order."""
    children = table_children(label, tables)
    return [(children[field], field) for field in tables]


def hierarchy_paths(links: Iterable[tuple[str, str]]) -> list[tuple[str, ...]]:
    """Every chain of ``links`` from a field up to an ancestor: the links themselves first (in
    their order), then the composed chains by length, e.g. ``[(fine, coarse), (coarse, super),
    (fine, coarse, super)]``. A field's path to an ancestor is unique (each table has one child)."""
    links = list(dict.fromkeys(links))
    up: dict[str, list[str]] = {}
    for child, parent in links:
        up.setdefault(child, []).append(parent)
    paths: list[tuple[str, ...]] = [tuple(link) for link in links]
    frontier = list(paths)
    while frontier:
        longer = []
        for path in frontier:
            for parent in up.get(path[-1], []):
                if parent not in path:  # a cycle is reported by hierarchy_problems, never followed
                    longer.append(path + (parent,))
        paths += longer
        frontier = longer
    return paths


def label_fields(label: str, tables: Tables) -> dict[str, list[str]]:
    """Class names per label field as the tables themselves list them (no data): the folder
    label's classes are every class a table mapping from it lists (each counted once), sorted as
    the folders are; a table's classes are its sorted group names."""
    children = table_children(label, tables)
    fields = {
        label: sorted(
            {
                m
                for field, table in tables.items()
                if children[field] == label
                for listed in table.values()
                for m in listed
            }
        )
    }
    for field, table in tables.items():
        fields[field] = sorted(table)
    return fields


def listed_twice(tables: Tables, where: str = "data.hierarchy") -> list[tuple[str, str, Problem]]:
    """``(field, group, problem)`` for each class a table lists in two of its groups, or twice in
    one group (at its second listing): each class belongs to exactly one group. The problem's
    field is ``WHERE.FIELD``; the caller adds file and line (of ``group``)."""
    found = []
    for field, groups in tables.items():
        group_of: dict[str, str] = {}
        for group, members in groups.items():
            for member in members:
                if member in group_of:
                    other = group_of[member]
                    places = f"in both '{other}' and '{group}'" if other != group else f"twice in '{group}'"
                    found.append(
                        (
                            field,
                            group,
                            Problem(
                                f"class '{member}' is listed {places}; every class belongs to exactly one group.",
                                field=f"{where}.{field}",
                                hint="keep one of them.",
                            ),
                        )
                    )
                group_of.setdefault(member, group)
    return found


def named_after_label(label: str, tables: Tables, where: str = "data.hierarchy") -> list[Problem]:
    """A table named after the folder label: that name is taken by the classes the folders give.
    The problem's field is ``WHERE.FIELD``; the caller adds file and line."""
    return [
        Problem(
            f"'{field}' is the label the class folders give, so it cannot also be a hierarchy field.",
            field=f"{where}.{field}",
            hint="name the hierarchy field differently, e.g. 'coarse'.",
        )
        for field in tables
        if field == label
    ]


def hierarchy_problems(label: str, tables: Tables) -> list[Problem]:
    """What is wrong with the tables, seen from the tables alone (no data): a table named after
    the folder label, tables nesting in a circle or under two tables at once, and a class that
    one table lists but another table mapping from the same field leaves out (or misspells).
    Each problem's field is ``data.hierarchy.FIELD``; the caller adds file and line."""
    problems: list[Problem] = named_after_label(label, tables)
    children = table_children(label, tables)
    groups = {field: set(table) for field, table in tables.items()}
    mixed: set[str] = set()  # tables already reported as mixing two fields' classes
    for field, table in tables.items():
        where = f"data.hierarchy.{field}"
        if field == label:
            continue
        members = {m for listed in table.values() for m in listed}
        under = [other for other in tables if other != field and members and members <= groups[other]]
        # Mostly groups of another table, but not all: a nested table with a misspelt group.
        mostly = [o for o in tables if o != field and o not in under and 2 * len(members & groups[o]) >= len(members)]
        if not under and mostly:
            other = mostly[0]
            strays = sorted(members - groups[other])
            mixed.add(field)
            problems.append(
                Problem(
                    f"lists groups of '{other}' and also {', '.join(repr(s) for s in strays)}, which "
                    f"{'is not a group' if len(strays) == 1 else 'are not groups'} of '{other}'; a table maps "
                    f"the classes of one field (the folder label '{label}' or another table's groups).",
                    field=where,
                    hint=(
                        f"did you mean '{closest(strays[0], groups[other])}'?"
                        if closest(strays[0], groups[other])
                        else f"the groups of '{other}' are: {', '.join(sorted(groups[other]))}."
                    ),
                )
            )
        if len(under) > 1:
            problems.append(
                Problem(
                    f"every class it lists is a group of both '{under[0]}' and '{under[1]}', so it is not clear "
                    "which of them it maps from.",
                    field=where,
                    hint=f"give '{under[0]}' and '{under[1]}' different group names.",
                )
            )
    # A circle of nested tables (a -> b -> a) has no folder label at its root.
    for field in tables:
        if field == label:
            continue
        seen, step = [field], children[field]
        while step in tables and step != label and step not in seen:
            seen.append(step)
            step = children[step]
        if step == field:
            problems.append(
                Problem(
                    "the tables " + " -> ".join(f"'{f}'" for f in [*seen, field]) + " map from each other in a circle.",
                    field=f"data.hierarchy.{field}",
                    hint="one of them must list the folder classes.",
                )
            )
            break
    # Tables mapping from one field must each list all of that field's classes, exactly as spelt.
    by_child: dict[str, list[str]] = {}
    for field, child in children.items():
        if field != label and field not in mixed:
            by_child.setdefault(child, []).append(field)
    for child, fields in by_child.items():
        known = sorted(groups[child]) if child in tables else None  # a nested table must cover the groups
        listed = {f: {m for ms in tables[f].values() for m in ms} for f in fields}
        everything = set(known) if known is not None else set().union(*listed.values())
        if known is None and len(fields) < 2:
            continue  # one table of folder classes: only the folders can tell what is missing
        for field in fields:
            missing = sorted(everything - listed[field])
            for name in missing:
                owners = [f for f in fields if f != field and name in listed[f]]
                source = f"'{child}' has group '{name}'" if known is not None else f"'{owners[0]}' lists class '{name}'"
                # A class only this table lists, close to the missing one, is probably a misspelling.
                only_here = [
                    m
                    for m in listed[field]
                    if all(m not in listed[f] for f in fields if f != field) and (known is None or m not in known)
                ]
                near = closest(name, only_here)
                problems.append(
                    Problem(
                        f"{source}, but no group of '{field}' lists it; every {child} class must be in exactly one "
                        f"group of every table that maps from '{child}'.",
                        field=f"data.hierarchy.{field}",
                        hint=f"'{field}' lists '{near}' instead; if one of the two is misspelt, correct it."
                        if near
                        else f"add '{name}' to one of the groups: {', '.join(sorted(tables[field]))}.",
                    )
                )
    return problems
