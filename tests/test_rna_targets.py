"""benchmarks/rna_targets.py: the RNA task targets a structure the training tRNAs lack."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from script_loader import load_script  # noqa: E402


def _script():
    return load_script("benchmarks/rna_targets.py")


def test_structure_match_is_one_minus_the_base_pair_distance_per_position():
    script = _script()
    assert script.structure_match("((..))", "((..))") == 1.0
    # one pair of three missing: d_bp = 1 over 8 positions
    assert script.structure_match("((....))", "(((..)))") == 1 - 1 / 8


def test_the_task_target_is_hard_for_the_training_data_and_the_old_one_was_not():
    script = _script()
    rows = {r["id"]: r for r in script.measure(min_count=50)}
    task = script.task_spec("trna_structure")["oracle"]["init_args"]["target_id"]
    assert task == "DA1543"
    assert rows[task]["best"] < 0.7 and rows[task]["at_least_0.95"] == 0 and rows[task]["n"] > 100
    # DA0580, the former target: training tRNAs fold into it exactly
    assert rows["DA0580"]["best"] == 1.0 and rows["DA0580"]["at_least_0.95"] > 10
    text = script.report(sorted(rows.values(), key=lambda r: r["best"]), task, shown=3)
    assert "DA1543 (the task's target)" in text
