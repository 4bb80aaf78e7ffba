"""Large graphs stay usable: a 3,000-node chain renders collapsed and trains at all. How the time
grows with the node count is measured by benchmarks/large_chain.py (7,500 to 60,000 nodes), not
here: the suite has no timed tests."""

from __future__ import annotations

import importlib.util

from graphc.runtime.runs import rundir as runs
from tests.conftest import REPO, invoke, run_dir_of

# the benchmark's own spec generator, so that the test and the benchmark build one graph
_benchmark = importlib.util.spec_from_file_location("large_chain", REPO / "benchmarks" / "large_chain.py")
large_chain = importlib.util.module_from_spec(_benchmark)
_benchmark.loader.exec_module(large_chain)

NODES = 3000


def test_a_3000_node_chain_renders_collapsed_and_trains_8_images(tmp_path):
    spec = tmp_path / "chain.toml"
    spec.write_text(large_chain.chain_spec(NODES))
    invoke("render", spec, "--collapse", "-o", tmp_path / "chain.svg")
    svg = (tmp_path / "chain.svg").read_text()
    assert f"{NODES - 3} × fc_block" in svg  # the chain is one box
    result = invoke(
        "train", spec, "--epochs", "1", "--limit-train", "8", "--limit-val", "8", "--batch-size", "8",
        "--no-test", "--out", tmp_path / "runs", "--quiet",
    )  # fmt: skip
    summary = runs.read_json(run_dir_of(result) / runs.SUMMARY)
    assert summary["status"] == "completed" and summary["epochs_completed"] == 1


def test_collapsing_a_chain_looks_each_link_up_once_instead_of_searching_them_all(monkeypatch):
    """0.2.1 asked `name in links.values()` once per node, a search of every link: quadratic in the
    chain's length (a 60,000-node chain took 89 s to render collapsed). Counted, not timed."""
    import graphc
    from graphc.backends.diagram import collapse

    searches = []

    class CountedValues:
        def __init__(self, values):
            self.values = values

        def __iter__(self):
            return iter(self.values)

        def __len__(self):
            return len(self.values)

        def __contains__(self, item):
            searches.append(item)
            return item in self.values

    class CountedLinks(dict):
        def values(self):
            return CountedValues(super().values())

    real = collapse._links
    monkeypatch.setattr(collapse, "_links", lambda graph: CountedLinks(real(graph)))
    view = collapse.collapse_chains(graphc.build_graph(graphc.parse_spec(large_chain.chain_spec(NODES))))
    assert len(view.nodes) < 10  # the chain became one box
    assert len(searches) <= 1, f"{len(searches)} searches of all the links for {NODES} nodes"
