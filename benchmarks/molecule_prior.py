"""Quality of a pretrained molecular prior against the held-out MOSES test molecules.

Run from the repository root::

    python benchmarks/molecule_prior.py --checkpoint models/molecules/prior.ckpt

Draws ``--samples`` molecules (default 1,000) from the checkpoint's model, decodes them to
canonical SMILES and compares them with as many MOSES test molecules (canonicalised the same way)
on the molecules issue's quality bar: QED mean >= 0.75, SA mean <= 3.0, heavy-atom mean within
+-2 of MOSES's, uniqueness >= 0.95, novelty (against the training molecules) >= 0.5, internal
diversity within 0.05 of MOSES's. Validity is reported too (every decodable SELFIES is a
molecule, so it measures empty decodes). Writes benchmarks/results/molecule_prior.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from rdkit import Chem

import seiko.lightning_modules  # noqa: F401  (the checkpoint's class must be imported to load)
from seiko.chemistry import canonical_smiles
from seiko.datamodules.molecules import read_smiles
from seiko.metrics import InternalDiversity
from seiko.oracles.molecules import QED, SAScore

RESULTS = Path(__file__).parent / "results"


def describe(smiles: list[str], train: set[str]) -> dict[str, float]:
    """The quality-bar statistics of a list of SMILES ("" = not a molecule)."""
    valid = [s for s in smiles if s]
    unique = set(valid)
    mols = [Chem.MolFromSmiles(s) for s in valid]
    heavy = [m.GetNumHeavyAtoms() for m in mols]
    diversity = InternalDiversity()
    diversity.update(valid)
    qed, sa = QED()(valid), SAScore()(valid)
    return {
        "n": len(smiles),
        "validity": len(valid) / max(1, len(smiles)),
        "uniqueness": len(unique) / max(1, len(valid)),
        "novelty": len(unique - train) / max(1, len(unique)),
        "qed_mean": float(torch.nanmean(qed)),
        "sa_mean": float(torch.nanmean(sa)),
        "heavy_atoms_mean": statistics.fmean(heavy) if heavy else math.nan,
        "heavy_atoms_sd": statistics.pstdev(heavy) if heavy else math.nan,
        "internal_diversity": float(diversity.compute()),
    }


def quality_bar(model: dict[str, float], moses: dict[str, float]) -> dict[str, bool]:
    return {
        "qed_mean >= 0.75": model["qed_mean"] >= 0.75,
        "sa_mean <= 3.0": model["sa_mean"] <= 3.0,
        "heavy atoms within 2 of MOSES": abs(model["heavy_atoms_mean"] - moses["heavy_atoms_mean"])
        <= 2,
        "uniqueness >= 0.95": model["uniqueness"] >= 0.95,
        "novelty >= 0.5": model["novelty"] >= 0.5,
        "internal diversity within 0.05 of MOSES": abs(
            model["internal_diversity"] - moses["internal_diversity"]
        )
        <= 0.05,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", default="data/moses_train_50k.csv.gz")
    parser.add_argument("--test", default="data/moses_test_5k.csv.gz")
    parser.add_argument("--name", default="molecule_prior", help="results file stem")
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    model = L.LightningModule.load_from_checkpoint(args.checkpoint, map_location="cpu")
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(args.seed)
    smiles = model.decode(model.sample(args.samples, generator=generator))
    seconds = time.perf_counter() - start

    train = {c for _, s in read_smiles(args.train) if (c := canonical_smiles(s))}
    test = [c for _, s in read_smiles(args.test) if (c := canonical_smiles(s))]
    test = [test[i] for i in torch.randperm(len(test), generator=generator)[: args.samples]]
    ours, moses = describe(smiles, train), describe(test, train)
    checks = quality_bar(ours, moses)
    result = {
        "checkpoint": args.checkpoint,
        "model_class": type(model).__name__,
        "checkpoint_mib": Path(args.checkpoint).stat().st_size / 2**20,
        "sampling_seconds": seconds,
        "model": ours,
        "moses_test": moses,
        "quality_bar": checks,
        "passes": all(checks.values()),
        "examples": smiles[:12],
    }
    rows = [
        f"# Molecular prior quality: {args.checkpoint} ({type(model).__name__}, "
        f"{result['checkpoint_mib']:.1f} MiB)",
        "",
        f"{args.samples} samples (seed {args.seed}, {seconds:.0f} s on CPU) against {len(test)} "
        "MOSES test molecules; novelty against the shipped training molecules.",
        "",
        "| statistic | model | MOSES test |",
        "|---|---|---|",
    ]
    for key in ours:
        rows.append(f"| {key} | {ours[key]:.3f} | {moses[key]:.3f} |")
    rows += ["", "| quality bar | verdict |", "|---|---|"]
    rows += [f"| {name} | {'PASS' if ok else 'FAIL'} |" for name, ok in checks.items()]
    rows += ["", "First samples: " + ", ".join(f"`{s}`" for s in smiles[:6])]
    text = "\n".join(rows) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(text)


if __name__ == "__main__":
    main()
