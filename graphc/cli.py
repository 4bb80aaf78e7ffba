"""The ``graphc`` command line: typer + rich, thin over the public API.

Exit codes: 0 success, 2 spec or usage error, 1 runtime failure (missing
data, failed parity check, ...). Bad input never prints a traceback.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

import graphc
from graphc.errors import RunError, SpecError, UsageError

app = typer.Typer(
    name="graphc",
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
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    return typer.Exit(code)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def guarded(command: Callable) -> Callable:
    """Turn graphc's exceptions into one clear message and the right exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SpecError as exc:
            raise fail(_escape(str(exc)), 2) from None
        except UsageError as exc:
            raise fail(_escape(str(exc)), 2) from None
        except RunError as exc:
            raise fail(_escape(str(exc)), 1) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        out.print(f"graphc {graphc.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """graphc: TOML graph specs -> validated IR -> PyTorch modules."""


# --------------------------------------------------------------------------- check / show / schema


def _heads_summary(graph: graphc.Graph) -> str:
    return ", ".join(f"{h.attrs['task']}({h.attrs['classes']})" for h in graph.heads)


@app.command()
def check(specs: List[Path] = typer.Argument(..., help="Spec files (or built-in spec names) to validate.", show_default=False)) -> None:
    """Validate specs: one line each (name, heads, parameters); exit 2 if any is invalid."""
    failed = 0
    for path in specs:
        try:
            graph = graphc.build_graph(graphc.load_spec(path))
        except SpecError as exc:
            failed += 1
            err.print(f"[bold red]invalid[/] {_escape(str(path))}")
            err.print(str(exc), markup=False)
            continue
        out.print(
            f"[green]ok[/] {_escape(str(path))}: {graph.name}, heads {_heads_summary(graph)}, "
            f"{graph.total_params:,} parameters"
        )
    if failed:
        raise typer.Exit(2)


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
    for column in ("node", "kind", "inputs", "output", "params", "heads", "sharing"):
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
        )
    out.print(table)
    total = graph.total_params or 1
    out.print(
        f"total parameters: {graph.total_params:,}; serving more than one head: {graph.shared_params:,} "
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


@app.command()
@guarded
def report(
    runs: List[Path] = typer.Argument(
        ..., help="Run directories, or directories holding runs (e.g. runs/).", show_default=False
    ),
    out_dir: Path = typer.Option(Path("report"), "-o", "--out", help="Where results.md/.csv/.json and the plots go."),
    split: str = typer.Option("val", "--split", help="val: validation metrics; test: summary.json 'test'."),
    epoch: str = typer.Option("best", "--epoch", help="val split: each run's best epoch (train.select) or its last."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Spec name to show differences against."),
    fmt: str = typer.Option("md", "--format", help="What to print: md (a table), csv or json (also writes results.json)."),
) -> None:
    """Compare runs: one row per spec, mean ± sd over seeds, learning curves per head."""
    from runtime.report import render
    from runtime.report import FORMATS, build_report, write_report

    if fmt not in FORMATS:
        raise UsageError(f"--format '{fmt}': expected one of {', '.join(FORMATS)}.")
    result = build_report(runs, split=split, epoch=epoch, baseline=baseline)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {_escape(warning)}")
    written = write_report(result, out_dir, json_file=fmt == "json")
    if fmt == "csv":
        print(render.render_csv(result), end="")
    elif fmt == "json":
        print(render.render_json(result))
    else:
        out.print(render.rich_table(result))
        for note in result.notes:
            out.print(_escape(note))
    (out if fmt == "md" else err).print(f"wrote {', '.join(_escape(str(p)) for p in written)}")


# --------------------------------------------------------------------------- train / eval


@app.command()
@guarded
def train(
    specs: Optional[List[Path]] = typer.Argument(
        None, metavar="SPEC", help="Spec files (or built-in spec names) to train, one after another.", show_default=False
    ),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="Run N seeds per spec, from the spec's train.seed up."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Run this one seed (instead of the spec's train.seed)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Override train.epochs (with --resume: the new total)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Override train.batch_size."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Override the optimiser's learning rate."),
    device: Optional[str] = typer.Option(None, "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Override data.dataset: cifar100, imagefolder, synthetic."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Override data.root (where the data set is or goes)."),
    out_dir: Path = typer.Option(Path("runs"), "--out", help="Root of the run directories (runs/<spec>/<seed>-<time>/)."),
    limit_train: Optional[int] = typer.Option(None, "--limit-train", min=1, help="Train on the first N training images."),
    limit_val: Optional[int] = typer.Option(None, "--limit-val", min=1, help="Validate on the first N validation images."),
    resume: Optional[Path] = typer.Option(
        None, "--resume", metavar="RUN_DIR", help="Continue the run in RUN_DIR from its last.pt (no SPEC then)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar: only the per-epoch lines (for logs)."),
    nproc: Optional[int] = typer.Option(
        None, "--nproc", metavar="N", show_default=False,
        help="Train each run on N data-parallel processes: one GPU each on CUDA, else CPU processes. "
        "Default 1 (with --resume: the run's own).",
    ),
) -> None:
    """Train specs: every spec x seed gets a run directory, printed on stdout as it ends.

    Ctrl-C stops after the last completed epoch (exit 130) and prints how to resume.
    """
    from runtime.train import launch

    if lr is not None and not lr > 0:
        raise UsageError(f"--lr must be positive, got {lr}.")
    overrides = launch.Overrides(
        epochs=epochs, batch_size=batch_size, lr=lr, device=device, dataset=dataset,
        data_dir=data_dir, limit_train=limit_train, limit_val=limit_val, nproc=nproc,
    )

    def announce(result) -> None:
        summary = result.summary
        test = summary.get("test") or {}
        accs = ", ".join(f"{key[:-4]} {value:.2%}" for key, value in test.items() if key.endswith("/acc"))
        err.print(
            f"{result.status.replace('_', ' ')}: epochs {summary['epochs_completed']}, best epoch {summary['best_epoch']}"
            + (f", test accuracy {accs}" if accs else "")
            + f" ({summary['wall_time_s']:.1f} s)",
            markup=False, highlight=False,
        )
        out.print(str(result.run_dir), markup=False, highlight=False)

    try:
        results = launch.train_command(
            specs or [], seeds=seeds, seed=seed, overrides=overrides, out=out_dir, resume=resume,
            quiet=quiet, console=err, on_result=announce,
        )
    except KeyboardInterrupt:  # outside an epoch (e.g. while loading data): nothing to save
        err.print("interrupted.", markup=False)
        raise typer.Exit(130) from None
    if results and results[-1].status == "interrupted":
        last = results[-1]
        err.print(
            f"interrupted; {last.run_dir / 'last.pt'} holds the last completed epoch ({last.summary['epochs_completed']}). "
            f"Resume with:\n  {last.resume_command}",
            markup=False, highlight=False,
        )
        raise typer.Exit(130)


@app.command(name="eval")
@guarded
def eval_command(
    run_dir: Path = typer.Argument(..., help="A run directory (runs/<spec>/<seed>-<time>/).", show_default=False),
    split: str = typer.Option("val", "--split", help="val or test."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best (best.pt) or last (last.pt)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N, mps."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where the run's data set is now, if it moved."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Evaluate a run's checkpoint on its validation or test split: per-head loss and accuracies."""
    from runtime.evaluate import evaluate_run, metrics_table

    result = evaluate_run(run_dir, split=split, checkpoint=checkpoint, device=device, data_dir=data_dir)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        out.print(metrics_table(result))


# --------------------------------------------------------------------------- export / predict


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


@app.command()
@guarded
def export(
    spec: Path = typer.Argument(..., help="Spec file.", show_default=False),
    onnx_file: Path = typer.Option(..., "--onnx", help="Write an ONNX model to this file.", show_default=False),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Trained weights: a run directory (its best.pt) or a .pt file."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default: the exporter's)."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check ONNX Runtime against PyTorch (batch 1 and 7, plus the run's data)."),
    as_json: bool = typer.Option(False, "--json", help="Print the export report as JSON."),
) -> None:
    """Export a spec (randomly initialised, or with a run's weights) to ONNX, checked and verified.

    The file is written only if it passes onnx.checker and the parity check (logits within 1e-4, same argmax); otherwise exit 1.
    """
    from graphc.backends.onnx import ATOL
    from runtime.export import export_onnx

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
                    row.inputs, row.task, f"{row.max_abs_diff:.2e}", f"{row.argmax_agreement:.1%}",
                    "[green]ok[/]" if row.ok else f"[bold red]{_escape(row.problem or '')}[/]",
                )
            out.print(table)
        for note in report.notes:
            out.print(f"note: {_escape(note)}")
        weights = report.metadata.get("checkpoint")
        source = f"weights of epoch {weights['epoch']} from {weights['file']}" if weights else report.metadata["weights"]
        heads = ", ".join(f"{t}({len(report.metadata['class_names'][t])})" for t in report.tasks)
        if report.written:
            out.print(
                f"wrote {_escape(report.path)}: {_size(report.size_bytes)}, opset {report.opset}, "
                f"exported in {report.export_s:.1f} s; spec {report.spec}, heads {heads}; {_escape(source)}"
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
    model: Path = typer.Argument(..., help="An exported .onnx file, or a run directory (its spec and best.pt, run with PyTorch).", show_default=False),
    images: List[Path] = typer.Argument(..., help="PNG or JPEG images.", show_default=False),
    top_k: int = typer.Option(3, "--top-k", "-k", help="Labels to show per head."),
    resize: bool = typer.Option(True, "--resize/--no-resize", help="Resize images of another size to the model's input (bilinear), or reject them."),
    as_json: bool = typer.Option(False, "--json", help="Print the predictions as JSON."),
) -> None:
    """Predict per-head top-k labels with probabilities for image files."""
    from dataclasses import asdict

    from runtime.predict import predict as run_predict

    predictor, predictions = run_predict(model, images, top_k=top_k, resize=resize)
    if as_json:
        print(json.dumps({
            "model": predictor.source, "runtime": predictor.kind, "input_shape": list(predictor.input_shape),
            "tasks": predictor.tasks, "predictions": [{**asdict(p.image), "heads": p.heads} for p in predictions],
        }, indent=2))
        return
    table = Table(title=f"{predictor.source} ({'ONNX Runtime' if predictor.kind == 'onnx' else 'PyTorch'})")
    table.add_column("image")
    for task in predictor.tasks:
        table.add_column(task)
    for p in predictions:
        name = p.image.path + (f" (resized from {p.image.size[1]}x{p.image.size[0]})" if p.image.resized else "")
        cells = ["\n".join(f"{c['label']} {c['probability']:.1%}" for c in p.heads[task]) for task in predictor.tasks]
        table.add_row(_escape(name), *map(_escape, cells))
    out.print(table)


@app.command()
@guarded
def render(
    specs: List[Path] = typer.Argument(..., help="Spec files to draw.", show_default=False),
    output: Optional[str] = typer.Option(
        None, "--output", "-o", show_default=False,
        help="Output file (several specs: drawn side by side on one page); '-' prints svg, dot or mermaid "
        "to stdout. Default: <spec-stem>.<format> in the current directory, one file per spec.",
    ),
    fmt: Optional[str] = typer.Option(
        None, "--format", "-f", show_default=False,
        help="svg, png, pdf (pictures, drawn with matplotlib) or dot, mermaid (text). Default: from -o's suffix, else svg.",
    ),
    no_shapes: bool = typer.Option(False, "--no-shapes", help="Leave tensor shapes off edges and boxes."),
    direction: str = typer.Option("TB", "--direction", help="TB (inputs at the top) or LR (inputs at the left)."),
) -> None:
    """Draw specs' architecture: shared and reused nodes, shapes, parameter counts. No graphviz needed."""
    import sys

    from graphc.backends.diagram.render import render_specs

    for result in render_specs(specs, output, fmt, direction=direction, shapes=not no_shapes):
        if result.path is None:
            sys.stdout.write(result.data.decode())
            sys.stdout.flush()
            err.print(f"printed {result.format} ({result.how})")
        else:
            out.print(f"wrote {_escape(str(result.path))} ({result.format}, {result.how})")


def main() -> None:
    app(prog_name="graphc")


if __name__ == "__main__":
    main()
