"""Spearman correlation between each cheap score of a branched family and its trained result.

    python benchmarks/branching/correlate.py FAMILY_DIR

Reads FAMILY_DIR/family.json (members and their branch points), scores.json (graphc branch --score)
and ranking.json (graphc branch --train). The scores are per branch point, so the members compared
are those with one: nothing shared, each plain branch point and everything shared (branch trees
have no score of their own). Prints the trained ranking, the ranking by each score and
scipy.stats.spearmanr between each score and the trained mean metric, with n.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scipy.stats import spearmanr


def main(folder: Path) -> None:
    family = json.loads((folder / "family.json").read_text())
    scores = json.loads((folder / "scores.json").read_text())
    ranking = json.loads((folder / "ranking.json").read_text())
    metric = ranking.get("metric")
    trained = {row["name"]: row for row in ranking["rows"]}
    by_point = {c["branch_point"]: c["score"] for c in scores["candidates"]}
    rows = []
    for member in family["members"]:
        if member["kind"] not in ("separate", "branch", "shared") or member["name"] not in trained:
            continue
        result = trained[member["name"]]
        rows.append(
            (
                member["name"],
                member["branch_node"],
                result["mean"],
                result.get("seeds"),
                by_point.get(member["branch_node"], {}),
            )
        )
    print(f"{folder}: {metric} on the test split, mean over seeds (n seeds each)")
    for name, point, mean, n, _ in sorted(rows, key=lambda r: -r[2]):
        print(f"  {mean:.4f} (n={n})  {name}  (branch point {point})")
    print(f"cheap scores: {scores['time_s']:.1f} s; recommended: {scores.get('recommended')}")
    for key in ("similarity", "affinity", "conflict_kept", "conflict_split"):
        pairs = [(r[4].get(key), r[2]) for r in rows if r[4].get(key) is not None]
        if len(pairs) < 3:
            print(f"  {key}: {len(pairs)} members scored, too few for a correlation")
            continue
        rho, p = spearmanr([a for a, _ in pairs], [b for _, b in pairs])
        print(f"  {key}: Spearman rho {rho:+.3f} (p {p:.3f}, n {len(pairs)} members)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
