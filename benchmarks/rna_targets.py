"""How hard is each shipped tRNA structure as a design target for the training data themselves?

The RNA task asks for sequences whose ViennaRNA MFE structure matches a target dot-bracket
structure (``seiko.oracles.rna.StructureMatch``: 1 - base-pair distance / length, NaN unless the
design has the target's length). A target that many training tRNAs already fold into exactly is
solved by the data: random training picks reach 1.0 and no method can beat them. This script
folds every tRNA of the RNA prior's training split once and, for each target structure in
``data/rna_trna1415_with_structure.tsv.gz`` whose length has at least ``--min-count`` training
sequences, reports the best and mean structure match of the training sequences of that length
(the target's own sequence, and copies of it, left out) and how many reach 0.95.

``OMP_NUM_THREADS=1 python benchmarks/rna_targets.py`` writes ``benchmarks/results/rna_targets.md``
and ``.json``: the hardest targets first, and the task's own target for reference.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import statistics
from collections import defaultdict
from pathlib import Path

import RNA

from feedback_efficiency import ROOT, task_spec, training_designs

RESULTS = Path(__file__).parent / "results"
TARGETS = ROOT / "data" / "rna_trna1415_with_structure.tsv.gz"


def structure_match(structure: str, target: str) -> float:
    """1 - base-pair distance / length, as ``StructureMatch`` scores an MFE structure."""
    return 1.0 - RNA.bp_distance(structure, target) / len(target)


def measure(min_count: int) -> list[dict]:
    """One row per target whose length has >= ``min_count`` training sequences, hardest first."""
    training = [s for s in training_designs("trna_structure")]
    by_length: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for sequence in training:
        by_length[len(sequence)].append((sequence, RNA.fold(sequence)[0]))
    with gzip.open(TARGETS, "rt") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    result = []
    for row in rows:
        target, own = row["structure"], row["seq"]
        pool = [fold for sequence, fold in by_length[len(target)] if sequence != own]
        if len(pool) < min_count:
            continue
        scores = [structure_match(fold, target) for fold in pool]
        result.append(
            {
                "id": row["id"],
                "length": len(target),
                "structure": target,
                "n": len(pool),
                "best": max(scores),
                "mean": statistics.fmean(scores),
                "at_least_0.95": sum(s >= 0.95 for s in scores),
            }
        )
    return sorted(result, key=lambda r: (r["best"], r["mean"]))


def report(rows: list[dict], task_target: str, shown: int) -> str:
    best = sorted(r["best"] for r in rows)
    solved = sum(b >= 0.999 for b in best)
    lines = [
        "# tRNA structures as design targets: what the training data already reach",
        "",
        f"`OMP_NUM_THREADS=1 python benchmarks/rna_targets.py`. {len(rows)} target structures "
        "(lengths with enough training tRNAs); for each, the training tRNAs of its length "
        "(the RNA prior's training split, the target's own sequence left out) folded by "
        "ViennaRNA and scored with the structure match 1 - bp distance / length.",
        "",
        f"Targets that some training tRNA folds into exactly: {solved} of {len(rows)}; median "
        f"best match {statistics.median(best):.3f}, 10th percentile "
        f"{best[len(best) // 10]:.3f}.",
        "",
        "| target | length | training seqs | best match | mean match | >= 0.95 | structure |",
        "|---|---|---|---|---|---|---|",
    ]
    task_rows = [r for r in rows if r["id"] == task_target]
    for r in rows[:shown] + [r for r in task_rows if r not in rows[:shown]]:
        mark = " (the task's target)" if r["id"] == task_target else ""
        lines.append(
            f"| {r['id']}{mark} | {r['length']} | {r['n']} | {r['best']:.3f} | {r['mean']:.3f} "
            f"| {r['at_least_0.95']} | `{r['structure']}` |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-count", type=int, default=50)
    parser.add_argument("--shown", type=int, default=12)
    args = parser.parse_args()
    rows = measure(args.min_count)
    task_target = str(task_spec("trna_structure")["oracle"]["init_args"]["target_id"])
    text = report(rows, task_target, args.shown)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rna_targets.md").write_text(text)
    (RESULTS / "rna_targets.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
