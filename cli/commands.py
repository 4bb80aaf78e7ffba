"""The ``graphc`` command line: typer + rich, thin over the public API.

Exit codes: 0 success, 2 spec or usage error, 1 runtime failure (missing
data, failed parity check, a diverged run, ...), 130 a training run or sweep
interrupted by Ctrl-C (its last epoch saved), 143 and 129 the same after SIGTERM
and SIGHUP. Bad input never prints a traceback.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

import graphc
from graphc.cli.help import HelpGroup
from graphc.errors import RunError, SpecError, UsageError, printable
from graphc.lang.spec import MAX_BATCH_SIZE, MAX_IMAGES, MAX_SEED

app = typer.Typer(
    name="graphc",
    cls=HelpGroup,  # every command's help as written: no markup eaten, readable value names (cli/help.py)
    help="Declarative graph-spec model compiler for multi-task deep learning.\n\n"
    "Write a model as a TOML graph spec; graphc validates it, compiles it to PyTorch, "
    "trains, evaluates, draws, reports and exports it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
if not out.is_terminal:  # pipes and logs get full-width tables instead of rich's 80-column default
    out.width = max(out.width, 160)


def fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {printable(message, newlines=True)}", markup=True, highlight=False)
    return typer.Exit(code)


def _escape(text: str, newlines: bool = False) -> str:
    """``text`` for rich markup, shown as it is: markup brackets and terminal control characters
    escaped (names, paths and messages may come from files)."""
    from rich.markup import escape

    return escape(printable(text, newlines))


def guarded(command: Callable) -> Callable:
    """Turn graphc's exceptions into one clear message and the right exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (SpecError, UsageError) as exc:
            raise fail(_escape(str(exc), newlines=True), 2) from None
        except RunError as exc:
            raise fail(_escape(str(exc), newlines=True), 1) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        out.print(f"graphc {graphc.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """graphc: TOML graph specs -> validated IR -> PyTorch modules."""
    _file_size_limit_is_an_error()


def _file_size_limit_is_an_error() -> None:
    """A write past `ulimit -f` (RLIMIT_FSIZE) fails with EFBIG, which graphc words as every failed
    write ("File too large", what was kept, how to go on), instead of SIGXFSZ killing the process
    with a core dump and no message."""
    import signal
    import threading

    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


# --------------------------------------------------------------------------- check / show / schema


def _heads_summary(graph: graphc.Graph) -> str:
    """``fine(100), animal(binary), colours(multilabel, 3 labels), age(regression)``: each head's task and
    what it predicts (a classifier: its classes)."""
    return ", ".join(f"{h.attrs['task']}({_head_kind(h.attrs)})" for h in graph.heads)


def _head_kind(attrs) -> str:
    kind, units = attrs.get("type", "classification"), attrs["classes"]
    if kind == "classification":
        return str(units)
    if kind == "multilabel":
        return f"multilabel, {units} labels"
    if kind == "regression" and units > 1:
        return f"regression, {units} outputs"
    return kind


def _params_summary(graph: graphc.Graph) -> str:
    """``N parameters``; with frozen nodes also how many train from the first epoch and how many are frozen."""
    if not graph.frozen:
        return f"{graph.total_params:,} parameters"
    return (
        f"{graph.total_params:,} parameters ({graph.trainable_params:,} trainable from the first epoch, "
        f"{graph.frozen_params:,} frozen)"
    )


def _training_text(node) -> str:
    """How a node trains, for graphc show: '' (trainable), 'frozen' or 'frozen, unfreezes after epoch N'."""
    if node.trainable:
        return ""
    after = node.attrs.get("unfreeze_after")
    return "frozen" + (f", unfreezes after epoch {after}" if after else "")


@app.command()
def check(
    specs: list[Path] = typer.Argument(
        ..., help="Spec files (or built-in spec names) to validate.", show_default=False
    ),
    data: bool = typer.Option(
        False,
        "--data",
        help="Also read each spec's data set - its class lists and one image per class, never the whole set, "
        "never a download - and run every check `graphc train` runs on it (seconds).",
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="With --data: where the data set is (overrides [data] root, as for train)."
    ),
) -> None:
    """Validate specs: one line each (name, heads, parameters); exit 2 if any is invalid, else 1 if a data set is missing.

    Runs every check `graphc train` would run before training that needs no data (the graph, class
    counts, the hierarchy tables against each other, the metrics select and early_stopping watch);
    with --data also those that need the data (class names and counts, image size, missing folders).
    """
    if data_dir is not None and not data:  # else a check the user asked for would silently not run
        raise fail(
            _escape(
                f"--data-dir {data_dir} says where the data set is for --data, which reads it; "
                "add --data (or leave out --data-dir)."
            ),
            2,
        )
    invalid = missing = 0
    for path in specs:
        probe = None
        try:
            spec = graphc.load_spec(path)
            if data:
                from graphc.lang.load import locate, resolve_data_root
                from graphc.runtime.data.load import probe_dataset
                from graphc.runtime.data.table import label_columns
                from graphc.runtime.runs.record import input_shape
                from graphc.runtime.train.launch import Overrides, apply_overrides

                spec, note = resolve_data_root(apply_overrides(spec, Overrides(data_dir=data_dir)))
                if note:
                    err.print(printable(note), markup=False, highlight=False)
                try:
                    probe = probe_dataset(
                        spec.data,
                        image_shape=input_shape(spec),
                        source=spec.source,
                        columns=label_columns(spec),
                    )
                except SpecError as exc:  # the data's checks name a field: say in which file and line
                    raise locate(exc, spec) from None
                graph = graphc.build_graph(spec, classes=probe.classes, types=probe.types)
            else:
                graph = graphc.build_graph(spec)
        except (SpecError, UsageError, RunError) as exc:
            if isinstance(exc, RunError):
                missing += 1
            else:
                invalid += 1
            err.print(f"[bold red]{'error' if isinstance(exc, RunError) else 'invalid'}[/] {_escape(str(path))}")
            err.print(printable(str(exc), newlines=True), markup=False)
            continue
        seen = ""
        if probe is not None:
            seen = f"; data: {probe.name}, images {'x'.join(map(str, probe.image_shape))}" + (
                f", {probe.pool:,} training images" if probe.pool is not None else ""
            )
        out.print(
            f"[green]ok[/] {_escape(str(path))}: {_escape(graph.name)}, heads {_heads_summary(graph)}, "
            f"{_params_summary(graph)}{_escape(seen)}"
        )
        labelled = getattr(probe, "labelled", None) or {}
        for task in labelled.get("train", {}):  # labels may be missing (a label table): how many each split has
            counts = " / ".join(f"{labelled[split].get(task, 0):,} {split}" for split in labelled)
            out.print(f"  {_escape(task)}: labelled images {counts}", highlight=False)
    if invalid:
        raise typer.Exit(2)
    if missing:
        raise typer.Exit(1)


@app.command()
@guarded
def show(
    spec: Path = typer.Argument(..., help="Spec file, or a built-in spec name.", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print the IR as JSON."),
    code: bool = typer.Option(False, "--code", help="Print the generated forward()."),
) -> None:
    """Show a spec's nodes: kind, inputs, output shape, parameters, heads served."""
    graph = graphc.build_graph(graphc.load_spec(spec))
    if as_json:
        print(json.dumps(graph.to_dict(), indent=2))
        return
    if code:
        import torch

        with torch.device("meta"):  # the code needs no weights: don't allocate (or initialise) them
            print(graphc.compile_graph(graph).code.strip())
        return
    table = Table(title=_escape(f"{graph.name}: {graph.description}" if graph.description else graph.name))
    columns = ["node", "kind", "inputs", "output", "params", "heads", "sharing"] + (
        ["training"] if graph.frozen else []
    )
    for column in columns:
        table.add_column(column, justify="right" if column == "params" else "left", no_wrap=column != "inputs")
    order = {task: i for i, task in enumerate(graph.tasks)}
    for node in graph:
        sharing = []  # a node can be both, e.g. read by heads A and B directly and by C through A
        if node.is_hard_shared and node.kind != "input":  # the input feeds every head by definition
            sharing.append("[bold magenta]shared[/]")
        if node.reused_by:
            sharing.append(f"[cyan]reused by {', '.join(sorted(node.reused_by, key=order.get))}[/]")
        table.add_row(
            node.name,
            node.kind,
            ", ".join(node.inputs),
            "x".join(map(str, node.shape)),
            f"{node.num_params:,}",
            ", ".join(sorted(node.direct_heads, key=order.get)),
            ", ".join(sharing),
            *([f"[bold blue]{_training_text(node)}[/]" if not node.trainable else ""] if graph.frozen else []),
        )
    out.print(table)
    total = graph.total_params or 1
    out.print(
        f"total parameters: {graph.total_params:,}"
        + (
            f" ({graph.trainable_params:,} trainable from the first epoch, {graph.frozen_params:,} in frozen nodes)"
            if graph.frozen
            else ""
        )
        + f"; serving more than one head: {graph.shared_params:,} "
        f"({graph.shared_params / total:.1%}), of which hard-shared: {graph.hard_shared_params:,} "
        f"({graph.hard_shared_params / total:.1%}); heads: {_heads_summary(graph)}"
    )


@app.command()
def specs() -> None:
    """List the built-in specs: a name any command takes in place of a file (graphc train shared_conv)."""
    from graphc.lang.builtin import builtin_specs, specs_dir

    table = Table(title=_escape(f"built-in specs ({specs_dir()})"), title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("description")
    for spec in builtin_specs():
        table.add_row(_escape(spec.name), _escape(spec.summary))
    out.print(table)


@app.command()
def schema() -> None:
    """Print the JSON schema of the spec format (with field descriptions)."""
    print(json.dumps(graphc.json_schema(), indent=2))


# --------------------------------------------------------------------------- report


def _print_report(result) -> None:
    """A report's tables, caption and notes on the terminal (graphc report, and the end of a sweep)."""
    from graphc.runtime.report import render

    for table in render.rich_tables(result, out.width):
        out.print(table)
    out.print(_escape(render.caption(result)))
    for note in result.notes:
        out.print(_escape(note))


@app.command()
@guarded
def report(
    runs: list[Path] = typer.Argument(
        ..., help="Run directories, or directories holding runs (e.g. runs/).", show_default=False
    ),
    out_dir: Path = typer.Option(Path("report"), "-o", "--out", help="Where results.md/.csv/.json and the plots go."),
    split: str = typer.Option("val", "--split", help="val: validation metrics; test: summary.json 'test'."),
    epoch: str = typer.Option("best", "--epoch", help="val split: each run's best epoch (train.select) or its last."),
    baseline: str | None = typer.Option(
        None,
        "--baseline",
        help="The row to show differences against: its label, a --tag, or a spec name (if it has one row).",
    ),
    fmt: str = typer.Option(
        "md",
        "--format",
        help="What to print: md (a table), csv or json (also writes results.json); html: the table, and writes "
        "results.html (one self-contained page: sortable tables, verdicts, curves and diagrams inline); "
        "latex: a booktabs table (also writes results.tex).",
    ),
    sort: str | None = typer.Option(
        None, "--sort", metavar="METRIC", help="Order rows by METRIC's mean, best first (e.g. fine/acc)."
    ),
    per_seed: bool = typer.Option(False, "--per-seed", help="Also print each row's value per seed."),
    reference: Path | None = typer.Option(
        None,
        "--reference",
        metavar="FILE.csv",
        help="A published table (columns row, metric, value, optional sd, n) shown beside the rows it names.",
    ),
    evaluation: str | None = typer.Option(
        None,
        "--eval",
        metavar="NAME",
        help="With --split test: compare each run's saved evaluation NAME (graphc eval --save NAME).",
    ),
    delta_m: bool = typer.Option(
        False,
        "--delta-m",
        help="Add Δm: each multi-task row against its tasks' single-task rows (graphc derive single-task), "
        "on the test split, per seed, with the paired t-test against 0.",
    ),
    single_task: list[str] | None = typer.Option(
        None,
        "--single-task",
        metavar="TASK=ROW",
        show_default=False,
        help="With --delta-m: the single-task row of TASK (a label, --tag or spec name), where it is not the "
        "derived spec's row; repeatable. Implies --delta-m.",
    ),
) -> None:
    """Compare runs: one row per variant (spec and settings), mean ± sd over seeds, learning curves per metric."""
    from graphc.runtime.report import FORMATS, build_report, render, write_report

    if fmt not in FORMATS:
        raise UsageError(f"--format '{fmt}': expected one of {', '.join(FORMATS)}.")
    result = build_report(
        runs, split=split, epoch=epoch, baseline=baseline, sort=sort, evaluation=evaluation, reference_path=reference
    )
    if delta_m or single_task:
        from graphc.runtime.report.delta_m import add_delta_m, parse_single_task

        add_delta_m(result, parse_single_task(single_task))
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {_escape(warning)}")
    written = write_report(result, out_dir, json_file=fmt == "json", latex_file=fmt == "latex", html_file=fmt == "html")
    if fmt == "latex":
        print(render.render_latex(result), end="")
    elif fmt == "csv":
        print(render.render_csv(result), end="")
    elif fmt == "json":
        print(render.render_json(result))
    else:
        _print_report(result)
    if per_seed:
        (out if fmt in ("md", "html") else err).print(render.per_seed_table(result))
    (out if fmt in ("md", "html") else err).print(f"wrote {', '.join(_escape(str(p)) for p in written)}")


# --------------------------------------------------------------------------- derive


derive_app = typer.Typer(
    help="Specs derived from a spec: the single-task model of each head (for graphc report --delta-m).",
    no_args_is_help=True,
)
app.add_typer(derive_app, name="derive")


@derive_app.command(name="single-task")
@guarded
def derive_single_task(
    spec: Path = typer.Argument(..., help="A multi-task spec (a file or a built-in spec name).", show_default=False),
    out_dir: Path = typer.Option(..., "--out", "-o", help="The folder the specs are written to.", show_default=False),
    tasks: list[str] | None = typer.Option(
        None,
        "--task",
        metavar="TASK",
        show_default=False,
        help="Only this task's model (repeatable); default: every head.",
    ),
) -> None:
    """Write one spec per head, OUT/<spec name>__single_<task>.toml: the head and the nodes it reads, as written
    (templates, repeat, [layers], [data], [train]); cross-task reuse edges removed and named in a note. Train them
    with graphc train, then compare with graphc report RUNS --delta-m."""
    from graphc.ir.derive import single_task_specs, write_single_task

    derivation = single_task_specs(spec, tasks=tasks, out=out_dir)
    written = write_single_task(derivation, out_dir)
    table = Table(title=_escape(f"single-task models of {derivation.spec_name}"), title_justify="left")
    for column in ("task", "file", "parameters", "removed reuse edges"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    original = derivation.original.total_params
    for member, path in zip(derivation.members, written):
        edges = ", ".join(f"{head} -> {reader}" for reader, head in member.removed_reuse) or "-"
        share = f" ({member.graph.total_params / original:.0%})" if original else ""
        table.add_row(_escape(member.task), _escape(str(path)), f"{member.graph.total_params:,}{share}", _escape(edges))
    out.print(table)
    for member in derivation.members:
        for note in member.notes:
            err.print(f"note: {_escape(member.task)}: {_escape(note)}")
    out.print(
        f"wrote {len(written)} specs to {_escape(str(out_dir))}. Train each with the multi-task model's seeds "
        f"(graphc train {_escape(str(out_dir))}/*.toml --seeds N), then graphc report RUNS --split test --delta-m."
    )


# --------------------------------------------------------------------------- train / eval


def train_overrides(params: dict):
    """``graphc train``'s spec overrides (``launch.Overrides``) from its parameters by name (the
    command's own, or those `graphc sweep plan` parses with train's parser)."""
    from graphc.runtime.data.load import validation_limit
    from graphc.runtime.train import launch

    p = params
    return launch.Overrides(
        epochs=p["epochs"],
        batch_size=p["batch_size"],
        lr=p["lr"],
        device=p["device"],
        dataset=p["dataset"],
        data_dir=p["data_dir"],
        limit_train=p["limit_train"],
        limit_val=validation_limit(p["limit_train"], p["limit_val"]),  # --limit-train alone: max(N / 4, 500)
        nproc=p["nproc"],
        limit_test=p["limit_test"],
        no_test=p["no_test"] or None,
        tensorboard=p["tensorboard"] or None,
        tag=p["tag"],
        compile=p["compile_model"] or None,
        diagnostics=p.get("diagnostics") or None,
        init_from=p.get("init_from"),
        init_map=_listed(p.get("init_map")),
        freeze=_listed(p.get("freeze")),
        unfreeze_after=p.get("unfreeze_after"),
    )


def _listed(values: list[str] | None) -> tuple[str, ...] | None:
    """A repeatable option's values, each of which may also list several separated by commas."""
    items = tuple(item.strip() for value in values or () for item in value.split(",") if item.strip())
    return items or None


@app.command()
@guarded
def train(
    specs: list[Path] | None = typer.Argument(
        None,
        metavar="SPEC",
        help="Spec files (or built-in spec names) to train, one after another.",
        show_default=False,
    ),
    seeds: int | None = typer.Option(
        None, "--seeds", min=1, max=MAX_SEED + 1, help="Run N seeds per spec, from the spec's train.seed up."
    ),
    seed: int | None = typer.Option(
        None, "--seed", min=0, max=MAX_SEED, help="Run this one seed (instead of the spec's train.seed)."
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="Override train.epochs (with --resume: the new total)."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, max=MAX_BATCH_SIZE, help="Override train.batch_size."
    ),
    lr: float | None = typer.Option(None, "--lr", help="Override the optimiser's learning rate."),
    device: str | None = typer.Option(
        None, "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps."
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", help="Override data.dataset: cifar100, imagefolder, synthetic."
    ),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Override data.root (where the data set is or goes)."
    ),
    out_dir: Path = typer.Option(
        Path("runs"), "--out", help="Root of the run directories (runs/<spec>/<seed>-<time>/)."
    ),
    limit_train: int | None = typer.Option(
        None, "--limit-train", min=1, max=MAX_IMAGES, help="Train on the first N training images."
    ),
    limit_val: int | None = typer.Option(
        None,
        "--limit-val",
        min=1,
        max=MAX_IMAGES,
        help="Validate on the first N validation images (with --limit-train N alone: max(N / 4, 500)).",
    ),
    limit_test: int | None = typer.Option(
        None,
        "--limit-test",
        min=1,
        max=MAX_IMAGES,
        help="Test best.pt on a random N test images (the same N for every run), not all.",
    ),
    no_test: bool = typer.Option(
        False, "--no-test", help="Skip the final test pass (summary.json then has no test metrics)."
    ),
    tensorboard: bool = typer.Option(
        False,
        "--tensorboard",
        help="Also log for TensorBoard under RUN_DIR/tensorboard (needs the tensorboard package).",
    ),
    tag: str | None = typer.Option(
        None, "--tag", help="Name this variant: graphc report labels its row TAG instead of the settings that differ."
    ),
    resume: Path | None = typer.Option(
        None, "--resume", metavar="RUN_DIR", help="Continue the run in RUN_DIR from its last.pt (no SPEC then)."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress and no estimate: only the per-epoch lines (--progress none)."
    ),
    progress: str = typer.Option(
        "auto",
        "--progress",
        metavar="MODE",
        help="auto, bar, lines or none: progress within an epoch. bar: a live bar; lines: a plain line at most every 30 s (epoch, step, "
        "images/s, elapsed, ETA); none: only the per-epoch lines; auto: the bar on a terminal, lines otherwise (a log, a pipe). "
        "bar and lines also print an estimate of the run's time after its first steps.",
    ),
    nproc: int | None = typer.Option(
        None,
        "--nproc",
        metavar="N",
        show_default=False,
        help="Train each run on N data-parallel processes: one GPU each on CUDA, else CPU processes. "
        "Default 1 (with --resume: the run's own). Across machines, start graphc with torchrun instead (docs/scaling-out.md: Multi-node training).",
    ),
    compile_model: bool = typer.Option(
        False,
        "--compile",
        help="Train through torch.compile ([train] compile = true), checked against eager on the first batch.",
    ),
    diagnostics: bool = typer.Option(
        False,
        "--diagnostics",
        help="Log gradient-conflict diagnostics once per epoch ([train] diagnostics = true): per-task gradient norms "
        "and cosines on shared nodes, readers' shares of reused branches (diag/... metrics; same training otherwise).",
    ),
    init_from: Path | None = typer.Option(
        None,
        "--init-from",
        metavar="RUN_DIR",
        show_default=False,
        help="Start from another run's weights (train.init_from in the spec): a run directory (its best.pt) or a .pt file "
        "(e.g. RUN_DIR/last.pt). Nodes load from the source's node of the same name where every shape fits; "
        "a table says what was loaded and what was skipped, and why.",
    ),
    init_map: list[str] | None = typer.Option(
        None,
        "--init-map",
        metavar="NEW=OLD",
        show_default=False,
        help="With --init-from: load node NEW from the source's node OLD (train.init_map); repeat it or separate pairs by commas.",
    ),
    freeze: list[str] | None = typer.Option(
        None,
        "--freeze",
        metavar="NODE",
        show_default=False,
        help="Freeze these nodes (trainable = false): no gradient updates, batch-norm statistics kept; repeat it or separate names by commas.",
    ),
    unfreeze_after: int | None = typer.Option(
        None,
        "--unfreeze-after",
        min=1,
        metavar="N",
        show_default=False,
        help="Frozen nodes (--freeze and the spec's) join training after N epochs (unfreeze_after = N).",
    ),
    jobs: int | None = typer.Option(
        None,
        "--jobs",
        "-j",
        min=1,
        metavar="K",
        show_default=False,
        help="Run the specs x seeds as a sweep, K runs at a time, each in its own process (one GPU each on CUDA, "
        "else an equal share of the CPU cores); skips runs already finished under --out and resumes interrupted "
        "ones; ends with the report table. Without --jobs: one run after another in this process.",
    ),
    jobs_per_gpu: int | None = typer.Option(
        None,
        "--jobs-per-gpu",
        min=1,
        metavar="M",
        show_default=False,
        help="With --jobs on CUDA: put M runs on each GPU (default 1).",
    ),
) -> None:
    """Train specs: every spec x seed gets a run directory, printed on stdout as it ends.

    Ctrl-C stops after the last completed epoch (exit 130) and prints how to resume; SIGTERM and SIGHUP
    do the same (exit 143 and 129; a SIGHUP ignored with nohup stays ignored).
    With --jobs K the runs train K at a time as a resumable sweep (see `graphc sweep plan` for a cluster).
    """
    from graphc.runtime.collapse import warning_lines
    from graphc.runtime.train import launch, signals

    if lr is not None and not lr > 0:
        raise UsageError(f"--lr must be positive, got {lr}.")
    from graphc.runtime.train.progress import MODES, check_line_interval

    if progress not in MODES:
        raise UsageError(f"--progress '{progress}': expected one of {', '.join(MODES)}.")
    check_line_interval()  # GRAPHC_PROGRESS_INTERVAL: refused before any run directory is made
    overrides = train_overrides(locals())
    if jobs is not None or jobs_per_gpu is not None:
        with signals.stop_signals():  # SIGTERM and SIGHUP stop the sweep as Ctrl-C does (exit 143, 129)
            _sweep(specs or [], jobs, jobs_per_gpu, seeds, seed, overrides, out_dir, resume, quiet)
        return

    def announce(result) -> None:
        summary = result.summary
        test = summary.get("test") or {}
        accs = ", ".join(f"{key[:-4]} {value:.2%}" for key, value in test.items() if key.endswith("/acc"))
        # the headline of the heads without an accuracy: a multilabel head's mAP, a regression head's MAE
        others = [f"{key[:-4]} mAP {value:.2%}" for key, value in test.items() if key.endswith("/map")]
        others += [f"{key[:-4]} MAE {value:.4g}" for key, value in test.items() if key.endswith("/mae")]
        figures = ", ".join(
            ([f"test accuracy {accs}"] if accs else []) + (["test " + ", ".join(others)] if others else [])
        )
        if figures and summary.get("test_limit"):
            figures += f" (on {summary['test_images']:,} test images: --limit-test)"
        err.print(
            f"{result.status.replace('_', ' ')}: epochs {summary['epochs_completed']}, best epoch {summary['best_epoch']}"
            + (f", {figures}" if figures else "")
            + (", test skipped (--no-test)" if summary.get("test_skipped") else "")
            + f" ({summary['wall_time_s']:.1f} s)",
            markup=False,
            highlight=False,
        )
        # Heads no better than a constant answer on the test pass (summary.json "collapsed": runtime/collapse.py).
        for line in warning_lines(str(result.run_dir), summary.get("collapsed") or {}):
            err.print(f"[yellow]warning:[/] {_escape(line)}")
        out.print(printable(str(result.run_dir)), markup=False, highlight=False)

    try:
        with signals.stop_signals():  # SIGTERM and SIGHUP stop training as Ctrl-C does (runtime/train/signals.py)
            results = launch.train_command(
                specs or [],
                seeds=seeds,
                seed=seed,
                overrides=overrides,
                out=out_dir,
                resume=resume,
                quiet=True if quiet else progress,  # a progress mode (runtime/train/progress.py)
                console=err,
                on_result=announce,
            )
    except KeyboardInterrupt:  # outside an epoch (e.g. while loading data): nothing to save
        err.print("interrupted.", markup=False)
        raise typer.Exit(signals.exit_code()) from None
    if results and results[-1].status == "interrupted":
        last = results[-1]
        err.print(
            f"interrupted; {last.run_dir / 'last.pt'} holds the last completed epoch ({last.summary['epochs_completed']}). "
            f"Resume with:\n  {last.resume_command}",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(signals.exit_code())  # 130 after Ctrl-C, 143 after SIGTERM, 129 after SIGHUP
    diverged = [r.problem for r in results if r.status == "diverged"]
    if diverged:
        raise fail("\n".join(map(_escape, diverged)), 1)


def _sweep(specs, jobs, jobs_per_gpu, seeds, seed, overrides, out_dir: Path, resume, quiet: bool) -> None:
    """graphc train --jobs K: the sweep, its failures, and the report table of its runs."""
    from graphc.runtime.collapse import warning_lines
    from graphc.runtime.report import build_report
    from graphc.runtime.train import signals, sweep

    if jobs is None:
        raise UsageError(f"--jobs-per-gpu {jobs_per_gpu} shares GPUs among the runs of a sweep; give --jobs K too.")
    if resume is not None:
        raise UsageError(
            "--jobs runs a sweep of SPEC files; --resume continues one run. Re-run the sweep command to resume its runs."
        )
    try:
        result = sweep.sweep_command(
            specs,
            jobs=jobs or 1,
            jobs_per_gpu=jobs_per_gpu or 1,
            seeds=seeds,
            seed=seed,
            overrides=overrides,
            out=out_dir,
            quiet=quiet,
            console=err,
        )
    except KeyboardInterrupt:  # while planning: nothing started
        err.print("interrupted.", markup=False)
        raise typer.Exit(signals.exit_code()) from None
    for job in result.jobs:  # every run directory of the sweep on stdout, as graphc train prints them
        if job.run_dir is not None:
            out.print(printable(str(job.run_dir)), markup=False, highlight=False)
    if result.run_dirs:
        try:
            report = build_report(result.run_dirs)
        except (RunError, UsageError) as exc:  # e.g. no run completed an epoch: the failures below say why
            err.print(f"no table: {printable(str(exc))}", markup=False, highlight=False)
        else:
            # The table's numbers are validation numbers, whatever its labels say (e.g. [limit_test=1000]).
            out.print(
                "the sweep's runs on the validation split, each at its best epoch (train.select); test numbers: "
                "each run's summary.json, or graphc report --split test",
                markup=False,
                highlight=False,
            )
            _print_report(report)
    for job in result.jobs:  # judged on each run's test pass
        for line in warning_lines(str(job.run_dir), job.collapsed):
            err.print(f"[yellow]warning:[/] {_escape(line)}")
    done = sum(j.state in ("completed", "early_stopped") for j in result.jobs)
    held = sum(j.state == "skipped" and j.error is not None for j in result.jobs)  # another process trains it
    skipped = sum(j.state == "skipped" for j in result.jobs) - held
    err.print(
        f"sweep: {len(result.jobs)} run(s) in {result.wall_s:.1f} s: {done} trained, {skipped} skipped (finished before), "
        + (f"{held} skipped (being trained by another process), " if held else "")
        + f"{len(result.failed)} failed"
        + (", interrupted" if result.interrupted else ""),
        markup=False,
        highlight=False,
    )
    if result.interrupted:
        stopped = [j for j in result.jobs if j.state == "interrupted" and j.run_dir is not None]
        err.print(
            f"interrupted; {len(stopped)} run(s) saved their last completed epoch"
            + "".join(f"\n  {printable(str(j.run_dir))}" for j in stopped)
            + "\nResume the sweep with the same command: it skips the finished runs and resumes these.",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(signals.exit_code())
    if result.failed:
        raise fail(
            "\n".join(
                _escape(f"{j.label} ({j.spec_arg}) {j.state}: {j.error}" + (f" [log: {j.log}]" if j.log else ""))
                for j in result.failed
            ),
            1,
        )


sweep_app = typer.Typer(
    help="Sweeps on a cluster: the runs of a sweep as one `graphc train` command each, for a job queue.",
    no_args_is_help=True,
)
app.add_typer(sweep_app, name="sweep")


@sweep_app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    options_metavar="SPEC... [--seeds N | --seed K] [graphc train's flags] [--json]",
)
@guarded
def plan(
    ctx: typer.Context,
    as_json: bool = typer.Option(
        False,
        "--json",
        help="JSON lines: one object per run (spec, name, seed, command, argv, state, run_dir); "
        "argv is the command as a list, to start without a shell.",
    ),
) -> None:
    """Print one `graphc train` command per run: takes `graphc train`'s SPECs and options
    (`graphc sweep plan specs/*.toml --seeds 3 --epochs 50 --out /shared/runs`).

    Each command is a one-run sweep (--jobs 1): run twice, or after an interruption, it skips or resumes its run
    rather than starting another, so a job queue may retry it. `graphc report OUT` gathers the results.
    Every argument is shell-quoted, so each line is one command for `bash -c` or `eval`; names and paths
    with control characters (newline, carriage return, ...) are refused (exit 2). See docs/scaling-out-safe-plans.md.
    """
    from graphc.runtime.train import sweep

    train_command = typer.main.get_command(app).commands["train"]
    params = train_command.make_context("graphc sweep plan", list(ctx.args)).params
    if params["resume"] is not None:
        raise UsageError("--resume continues one run; sweep plan plans runs of SPEC files.")
    overrides = train_overrides(params)
    jobs = sweep.plan_sweep(
        params["specs"] or [], seeds=params["seeds"], seed=params["seed"], overrides=overrides, out=params["out_dir"]
    )
    for row in sweep.plan_commands(jobs, overrides, params["out_dir"]):
        if as_json:
            print(json.dumps(row))
        else:
            print(row["command"])


@app.command(name="convert-checkpoint")
@guarded
def convert_checkpoint(
    file: Path = typer.Argument(
        ...,
        metavar="FILE",
        help="A graphc 0.1.0 checkpoint (.pt), or a run directory (its last.pt and best.pt).",
        show_default=False,
    ),
    trust: bool = typer.Option(
        False, "--trust", help="Confirm that you trust FILE: reading the old format can run code a crafted file holds."
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", metavar="OUT", help="Write the converted file here (default: replace FILE, atomically)."
    ),
) -> None:
    """Convert a graphc 0.1.0 checkpoint to the current format, which loads without running any code.

    graphc 0.1.0 pickled numpy's random state into its checkpoints, so reading one means full unpickling, which runs whatever code a crafted file holds; graphc refuses such files. If you trust FILE (you made it, or got it from someone you trust), pass --trust: it is read once, its random states are stored as tensors and lists, and it is rewritten atomically in the current format (graphc-checkpoint/2), which every command reads with torch.load(weights_only=True). Resuming from a converted last.pt continues exactly as before.
    """
    from graphc.runtime.runs.checkpoint import CHECKPOINT_FORMAT, convert_checkpoints

    for path, converted in convert_checkpoints(file, output, trust=trust):
        verb = f"converted to {CHECKPOINT_FORMAT}" if converted else f"already {CHECKPOINT_FORMAT}, left as it is"
        out.print(f"{_escape(str(path))}: {verb}")


@app.command(name="eval")
@guarded
def eval_command(
    run_dir: Path = typer.Argument(..., help="A run directory (runs/<spec>/<seed>-<time>/).", show_default=False),
    split: str = typer.Option("val", "--split", help="val or test."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best (best.pt) or last (last.pt)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N, mps."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Where the run's data set is now, if it moved."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    per_class: bool = typer.Option(False, "--per-class", help="Also print each head's accuracy on every class."),
    confusion: Path | None = typer.Option(
        None,
        "--confusion",
        metavar="DIR",
        show_default=False,
        help="Write a confusion-matrix picture per head to DIR (<task>_confusion.png and .svg).",
    ),
    limit_test: int | None = typer.Option(
        None,
        "--limit-test",
        min=1,
        metavar="N",
        show_default=False,
        help="--split test: N random test images (drawn as train --limit-test N draws them) instead of the run's own.",
    ),
    all_images: bool = typer.Option(
        False, "--all", help="--split test: every test image instead of the run's own (its --limit-test subset)."
    ),
    save: str | None = typer.Option(
        None,
        "--save",
        metavar="NAME",
        show_default=False,
        help="Keep this evaluation in the run: RUN/evaluations/NAME/ (evaluation.json and the per-image predictions).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="With --save: replace a saved evaluation of that name."),
) -> None:
    """Evaluate a run's checkpoint on its validation or test split: per-head loss and accuracies, with
    the split's majority-class and balanced (macro-averaged) accuracy to read them against.

    On the test split it evaluates the run's own test images (those of its --limit-test, else all), so it
    reproduces summary.json's test numbers; --limit-test N and --all choose other images."""
    from graphc.runtime.collapse import warning_lines
    from graphc.runtime.evaluate import (
        evaluate_run,
        hierarchy_table,
        metrics_table,
        per_class_tables,
        save_evaluation,
        typed_tables,
    )
    from graphc.runtime.runs.evaluations import check_new

    if overwrite and save is None:
        raise UsageError("--overwrite replaces a saved evaluation; give --save NAME with it.")
    if save is not None:
        check_new(run_dir, save, overwrite)  # a bad or taken name fails before the model runs
    result = evaluate_run(
        run_dir,
        split=split,
        checkpoint=checkpoint,
        device=device,
        data_dir=data_dir,
        confusion_matrix=confusion is not None,  # per-class counts otherwise: O(classes), not classes^2
        limit_test=limit_test,
        all_test=all_images,
    )
    (err if as_json else out).print(_escape(result.described), highlight=False)
    if as_json:
        print(json.dumps(result.to_dict(per_class=per_class), indent=2))
    else:
        for table in [metrics_table(result), *typed_tables(result)]:
            if table is not None:
                out.print(table)
        hierarchies = hierarchy_table(result)
        if hierarchies is not None:
            out.print(hierarchies)
        for table in per_class_tables(result) if per_class else []:
            out.print(table)
    if confusion is not None:
        from graphc.runtime.report.confusion import write_confusion

        try:
            written = write_confusion(result, confusion)
        except OSError as exc:
            raise UsageError(f"--confusion {confusion}: cannot write there ({exc.strerror or exc}).") from None
        (err if as_json else out).print(f"wrote {', '.join(_escape(str(p)) for p in written)}")
    for line in warning_lines(str(run_dir), result.collapsed):
        err.print(f"[yellow]warning:[/] {_escape(line)}")
    if save is not None:
        folder = save_evaluation(result, save)
        (err if as_json else out).print(f"saved {_escape(str(folder))}")


# --------------------------------------------------------------------------- export / predict


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


@app.command()
@guarded
def export(
    spec: Path = typer.Argument(
        ...,
        help="Spec file (or built-in spec name), or a run directory: its own spec copy and best.pt.",
        show_default=False,
    ),
    onnx_file: Path = typer.Option(..., "--onnx", help="Write an ONNX model to this file.", show_default=False),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="Trained weights: a run directory (its best.pt) or a .pt file."
    ),
    opset: int | None = typer.Option(None, "--opset", help="ONNX opset (default: the exporter's)."),
    verify: bool = typer.Option(
        True, "--verify/--no-verify", help="Check ONNX Runtime against PyTorch (batch 1 and 7, plus the run's data)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the export report as JSON."),
) -> None:
    """Export a spec (randomly initialised, or with a run's weights) or a run directory to ONNX, checked and verified.

    The file is written only if it passes onnx.checker and the parity check (logits within 1e-4, same argmax); otherwise exit 1.
    """
    from graphc.backends.onnx import ATOL
    from graphc.runtime.export import export_onnx

    report = export_onnx(spec, onnx_file, checkpoint=checkpoint, opset=opset, verify_model=verify)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        if report.parity:
            table = Table(title=f"ONNX Runtime vs PyTorch (tolerance {ATOL:g} on logits)")
            for column in ("inputs", "head", "max |diff|", "argmax agreement", ""):
                table.add_column(column, justify="right" if column in ("max |diff|", "argmax agreement") else "left")
            for row in report.parity:
                table.add_row(
                    row.inputs,
                    row.task,
                    f"{row.max_abs_diff:.2e}",
                    f"{row.argmax_agreement:.1%}",
                    "[green]ok[/]" if row.ok else f"[bold red]{_escape(row.problem or '')}[/]",
                )
            out.print(table)
        for note in report.notes:
            out.print(f"note: {_escape(note)}")
        weights = report.metadata.get("checkpoint")
        source = (
            f"weights of epoch {weights['epoch']} from {weights['file']}" if weights else report.metadata["weights"]
        )
        kinds = report.metadata.get("heads", {})
        heads = ", ".join(
            f"{t}({_head_kind({'type': kinds.get(t, {}).get('type', 'classification'), 'classes': len(names)})})"
            for t in report.tasks
            for names in [report.metadata["class_names"][t]]
        )
        if report.written:
            out.print(
                f"wrote {_escape(report.path)}: {_size(report.size_bytes)}, opset {report.opset}, "
                f"exported in {report.export_s:.1f} s; spec {_escape(report.spec)}, heads {_escape(heads)}; {_escape(source)}"
                + ("" if report.parity else " [yellow](not verified: --no-verify)[/]")
            )
    if not report.passed:
        raise fail(
            f"the ONNX model does not match PyTorch (see the table); {_escape(report.path)} was not written. "
            "Re-run with --no-verify to write it anyway.",
            1,
        )


@app.command()
@guarded
def predict(
    model: Path = typer.Argument(
        ...,
        help="An exported .onnx file, or a run directory (its spec and best.pt, run with PyTorch).",
        show_default=False,
    ),
    images: list[Path] = typer.Argument(
        ...,
        help="PNG or JPEG images, folders of them (searched recursively) or patterns ('photos/*.jpg').",
        show_default=False,
    ),
    top_k: int = typer.Option(3, "--top-k", "-k", help="Labels to show per head."),
    resize: bool = typer.Option(
        True,
        "--resize/--no-resize",
        help="Resize images of another size to the model's input (bilinear), or reject them.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the predictions as JSON."),
    out_file: Path | None = typer.Option(
        None,
        "--out",
        metavar="FILE.csv|FILE.jsonl",
        help="Write one row per image (path, each head's top class and probability) to this file instead of "
        "printing a table.",
    ),
) -> None:
    """Predict per-head top-k labels with probabilities for image files, folders or patterns."""
    from dataclasses import asdict

    from graphc.runtime.predict import check_out, shown, write_predictions
    from graphc.runtime.predict import predict as run_predict

    if out_file is not None:
        check_out(out_file)  # before any image is read
    say = lambda line: err.print(printable(line), markup=False, highlight=False)  # noqa: E731
    predictor, predictions = run_predict(model, images, top_k=top_k, resize=resize, report=say)
    if out_file is not None:
        write_predictions(out_file, predictor, predictions)
        err.print(f"wrote {len(predictions):,} predictions to {_escape(str(out_file))}")
        return
    if as_json:
        print(
            json.dumps(
                {
                    "model": predictor.source,
                    "runtime": predictor.kind,
                    "input_shape": list(predictor.input_shape),
                    "tasks": predictor.tasks,
                    "predictions": [{**asdict(p.image), "heads": p.heads} for p in predictions],
                },
                indent=2,
            )
        )
        return
    table = Table(title=_escape(f"{predictor.source} ({'ONNX Runtime' if predictor.kind == 'onnx' else 'PyTorch'})"))
    table.add_column("image")
    for task in predictor.tasks:
        table.add_column(_escape(task))
    for p in predictions:
        name = p.image.path + (f" (resized from {p.image.size[1]}x{p.image.size[0]})" if p.image.resized else "")
        # one line per label: each escaped on its own, so a newline in a class name cannot add a line
        cells = ["\n".join(_escape(line) for line in shown(p.heads[task])) for task in predictor.tasks]
        table.add_row(_escape(name), *cells)
    out.print(table)


@app.command()
@guarded
def render(
    specs: list[Path] = typer.Argument(..., help="Spec files to draw.", show_default=False),
    output: str | None = typer.Option(
        None,
        "--output",
        "-o",
        show_default=False,
        help="Output file (several specs: drawn side by side on one page); '-' prints svg, dot or mermaid "
        "to stdout. Default: <spec-stem>.<format> in the current directory, one file per spec.",
    ),
    fmt: str | None = typer.Option(
        None,
        "--format",
        "-f",
        show_default=False,
        help="svg, png, pdf (pictures, drawn with matplotlib) or dot, mermaid (text). Default: from -o's suffix, else svg.",
    ),
    no_shapes: bool = typer.Option(False, "--no-shapes", help="Leave tensor shapes off edges and boxes."),
    direction: str = typer.Option("TB", "--direction", help="TB (inputs at the top) or LR (inputs at the left)."),
    collapse: bool = typer.Option(
        False,
        "--collapse",
        help="Draw each chain of same-kind blocks (one input, one reader, the same heads), and each run of "
        "alike residual units, as one box with a count.",
    ),
    diagnostics: Path | None = typer.Option(
        None,
        "--diagnostics",
        metavar="RUN_DIR",
        show_default=False,
        help="Colour the picture by a run's gradient diagnostics (its last epoch; trained with --diagnostics): "
        "boxes by the lowest cosine between tasks' gradients, reuse edges by the reader's share.",
    ),
) -> None:
    """Draw specs' architecture: shared and reused nodes, shapes, parameter counts. No graphviz needed."""
    import sys

    from graphc.backends.diagram.render import render_specs

    conflict = None
    if diagnostics is not None:
        from graphc.backends.diagram.style import Conflict
        from graphc.runtime.train.diagnostics import last_diagnostics

        epoch, values = last_diagnostics(diagnostics)
        conflict = Conflict.from_metrics(values, f"{diagnostics.name}, epoch {epoch}")
    for result in render_specs(
        specs, output, fmt, direction=direction, shapes=not no_shapes, collapse=collapse, conflict=conflict
    ):
        if result.path is None:
            sys.stdout.write(result.data.decode())
            sys.stdout.flush()
            err.print(f"printed {result.format} ({result.how})")
        else:
            out.print(f"wrote {_escape(str(result.path))} ({result.format}, {result.how})")


# --------------------------------------------------------------------------- branch


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    options_metavar="[OPTIONS] [--train --seeds N --jobs K graphc train's flags]",
)
@guarded
def branch(
    ctx: typer.Context,
    spec: Path = typer.Argument(..., help="A spec where several tasks read a shared path.", show_default=False),
    out_dir: Path = typer.Option(..., "--out", "-o", help="The family's folder (created).", show_default=False),
    max_specs: int = typer.Option(16, "--max-specs", min=2, help="At most this many members."),
    max_params: int | None = typer.Option(
        None,
        "--max-params",
        min=1,
        metavar="P",
        show_default=False,
        help="Leave out members over P trainable parameters.",
    ),
    score: bool = typer.Option(False, "--score", help="Score the family cheaply before training (scores.json)."),
    score_epochs: int | None = typer.Option(
        None, "--score-epochs", min=1, show_default=False, help="--score's epochs."
    ),
    score_images: int | None = typer.Option(
        None, "--score-images", min=1, show_default=False, help="--score's training images."
    ),
    do_train: bool = typer.Option(
        False, "--train", help="Train the family through the sweep (resumable) and rank it on the test split."
    ),
    metric: str | None = typer.Option(
        None, "--metric", show_default=False, help="Rank by this report metric (default: the spec's select metric)."
    ),
    baseline: str = typer.Option("shared", "--baseline", help="Compare with the fully shared or separate member."),
) -> None:
    """Generate the family of branch points of SPEC (where the tasks stop sharing), check it, draw it,
    and with --train train and rank it. graphc train's flags (--seeds, --jobs, --epochs, --limit-train,
    --dataset, --device, ...) follow --train and are passed to the sweep."""
    from graphc.ir.branch import branch_family
    from graphc.runtime.branching import family as branching

    train_command = typer.main.get_command(app).commands["train"]
    if ctx.args and not (do_train or score):
        raise UsageError(f"{' '.join(ctx.args)}: graphc train's flags go with --train or --score.")
    params = train_command.make_context("graphc branch", list(ctx.args)).params
    if params["specs"] or params["resume"] is not None:
        raise UsageError("graphc branch trains the family it writes: give one SPEC before the options, no --resume.")
    overrides = train_overrides(params)
    scoring = None
    if score:
        scoring = branching.Scoring(
            score_epochs or branching.SCORE_EPOCHS,
            score_images or branching.SCORE_IMAGES,
            overrides,
            lambda line: err.print(_escape(line)),
        )
    generated = branch_family(spec, max_specs=max_specs, max_params=max_params, score=scoring)
    written = branching.write_family(generated, out_dir)
    out.print(branching.family_table(generated))
    where: dict[str, list[str]] = {}  # a note -> the members it is about (one line for a note they all share)
    for member in generated.members:
        for note in member.notes:
            where.setdefault(note, []).append(member.file_name)
    member_notes = [
        f"{n} (in {'every member' if len(files) == len(generated.members) else ', '.join(files)})"
        for n, files in where.items()
    ]
    for note in (*generated.notes, *member_notes, f"chosen: {generated.rule}."):
        err.print(f"note: {_escape(note)}")
    out.print(f"wrote {len(written)} files to {_escape(str(out_dir))} (family.json, family.svg, family.png)")
    if scoring is not None:
        rows, recommended, rule = branching.write_scores(scoring, generated, out_dir, max_params)
        written_points = {m.branch_node or "nothing_shared" for m in generated.members if m.kind != "tree"}
        if recommended not in written_points:  # scored and sized, but --max-specs left it out of the folder
            rule += "; it is not among the members written: raise --max-specs to generate it"
        out.print(branching.scores_rich_table(rows))
        out.print(
            f"recommended: {_escape(recommended)} ({_escape(rule)}); wrote {_escape(str(out_dir / 'scores.json'))}"
        )
    if do_train:
        ranking = branching.train_family(
            out_dir,
            generated,
            jobs=params["jobs"] or 1,
            seeds=params["seeds"],
            seed=params["seed"],
            overrides=overrides,
            metric=metric,
            baseline=baseline,
            quiet=params["quiet"],
            console=err,
        )
        _print_report(ranking.report)
        out.print(branching.ranking_table(ranking))


# --------------------------------------------------------------------------- bench


@app.command()
@guarded
def bench(
    spec: Path = typer.Argument(..., help="A spec file (or built-in spec name) to measure.", show_default=False),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N, mps."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=2, max=MAX_BATCH_SIZE, help="Images per batch (default: the spec's)."
    ),
    precision: str = typer.Option(
        "native",
        "--precision",
        help="native: the precisions the device runs natively (fp32, and bf16 on AMX or Ampere and later; "
        "others are skipped, with the reason); all: fp32 and bf16 wherever it runs, emulated too (slow); "
        "or one of fp32, bf16, auto.",
    ),
    compile_model: bool = typer.Option(False, "--compile", help="Also measure training through torch.compile."),
    seconds: float = typer.Option(2.0, "--seconds", help="Seconds of work per figure and round."),
    repeats: int = typer.Option(2, "--repeats", min=1, help="Interleaved rounds; each figure is the best."),
    onnx: bool = typer.Option(
        False, "--onnx/--no-onnx", help="Also measure inference in ONNX Runtime (exports the model first)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the figures as JSON (schema graphc-bench/1, see BENCHMARKS.md)."
    ),
    aggregators: list[str] = typer.Option(
        [],
        "--aggregator",
        help="Also measure the training step with this [train] aggregator (repeatable, or comma-separated) "
        "against the plain summed losses.",
    ),
) -> None:
    """Measure a spec on this machine on synthetic images: training images/s (per precision, memory
    format, eager and compiled), a real epoch vs the bare step, inference (PyTorch; ONNX Runtime with
    --onnx), augmentation, peak memory. Use it to size a sweep; figures on a busy machine: compare ratios.

    By default it measures the precisions the device runs natively and says which it skipped (about a
    minute on 2 CPU cores for a reference spec); --precision all measures emulated bf16 too."""
    import shlex

    from graphc.runtime.bench import bench as measure
    from graphc.runtime.device import resolve_device

    target = resolve_device(device)
    flags = {
        "--device": device,
        "--batch-size": batch_size,
        "--precision": precision,
        "--seconds": seconds,
        "--repeats": repeats,
    }
    command = [
        "graphc",
        "bench",
        str(spec),
        *[str(v) for flag, value in flags.items() for v in (flag, value) if value is not None],
    ]
    command += [flag for flag, on in (("--compile", compile_model), ("--onnx", onnx), ("--json", as_json)) if on]
    names = [n.strip() for value in aggregators for n in value.split(",") if n.strip()]
    command += [v for n in names for v in ("--aggregator", n)]
    result = measure(
        graphc.load_spec(spec),
        target,
        batch_size=batch_size,
        precision=precision,
        compile=compile_model,
        seconds=seconds,
        repeats=repeats,
        onnx=onnx,
        command=shlex.join(command),
        aggregators=names,
    )
    if as_json:
        print(json.dumps(result, indent=2))
        return
    machine = result["machine"]
    out.print(
        f"{result['spec']} on {machine['device']} ({machine['device_name']}; {', '.join(machine['cpu_flags']) or 'no'} "
        f"CPU flags; {machine['threads']} threads), batch {result['batch_size']}; auto picks "
        f"{result['auto']['precision']}, {result['auto']['memory_format']} ({result['auto']['reason']})",
        markup=False,
    )
    for skipped in result.get("skipped", []):
        out.print(f"skipped {skipped['precision']}: {skipped['reason']}", markup=False)
    table = Table(title=f"images/s, best of {result['repeats']} interleaved rounds of {result['seconds']:g} s")
    for column in ("measure", "precision", "memory format", "images/s", "note"):
        table.add_column(column, justify="right" if column == "images/s" else "left")

    def figure(value) -> str:
        return "-" if value is None else f"{value:,.0f}"

    for row in result["training"]:
        note = f"compiled in {row['compile_s']:.0f} s" if row.get("compile_s") else row.get("note", "")
        table.add_row(
            "train" + (" compiled" if row["compiled"] else ""),
            row["precision"],
            row["memory_format"],
            figure(row["images_per_s"]),
            note,
        )
    pipe = result["pipeline"]
    table.add_row(
        "train epoch",
        pipe["precision"],
        pipe["memory_format"],
        figure(pipe["epoch_images_per_s"]),
        f"{pipe['ratio']:.2f}x the bare step ({figure(pipe['step_images_per_s'])})",
    )
    for row in result["inference"]:
        table.add_row(
            f"infer {row['engine']}",
            row["precision"],
            row.get("memory_format", ""),
            figure(row["images_per_s"]),
            row.get("note", row.get("provider", "")),
        )
    table.add_row("augment", "", "", figure(result["augmentation"]["images_per_s"]), result["augmentation"]["preset"])
    for row in result.get("aggregation", []):
        grown = row["step_memory_bytes"]
        table.add_row(
            f"train {row['aggregator']}" if row["aggregator"] != "sum" else "train summed losses",
            row["precision"],
            row["memory_format"],
            figure(row["images_per_s"]),
            f"{row['relative']:.2f}x summed (CPU time per step {row['cpu_relative']:.2f}x)"
            + (f", +{grown / 2**20:,.0f} MiB step peak" if grown is not None else ""),
        )
    out.print(table)
    peak = result["peak_memory"]
    out.print(f"peak memory: {peak['bytes'] / 2**20:,.0f} MiB ({peak['kind'].replace('_', ' ')})", markup=False)


def main() -> None:
    app(prog_name="graphc")


if __name__ == "__main__":
    main()
