"""Feedback efficiency on every domain's tasks: every method at one oracle budget, several seeds.

Run from the repository root (the shipped priors under models/ are used)::

    python benchmarks/feedback_efficiency.py --tasks harder qed --seeds 0 1 2
    python benchmarks/feedback_efficiency.py --tasks mnist_incompressible3 --seeds 0
    python benchmarks/feedback_efficiency.py --table-only --tasks harder mnist_incompressible3

Tasks (``TASK_DIRS``): each is a directory ``configs/<domain>/<task>/`` of one config per method,
written by ``scripts/make_{molecule,sequence,image}_configs.py``; the task's oracle, budget and
prior are read from its ``seiko_ucb.yaml``, and the training data from the domain's pretrain
config. Rows, all at the task's budget:

* the five online methods, each exactly its config ``configs/<domain>/<task>/<method>.yaml``
  (SEIKO-UCB, SEIKO-Bootstrap, SEIKO-TS, Greedy, Non-adaptive), run with ``seiko fit`` in process;
* the paper's other two families, from their configs beside those: reward-guided sampling
  (``guidance.yaml``) and online PPO / DDPO (``ppo.yaml``);
* best-of-N: N = budget samples of the pretrained prior (of the task's ``target_label`` class where
  its configs design for one), all measured;
* training-set picks: N = budget designs drawn at random from the prior's training split.

Each finished run is kept as benchmarks/results/feedback_efficiency_runs/<task>_<method>_<seed>.json
with a fingerprint (SHA-256 of the method's config file, the prior checkpoint, the data and the
oracle); a later invocation reuses every run whose fingerprint still matches and runs only the
rest (``--rerun`` ignores the kept runs); the table and plots show the requested runs and every
other method's matching kept runs. So a benchmark too long for one sitting can be filled in
over several, a killed run loses only itself, and a changed config, prior or oracle is re-measured.

Per run: top-1, top-10 mean, the last round's mean, the final generator's mean (SEIKO's own measure:
the true reward of ``FINAL_SAMPLES`` fresh samples of the model as it stands after the run, measured
for the benchmark only, outside the budget and the store; for best-of-N the prior and for
training-set picks the data, i.e. their first ``FINAL_SAMPLES`` designs; infeasible designs are
left out of the mean and counted in ``final_validity``), PMO's AUC of the top-10 curve (Gao et al.
2022, logged every 100 calls), validity, uniqueness and diversity of the measured designs
(molecules: internal diversity, 1 - mean pairwise Tanimoto of Morgan fingerprints; sequences:
mean normalised edit distance of 200 seeded picks; images: mean pairwise RMS pixel difference in
[0, 1] of 200 seeded picks), wall time. Writes benchmarks/results/feedback_efficiency.{json,md}
and one plot per task (feedback_efficiency_<task>.png: running top-10 mean vs calls, mean +- std
over seeds).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from make_molecule_configs import METHODS, OTHER_METHODS  # noqa: E402

import seiko.lightning_modules  # noqa: E402, F401  (a checkpoint's class must be imported to load)
from seiko.callbacks.exploration import OnlineExploration, design_keys, load_oracle  # noqa: E402
from seiko.cli import build_cli  # noqa: E402
from seiko.datamodules.molecules import canonical_smiles, read_smiles  # noqa: E402
from seiko.metrics import (  # noqa: E402
    InternalDiversity,
    KmerSpectrumCorrelation,
    LevenshteinDiversity,
)
from seiko.metrics.oracle_budget import top_k_auc  # noqa: E402
from seiko.oracles.base import import_object  # noqa: E402
from seiko.oracles.store import FeedbackStore  # noqa: E402
from seiko.plots import plot_methods_curves  # noqa: E402

RESULTS = Path(__file__).parent / "results"
RUNS = RESULTS / "feedback_efficiency_runs"
#: task -> its config directory (configs/<domain>/<task>/)
TASK_DIRS = {
    "harder": "configs/molecules/harder",
    "qed": "configs/molecules/qed",
    "hepg2_enhancer": "configs/dna/hepg2_enhancer",
    "trna_structure": "configs/rna/trna_structure",
    "kinase_hmm": "configs/protein/kinase_hmm",
    "mnist_incompressible3": "configs/images/mnist_incompressible3",
    "mnist_digit3": "configs/images/mnist_digit3",
}
PRETRAIN = {
    "molecules": "configs/molecules/pretrain.yaml",
    "dna": "configs/dna/pretrain.yaml",
    "rna": "configs/rna/pretrain.yaml",
    "protein": "configs/protein/pretrain.yaml",
    "images": "configs/images/mnist_pretrain.yaml",
}
DIVERSITY_PICKS = 200
#: fresh samples of a method's final generator measured after the run (outside the budget)
FINAL_SAMPLES = 200
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


def _yaml(path: str | Path) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


def domain(task: str) -> str:
    return Path(TASK_DIRS[task]).parent.name


def config_path(task: str, method: str) -> Path:
    return ROOT / TASK_DIRS[task] / f"{method}.yaml"


def task_spec(task: str) -> dict:
    """The task's oracle spec, budget and prior, read from its SEIKO-UCB config."""
    config = _yaml(config_path(task, "seiko_ucb"))
    exploration = next(
        c["init_args"]
        for c in config["trainer"]["callbacks"]
        if c["class_path"].endswith("OnlineExploration")
    )
    return {
        "oracle": exploration["oracle"],
        "budget": int(exploration["budget"]),
        "prior": config["model"]["init_args"]["pretrained_checkpoint"],
        # the oracle's free check (``OnlineExploration(screen=True)``): the baselines pay only
        # for designs that pass it too
        "screen": bool(exploration.get("screen", False)),
    }


