"""Quality of the shipped DNA, RNA and protein priors against held-out real sequences.

Run from the repository root (one torch thread; a few minutes per domain on a shared CPU)::

    OMP_NUM_THREADS=1 python benchmarks/sequence_priors.py [--domains dna rna protein]

For each shipped model (``models/<domain>/prior.ckpt``) it draws samples with the model's own
sampler (50 steps) and compares them with the held-out sequences of the datamodule in
``configs/<domain>/pretrain.yaml`` (the split the model never trained on): DNA the chr1 test
regions, one comparison per cell type with ``--dna-samples`` per class (default 128); RNA and
protein a seeded random 10 % hold-out, ``--samples`` (default 500) and ``--protein-samples``
(default 250). The counts are set by the CPU: one 50-step sample of 200 bp costs ~0.8 s on one
thread of this shared machine, 256 aa ~1 s. Measured for samples and held-out alike:

- realism: Pearson r of the 3-mer spectrum with the held-out spectrum
  (``KmerSpectrumCorrelation``, k=3); for the held-out row, a same-size draw of *training*
  sequences against the held-out set, the real-vs-real baseline;
- diversity: mean pairwise Hamming distance / L for DNA (fixed length), normalised Levenshtein for
  RNA and protein (their first ``--pairwise`` designs, the DP is quadratic);
- novelty: mean distance to the nearest training sequence (Hamming for DNA against every training
  region; Levenshtein for RNA and protein against ``--reference`` training sequences), and the
  fraction of exact training copies;
- length (RNA, protein): mean length, and for RNA the fraction of the target's length (74 nt);
- the task oracle: DNA ``EnhancerScore("HepG2")``, RNA ``StructureMatch`` to tRNA DA1543 (74 nt;
  it folds into its own cloverleaf; a design of another length is NaN), protein
  ``HMMScore("data/hmm/Pkinase.hmm")``: mean (over feasible designs), top-10 mean, and the
  fraction of all designs above a threshold (enhancer > 0.5, structure match >= 0.9, >= 20 bits;
  NaN counts as below).

Quality bars, fixed before any result was seen (PASS needs every line of the domain):

- realism: 3-mer r >= 0.9 to held-out, or, where the real-vs-real baseline itself is below 0.95
  (few letters per k-mer: protein has 8,000 3-mers), r >= baseline - 0.05;
- diversity within 10 % (relative) of held-out's;
- novelty: at most 1 % exact training copies, and mean nearest-training distance at least half
  of held-out's (held-out sequences are new by construction);
- length (RNA, protein): mean within 10 % of held-out's;
- DNA only, the oracle: conditioning must show in the task's score: the HepG2 class's samples
  score higher on ``EnhancerScore("HepG2")`` than every other class's samples, with a mean within
  0.05 of the held-out HepG2 regions'. RNA and protein have no oracle bar (an unconditional prior
  is not trained for the task): their numbers are the fine-tuning's starting point.

Writes benchmarks/results/sequence_priors.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from seiko.datamodules import SequenceDataModule
from seiko.lightning_modules.biosequences import DNADiffusion, ProteinDiffusion, RNADiffusion
from seiko.metrics.sequences import (
    HammingDiversity,
    KmerSpectrumCorrelation,
    LevenshteinDiversity,
    NearestReferenceDistance,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
MODULES = {"dna": DNADiffusion, "rna": RNADiffusion, "protein": ProteinDiffusion}
LETTERS = {"dna": "ACGT", "rna": "ACGU", "protein": "ACDEFGHIKLMNPQRSTVWY"}
RNA_TARGET = "DA1543"
THRESHOLDS = {"dna": 0.5, "rna": 0.9, "protein": 20.0}


def oracle_for(domain: str):
    if domain == "dna":
        from seiko.oracles.dna import EnhancerScore

        return EnhancerScore(cell_type="HepG2")
    if domain == "rna":
        from seiko.oracles.rna import StructureMatch

        return StructureMatch(
            target_id=RNA_TARGET, targets_path="data/rna_trna1415_with_structure.tsv.gz"
        )
    from seiko.oracles.protein import HMMScore

    return HMMScore("data/hmm/Pkinase.hmm")


def datamodule(domain: str) -> SequenceDataModule:
    """The pretraining config's datamodule (same file, length policy and split)."""
    spec = yaml.safe_load((ROOT / "configs" / domain / "pretrain.yaml").read_text())
    data = SequenceDataModule(**spec["data"]["init_args"])
    data.setup("fit")
    return data


def oracle_stats(values: torch.Tensor, threshold: float) -> dict[str, float]:
    finite = values[torch.isfinite(values)]
    top = finite.sort(descending=True).values[:10]
    return {
        "feasible": float(len(finite) / max(len(values), 1)),
        "mean": float(finite.mean()) if len(finite) else math.nan,
        "top10": float(top.mean()) if len(top) else math.nan,
        "above": float((finite >= threshold).sum() / max(len(values), 1)),
    }


