"""Feedback efficiency on the molecule tasks: every method at one oracle budget, several seeds.

Run from the repository root (after the shipped prior exists at models/molecules/prior.ckpt)::

    python benchmarks/feedback_efficiency.py --tasks harder qed --seeds 0 1 2

Rows, all at the same budget (``scripts/make_molecule_configs.py``'s BUDGET):

* the five online methods, each exactly its config ``configs/molecules/<task>/<method>.yaml``
  (SEIKO-UCB, SEIKO-Bootstrap, SEIKO-TS, Greedy, Non-adaptive), run with ``seiko fit`` in process;
* the paper's other two families, from their configs beside those: reward-guided sampling
  (``guidance.yaml``) and online PPO / DDPO (``ppo.yaml``);
* best-of-N: N = budget samples of the pretrained prior, all measured;
* training-set picks: N = budget molecules drawn at random from the shipped training molecules.

Each finished run is kept as benchmarks/results/feedback_efficiency_runs/<task>_<method>_<seed>.json
with a fingerprint (SHA-256 of the method's config file, the prior checkpoint, the data and the
oracle); a later invocation reuses every run whose fingerprint still matches and runs only the
rest (``--rerun`` ignores the kept runs); the table and plots show the requested runs and every
other method's matching kept runs. So a benchmark too long for one sitting can be filled in
over several, a killed run loses only itself, and a changed config, prior or oracle is re-measured.

Per run: top-1, top-10 mean, the last round's mean, PMO's AUC of the top-10 curve (Gao et al.
2022, logged every 100 calls), validity, uniqueness and internal diversity of the measured
designs, wall time. Writes benchmarks/results/feedback_efficiency.{json,md} and one plot per task
(feedback_efficiency_<task>.png: running top-10 mean vs calls, mean +- std over seeds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from make_molecule_configs import BUDGET, METHODS, OTHER_METHODS, PRIOR, TASKS  # noqa: E402

import seiko.lightning_modules  # noqa: E402, F401  (a checkpoint's class must be imported to load)
from seiko.callbacks.exploration import load_oracle  # noqa: E402
from seiko.cli import build_cli  # noqa: E402
from seiko.datamodules.molecules import canonical_smiles, read_smiles  # noqa: E402
from seiko.metrics import InternalDiversity  # noqa: E402
from seiko.metrics.oracle_budget import top_k_auc  # noqa: E402
from seiko.oracles.store import FeedbackStore  # noqa: E402
from seiko.plots import plot_methods_curves  # noqa: E402

RESULTS = Path(__file__).parent / "results"
RUNS = RESULTS / "feedback_efficiency_runs"
ALL_METHODS = [*METHODS, *OTHER_METHODS, "best_of_n", "training_set"]
LABELS = {
    "seiko_ucb": "SEIKO-UCB",
    "seiko_bootstrap": "SEIKO-Bootstrap",
    "seiko_ts": "SEIKO-TS",
    "greedy": "Greedy",
    "non_adaptive": "Non-adaptive",
    "guidance": "Reward-guided sampling",
    "ppo": "Online PPO (DDPO)",
    "best_of_n": "Best-of-N (prior)",
    "training_set": "Training-set picks",
}


def summarise(designs: list[str], values: torch.Tensor, rounds: list[int], seconds: float) -> dict:
    finite = values[torch.isfinite(values)]
    top = finite.sort(descending=True).values
    last = [v for v, r in zip(values.tolist(), rounds, strict=True) if r == max(rounds)]
    valid = [d for d in designs if d]
    diversity = InternalDiversity()
    diversity.update(valid)
    return {
        "calls": int(values.numel()),
        "top1": float(top[0]) if top.numel() else math.nan,
        "top10": float(top[:10].mean()) if top.numel() else math.nan,
        "last_round_mean": statistics.fmean(v for v in last if math.isfinite(v))
        if any(math.isfinite(v) for v in last)
        else math.nan,
        "auc_top10": float(top_k_auc(values, k=10, budget=BUDGET)),
        "validity": len(valid) / max(1, len(designs)),
        "uniqueness": len(set(valid)) / max(1, len(valid)),
        "diversity": float(diversity.compute()) if len(valid) > 1 else math.nan,
        "seconds": seconds,
        "values": values.tolist(),
    }


def run_method(task: str, method: str, seed: int, out: Path) -> dict:
    """The method's config, with the seed, the run directory and no checkpoint files."""
    config = yaml.safe_load((ROOT / "configs" / "molecules" / task / f"{method}.yaml").read_text())
    root = out / f"{task}_{method}_{seed}"
    config["seed_everything"] = seed
    trainer = config["trainer"]
    trainer.update(default_root_dir=str(root), enable_progress_bar=False, logger=False)
    trainer["enable_checkpointing"] = False
    trainer["callbacks"] = [
        c for c in trainer["callbacks"] if "ModelCheckpoint" not in c["class_path"]
    ]
    for callback in trainer["callbacks"]:
        if callback["class_path"].endswith("OnlineExploration"):
            callback["init_args"].update(seed=seed, fit_progress=False)
        if callback["class_path"].endswith("OnlinePPO"):
            callback["init_args"].update(seed=seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    start = time.perf_counter()
    build_cli(["fit", "--config", str(root / "config.yaml")])
    seconds = time.perf_counter() - start
    store = FeedbackStore(root / "feedback.sqlite")
    rows = [r for r in store.rows() if r.source == "oracle"]
    values = torch.tensor([r.value if r.feasible else math.nan for r in rows], dtype=torch.float64)
    return summarise([r.design for r in rows], values, [r.round for r in rows], seconds)


def run_best_of_n(task: str, seed: int) -> dict:
    start = time.perf_counter()
    model = L.LightningModule.load_from_checkpoint(ROOT / PRIOR, map_location="cpu")
    generator = torch.Generator().manual_seed(seed)
    designs = model.decode(model.sample(BUDGET, generator=generator))
    values = load_oracle(TASKS[task])(designs)
    return summarise(designs, values, [0] * len(designs), time.perf_counter() - start)


def run_training_set(task: str, seed: int) -> dict:
    start = time.perf_counter()
    smiles = [
        c
        for _, s in read_smiles(ROOT / "data/moses_train_50k.csv.gz")
        if (c := canonical_smiles(s))
    ]
    pick = torch.randperm(len(smiles), generator=torch.Generator().manual_seed(seed))[:BUDGET]
    designs = [smiles[i] for i in pick]
    values = load_oracle(TASKS[task])(designs)
    return summarise(designs, values, [0] * len(designs), time.perf_counter() - start)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(task: str, method: str) -> str:
    """What a run's result depends on besides its seed: the method's config file (for the online
    methods), the prior (best-of-N and every method that fine-tunes it), the training data
    (training-set picks) and the task's oracle, hashed together."""
    parts = [f"budget={BUDGET}", json.dumps(TASKS[task], sort_keys=True)]
    if method == "training_set":
        parts.append(_sha256(ROOT / "data/moses_train_50k.csv.gz"))
    else:
        parts.append(_sha256(ROOT / PRIOR))
    if method not in ("best_of_n", "training_set"):
        parts.append(_sha256(ROOT / "configs" / "molecules" / task / f"{method}.yaml"))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def kept_run(task: str, method: str, seed: int) -> dict | None:
    """The kept result of this run, if its fingerprint matches the current inputs."""
    path = RUNS / f"{task}_{method}_{seed}.json"
    if not path.is_file():
        return None
    run = json.loads(path.read_text())
    return run if run.get("fingerprint") == fingerprint(task, method) else None


def keep_run(task: str, method: str, seed: int, run: dict) -> None:
    RUNS.mkdir(parents=True, exist_ok=True)
    path = RUNS / f"{task}_{method}_{seed}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**run, "fingerprint": fingerprint(task, method)}) + "\n")
    tmp.replace(path)  # atomic: a kill leaves the old file or the new one, never half of one


def table(results: dict) -> str:
    keys = [
        "top1",
        "top10",
        "last_round_mean",
        "auc_top10",
        "validity",
        "uniqueness",
        "diversity",
        "seconds",
    ]
    lines = []
    for task, methods in results.items():
        lines += [f"## {task} (budget {BUDGET} oracle calls)", ""]
        lines.append("| method | seeds | " + " | ".join(keys) + " |")
        lines.append("|---|---|" + "---|" * len(keys))
        for method, runs in methods.items():
            cells = []
            for key in keys:
                vals = [r[key] for r in runs if math.isfinite(r[key])]
                mean = statistics.fmean(vals) if vals else math.nan
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cells.append(f"{mean:.3f} ± {sd:.3f}" if key != "seconds" else f"{mean:.0f}")
            lines.append(f"| {LABELS[method]} | {len(runs)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=ALL_METHODS, choices=ALL_METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="runs/feedback_efficiency")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--rerun", action="store_true", help="run everything again, ignoring kept runs"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = ROOT / args.out
    results: dict[str, dict[str, list[dict]]] = {}
    for task in args.tasks:
        results[task] = {}
        for method in args.methods:
            results[task][method] = []
            for seed in args.seeds:
                run = None if args.rerun else kept_run(task, method, seed)
                kept = run is not None
                if run is None:
                    if method == "best_of_n":
                        run = run_best_of_n(task, seed)
                    elif method == "training_set":
                        run = run_training_set(task, seed)
                    else:
                        run = run_method(task, method, seed, out)
                    run["seed"] = seed
                    keep_run(task, method, seed, run)
                results[task][method].append(run)
                print(
                    f"{task} {method} seed {seed}: top10 {run['top10']:.3f} "
                    f"auc {run['auc_top10']:.3f} ({run['seconds']:.0f} s)"
                    + (" [kept from an earlier invocation]" if kept else ""),
                    flush=True,
                )
        # the table and plot also show every other method's kept runs that still match
        for method in ALL_METHODS:
            if method in results[task]:
                continue
            kept = [
                run
                for path in sorted(RUNS.glob(f"{task}_{method}_*.json"))
                if (seed := path.stem.rsplit("_", 1)[1]).isdigit()
                and (run := kept_run(task, method, int(seed))) is not None
            ]
            if kept:
                results[task][method] = kept
        results[task] = {m: results[task][m] for m in ALL_METHODS if m in results[task]}
        curves = {  # a run that met a duplicate paid fewer calls: its curve ends there (NaN)
            LABELS[m]: (
                torch.arange(1, BUDGET + 1),
                torch.tensor([(r["values"] + [math.nan] * BUDGET)[:BUDGET] for r in runs]),
            )
            for m, runs in results[task].items()
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        plot_methods_curves(
            curves,
            title=f"{task}: top-10 mean vs oracle calls",
            path=RESULTS / f"feedback_efficiency_{task}.png",
        )
    text = "# Feedback efficiency (molecules)\n\n" + table(results)
    print(text)
    (RESULTS / "feedback_efficiency.md").write_text(text)
    (RESULTS / "feedback_efficiency.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
