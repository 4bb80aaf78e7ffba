"""Single-task models of a multi-task spec: what ``graphc derive single-task`` writes.

The standard summary of a multi-task model, Δm (``graphc report --delta-m``), compares each task
with a model that learns that task alone. :func:`single_task_specs` writes that model for every
head of a spec: the head and its ancestors in the spec's graph (the nodes whose output it reads,
directly or not), nothing else, so that each task's single-task model has exactly the layers the
multi-task model gives it. The spec is edited as written (its raw TOML, through tomlkit):
templates, ``repeat`` (a repeated node is kept or removed whole), [layers], [data] and comments
stay, and a header says where the file came from.

Cross-task reuse (a ``concat`` reading another head's output) has no other head to read in a
single-task model: the edge is removed and named in a note. A concat left with one input would
be no concat (it joins two or more), so it is removed too and its readers read that input; the
nodes after it then have fewer inputs, hence fewer parameters, which the notes count. Every other
kept node has the parameter count it has in the multi-task graph.

[train] settings that name what is gone are dropped, with a note each: ``init_map`` entries of
removed nodes, monitored metrics (``select``, ``early_stopping``, a plateau schedule's) of removed
tasks or of nothing the single-task model logs (the default, the validation loss, applies), and
``loss_weighting`` and ``aggregator`` (one loss has nothing to weigh against or aggregate with).

Each spec is named ``<spec name>__single_<task>`` (:func:`single_task_name`), which is how the
report finds single-task rows. Every member is parsed and built here before it is returned.
Compiler layer: imports graphc.lang, graphc.ir and graphc.files only.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomlkit

from graphc.errors import Problem, SpecError, UsageError, did_you_mean
from graphc.files import atomic_write_text
from graphc.ir.build import build_graph
from graphc.ir.graph import Graph
from graphc.lang.load import parse_spec

SUFFIX = "__single_"  # <spec name>__single_<task>: the report pairs a task with its single-task rows by it
MAX_NAME = 100  # a spec name's limit (graphc.lang.spec.Spec.name)
_MONITORS = ("select", "early_stopping", "schedule")  # [train] tables whose `metric` names a metric


def single_task_name(spec_name: str, task: str) -> str:
    """The name (and file stem) of ``spec_name``'s single-task model of ``task``."""
    return f"{spec_name}{SUFFIX}{task}"


def parse_single_task_name(name: str) -> tuple[str, str] | None:
    """``(spec name, task)`` of a name :func:`single_task_name` made, else None."""
    spec, found, task = name.rpartition(SUFFIX)
    return (spec, task) if found and spec and task else None


@dataclass(frozen=True)
class SingleTask:
    """One task's single-task spec."""

    task: str
    head: str  # the head's node name
    name: str  # the spec's name (= its file's stem)
    text: str  # the TOML, as written to the file
    graph: Graph  # the spec, built
    removed_reuse: tuple[tuple[str, str], ...]  # (reading node, read head): cross-task reuse edges removed
    notes: tuple[str, ...]  # what was removed or changed beyond dropping the other heads' nodes

    @property
    def file_name(self) -> str:
        return f"{self.name}.toml"


@dataclass(frozen=True)
class Derivation:
    """Every requested task's single-task spec, with what the original was."""

    spec_name: str
    source: Path | None
    original: Graph
    members: tuple[SingleTask, ...]


# --------------------------------------------------------------------------- the tables as written


@dataclass
class _Tables:
    """The [[nodes]] tables as written (templates merged for what they read) and the graph nodes
    each one became (``repeat`` makes several of one table)."""

    names: list[str]  # table names, in file order
    kinds: dict[str, str]
    reads: dict[str, list[str]]  # table -> the names its input/inputs field gives
    field: dict[str, str | None]  # table -> "input" | "inputs" | None
    repeat: dict[str, int]
    graph_nodes: dict[str, list[str]]  # table -> its graph nodes
    table_of: dict[str, str]  # graph node -> its table


