"""Which input lets the molecular reward model rank a round's fresh designs: the latent, pretrained
fingerprint features of the latent, or the exact fingerprint?

Replays a stored SEIKO run on the harder molecule task round by round: for each round k >= 1, fit
the reward model (the online loop's ``fit_ensemble``, MLP, 256 hidden units, as the task configs
fit it) on every answer of rounds < k and report the Spearman correlation of its mean prediction
with the oracle on round k's designs: what the online loop logs as ``reward_model/spearman``.

Inputs compared (rows):

* ``latent``: the prior's 64-dimensional latent of each molecule
  (``LatentMoleculeDiffusion.encode``), what the configs fitted on before ``reward_model.features``;
* ``latent, ensemble of 5``: the same with 5 bootstrap members averaged;
* ``fingerprint features``: ``load_features(models/molecules/features.ckpt)`` of that latent, the
  ``FingerprintRegressor`` trained by configs/molecules/features.yaml (differentiable in the
  latent; what the configs use now);
* ``exact fingerprint``: log1p Morgan counts (radius 2, 2,048 bits) computed by RDKit from the
  molecule. Not differentiable in the latent, so not usable for fine-tuning: the ceiling.

Each row is fitted with 3 seeds (initialisation and minibatch order); mean and std are reported.

Usage (from the repository root)::

    python benchmarks/reward_features_molecules.py \\
        [--store benchmarks/results/reward_features_molecules_store.sqlite] [--threads 1]

The default store is the one these numbers were measured on: the 1,000 answers of SEIKO-UCB,
seed 0, on the harder task, run by benchmarks/feedback_efficiency.py with the latent-input reward
model (any run's ``feedback.sqlite`` of the task can be given instead). Writes
benchmarks/results/reward_features_molecules.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator
from torchmetrics.functional import spearman_corrcoef

import seiko.lightning_modules  # noqa: F401  (the prior's class must be imported to load)
from seiko.oracles.store import FeedbackStore
from seiko.rewards import RewardEnsemble, fit_ensemble, load_features

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
DEFAULT_STORE = RESULTS / "reward_features_molecules_store.sqlite"
PRIOR = ROOT / "models" / "molecules" / "prior.ckpt"
FEATURES = ROOT / "models" / "molecules" / "features.ckpt"
SEEDS = (0, 1, 2)


def measured(store: Path) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The store's paid answers: designs, values (NaN: infeasible) and rounds."""
    if not store.is_file():
        raise FileNotFoundError(
            f"no store at {store}: give --store the feedback.sqlite of a harder-task run"
        )
    rows = [r for r in FeedbackStore(store).rows() if r.source == "oracle"]
    values = torch.tensor([r.value if r.feasible else math.nan for r in rows], dtype=torch.float64)
    return [r.design for r in rows], values, torch.tensor([r.round for r in rows])