def training_data(task: str) -> dict:
    """The datamodule (class path and arguments) the task's prior was trained on."""
    return _yaml(PRETRAIN[domain(task)])["data"]


def _picks(items: list, seed: int) -> list:
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))
    return [items[i] for i in order[:DIVERSITY_PICKS]]


def diversity(task: str, designs: list[str]) -> float:
    """The domain's diversity of the feasible designs (see the module docstring)."""
    valid = [d for d in designs if d]
    if len(valid) < 2:
        return math.nan
    kind = domain(task)
    if kind == "molecules":
        metric = InternalDiversity()
        metric.update(valid)
        return float(metric.compute())
    if kind == "images":
        from seiko.lightning_modules.images import image_from_key

        pixels = torch.stack(
            [
                torch.as_tensor(np.asarray(image_from_key(key)), dtype=torch.float64).flatten()
                / 255
                for key in _picks(valid, 0)
            ]
        )
        distances = torch.cdist(pixels, pixels) / math.sqrt(pixels.shape[1])
        n = len(pixels)
        return float(distances.sum() / (n * (n - 1)))
    metric = LevenshteinDiversity()
    metric.update(_picks(valid, 0))
    return float(metric.compute())


def final_summary(values: torch.Tensor) -> dict:
    """``final_mean`` (over the feasible designs) and ``final_validity`` of a final generator's
    measured samples."""
    finite = values[torch.isfinite(values)]
    return {
        "final_mean": float(finite.mean()) if finite.numel() else math.nan,
        "final_validity": finite.numel() / max(1, values.numel()),
    }


@functools.cache
def realism_reference(task: str) -> tuple[tuple[str, ...], str] | None:
    """The held-out sequences a sequence task's designs are compared with for realism, and their
    alphabet: the prior's test split (validation where it has none), and for a task that designs
    for one class (DNA: HepG2) only that class's regions. None for other domains."""
    if domain(task) not in ("dna", "rna", "protein"):
        return None
    from seiko.datamodules.sequences import ALPHABETS

    args = training_data(task)["init_args"]
    module = import_object(training_data(task)["class_path"])(
        **{**args, "path": str(ROOT / args["path"])}
    )
    module.setup("fit")
    split = "test" if module.sequences["test"] else "val"
    held = module.sequences[split]
    target = _yaml(config_path(task, "seiko_ucb"))["model"]["init_args"].get("target_label")
    if target is not None:
        labels = {"test": module.test_set, "val": module.val_set}[split].tensors[1].tolist()
        k = module.labels.index(target)
        held = [s for s, c in zip(held, labels, strict=True) if c == k]
    return tuple(held), ALPHABETS[args["alphabet"]]


def kmer_realism(task: str, designs: list) -> dict:
    """``final_kmer_r``: Pearson r of the designs' 3-mer spectrum with the held-out one
    (``KmerSpectrumCorrelation``, DRAKES' realism check); empty for non-sequence tasks."""
    reference = realism_reference(task)
    if reference is None:
        return {}
    held, alphabet = reference
    metric = KmerSpectrumCorrelation(reference=held, alphabet=alphabet, k=3)
    metric.update([d for d in designs if d and set(d) <= set(alphabet)])
    return {"final_kmer_r": float(metric.compute())}