def describe(
    domain: str,
    designs: list[str],
    held_out: list[str],
    train: list[str],
    train_set: set[str],
    oracle,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Every statistic of one set of designs (samples, or the real baseline) against held-out."""
    letters = LETTERS[domain]
    kmer = KmerSpectrumCorrelation(reference=held_out, alphabet=letters, k=3)
    kmer.update(designs)
    out: dict[str, Any] = {"n": len(designs), "kmer3_r": float(kmer.compute())}
    rng = random.Random(0)
    if domain == "dna":
        diversity = HammingDiversity(letters, len(designs[0]))
        diversity.update(designs)
        novelty = NearestReferenceDistance(reference=train)
        novelty.update(designs)
    else:
        diversity = LevenshteinDiversity()
        diversity.update(designs[: args.pairwise])
        reference = rng.sample(train, min(args.reference, len(train)))
        novelty = NearestReferenceDistance(reference=reference, distance="levenshtein")
        novelty.update(designs[: args.pairwise])
        lengths = torch.tensor([len(d) for d in designs], dtype=torch.float64)
        out["mean_length"] = float(lengths.mean())
        if domain == "rna":
            out["fraction_74nt"] = float((lengths == 74).double().mean())
    out["diversity"] = float(diversity.compute())
    out["novelty"] = float(novelty.compute())
    out["copies"] = sum(d in train_set for d in designs) / len(designs)
    out["oracle"] = oracle_stats(oracle(designs), THRESHOLDS[domain])
    return out


def verdict(domain: str, sample: dict, real: dict, held: dict) -> list[tuple[str, bool]]:
    """The domain's quality bar, line by line (see the module docstring)."""
    baseline = real["kmer3_r"]
    kmer_bar = 0.9 if baseline >= 0.95 else baseline - 0.05
    lines = [
        (f"3-mer r {sample['kmer3_r']:.3f} >= {kmer_bar:.3f}", sample["kmer3_r"] >= kmer_bar),
        (
            f"diversity {sample['diversity']:.3f} within 10 % of held-out {held['diversity']:.3f}",
            abs(sample["diversity"] - held["diversity"]) <= 0.1 * held["diversity"],
        ),
        (f"copies {sample['copies']:.3f} <= 0.01", sample["copies"] <= 0.01),
        (
            f"novelty {sample['novelty']:.3f} >= half of held-out's {held['novelty']:.3f}",
            sample["novelty"] >= 0.5 * held["novelty"],
        ),
    ]
    if "mean_length" in sample:
        lines.append(
            (
                f"mean length {sample['mean_length']:.1f} within 10 % of held-out "
                f"{held['mean_length']:.1f}",
                abs(sample["mean_length"] - held["mean_length"]) <= 0.1 * held["mean_length"],
            )
        )
    return lines


def run_domain(domain: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    start = time.perf_counter()
    model = MODULES[domain].load_from_checkpoint(
        str(Path(args.models) / domain / "prior.ckpt"), map_location="cpu"
    )
    data = datamodule(domain)
    oracle = oracle_for(domain)
    train, test = data.sequences["train"], data.sequences["test"]
    train_set = set(train)
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    if domain == "dna":
        test_labels = data.test_set.tensors[1].tolist()
        train_labels = data.train_set.tensors[1].tolist()
        for k, label in enumerate(model.labels):
            held = [s for s, c in zip(test, test_labels, strict=True) if c == k]
            pool = [s for s, c in zip(train, train_labels, strict=True) if c == k]
            t0 = time.perf_counter()
            x = model.sample(
                args.dna_samples,
                cond=model.label_ids([label] * args.dna_samples),
                generator=generator,
            )
            designs = model.decode(x)
            seconds = time.perf_counter() - t0
            real = random.Random(args.seed).sample(pool, min(args.dna_samples, len(pool)))
            rows.append(
                {
                    "domain": domain,
                    "group": label.split("_")[0],
                    "sample_seconds": seconds,
                    "samples": describe(domain, designs, held, train, train_set, oracle, args),
                    "train_draw": describe(domain, real, held, train, train_set, oracle, args),
                    "held_out": describe(domain, held, held, train, train_set, oracle, args),
                }
            )
    else:
        n = args.protein_samples if domain == "protein" else args.samples
        t0 = time.perf_counter()
        designs = model.decode(model.sample(n, generator=generator))
        seconds = time.perf_counter() - t0
        real = random.Random(args.seed).sample(train, min(n, len(train)))
        rows.append(
            {
                "domain": domain,
                "group": "all",
                "sample_seconds": seconds,
                "samples": describe(domain, designs, test, train, train_set, oracle, args),
                "train_draw": describe(domain, real, test, train, train_set, oracle, args),
                "held_out": describe(domain, test, test, train, train_set, oracle, args),
            }
        )
    for row in rows:
        lines = verdict(domain, row["samples"], row["train_draw"], row["held_out"])
        row["checks"] = [{"check": text, "pass": ok} for text, ok in lines]
    if domain == "dna":
        # conditioning shows in the task's score (the HepG2 class vs every other class)
        means = {row["group"]: row["samples"]["oracle"]["mean"] for row in rows}
        held = next(row["held_out"]["oracle"]["mean"] for row in rows if row["group"] == "HepG2")
        others = max(v for g, v in means.items() if g != "HepG2")
        hep = next(row for row in rows if row["group"] == "HepG2")
        hep["checks"] += [
            {
                "check": f"HepG2 samples' enhancer mean {means['HepG2']:.3f} > other classes' "
                f"(best {others:.3f})",
                "pass": means["HepG2"] > others,
            },
            {
                "check": f"HepG2 samples' enhancer mean {means['HepG2']:.3f} within 0.05 of "
                f"held-out HepG2 {held:.3f}",
                "pass": abs(means["HepG2"] - held) <= 0.05,
            },
        ]
    for row in rows:
        row["pass"] = all(check["pass"] for check in row["checks"])
        row["domain_seconds"] = time.perf_counter() - start
    return rows


def _f(value: float, digits: int = 3) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.{digits}f}")
    )


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    out = [
        "# Sequence priors: samples vs held-out real sequences",
        "",
        f"`OMP_NUM_THREADS=1 python benchmarks/sequence_priors.py` (seed {args.seed}; DNA "
        f"{args.dna_samples} samples per cell type, RNA {args.samples}, protein "
        f"{args.protein_samples}; pairwise metrics "
        f"on the first {args.pairwise}, Levenshtein novelty against {args.reference} training "
        "sequences). Bars: see the script's docstring. `train draw` is as many training "
        "sequences, compared with held-out the same way (the real-vs-real baseline).",
        "",
        "| domain | group | set | n | 3-mer r | diversity | novelty | copies | length | "
        "oracle mean | top-10 | above | feasible |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for key, name in (
            ("samples", "samples"),
            ("train_draw", "train draw"),
            ("held_out", "held-out"),
        ):
            s = row[key]
            out.append(
                f"| {row['domain']} | {row['group']} | {name} | {s['n']} | {_f(s['kmer3_r'])} | "
                f"{_f(s['diversity'])} | {_f(s['novelty'])} | {_f(s['copies'])} | "
                f"{_f(s.get('mean_length', math.nan), 1)} | {_f(s['oracle']['mean'])} | "
                f"{_f(s['oracle']['top10'])} | {_f(s['oracle']['above'])} | "
                f"{_f(s['oracle']['feasible'])} |"
            )
    out += [
        "",
        "Oracles: DNA `EnhancerScore('HepG2')` (above: > 0.5), RNA `StructureMatch` to "
        f"{RNA_TARGET} (NaN unless 74 nt; above: >= 0.9), protein `HMMScore(Pkinase)` "
        "(above: >= 20 bits).",
        "",
        "## Verdicts",
        "",
    ]
    for row in rows:
        out.append(f"**{row['domain']} {row['group']}: {'PASS' if row['pass'] else 'FAIL'}**")
        out.append("")
        out += [f"- {'pass' if c['pass'] else 'FAIL'}: {c['check']}" for c in row["checks"]]
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--domains", nargs="+", default=["dna", "rna", "protein"], choices=sorted(MODULES)
    )
    parser.add_argument("--samples", type=int, default=500, help="RNA and protein samples")
    parser.add_argument("--dna-samples", type=int, default=128, help="DNA samples per cell type")
    parser.add_argument("--protein-samples", type=int, default=250, help="protein samples")
    parser.add_argument(
        "--pairwise",
        type=int,
        default=250,
        help="designs for the Levenshtein diversity and novelty",
    )
    parser.add_argument(
        "--reference", type=int, default=500, help="training sequences for the Levenshtein novelty"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="sequence_priors", help="results file stem")
    parser.add_argument(
        "--models", default=str(ROOT / "models"), help="<domain>/prior.ckpt under it"
    )
    parser.add_argument("--results", default=str(RESULTS), help="where the results go")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    results = Path(args.results)
    path = results / f"{args.name}.json"
    # domains run separately (each costs minutes) and merge into one results file
    previous = json.loads(path.read_text())["rows"] if path.exists() else []
    rows = [row for row in previous if row["domain"] not in args.domains]
    for domain in args.domains:
        new = run_domain(domain, args)
        for row in new:
            print(
                row["domain"],
                row["group"],
                "PASS" if row["pass"] else "FAIL",
                json.dumps(row["samples"]),
                flush=True,
            )
        rows += new
    order = {d: i for i, d in enumerate(MODULES)}
    rows.sort(key=lambda row: order[row["domain"]])
    results.mkdir(parents=True, exist_ok=True)
    result = {"settings": vars(args), "rows": rows}
    path.write_text(json.dumps(result, indent=2) + "\n")
    (results / f"{args.name}.md").write_text(markdown(rows, args) + "\n")
    print(f"wrote {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