def encodable(model: L.LightningModule, designs: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents of the designs the prior's vocabulary can encode, and which ones those are."""
    latents, keep = [], []
    for design in designs:
        try:
            latents.append(model.encode([design])[0])
            keep.append(True)
        except ValueError:  # invalid molecule or a token outside the vocabulary
            keep.append(False)
    return torch.stack(latents).float(), torch.tensor(keep)


def fingerprints(designs: list[str]) -> torch.Tensor:
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    rows = [generator.GetCountFingerprintAsNumPy(Chem.MolFromSmiles(d)) for d in designs]
    return torch.from_numpy(np.log1p(np.stack(rows).astype(np.float32)))


def replay(
    x: torch.Tensor,
    y: torch.Tensor,
    rounds: torch.Tensor,
    members: int,
    seed: int,
    latent: torch.Tensor,
    transform: torch.nn.Module | None,
) -> tuple[list[float], float]:
    """Spearman on round k of a reward model fitted on rounds < k, for k = 1..last; and the
    median norm of the last fit's gradient in the latent at the last round's designs (what
    fine-tuning follows; NaN when the input is not differentiable in the latent, ``transform``
    None)."""
    out, gradient = [], math.nan
    for k in range(1, int(rounds.max()) + 1):
        train, test = rounds < k, rounds == k
        ensemble = RewardEnsemble(
            tuple(x.shape[1:]), num_members=members, architecture="mlp", hidden=256, seed=seed
        )
        fit_ensemble(ensemble, x[train], y[train], bootstrap=members > 1, seed=seed)
        with torch.no_grad():
            prediction = ensemble.mean(x[test]).double()
        finite = torch.isfinite(y[test])
        out.append(float(spearman_corrcoef(prediction[finite], y[test][finite])))
        if k == int(rounds.max()) and transform is not None:
            z = latent[test].clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(ensemble.mean(transform(z)).sum(), z)
            gradient = float(grad.norm(dim=1).median())
    return out, gradient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE)
    parser.add_argument(
        "--features", type=Path, nargs="+", default=[FEATURES], help="feature checkpoints"
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    designs, values, rounds = measured(args.store)
    model = L.LightningModule.load_from_checkpoint(PRIOR, map_location="cpu")
    latent, keep = encodable(model, designs)
    designs = [d for d, k in zip(designs, keep.tolist(), strict=True) if k]
    values, rounds = values[keep], rounds[keep]
    inputs = {
        "latent": (latent, 1, torch.nn.Identity()),
        "latent, ensemble of 5": (latent, 5, torch.nn.Identity()),
    }
    for path in args.features:
        features = load_features(path)
        with torch.no_grad():
            feature_x = features(latent)
        name = f"fingerprint features ({path.name})"
        inputs[name] = (feature_x, 1, features)
        inputs[f"{name}, ensemble of 5"] = (feature_x, 5, features)
    inputs["exact fingerprint (not differentiable)"] = (fingerprints(designs), 1, None)
    rows = []
    for name, (x, members, transform) in inputs.items():
        start = time.perf_counter()
        runs = [replay(x, values, rounds, members, seed, latent, transform) for seed in SEEDS]
        by_round = list(zip(*(spearman for spearman, _ in runs), strict=True))
        row = {
            "input": name,
            "members": members,
            "spearman_mean": [statistics.mean(r) for r in by_round],
            "spearman_std": [statistics.stdev(r) for r in by_round],
            "gradient_norm": statistics.mean(gradient for _, gradient in runs),
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        cells = " ".join(
            f"{m:.3f}±{s:.3f}"
            for m, s in zip(row["spearman_mean"], row["spearman_std"], strict=True)
        )
        print(
            f"{name:48s} {cells} |grad| {row['gradient_norm']:.3f} ({row['seconds']:.0f} s)",
            flush=True,
        )
    result = {
        "store": str(args.store),
        "store_sha256": hashlib.sha256(args.store.read_bytes()).hexdigest(),
        "features": {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in args.features},
        "n_measured": len(designs),
        "rounds": list(range(1, int(rounds.max()) + 1)),
        "seeds": list(SEEDS),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reward_features_molecules.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Molecular reward model: Spearman on each round's fresh designs, by input",
        "",
        f"Replay of {len(designs)} stored answers ({args.store.name}): for round k, fit on rounds "
        "< k, rank round k (see benchmarks/reward_features_molecules.py). Mean ± std over "
        f"{len(SEEDS)} fit seeds. |grad|: median norm of the last fit's gradient in the latent at "
        "the last round's designs (mean over seeds), what fine-tuning follows.",
        "",
        "| input | " + " | ".join(f"round {k}" for k in result["rounds"]) + " | \\|grad\\| |",
        "|---|" + "---|" * (len(result["rounds"]) + 1),
    ]
    for row in rows:
        lines.append(
            f"| {row['input']} | "
            + " | ".join(
                f"{m:.3f} ± {s:.3f}"
                for m, s in zip(row["spearman_mean"], row["spearman_std"], strict=True)
            )
            + f" | {row['gradient_norm']:.3f} |"
        )
    (RESULTS / "reward_features_molecules.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