def _tables(raw: dict, spec, graph: Graph) -> _Tables:
    templates = raw.get("templates", {})
    names = [t["name"] for t in raw["nodes"]]
    info = _Tables(names, {}, {}, {}, {}, {n: [] for n in names}, {})
    for table in raw["nodes"]:
        merged = {**templates.get(table.get("use"), {}), **table}
        name = table["name"]
        info.kinds[name] = merged.get("kind", "")
        value = merged.get("inputs", merged.get("input"))
        info.field[name] = "inputs" if "inputs" in merged else "input" if "input" in merged else None
        info.reads[name] = [value] if isinstance(value, str) else list(value or [])
        info.repeat[name] = int(merged.get("repeat", 1))
    for index, node in enumerate(spec.nodes):  # a repeated residual unit's members come from their own tables
        table = names[spec.origin(index)]
        info.table_of[node.name] = table
        info.graph_nodes[table].append(node.name)
    for node in graph.nodes:
        info.table_of.setdefault(node.name, node.name)
    return info


def _source(path: str | Path | None, text: str | None) -> tuple[str, Path | None]:
    if text is not None:
        return text, Path(path) if path else None
    from graphc.lang.builtin import resolve_spec_path
    from graphc.lang.load import load_spec

    load_spec(path)  # the usual messages for a missing file, a folder, an unreadable file
    resolved = resolve_spec_path(path)
    return resolved.read_text(encoding="utf-8-sig"), resolved


# --------------------------------------------------------------------------- deriving


def single_task_specs(
    path: str | Path | None = None,
    *,
    text: str | None = None,
    tasks: list[str] | tuple[str, ...] | None = None,
    out: str | Path | None = None,
) -> Derivation:
    """The single-task spec of every head of ``path`` (or of ``text``), or of the heads of ``tasks``.
    With ``out`` (the folder the specs will be written to), a relative ``[data] root`` is rewritten
    relative to it, so the derived spec reads the same data as the original from its new place.
    Raises SpecError for a bad spec and UsageError for an unknown task or a head that cannot stand
    alone (a node that reads another head and nothing else)."""
    text, source = _source(path, text)
    spec = parse_spec(text, source)
    graph = build_graph(spec)
    wanted = list(dict.fromkeys(tasks)) if tasks else list(graph.tasks)
    unknown = [t for t in wanted if t not in graph.tasks]
    if unknown:
        hint = did_you_mean(unknown[0], graph.tasks) or ""
        raise UsageError(
            f"--task {unknown[0]}: '{source or spec.name}' has no head of that task; its tasks are "
            f"{', '.join(graph.tasks)}. {hint}".strip()
        )
    raw = tomllib.loads(text)
    info = _tables(raw, spec, graph)
    members = tuple(_single(text, source, spec, graph, info, task, out) for task in wanted)
    return Derivation(spec.name, source, graph, members)


def _ancestors(graph: Graph, head: str) -> tuple[set[str], list[tuple[str, str]]]:
    """The graph nodes ``head`` reads, directly or not, without passing through another head, and
    the reuse edges (reader, other head) that the walk did not follow."""
    kept, todo, reuse = {head}, [head], []
    while todo:
        name = todo.pop()
        for source in graph[name].inputs:
            if graph[source].kind == "head" and source != head:
                reuse.append((name, source))
            elif source not in kept:
                kept.add(source)
                todo.append(source)
    return kept, reuse


