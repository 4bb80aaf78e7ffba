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
def check(specs: List[Path] = typer.Argument(..., help="Spec files to validate.", show_default=False)) -> None:
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
    spec: Path = typer.Argument(..., help="Spec file.", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print the IR as JSON."),
    code: bool = typer.Option(False, "--code", help="Print the generated forward()."),
) -> None:
    """Show a spec's nodes: kind, inputs, output shape, parameters, heads served."""
    graph = graphc.build_graph(graphc.load_spec(spec))
    if as_json:
        print(json.dumps(graph.to_dict(), indent=2))
        return
    if code:
        print(graphc.compile_graph(graph).code.strip())
        return
    table = Table(title=f"{graph.name}: {graph.description}" if graph.description else graph.name)
    for column in ("node", "kind", "inputs", "output", "params", "heads", "sharing"):
        table.add_column(column, justify="right" if column == "params" else "left", no_wrap=column != "inputs")
    order = {task: i for i, task in enumerate(graph.tasks)}
    for node in graph:
        sharing = ""
        if node.is_hard_shared:
            sharing = "[bold magenta]shared[/]"
        if node.reused_by:
            sharing = f"[cyan]reused by {', '.join(sorted(node.reused_by, key=order.get))}[/]"
        table.add_row(
            node.name,
            node.kind,
            ", ".join(node.inputs),
            "x".join(map(str, node.shape)),
            f"{node.num_params:,}",
            ", ".join(sorted(node.direct_heads, key=order.get)),
            sharing,
        )
    out.print(table)
    total = graph.total_params or 1
    out.print(
        f"total parameters: {graph.total_params:,}; serving more than one head: {graph.shared_params:,} "
        f"({graph.shared_params / total:.1%}), of which hard-shared: {graph.hard_shared_params:,} "
        f"({graph.hard_shared_params / total:.1%}); heads: {_heads_summary(graph)}"
    )


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
    from runtime import report as reporting

    if fmt not in reporting.FORMATS:
        raise UsageError(f"--format '{fmt}': expected one of {', '.join(reporting.FORMATS)}.")
    result = reporting.build_report(runs, split=split, epoch=epoch, baseline=baseline)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {_escape(warning)}")
    written = reporting.write_report(result, out_dir, json_file=fmt == "json")
    if fmt == "csv":
        print(reporting.render_csv(result), end="")
    elif fmt == "json":
        print(reporting.render_json(result))
    else:
        out.print(reporting.rich_table(result))
        for note in result.notes:
            out.print(_escape(note))
    (out if fmt == "md" else err).print(f"wrote {', '.join(_escape(str(p)) for p in written)}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
