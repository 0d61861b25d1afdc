"""The feedback-efficiency benchmark keeps each finished run, reused only while its inputs hold."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _benchmark():
    sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location(
        "feedback_efficiency", ROOT / "benchmarks" / "feedback_efficiency.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kept_runs_are_reused_only_while_the_fingerprint_matches(tmp_path, monkeypatch):
    bench = _benchmark()
    monkeypatch.setattr(bench, "RUNS", tmp_path)
    run = {"top10": 0.5, "auc_top10": 0.4, "seconds": 1.0, "seed": 3}
    assert bench.kept_run("harder", "seiko_ucb", 3) is None
    bench.keep_run("harder", "seiko_ucb", 3, run)
    kept = bench.kept_run("harder", "seiko_ucb", 3)
    assert kept["top10"] == 0.5 and kept["fingerprint"] == bench.fingerprint("harder", "seiko_ucb")
    assert bench.kept_run("harder", "seiko_ucb", 4) is None  # another seed: not kept
    # the fingerprint covers the method's config, the task's oracle and the budget
    assert bench.fingerprint("harder", "seiko_ucb") != bench.fingerprint("harder", "greedy")
    assert bench.fingerprint("harder", "seiko_ucb") != bench.fingerprint("qed", "seiko_ucb")
    monkeypatch.setattr(bench, "BUDGET", bench.BUDGET + 1)
    assert bench.kept_run("harder", "seiko_ucb", 3) is None  # inputs changed: run it again
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