def _single(text: str, source: Path | None, spec, graph: Graph, info: _Tables, task: str, out) -> SingleTask:
    head = graph.head_for(task).name
    kept_nodes, _ = _ancestors(graph, head)
    kept = {info.table_of[n] for n in kept_nodes}
    head_table = info.table_of[head]
    notes: list[str] = []
    removed_reuse: list[tuple[str, str]] = []
    bypass: dict[str, str] = {}  # a concat left with one input -> that input
    new_reads: dict[str, list[str]] = {}
    for table in (t for t in info.names if t in kept):
        gone = [r for r in info.reads[table] if r not in kept]
        if not gone:
            continue
        removed_reuse += [(table, r) for r in gone]
        left = [r for r in info.reads[table] if r in kept]
        others = " and ".join(f"'{r}'" for r in gone)
        if info.kinds[table] != "concat" or not left:
            raise UsageError(
                f"cannot derive the single-task model of {task}: node '{table}' reads {others} (another task's "
                f"head) and nothing else, so without the other task it has no input. Give '{table}' an input of "
                f"its own task, or derive only the other tasks (--task)."
            )
        if len(left) == 1:
            if info.repeat[table] > 1:
                raise UsageError(
                    f"cannot derive the single-task model of {task}: the repeated sum '{table}' reads {others} "
                    "(another task's head); without it the sum has one input and cannot repeat."
                )
            bypass[table] = left[0]
            notes.append(
                f"removed the cross-task reuse edge {others} -> '{table}'; '{table}' is left with one input, "
                f"'{left[0]}', so it is removed and its readers read '{left[0]}'."
            )
        else:
            new_reads[table] = left
            notes.append(f"removed the cross-task reuse edge {others} -> '{table}'; it now joins {left}.")

    def resolve(name: str) -> str:
        while name in bypass:
            name = bypass[name]
        return name

    doc = tomlkit.parse(text)
    nodes = doc["nodes"]
    for index in reversed(range(len(info.names))):  # in place, so the file's blank lines and comments stay
        table, item = info.names[index], nodes[index]
        if table not in kept or table in bypass:
            del nodes[index]
            continue
        reads = [resolve(r) for r in new_reads.get(table, info.reads[table])]
        if reads != info.reads[table] and info.field[table]:
            field = info.field[table]
            item[field] = reads if field == "inputs" else reads[0]
            was = info.reads[table] if field == "inputs" else info.reads[table][0]
            item[field].comment(f"was {was!r} (graphc derive single-task)")
    removed_tables = [t for t in info.names if t not in kept]
    removed_tasks = [t for t in graph.tasks if t != task]
    kept_names = (kept - set(bypass)) | {n for n in kept_nodes if info.table_of[n] not in bypass}
    notes += _prune_train(doc, kept_names, removed_tasks, spec.data.val_fraction)
    notes += _data_root(doc, spec, out)
    name = single_task_name(spec.name, task)
    if len(name) > MAX_NAME:
        raise UsageError(
            f"the single-task spec of {task} would be named '{name}', longer than a spec name's {MAX_NAME} "
            f"characters. Give '{source or spec.name}' a shorter name."
        )
    description = f"The single-task model of {task} from {spec.name} (graphc derive single-task)."
    _, built = _finish(doc, name, description, source, spec, task, head_table, removed_tables, notes)
    # built once to count the parameters that changed; again for the header that says so
    notes += _param_notes(graph, built, removed_reuse)
    derived, built = _finish(doc, name, description, source, spec, task, head_table, removed_tables, notes)
    return SingleTask(task, head, name, derived, built, tuple(removed_reuse), tuple(notes))


def _finish(doc, name, description, source, spec, task, head, removed_tables, notes) -> tuple[str, Graph]:
    """The TOML of ``doc`` named ``name``, with its header; built, and with a monitored metric the
    derived model does not log dropped (then built again). Raises SpecError naming the task if the
    result does not build (a defect of the derivation, not of the user's spec)."""
    for _attempt in range(len(_MONITORS) + 1):
        out = _text(doc, name, description, source, spec, task, head, removed_tables, notes)
        try:
            return out, build_graph(parse_spec(out, None))
        except SpecError as exc:
            fields = [p.field for p in exc.problems if p.field]
            monitor = next((f.split(".")[1] for f in fields if re.fullmatch(r"train\.\w+\.metric", f)), None)
            train = doc.get("train")
            table = train.get(monitor) if train is not None and monitor else None
            if table is None or "metric" not in table:
                raise SpecError(
                    [
                        Problem(f"graphc derive made an invalid single-task spec of {task}: {p.message}", hint=p.hint)
                        for p in exc.problems
                    ]
                ) from None
            notes.append(
                _drop_metric(table, monitor, "which the single-task model does not log", spec.data.val_fraction)
            )
    raise AssertionError("unreachable: every monitor was dropped")


def _text(doc, name, description, source, spec, task, head, removed_tables, notes) -> str:
    top = []  # a key missing at the top is written before the first table, not after the last
    for key, value in (("name", name), ("description", description)):
        if key in doc:
            doc[key] = value
        else:
            top.append(f"{key} = {tomlkit.string(value).as_string()}")
    origin = source.name if source is not None else f"spec '{spec.name}'"
    header = [
        f"# Generated by graphc derive single-task from {origin}: the single-task model of {task},",
        f"# its head {head} and the nodes {head} reads, as written there.",
    ]
    if removed_tables:
        header.append(f"# Removed (the other tasks' nodes): {', '.join(removed_tables)}.")
    header += [f"# note: {n}" for n in notes]
    body = tomlkit.dumps(doc).splitlines()
    while body and (not body[0].strip() or body[0].lstrip().startswith("#")):
        body.pop(0)  # the original's header comment describes the multi-task model
    return "\n".join([*header, "", *top, *body]) + "\n"