def final_generator(task: str, model: L.LightningModule, seed: int) -> dict:
    """The true reward of ``FINAL_SAMPLES`` fresh samples of the method's final model (its
    fine-tuned weights; in guidance mode the sampler steered by the last reward model), seeded
    apart from the run's own draws. Benchmark evaluation only: nothing is charged to the budget
    or written to the run's store, as the SEIKO paper evaluates its fine-tuned models."""
    generator = torch.Generator().manual_seed(1_000_003 + seed)
    model = model.cpu()
    designs = []
    for first in range(0, FINAL_SAMPLES, 100):
        n = min(100, FINAL_SAMPLES - first)
        designs += model.decode(model.sample(n, generator=generator))
    values = load_oracle(task_spec(task)["oracle"])(designs)
    return {
        **final_summary(torch.as_tensor(values, dtype=torch.float64)),
        **kmer_realism(task, designs),
    }


def summarise(
    task: str, designs: list[str], values: torch.Tensor, rounds: list[int], seconds: float
) -> dict:
    budget = task_spec(task)["budget"]
    finite = values[torch.isfinite(values)]
    top = finite.sort(descending=True).values
    last = [v for v, r in zip(values.tolist(), rounds, strict=True) if r == max(rounds)]
    valid = [d for d in designs if d]
    return {
        "calls": int(values.numel()),
        "top1": float(top[0]) if top.numel() else math.nan,
        "top10": float(top[:10].mean()) if top.numel() else math.nan,
        "last_round_mean": statistics.fmean(v for v in last if math.isfinite(v))
        if any(math.isfinite(v) for v in last)
        else math.nan,
        "auc_top10": float(top_k_auc(values, k=10, budget=budget)),
        "validity": len(valid) / max(1, len(designs)),
        "uniqueness": len(set(valid)) / max(1, len(valid)),
        "diversity": diversity(task, designs),
        "seconds": seconds,
        "values": values.tolist(),
    }


def set_aside_earlier_run(root: Path) -> Path | None:
    """Move an earlier run's directory out of the way of a new run, keeping its answers.

    A run directory that already holds a feedback store (an earlier invocation into the same
    ``--out``, e.g. with other settings, or ``--rerun``) would otherwise be read by the new run
    as its own: the loop finds the budget spent, pays for nothing, and the row reports the old
    answers. The directory is renamed ``<name>.earlier-<n>`` (nothing paid is deleted); returns
    the new path, or None when there was nothing to move."""
    if not (root / "feedback.sqlite").exists():
        return None
    n = 1
    while (moved := root.with_name(f"{root.name}.earlier-{n}")).exists():
        n += 1
    root.rename(moved)
    print(f"{root}: an earlier run's feedback store is there; moved to {moved.name}", flush=True)
    return moved


