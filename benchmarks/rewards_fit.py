"""Fit time of a vectorised reward ensemble vs a Python loop over separate models.

Fits a 4-member ``RewardEnsemble`` on 2,000 random one-hot (48 x 27) sequences (target: how many
times letter 0 occurs) for 50 epochs in one ``fit_ensemble`` call, then fits 4 single-member
ensembles (the same network, trained by the same code) one after the other, for each architecture.
Early stopping is off so both do the same number of steps. Prints the times and writes
``benchmarks/results/rewards_fit.json``.

Usage: python benchmarks/rewards_fit.py [--epochs 50] [--n 2000] [--members 4] [--threads 1]

``--threads`` sets torch's intra-op threads (default: torch's choice). On a shared machine whose
cores are busy, OpenMP threads spin-waiting for descheduled siblings can make small ops many times
slower with 2 threads than with 1, which swamps what is measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from seiko.rewards import RewardEnsemble, fit_ensemble

RESULTS = Path(__file__).parent / "results" / "rewards_fit.json"


def letter_count_data(
    n: int, length: int, vocab: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, length, vocab) one-hot sequences whose letter-0 frequency varies, and its count."""
    generator = torch.Generator().manual_seed(seed)
    p = torch.rand(n, 1, generator=generator) * 0.5
    tokens = torch.where(
        torch.rand(n, length, generator=generator) < p,
        0,
        torch.randint(1, vocab, (n, length), generator=generator),
    )
    x = torch.nn.functional.one_hot(tokens, vocab).float()
    return x, (tokens == 0).sum(1).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    x, y = letter_count_data(args.n, 48, 27, seed=0)
    # patience > epochs: no early stopping, both sides run every epoch
    settings = dict(epochs=args.epochs, batch_size=128, patience=args.epochs + 1, seed=0)
    results = []
    for architecture in ("cnn", "mlp"):
        ensemble = RewardEnsemble((48, 27), args.members, architecture, seed=0)
        start = time.perf_counter()
        report = fit_ensemble(ensemble, x, y, **settings)
        vectorised = time.perf_counter() - start
        start = time.perf_counter()
        loop_spearman = []
        for i in range(args.members):
            single = RewardEnsemble((48, 27), 1, architecture, seed=i)
            loop_spearman.append(fit_ensemble(single, x, y, **settings).spearman)
        loop = time.perf_counter() - start
        row = {
            "architecture": architecture,
            "vectorised_s": round(vectorised, 2),
            "python_loop_s": round(loop, 2),
            "speedup": round(loop / vectorised, 2),
            "vectorised_spearman": round(report.spearman, 3),
            "loop_spearman": [round(s, 3) for s in loop_spearman],
        }
        print(json.dumps(row))
        results.append(row)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    task = (
        f"{args.members}-member ensemble, {args.n} one-hot (48 x 27) sequences, "
        f"{args.epochs} epochs, batch 128, no early stopping"
    )
    RESULTS.write_text(
        json.dumps(
            {
                "task": task,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                "load_average_at_end": os.getloadavg(),
                "machine": platform.machine(),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
