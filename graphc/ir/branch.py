"""Where should the tasks branch? The family of sharing topologies of one multi-task spec.

From a spec where several tasks read a shared path, :func:`branch_family` writes one spec per
candidate branch point: the shared nodes up to the point stay shared, the shared nodes after it
are copied per task (``<task>_<node>``, with the node's template, settings, init and norms), and
every head and cross-task reuse edge is kept. The candidates, in topological order:

- **nothing shared**: every task gets its own copy of every shared node (the input is not copied);
- **branch after N** for each shared node N where one tensor crosses the cut (N's output): a
  residual unit (a ``concat`` with ``mode = "sum"`` and the nodes between its shortcut and it, a
  ``repeat``) is therefore never split - a point inside a unit has two tensors crossing it and is
  no candidate. Branching after the last shared node is the spec as written (**everything shared**);
- **branch trees** (three or more tasks): all tasks share up to a point, a group of tasks shares
  on to a later point, then each task has its own copy (tasks that branch later share longer).

The spec is edited as written (its raw TOML, through tomlkit): templates, repeats and comments
stay, and each copy says what it copies and for whom. Every member is checked (parsed and built
here) before it is returned. Compiler layer: no runtime imports; training and ranking the family
live in ``graphc.runtime.branching``.

"Shared" here is hard sharing: a node whose output reaches two or more heads without passing
through another head (``Node.direct_heads``). Nodes another task reads only through a head's
output (cross-task reuse) stay as they are.
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import tomlkit

from graphc.errors import Problem, SpecError, UsageError
from graphc.ir.build import build_graph
from graphc.ir.graph import Graph
from graphc.lang.load import parse_spec

MAX_SPECS = 16
MAX_TREE_TASKS = 4  # branch trees for 3 or 4 tasks; more group in too many ways to build each
MAX_TREES = 64  # branch trees generated (and built) at most: seven tasks would make thousands
# Train-table fields whose value is a metric that may name a node (train/diag/NODE/...).
_METRIC_FIELDS = (("select",), ("early_stopping",), ("schedule",))
_DIAG = re.compile(r"^(train|val)/diag/([A-Za-z_][A-Za-z0-9_]*)/")


@dataclass(frozen=True)
class Member:
    """One spec of the family."""

    index: int  # position in the family (file names sort by it)
    slug: str  # stable part of the file and spec name: nothing_shared, after_NODE, everything_shared, tree_...
    kind: str  # "separate" | "branch" | "shared" | "tree"
    branch_point: str | None  # the last node all tasks share (None: nothing shared)
    depth: int  # shared nodes (tables) all tasks share: 0 for nothing shared
    tree: str  # who shares what, in words
    name: str  # the generated spec's name (= the file's stem)
    text: str  # the TOML
    graph: Graph  # the member's built graph
    copies: dict[str, tuple[str, ...]]  # original node table -> the tables standing for it (itself if kept)
    notes: tuple[str, ...] = ()
    group_point: str | None = None  # trees: the last node the group shares
    group: tuple[str, ...] = ()  # trees: the tasks that share longer
    branch_node: str | None = None  # the original graph's node at the branch point (a repeat's last copy)
    group_node: str | None = None  # trees: the original graph's node at the group's branch point

    @property
    def file_name(self) -> str:
        return f"{self.name}.toml"

    @property
    def total_params(self) -> int:
        return self.graph.total_params

    @property
    def trainable_params(self) -> int:
        return self.graph.trainable_params

    @property
    def shared_fraction(self) -> float:
        total = self.graph.total_params
        return self.graph.hard_shared_params / total if total else 0.0

    def row(self) -> dict:
        """The member's entry in family.json."""
        return {
            "candidate": self.index,
            "name": self.name,
            "file": self.file_name,
            "kind": self.kind,
            "branch_point": self.branch_point,
            "depth": self.depth,
            "group": list(self.group),
            "group_point": self.group_point,
            "branch_node": self.branch_node,
            "group_node": self.group_node,
            "tree": self.tree,
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "shared_params": self.graph.hard_shared_params,
            "shared_fraction": self.shared_fraction,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Family:
    spec_name: str
    tasks: tuple[str, ...]
    members: tuple[Member, ...]  # the chosen ones, in family order
    candidates: int  # how many were generated before --max-specs chose
    rule: str  # how the members were chosen
    notes: tuple[str, ...] = field(default=())
    # every generated plain candidate's trainable parameters (branch node, None: nothing shared), chosen or
    # not: what a recommendation under --max-params weighs, including candidates --max-specs left out
    plain_params: dict[str | None, int] = field(default_factory=dict)


@dataclass
class _Tables:
    """The spec's [[nodes]] tables as written, and what the built graph says about each."""

    names: list[str]  # table names, in file order
    kinds: dict[str, str]
    reads: dict[str, list[str]]  # table -> tables it reads (templates merged)
    field: dict[str, str | None]  # table -> "input" | "inputs" | None (the field naming what it reads)
    tasks: dict[str, frozenset[str]]  # table -> tasks whose heads its output reaches directly
    params: dict[str, int]  # table -> parameters of all the graph nodes it expands to
    order: dict[str, int]  # table -> position of its first graph node (a topological order of the tables)
    output: dict[str, str] = field(default_factory=dict)  # table -> its last graph node (what its readers read)


def _tables(text: str, spec, graph: Graph) -> _Tables:
    raw = tomllib.loads(text)
    templates = raw.get("templates", {})
    tables = raw["nodes"]
    names = [t["name"] for t in tables]
    by_graph_name = {}
    for i, node in enumerate(spec.nodes):
        by_graph_name[node.name] = names[spec.origin(i)]
    # A repeated residual unit's members are expanded inside their sum's table; spec.origin names them.
    position = {n.name: i for i, n in enumerate(graph.nodes)}
    info = _Tables(names, {}, {}, {}, {}, {}, {})
    for table in tables:
        merged = {**templates.get(table.get("use"), {}), **table}
        name = table["name"]
        info.kinds[name] = merged.get("kind", "")
        value = merged.get("inputs", merged.get("input"))
        info.field[name] = "inputs" if "inputs" in merged else "input" if "input" in merged else None
        info.reads[name] = [value] if isinstance(value, str) else list(value or [])
        info.tasks[name], info.params[name], info.order[name] = frozenset(), 0, len(graph.nodes)
    for graph_name, table in by_graph_name.items():
        node = graph[graph_name]
        info.tasks[table] |= node.direct_heads
        info.params[table] += node.num_params
        info.order[table] = min(info.order[table], position[graph_name])
        if position[graph_name] >= position.get(info.output.get(table), -1):
            info.output[table] = graph_name
    return info


def _source(path: str | Path | None, text: str | None) -> tuple[str, Path | None]:
    if text is not None:
        return text, Path(path) if path else None
    from graphc.lang.builtin import resolve_spec_path

    resolved = resolve_spec_path(path)
    try:
        return resolved.read_text(encoding="utf-8-sig"), resolved
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(Problem(f"cannot be read: {exc}.", file=resolved, hint="name a spec file.")) from None


def branch_family(
    path: str | Path | None = None,
    *,
    text: str | None = None,
    max_specs: int = MAX_SPECS,
    max_params: int | None = None,
    ranking=None,
    score=None,
) -> Family:
    """The family of ``path`` (or of ``text``): every candidate generated and checked, those over
    ``max_params`` trainable parameters left out (with a note), then at most ``max_specs`` chosen
    (see :func:`choose`) by ``ranking`` (``{slug: value}``, higher first) or by what
    ``score(spec, members)`` returns (the cheap scores of ``graphc.runtime.branching.scores``,
    called with the original spec and every candidate member, only when there is a choice to make
    or always when it is given). Raises SpecError for a bad spec and UsageError for one with
    nothing to branch."""
    if max_specs < 2:
        raise UsageError(f"--max-specs {max_specs}: a family needs at least 2 members (nothing and everything shared).")
    text, source = _source(path, text)
    spec = parse_spec(text, source)
    graph = build_graph(spec)
    tasks = graph.tasks
    info = _tables(text, spec, graph)
    shared = sorted(
        (n for n in info.names if info.kinds[n] != "input" and len(info.tasks[n]) > 1), key=info.order.__getitem__
    )
    if len(tasks) < 2 or not shared:
        what = (
            f"it has one task ({tasks[0]})"
            if len(tasks) < 2
            else "no node's output reaches two heads (each task has its own path already)"
        )
        raise UsageError(
            f"nothing to branch in '{source or spec.name}': {what}. graphc branch needs a spec where several tasks "
            "read a shared path, e.g. specs/shared_conv.toml."
        )
    points = _distinct(_cut_points(info, shared), shared, info)
    if len(points) < 2:
        raise UsageError(
            f"nothing to branch in '{source or spec.name}': its shared nodes ({', '.join(shared)}) have no parameters, "
            "so every way of sharing them is the same network."
        )
    plans: list[tuple[str, str, int, tuple[str, ...], int]] = []  # (slug, kind, cut, group, group cut)
    for cut in points:
        if cut == -1:
            plans.append(("nothing_shared", "separate", -1, (), -1))
        elif cut == len(shared) - 1:
            plans.append(("everything_shared", "shared", cut, (), -1))
        else:
            plans.append((f"after_{shared[cut]}", "branch", cut, (), -1))
    notes = []
    if len(tasks) > MAX_TREE_TASKS:
        notes.append(
            f"no branch trees: {len(tasks)} tasks group in too many ways; trees are generated for 3 to "
            f"{MAX_TREE_TASKS} tasks."
        )
    elif len(tasks) > 2:
        for first, second in combinations(points, 2):
            for size in range(2, len(tasks)):
                for group in combinations(tasks, size):
                    # a group that the later cut leaves with no node of its own to share is the plain branch
                    if any(set(group) <= info.tasks[s] for s in shared[first + 1 : second + 1]):
                        slug = f"tree_{_point(shared, first)}_{'_'.join(group)}_{shared[second]}"
                        plans.append((slug, "tree", first, group, second))
    trees = [p for p in plans if p[1] == "tree"]
    if len(trees) > MAX_TREES:
        notes.append(
            f"{len(trees)} branch trees are possible; only the first {MAX_TREES} (earliest common branch point "
            "first) were generated and checked."
        )
        plans = [p for p in plans if p[1] != "tree"] + trees[:MAX_TREES]
    members = [
        _member(text, source, spec.name, tasks, info, shared, plan, position, _data_root(spec))
        for position, plan in enumerate(plans)
    ]
    plain_params = {m.branch_node: m.trainable_params for m in members if m.kind != "tree"}
    if max_params is not None:
        over = [m for m in members if m.trainable_params > max_params]
        notes += [
            f"left out {m.slug}: {m.trainable_params:,} trainable parameters, over --max-params {max_params:,}"
            for m in over
        ]
        members = [m for m in members if m.trainable_params <= max_params]
        if not members:
            raise UsageError(
                f"--max-params {max_params:,}: every member of the family is larger (the smallest has "
                f"{min(m.trainable_params for m in over):,} trainable parameters). Raise the budget."
            )
    if score is not None:
        ranking = score(spec, members)
    chosen, rule = choose(members, max_specs, ranking)
    stem_width = len(str(len(chosen) - 1))
    final = []
    for k, member in enumerate(chosen):
        name = f"{spec.name}__branch_{k:0{max(2, stem_width)}d}_{member.slug}"
        if len(name) > 100:  # spec names are at most 100 characters: a long tree's slug gives way to its kind
            name = f"{spec.name[:60]}__branch_{k:0{max(2, stem_width)}d}_{member.kind}"
        final.append(_named(member, k, name))
    return Family(spec.name, tasks, tuple(final), len(members), rule, tuple(notes), plain_params)


def _point(shared: list[str], cut: int) -> str:
    return "input" if cut < 0 else shared[cut]


def _cut_points(info: _Tables, shared: list[str]) -> list[int]:
    """Cuts (index of the last shared table kept; -1: none kept) across which exactly one tensor
    passes: the kept part's last node's (or the input's). Anything else would split a residual unit
    (its shortcut and its branch cross the cut apart) or copy a node that reads from outside the trunk."""
    valid = []
    for cut in range(-1, len(shared)):
        copied = set(shared[cut + 1 :])
        sources = {r for c in copied for r in info.reads[c] if r not in copied}
        if cut == -1:
            ok = all(info.kinds.get(s) == "input" for s in sources) and len(sources) <= 1
        else:
            ok = sources <= {shared[cut]}
        if ok:
            valid.append(cut)
    return valid


def _distinct(points: list[int], shared: list[str], info: _Tables) -> list[int]:
    """The cuts that make different networks: two cuts with only parameter-free nodes (a pooling,
    a sum) between them copy nothing that learns, so the later one is dropped - unless it is
    everything shared, which is kept in the earlier one's place (nothing shared always stays)."""
    kept: list[int] = []
    for cut in points:
        if kept and sum(info.params[s] for s in shared[kept[-1] + 1 : cut + 1]) == 0:
            if cut == len(shared) - 1 and kept[-1] != -1:
                kept[-1] = cut
            continue
        kept.append(cut)
    return kept


def choose(members: list[Member], max_specs: int, ranking=None) -> tuple[list[Member], str]:
    """At most ``max_specs`` members, in family order. Nothing shared and everything shared are
    always kept (the two baselines), then the plain branch points (the family the question "where
    should the tasks branch?" is about; evenly spaced in depth when not all fit), then the branch
    trees: with a ``ranking`` ({slug: score}, higher is better) the best ranked, without it those
    with the fewest trainable parameters (ties: family order)."""
    if len(members) <= max_specs:
        return members, f"all {len(members)} candidates"
    ends = [m for m in members if m.kind in ("separate", "shared")]
    rest = [m for m in members if m.kind not in ("separate", "shared")]
    room = max_specs - len(ends)
    branches = [m for m in rest if m.kind == "branch"]
    trees = [m for m in rest if m.kind == "tree"]
    if len(branches) > room:
        step = len(branches) / room
        branches = [branches[int(i * step + step / 2)] for i in range(room)]
    if ranking:
        value = {slug: float(v) for slug, v in ranking.items() if v is not None}
        trees = sorted(trees, key=lambda m: (-value.get(m.slug, float("-inf")), m.index))
        by = "the best by the cheap scores (ties and unscored trees: family order)"
    else:
        trees = sorted(trees, key=lambda m: (m.trainable_params, m.index))
        by = "those with the fewest trainable parameters"
    picked = branches + trees[: room - len(branches)]
    rule = (
        f"{max_specs} of {len(members)} candidates: nothing and everything shared, the branch points (evenly "
        f"spaced in depth when not all fit), then the branch trees, {by}"
    )
    keep = {m.index for m in ends + picked}
    return [m for m in members if m.index in keep], rule


def _named(member: Member, index: int, name: str) -> Member:
    doc = tomlkit.parse(member.text)
    doc["name"] = name
    text = tomlkit.dumps(doc)
    return Member(
        index,
        member.slug,
        member.kind,
        member.branch_point,
        member.depth,
        member.tree,
        name,
        text,
        build_graph(parse_spec(text, None)),
        member.copies,
        member.notes,
        member.group_point,
        member.group,
        member.branch_node,
        member.group_node,
    )


def _data_root(spec) -> str | None:
    """The spec's [data] root made absolute when it is relative to the spec's own folder: the members
    are written elsewhere, and a relative root is read from the folder of the spec that names it."""
    from graphc.lang.load import resolve_data_root

    resolved, note = resolve_data_root(spec)
    if note is None and resolved.data.root != spec.data.root:
        return resolved.data.root
    return None


def _member(text, source, spec_name, tasks, info: _Tables, shared, plan, position, root=None) -> Member:
    slug, kind, cut, group, group_cut = plan
    index = {name: i for i, name in enumerate(shared)}

    def owner(task: str, table: str) -> tuple[str, ...]:
        """The tasks that share ``table``'s copy that ``task`` reads, in head order."""
        at = index[table]
        if at <= cut:
            together = set(tasks)
        elif group and at <= group_cut and task in group:
            together = set(group)
        else:
            together = {task}
        return tuple(t for t in tasks if t in together and t in info.tasks[table])

    def copy_name(table: str, owners: tuple[str, ...]) -> str:
        return table if set(owners) == info.tasks[table] else "_".join(owners) + "_" + table

    def reads_of(table: str, task: str | None) -> list[str]:
        if task is None:
            return list(info.reads[table])
        return [copy_name(r, owner(task, r)) if r in index else r for r in info.reads[table]]

    doc = tomlkit.parse(text)
    nodes = doc["nodes"]
    new_nodes = tomlkit.aot()
    copies: dict[str, tuple[str, ...]] = {}
    taken = set(info.names)
    for table, item in zip(info.names, nodes):
        if table in index:
            groups = list(dict.fromkeys(owner(t, table) for t in tasks if t in info.tasks[table]))
        else:
            groups = [tuple(sorted(info.tasks[table], key=tasks.index))]
        made = []
        for owners in groups:
            name = copy_name(table, owners) if table in index else table
            reader = owners[0] if owners and (table in index or len(owners) == 1) else None
            new = item if name == table else copy.deepcopy(item)
            if name != table:
                if name in taken:
                    raise UsageError(
                        f"cannot copy '{table}' for {', '.join(owners)}: the copy's name '{name}' is already a node "
                        f"of the spec. Rename that node and run graphc branch again."
                    )
                taken.add(name)
                new["name"] = name
                with_whom = "its own copy" if len(owners) == 1 else f"a copy shared by {' and '.join(owners)}"
                new["name"].comment(f"{with_whom} of {table} (graphc branch)")
            reads = reads_of(table, reader)
            if reads != info.reads[table] and info.field[table]:
                value = reads if info.field[table] == "inputs" else reads[0]
                new[info.field[table]] = value
            new_nodes.append(new)
            made.append(name)
        copies[table] = tuple(made)
    doc["nodes"] = new_nodes
    notes = _remap_train(doc, copies)
    if root is not None and "data" in doc and "root" in doc["data"]:
        written = doc["data"]["root"]
        doc["data"]["root"] = root
        notes.append(f"data.root {written!r} is relative to the original spec's folder: written as {root!r}")
    tree = _describe(tasks, shared, cut, group, group_cut, info)
    top = []  # a key missing at the top is written before the first table, not appended after the last
    for key, value in (("name", slug), ("description", f"{spec_name}, {tree}.")):
        if key in doc:
            doc[key] = value
        else:
            top.append(f"{key} = {tomlkit.string(value).as_string()}")
    header = [
        f"# Generated by graphc branch from {source.name if source else spec_name}: {tree}.",
        "# Nodes named TASK_NODE (or TASK_TASK_NODE) are copies of NODE for those tasks, with NODE's template,",
        "# settings, init and norms; every other node is as written in the original.",
        *[f"# note: {n}" for n in notes],
        "",
        *top,
    ]
    out = "\n".join(header) + ("\n\n" if top else "") + tomlkit.dumps(doc)
    try:
        graph = build_graph(parse_spec(out, None))
    except SpecError as exc:  # a bug of the generator, not the user's: say which member
        raise SpecError(
            [
                Problem(f"graphc branch made an invalid spec for '{slug}': {p.message}", hint=p.hint)
                for p in exc.problems
            ]
        ) from None
    return Member(
        position,
        slug,
        kind,
        None if cut < 0 else shared[cut],
        cut + 1,
        tree,
        f"candidate_{position}",  # named once chosen (_named)
        out,
        graph,
        copies,
        tuple(notes),
        shared[group_cut] if group else None,
        tuple(group),
        None if cut < 0 else info.output[shared[cut]],
        info.output[shared[group_cut]] if group else None,
    )


def _describe(tasks, shared, cut, group, group_cut, info) -> str:
    everyone = ", ".join(tasks)
    if cut < 0 and group:  # a tree whose first split is at the input: only the group shares, up to its point
        alone = ", ".join(t for t in tasks if t not in group)
        return (
            f"nothing shared by all: {' and '.join(group)} share up to {shared[group_cut]}, {alone} "
            f"{'has its' if len(tasks) - len(group) == 1 else 'each have their'} own copy of {', '.join(shared)}"
        )
    if cut < 0:
        return f"nothing shared: {everyone} each have their own copy of {', '.join(shared)}"
    if cut == len(shared) - 1:
        return f"everything shared: {everyone} share {', '.join(shared)} (the spec as written)"
    words = f"{everyone} share up to {shared[cut]}"
    if group:
        words += f", {' and '.join(group)} share on to {shared[group_cut]}"
    return f"branch after {shared[cut]}: {words}, then each task has its own copy of the rest"


def _remap_train(doc, copies: dict[str, tuple[str, ...]]) -> list[str]:
    """Train-table fields that name a copied node: init_map keys become one key per copy; a
    monitored diag/NODE/... metric of a node that no longer exists under that name is dropped (the
    default applies). Returns a note per change."""
    notes = []
    train = doc.get("train")
    if train is None:
        return notes
    gone = {name: made for name, made in copies.items() if name not in made}
    init_map = train.get("init_map")
    if init_map is not None:
        for key in [k for k in init_map if k in gone]:
            value = init_map[key]
            del init_map[key]
            for made in gone[key]:
                init_map[made] = value
            notes.append(f"train.init_map: {key} = {value!r} became {', '.join(gone[key])} (its copies)")
    for (key,) in _METRIC_FIELDS:
        table = train.get(key)
        metric = table.get("metric") if hasattr(table, "get") else None
        found = _DIAG.match(str(metric)) if metric else None
        if found and found.group(2) in gone:
            del table["metric"]
            if "mode" in table:
                del table["mode"]
            notes.append(
                f"train.{key}.metric {metric!r} names {found.group(2)}, which this member copies per task: dropped "
                "(the default metric applies)"
            )
    return notes
