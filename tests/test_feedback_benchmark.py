"""The feedback-efficiency benchmark keeps each finished run, reused only while its inputs hold."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from script_loader import ROOT, load_script  # noqa: E402


def _benchmark():
    return load_script("benchmarks/feedback_efficiency.py")


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
    spec = bench.task_spec("harder")
    monkeypatch.setattr(bench, "task_spec", lambda task: {**spec, "budget": spec["budget"] + 1})
    assert bench.kept_run("harder", "seiko_ucb", 3) is None  # inputs changed: run it again
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
    monkeypatch.undo()
    # a baseline kept from before the final-generator measure gets it from its first values
    monkeypatch.setattr(bench, "RUNS", tmp_path)
    monkeypatch.setattr(bench, "FINAL_SAMPLES", 2)
    bench.keep_run("harder", "best_of_n", 0, {**run, "values": [0.1, float("nan"), 0.9]})
    assert bench.kept_run("harder", "best_of_n", 0)["final_mean"] == pytest.approx(0.1)
    assert bench.kept_run("harder", "best_of_n", 0)["final_validity"] == 0.5


def test_a_new_run_never_reads_an_earlier_runs_feedback_store(tmp_path, monkeypatch):
    """An earlier invocation's store in the run directory (same --out, other settings or
    --rerun) would make the new run find its budget spent and report the old answers: the
    directory is moved aside, answers kept, and the new run starts on an empty one."""
    from seiko.oracles.store import FeedbackStore

    bench = _benchmark()
    root = tmp_path / "harder_greedy_0"
    root.mkdir()
    FeedbackStore(root / "feedback.sqlite").close()
    (root / "marker").write_text("earlier")
    seen = {}

    class StopRunError(Exception):
        pass

    def fake_cli(argv):
        seen["store_there"] = (root / "feedback.sqlite").exists()
        seen["config"] = Path(argv[-1]).exists()
        raise StopRunError

    monkeypatch.setattr(bench, "build_cli", fake_cli)
    with pytest.raises(StopRunError):
        bench.run_method("harder", "greedy", 0, tmp_path)
    assert seen == {"store_there": False, "config": True}
    moved = tmp_path / "harder_greedy_0.earlier-1"
    assert (moved / "feedback.sqlite").exists() and (moved / "marker").read_text() == "earlier"
    # a second earlier run gets the next free name; a directory without a store stays put
    FeedbackStore(root / "feedback.sqlite").close()
    assert bench.set_aside_earlier_run(root) == tmp_path / "harder_greedy_0.earlier-2"
    (tmp_path / "empty").mkdir()
    assert bench.set_aside_earlier_run(tmp_path / "empty") is None
    assert (tmp_path / "empty").is_dir()


def test_every_task_reads_its_oracle_budget_and_prior_from_its_configs():
    bench = _benchmark()
    for task in bench.TASK_DIRS:
        spec = bench.task_spec(task)
        assert spec["budget"] > 0 and (ROOT / spec["prior"]).is_file(), task
        assert (ROOT / bench.training_data(task)["init_args"]["path"]).is_file(), task
        for method in bench.ALL_METHODS:
            if method not in ("best_of_n", "training_set"):
                assert bench.config_path(task, method).is_file(), (task, method)
    assert bench.fingerprint("mnist_incompressible3", "seiko_ucb") != bench.fingerprint(
        "mnist_digit3", "seiko_ucb"
    )


def test_training_set_picks_of_images_are_measured_and_keyed_as_the_online_loop_keys_them(
    monkeypatch,
):
    bench = _benchmark()
    from seiko.lightning_modules.images import image_from_key

    designs = bench.training_designs("mnist_digit3")
    assert len(designs) == 4000 and designs[0].dtype == torch.uint8
    spec = bench.task_spec("mnist_digit3")
    monkeypatch.setattr(bench, "task_spec", lambda task: {**spec, "budget": 40})
    run = bench.run_training_set("mnist_digit3", seed=0)
    assert run["calls"] == 40 and run["validity"] == 1.0
    assert 0.0 <= run["top10"] <= 1.0 and 0.0 < run["diversity"] < 1.0
    # the digits are real: about one in ten is a confident 3
    # the data are the "final generator" of this baseline: its first picks' mean
    assert run["final_mean"] == pytest.approx(sum(run["values"]) / 40)
    assert run["final_validity"] == 1.0
    values = sorted(run["values"], reverse=True)
    assert values[0] > 0.9 and values[len(values) // 2] < 0.5
    assert image_from_key(bench.image_key_of(designs[0])).size == (28, 28)


def test_the_final_generator_is_measured_on_fresh_seeded_samples(monkeypatch):
    bench = _benchmark()
    monkeypatch.setattr(bench, "FINAL_SAMPLES", 12)
    prior = bench._prior("harder")
    first = bench.final_generator("harder", prior, seed=0)
    assert 0.0 < first["final_mean"] < 1.0 and 0.0 < first["final_validity"] <= 1.0
    assert bench.final_generator("harder", prior, seed=0) == first  # seeded
    assert bench.final_generator("harder", prior, seed=1) != first
    # infeasible designs are left out of the mean and counted as invalid
    summary = bench.final_summary(torch.tensor([0.2, float("nan"), 0.4, float("nan")]))
    assert summary == {"final_mean": pytest.approx(0.3), "final_validity": 0.5}
    assert bench.final_summary(torch.tensor([float("nan")]))["final_validity"] == 0.0


def test_the_table_says_when_a_kept_run_predates_a_measure():
    bench = _benchmark()
    base = {
        k: 0.5 for k in ("top1", "top10", "last_round_mean", "auc_top10", "validity", "uniqueness")
    }
    base.update(diversity=0.1, seconds=3.0)
    old, new = dict(base), {**base, "final_mean": 0.25}
    text = bench.table({"harder": {"seiko_ucb": [old, new], "greedy": [old]}})
    ucb = next(line for line in text.splitlines() if line.startswith("| SEIKO-UCB"))
    greedy = next(line for line in text.splitlines() if line.startswith("| Greedy"))
    assert "0.250 ± 0.000 (1 of 2 runs)" in ucb and "| 2 |" in ucb
    assert "n/a" in greedy and "n/a" not in ucb
    summary = bench.table({"harder": {"seiko_ucb": [new]}}, bench.SUMMARY_KEYS)
    assert "| method | seeds | top10 | auc_top10 | final_mean |" in summary
    assert "| SEIKO-UCB | 1 | 0.500 ± 0.000 | 0.500 ± 0.000 | 0.250 ± 0.000 |" in summary


def test_best_of_n_samples_with_the_methods_sampler_and_is_refingerprinted_when_it_differs(
    monkeypatch,
):
    bench = _benchmark()
    # the MNIST tasks' methods sample 20 steps; their prior was saved with 50
    assert bench.prior_sampler("mnist_digit3")["num_steps"] == 50
    assert bench.methods_sampler("mnist_digit3")["num_steps"] == 20
    assert bench._prior("mnist_digit3").sampler.num_steps == 20
    mnist = bench.fingerprint("mnist_digit3", "best_of_n")
    # where the settings agree (the molecule tasks) nothing is added to the fingerprint
    assert bench.methods_sampler("harder") == bench.prior_sampler("harder")
    assert bench._prior("harder").sampler.num_steps == 50
    monkeypatch.setattr(bench, "methods_sampler", bench.prior_sampler)  # as if they agreed
    assert bench.fingerprint("mnist_digit3", "best_of_n") != mnist


def test_table_only_runs_nothing_and_tabulates_the_kept_runs(tmp_path, monkeypatch):
    bench = _benchmark()
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    monkeypatch.setattr(bench, "RUNS", tmp_path / "runs")
    run = {
        **{k: 0.5 for k in bench.TABLE_KEYS},
        "final_mean": 0.25,
        "values": [0.1] * 5 + [0.5] * 10,
        "seed": 0,
    }
    bench.keep_run("harder", "greedy", 0, run)

    def refuse(*args, **kwargs):
        raise AssertionError("--table-only ran a method")

    for name in ("run_method", "run_best_of_n", "run_training_set"):
        monkeypatch.setattr(bench, name, refuse)
    monkeypatch.setattr(sys, "argv", ["fe", "--table-only", "--tasks", "harder", "qed"])
    bench.main()
    text = (tmp_path / "feedback_efficiency.md").read_text()
    assert "| Greedy | 1 | 0.500 ± 0.000 | 0.500 ± 0.000 | 0.250 ± 0.000 |" in text
    assert "## qed" not in text  # nothing kept for it: left out, not run
    assert (tmp_path / "feedback_efficiency_harder.png").is_file()


def test_sequence_realism_is_the_3mer_r_to_held_out_regions_of_the_designed_class():
    bench = _benchmark()
    held, alphabet = bench.realism_reference("hepg2_enhancer")
    assert alphabet == "ACGT" and 100 < len(held) < 1000  # HepG2's chr1 regions only
    assert bench.realism_reference("harder") is None and bench.kmer_realism("harder", []) == {}
    real = bench.kmer_realism("hepg2_enhancer", list(held[:100]))["final_kmer_r"]
    repeats = bench.kmer_realism("hepg2_enhancer", ["ACGTTA" * 33 + "AC"] * 100)["final_kmer_r"]
    assert real > 0.95 and repeats < 0.5


def test_a_measure_no_run_of_a_task_has_gets_no_column():
    bench = _benchmark()
    run = {k: 0.5 for k in bench.TABLE_KEYS if k != "final_kmer_r"}
    text = bench.table(
        {"harder": {"greedy": [run]}, "hepg2_enhancer": {"greedy": [{**run, "final_kmer_r": 0.9}]}}
    )
    molecules, dna = text.split("## hepg2_enhancer")
    assert "final_kmer_r" not in molecules and "n/a" not in molecules
    assert "final_kmer_r" in dna and "0.900 ± 0.000" in dna


def test_seiko_rows_are_compared_with_each_baseline_paired_by_the_seeds_both_have():
    bench = _benchmark()

    def runs(*pairs):
        return [{"seed": s, "auc_top10": v} for s, v in pairs]

    results = {
        "trna_structure": {
            "seiko_bootstrap": runs((0, 0.50), (1, 0.60), (2, 0.40), (3, 0.55)),
            "greedy": runs((0, 0.45), (1, 0.62), (2, 0.30)),  # no seed 3: compared on 0-2
            "training_set": runs((0, 0.52), (1, 0.52), (2, float("nan")), (3, 0.52)),
            "guidance": runs((0, 0.9)),  # not a baseline the acceptance names: no line
        }
    }
    text = bench.paired(results)
    lines = {
        line.split("|")[2].strip(): line for line in text.splitlines() if "SEIKO-Bootstrap" in line
    }
    assert set(lines) == {"Greedy", "Training-set picks"}
    # differences +0.05, -0.02, +0.10: mean +0.043, sample std 0.0603; ahead in 2 of 3
    assert "| 3 | +0.043 ± 0.060 | 2 of 3 | +0.050 -0.020 +0.100 |" in lines["Greedy"]
    # seed 2's NaN leaves seeds 0, 1, 3: -0.02, +0.08, +0.03
    assert "| 3 | +0.030 ± 0.050 | 2 of 3 | -0.020 +0.080 +0.030 |" in lines["Training-set picks"]
    assert "## trna_structure: auc_top10, SEIKO minus baseline, paired by seed" in text
    assert bench.paired({"trna_structure": {"greedy": runs((0, 0.5))}}) == ""
