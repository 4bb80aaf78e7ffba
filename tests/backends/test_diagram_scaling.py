"""graphc render of wide graphs: label placement looks only near each label, and a graph too wide
for a legible picture gets a clear message instead of a picture metres wide.

Speed itself is measured by benchmarks/render_scaling.py; here the work is counted (collision
tests per label, which a check of every label against every edge makes grow with the graph)
and the placement is compared with the exhaustive check it replaces.
"""

from __future__ import annotations

import importlib.util

import pytest
from typer.testing import CliRunner

import graphc
from graphc.backends.diagram import draw
from graphc.backends.diagram.scene import Grid, Rect
from graphc.backends.diagram.style import node_text
from graphc.cli import app
from graphc.errors import UsageError
from tests.conftest import REPO, clean_exit

# the benchmark's own spec generator, so that the test and the benchmark measure one graph
_benchmark = importlib.util.spec_from_file_location("render_scaling", REPO / "benchmarks" / "render_scaling.py")
render_scaling = importlib.util.module_from_spec(_benchmark)
_benchmark.loader.exec_module(render_scaling)
wide_spec = render_scaling.wide_spec

runner = CliRunner()
REFERENCE = ["independent", "shared_conv", "reuse_coarse", "reuse_fine", "shared_reuse_coarse", "shared_reuse_fine"]


def wide(branches: int) -> graphc.Graph:
    return graphc.build_graph(graphc.parse_spec(wide_spec(branches)))


def crosses_calls(monkeypatch, graph: graphc.Graph) -> int:
    """How many label-against-edge-piece tests one layout of ``graph`` makes."""
    calls = 0
    real = draw.crosses

    def counting(*args):
        nonlocal calls
        calls += 1
        return real(*args)

    monkeypatch.setattr(draw, "crosses", counting)
    draw._panel(graph, "p", "TB", True, 0.0)
    monkeypatch.setattr(draw, "crosses", real)
    return calls


def test_label_tests_grow_linearly_with_the_fan(monkeypatch):
    # Each label is tested against the edge pieces near it only: doubling the branches about
    # doubles the tests (it quadrupled when every label was tested against every edge).
    small, large = crosses_calls(monkeypatch, wide(30)), crosses_calls(monkeypatch, wide(60))
    assert large / small < 3.0, (small, large)
    assert large / (2 * 60) < 60  # tests per label stay a few dozen (about 5,000 before, at 60 branches)


@pytest.mark.parametrize("spec", [*REFERENCE, "wide_12", "wide_40"])
@pytest.mark.parametrize("direction", ["TB", "LR"])
def test_grid_places_labels_exactly_as_checking_everything(spec, direction, monkeypatch):
    graph = wide(int(spec.split("_")[1])) if spec.startswith("wide_") else graphc.build_graph(graphc.load_spec(spec))
    fast = draw.page([graph], direction)
    monkeypatch.setattr(Grid, "near", lambda self, rect, margin=0.0: list(self.things))  # every thing on the page
    exhaustive = draw.page([graph], direction)
    assert fast.texts == exhaustive.texts and fast.edge_label_rects == exhaustive.edge_label_rects
    assert fast.width == exhaustive.width and fast.height == exhaustive.height


def test_grid_finds_every_thing_that_meets_a_rectangle():
    grid = Grid(cell=10.0)
    things = [Rect(0, 0, 5, 5), Rect(9.9, 9.9, 10, 10), Rect(-25, 3, -21, 4), Rect(100, 100, 300, 101)]
    for rect in things:
        grid.add_rect(rect)
    assert set(grid.near(Rect(10, 10, 11, 11))) == {things[1]}  # touching corners share a cell
    assert set(grid.near(Rect(-20, 3, -19, 4), margin=1.0)) == {things[2]}
    assert set(grid.near(Rect(250, 90, 251, 99), margin=1.0)) == {things[3]}
    assert grid.near(Rect(50, 50, 60, 60)) == []


def test_many_concat_inputs_are_summed_up_in_short():
    graph = wide(500)
    assert node_text(graph, graph["join"]).details[0] == "features 500 × 4"
    assert node_text(wide(3), wide(3)["join"]).details[0] == "features 4 + 4 + 4"


def test_too_wide_for_a_picture_is_refused_with_a_pointer_to_text_formats(write_spec, tmp_path, monkeypatch):
    with pytest.raises(UsageError, match=r"201 boxes side by side in one rank.*--format dot .*--format mermaid"):
        draw.check_legible([wide(201)])
    draw.check_legible([wide(200)])  # at the limit: drawn
    monkeypatch.setenv("GRAPHC_MAX_RANK_BOXES", "201")  # for someone who wants the picture all the same
    draw.check_legible([wide(201)])
    monkeypatch.delenv("GRAPHC_MAX_RANK_BOXES")

    monkeypatch.setattr(draw, "MAX_RANK_BOXES", 5)  # the CLI path, without drawing 200 boxes
    monkeypatch.chdir(tmp_path)
    six, five = write_spec(wide_spec(6), "six"), write_spec(wide_spec(5), "five")
    refused = runner.invoke(app, ["render", str(six), "-o", "six.svg"])
    assert refused.exit_code == 2 and clean_exit(refused) and "Traceback" not in refused.output
    assert "spec 'wide_6' has 6 boxes side by side in one rank" in refused.stderr
    assert not (tmp_path / "six.svg").exists()
    for fmt in ("dot", "mermaid"):  # the text formats have no such limit
        result = runner.invoke(app, ["render", str(six), "--format", fmt, "-o", f"six.{fmt}"])
        assert result.exit_code == 0, result.output
    drawn = runner.invoke(app, ["render", str(five), "-o", "five.svg"])
    assert drawn.exit_code == 0 and (tmp_path / "five.svg").stat().st_size > 0