def _data_root(doc, spec, out) -> list[str]:
    """A relative ``[data] root`` is read from the spec's folder (graphc.lang.load.resolve_data_root;
    a built-in spec's from the working directory): rewrite it relative to ``out``, where the derived
    spec lives, so that it names the same folder. A note when it changes."""
    root = spec.data.root
    if out is None or root is None or Path(root).expanduser().is_absolute() or "data" not in doc:
        return []
    from graphc.lang.load import resolve_data_root

    resolved, _ = resolve_data_root(spec)
    where = Path(resolved.data.root if resolved.data.root != root else os.path.abspath(root))
    new = os.path.relpath(where, os.path.abspath(out))
    if new == root:
        return []
    doc["data"]["root"] = new
    doc["data"]["root"].comment(f"was {root!r} in the original: the same folder, from here (graphc derive)")
    return [f"[data] root {root!r} is now {new!r}: relative roots are read from the spec's folder, and this one moved."]


def _drop_metric(table, key: str, why: str, val_fraction: float) -> str:
    """Remove a monitor's metric (and mode): the default applies. A note saying so."""
    metric = table["metric"]
    del table["metric"]
    if "mode" in table:
        del table["mode"]
    if key == "schedule":
        return f"train.schedule.metric {metric!r} dropped ({why}): the plateau schedule watches train.select's metric."
    if val_fraction > 0:
        return f"train.{key}.metric {metric!r} dropped ({why}): the default, 'val/loss' (min), applies."
    table["metric"] = "train/loss"  # no validation images: the default would watch nothing
    table["mode"] = "min"
    return f"train.{key}.metric {metric!r} replaced by 'train/loss' (min) ({why}; the run has no validation split)."


def _prune_train(doc, kept: set[str], removed_tasks: list[str], val_fraction: float) -> list[str]:
    """Drop the [train] settings that name removed nodes or tasks, or need several heads. A note each."""
    train = doc.get("train")
    if train is None:
        return []
    notes = []
    for key, why in (
        ("loss_weighting", "one task's loss has nothing to be weighed against"),
        ("aggregator", "one task's gradient has nothing to be aggregated with"),
    ):
        if key in train:
            value = train[key].get("name", "?") if hasattr(train[key], "get") else train[key]
            del train[key]
            notes.append(f"train.{key} ({value}) dropped: {why}.")
    init_map = train.get("init_map")
    if init_map is not None:
        for new in [k for k in init_map if k not in kept]:
            notes.append(f"train.init_map entry {new} = {init_map[new]!r} dropped: this model has no node {new}.")
            del init_map[new]
        if not init_map:
            del train["init_map"]
    for key in _MONITORS:
        table = train.get(key)
        metric = table.get("metric") if hasattr(table, "get") else None
        if metric is None:
            continue
        parts = str(metric).split("/")
        if len(parts) == 3 and parts[1] in removed_tasks:
            notes.append(_drop_metric(table, key, f"task {parts[1]} is not in this model", val_fraction))
        elif len(parts) > 3 and parts[1] in ("diag",):
            notes.append(_drop_metric(table, key, "a gradient diagnostic needs several tasks", val_fraction))
    return notes


def _param_notes(original: Graph, derived: Graph, removed: list) -> list[str]:
    """A note for each kept node whose parameter count changed (it read a removed reuse edge's
    input: fewer input features), so the comparison's small difference in size is said aloud."""
    if not removed:
        return []
    notes = []
    for node in derived.nodes:
        if node.name in original and node.num_params != original[node.name].num_params:
            was = original[node.name].num_params
            notes.append(
                f"'{node.name}' has {node.num_params:,} parameters here, {was - node.num_params:,} fewer than in "
                f"{original.name} ({was:,}): it no longer reads the removed head's output."
            )
    return notes


# --------------------------------------------------------------------------- writing


def write_single_task(derivation: Derivation, out: str | Path) -> list[Path]:
    """Write each member as ``out/<name>.toml`` (through graphc's one writer); returns the paths.
    Files of other names in ``out`` are left alone."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: a file, not a folder; name a folder for the single-task specs.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create the folder ({exc.strerror or exc}).") from None
    written = []
    for member in derivation.members:
        path = out / member.file_name
        atomic_write_text(path, member.text)
        written.append(path)
    return written