def run_method(task: str, method: str, seed: int, out: Path) -> dict:
    """The method's config, with the seed, the run directory and no checkpoint files."""
    config = _yaml(config_path(task, method))
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
    set_aside_earlier_run(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    start = time.perf_counter()
    cli = build_cli(["fit", "--config", str(root / "config.yaml")])
    seconds = time.perf_counter() - start
    store = FeedbackStore(root / "feedback.sqlite")
    rows = [r for r in store.rows() if r.source == "oracle"]
    values = torch.tensor([r.value if r.feasible else math.nan for r in rows], dtype=torch.float64)
    run = summarise(task, [r.design for r in rows], values, [r.round for r in rows], seconds)
    exploration = [c for c in cli.trainer.callbacks if isinstance(c, OnlineExploration)]
    if exploration:  # per round: how the reward model ranked the round's fresh designs, etc.
        run["rounds"] = [
            {k: v for k, v in stats.items() if math.isfinite(v)} for stats in exploration[0].history
        ]
    return {**run, **final_generator(task, cli.model, seed)}


#: the sampler settings that decide what a no-grad chain draws (the rest shape its gradient)
SAMPLING_FIELDS = ("kind", "num_steps", "eta", "spacing")


def _sampling(settings: dict) -> dict:
    """``SAMPLING_FIELDS`` of ``settings`` over ``SamplerConfig``'s defaults."""
    from dataclasses import asdict

    from seiko.lightning_modules.base import SamplerConfig

    merged = {**asdict(SamplerConfig()), **settings}
    return {field: merged[field] for field in SAMPLING_FIELDS}


def methods_sampler(task: str) -> dict:
    """The sampling settings the task's methods draw with: their config's ``sampler`` (e.g. the
    MNIST tasks run 20 steps; their prior was saved with 50)."""
    init = _yaml(config_path(task, "seiko_ucb"))["model"]["init_args"]
    return _sampling(init.get("sampler") or {})


def _prior_hparams(task: str) -> dict:
    path = ROOT / task_spec(task)["prior"]
    return torch.load(path, map_location="cpu", weights_only=False)["hyper_parameters"]


def prior_sampler(task: str) -> dict:
    """The sampling settings saved with the task's prior."""
    return _sampling(_prior_hparams(task).get("sampler") or {})


def _prior(task: str) -> L.LightningModule:
    """The pretrained prior, sampling what the task's methods sample at their first round: with
    their sampler (``methods_sampler``) and their ``target_label``'s class where they design for
    one (DNA: HepG2), else as pretrained."""
    target = _yaml(config_path(task, "seiko_ucb"))["model"]["init_args"].get("target_label")
    extra = {} if target is None else {"target_label": target}
    sampler = {**(_prior_hparams(task).get("sampler") or {}), **methods_sampler(task)}
    return L.LightningModule.load_from_checkpoint(
        ROOT / task_spec(task)["prior"], map_location="cpu", sampler=sampler, **extra
    )


#: with a screen, best-of-N samples at most this many times its budget to find fitting designs
SCREEN_MAX_FACTOR = 20


def run_best_of_n(task: str, seed: int) -> dict:
    start = time.perf_counter()
    spec = task_spec(task)
    model = _prior(task)
    oracle = load_oracle(spec["oracle"])
    generator = torch.Generator().manual_seed(seed)
    sampled: list = []  # every design drawn, in order
    fitting: list = []  # the ones that pass the screen (all of them without one)
    while len(fitting) < spec["budget"] and len(sampled) < SCREEN_MAX_FACTOR * spec["budget"]:
        n = min(250, spec["budget"] - len(fitting))  # chunks: an image chain's memory stays small
        chunk = model.decode(model.sample(n, generator=generator))
        sampled += chunk
        fitting += [d for d in chunk if oracle.fits(d)] if spec["screen"] else chunk
    designs = fitting[: spec["budget"]]
    values = oracle(designs)
    keys = design_keys(model, designs)
    run = summarise(task, keys, values, [0] * len(designs), time.perf_counter() - start)
    if spec["screen"]:
        run["screen_pass_rate"] = len(fitting) / len(sampled)
    # the final generator: the prior, unscreened (as the other methods' final samples are)
    head = sampled[:FINAL_SAMPLES]  # all measured above, except those the screen rejected
    known = dict(zip(keys, torch.as_tensor(values).tolist(), strict=True))
    final_values = torch.tensor(
        [known.get(key, math.nan) for key in design_keys(model, head)], dtype=torch.float64
    )
    return {
        **run,
        **final_summary(final_values),
        **kmer_realism(task, design_keys(model, head)),
    }


def training_designs(task: str) -> list:
    """Every design of the prior's training split, in the form the task's oracle reads."""
    data = training_data(task)
    args = data["init_args"]
    if domain(task) == "molecules":
        return [c for _, s in read_smiles(ROOT / args["path"]) if (c := canonical_smiles(s))]
    module = import_object(data["class_path"])(**{**args, "path": str(ROOT / args["path"])})
    if domain(task) == "images":
        return list(module.images("train"))  # (C, S, S) uint8 tensors
    return list(module.sequences["train"])


def image_key_of(image: torch.Tensor) -> str:
    """The store key of a (C, S, S) uint8 image, as the online loop keys a design."""
    from seiko.lightning_modules.images import image_key
    from seiko.oracles.images import to_pil

    return image_key(to_pil(image))


def run_training_set(task: str, seed: int) -> dict:
    start = time.perf_counter()
    spec = task_spec(task)
    designs = training_designs(task)
    if spec["screen"]:  # only the training designs the oracle can measure
        oracle = load_oracle(spec["oracle"])
        designs = [d for d in designs if oracle.fits(d)]
    pick = torch.randperm(len(designs), generator=torch.Generator().manual_seed(seed))
    designs = [designs[i] for i in pick[: spec["budget"]]]
    values = load_oracle(spec["oracle"])(designs)
    if domain(task) == "images":
        designs = [image_key_of(image) for image in designs]
    run = summarise(task, designs, values, [0] * len(designs), time.perf_counter() - start)
    values = torch.as_tensor(values, dtype=torch.float64)
    return {  # the "generator": the data
        **run,
        **final_summary(values[:FINAL_SAMPLES]),
        **kmer_realism(task, designs[:FINAL_SAMPLES]),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _reward_features(task: str, method: str) -> str | None:
    """The pretrained reward-feature checkpoint the method's config names, if any."""
    for callback in _yaml(config_path(task, method))["trainer"].get("callbacks", []):
        reward_model = callback.get("init_args", {}).get("reward_model") or {}
        if reward_model.get("features"):
            return reward_model["features"]
    return None


def fingerprint(task: str, method: str) -> str:
    """What a run's result depends on besides its seed: the method's config file (for the online
    methods) and the reward features it names, the prior (best-of-N and every method that
    fine-tunes it), the training data (training-set picks) and the task's oracle, hashed
    together."""
    spec = task_spec(task)
    parts = [f"budget={spec['budget']}", json.dumps(spec["oracle"], sort_keys=True)]
    if spec["screen"]:
        parts.append("screen")
    if method == "training_set":
        parts.append(_sha256(ROOT / training_data(task)["init_args"]["path"]))
    else:
        parts.append(_sha256(ROOT / spec["prior"]))
        target = _yaml(config_path(task, "seiko_ucb"))["model"]["init_args"].get("target_label")
        if method == "best_of_n" and target is not None:
            parts.append(f"target_label={target}")
        if method == "best_of_n" and methods_sampler(task) != prior_sampler(task):
            parts.append(f"sampler={json.dumps(methods_sampler(task), sort_keys=True)}")
    if method not in ("best_of_n", "training_set"):
        parts.append(_sha256(config_path(task, method)))
        features = _reward_features(task, method)
        if features is not None:  # pretrained reward features: their weights matter too
            parts.append(_sha256(ROOT / features))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def kept_run(task: str, method: str, seed: int) -> dict | None:
    """The kept result of this run, if its fingerprint matches the current inputs."""
    path = RUNS / f"{task}_{method}_{seed}.json"
    if not path.is_file():
        return None
    run = json.loads(path.read_text())
    if run.get("fingerprint") != fingerprint(task, method):
        return None
    if "final_mean" not in run and method in ("best_of_n", "training_set"):
        # kept from before the measure existed: for these two it is their first designs' values
        values = torch.tensor(run["values"][:FINAL_SAMPLES], dtype=torch.float64)
        run.update(final_summary(values))
    return run


def keep_run(task: str, method: str, seed: int, run: dict) -> None:
    RUNS.mkdir(parents=True, exist_ok=True)
    path = RUNS / f"{task}_{method}_{seed}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**run, "fingerprint": fingerprint(task, method)}) + "\n")
    tmp.replace(path)  # atomic: a kill leaves the old file or the new one, never half of one


#: every measure of a run, in the full table's column order
TABLE_KEYS = (
    "top1",
    "top10",
    "last_round_mean",
    "final_mean",
    "final_kmer_r",
    "auc_top10",
    "validity",
    "uniqueness",
    "diversity",
    "seconds",
)
#: the paper's comparison at a glance: the feedback measures and the final generator's quality
SUMMARY_KEYS = ("top10", "auc_top10", "final_mean", "final_kmer_r")


def table(results: dict, keys: tuple[str, ...] = TABLE_KEYS) -> str:
    """Markdown tables, one per task: mean +- std over the seeds of each of ``keys``."""
    lines = []
    for task, methods in results.items():
        budget = task_spec(task)["budget"]
        lines += [f"## {task} ({domain(task)}, budget {budget} oracle calls)", ""]
        # a measure no run of the task has (final_kmer_r off the sequence tasks) gets no column
        shown = [k for k in keys if any(k in r for runs in methods.values() for r in runs)]
        lines.append("| method | seeds | " + " | ".join(shown) + " |")
        lines.append("|---|---|" + "---|" * len(shown))
        for method, runs in methods.items():
            cells = []
            for key in shown:
                # a run kept from before a measure was added lacks it: the cell says over how many
                have = [r[key] for r in runs if key in r]
                vals = [v for v in have if math.isfinite(v)]
                mean = statistics.fmean(vals) if vals else math.nan
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cell = f"{mean:.3f} ± {sd:.3f}" if key != "seconds" else f"{mean:.0f}"
                if not have:
                    cell = "n/a"
                elif len(have) < len(runs):
                    cell += f" ({len(have)} of {len(runs)} runs)"
                cells.append(cell)
            lines.append(f"| {LABELS[method]} | {len(runs)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


#: the rows the acceptance compares: each SEIKO bonus against each baseline
PAIRED_SEIKO = ("seiko_ucb", "seiko_bootstrap", "seiko_ts")
PAIRED_BASELINES = ("greedy", "non_adaptive", "best_of_n", "training_set")


def paired(results: dict, key: str = "auc_top10") -> str:
    """Markdown tables, one per task: each SEIKO row minus each baseline on ``key``, paired by
    seed (the seeds both rows have): mean +- std of the differences, and in how many of those
    seeds SEIKO is ahead. The online methods of one seed share round 0 (the prior's samples
    under that seed), so pairing removes the part of the spread that round 0 brings; a mean
    lead smaller than its std is not a separation."""
    lines = []
    for task, methods in results.items():
        rows = []
        for ours in PAIRED_SEIKO:
            for base in PAIRED_BASELINES:
                if ours not in methods or base not in methods:
                    continue
                a = {r["seed"]: r[key] for r in methods[ours] if "seed" in r and key in r}
                b = {r["seed"]: r[key] for r in methods[base] if "seed" in r and key in r}
                seeds = sorted(s for s in a.keys() & b.keys() if math.isfinite(a[s] - b[s]))
                if not seeds:
                    continue
                diffs = [a[s] - b[s] for s in seeds]
                sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
                ahead = sum(d > 0 for d in diffs)
                rows.append(
                    f"| {LABELS[ours]} | {LABELS[base]} | {len(seeds)} "
                    f"| {statistics.fmean(diffs):+.3f} ± {sd:.3f} | {ahead} of {len(seeds)} "
                    f"| {' '.join(f'{d:+.3f}' for d in diffs)} |"
                )
        if rows:
            lines += [
                f"## {task}: {key}, SEIKO minus baseline, paired by seed",
                "",
                "| SEIKO row | baseline | seeds | difference, mean ± std | ahead | per seed |",
                "|---|---|---|---|---|---|",
                *rows,
                "",
            ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["harder", "qed"], choices=list(TASK_DIRS))
    parser.add_argument("--methods", nargs="+", default=ALL_METHODS, choices=ALL_METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="runs/feedback_efficiency")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--rerun", action="store_true", help="run everything again, ignoring kept runs"
    )
    parser.add_argument(
        "--table-only",
        action="store_true",
        help="run nothing: rebuild the tables and plots of --tasks from the kept runs",
    )
    args = parser.parse_args()
    if args.table_only and args.rerun:
        parser.error("--table-only and --rerun contradict each other")
    torch.set_num_threads(args.threads)
    out = ROOT / args.out
    results: dict[str, dict[str, list[dict]]] = {}
    for task in args.tasks:
        results[task] = {}
        for method in [] if args.table_only else args.methods:
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
        if not results[task]:
            print(f"{task}: no kept runs match the current inputs; nothing to tabulate")
            del results[task]
            continue
        budget = task_spec(task)["budget"]
        curves = {  # a run that met a duplicate paid fewer calls: its curve ends there (NaN)
            LABELS[m]: (
                torch.arange(1, budget + 1),
                torch.tensor([(r["values"] + [math.nan] * budget)[:budget] for r in runs]),
            )
            for m, runs in results[task].items()
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        plot_methods_curves(
            curves,
            title=f"{task}: top-10 mean vs oracle calls",
            path=RESULTS / f"feedback_efficiency_{task}.png",
        )
    text = (
        "# Feedback efficiency\n\n"
        "Top-10 and AUC top-10: of the designs each method measured within the budget; final "
        f"mean: {FINAL_SAMPLES} fresh samples of the method's final generator (outside the "
        "budget; see the script's docstring). Mean +- std over seeds.\n\n"
        "# Summary\n\n"
        + table(results, SUMMARY_KEYS)
        + "\n# SEIKO against the baselines, paired by seed\n\n"
        + paired(results)
        + "\n# Every measure\n\n"
        + table(results)
    )
    print(text)
    (RESULTS / "feedback_efficiency.md").write_text(text)
    (RESULTS / "feedback_efficiency.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
