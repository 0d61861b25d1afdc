"""JASPAR motif oracles for DNA: motif presence and a cell-type-specific enhancer score.

Every oracle takes a list of DNA strings (the output of a DNA model's ``decode``) and returns a
(N,) float64 tensor. A design that is not a string of the upper-case letters A, C, G, T (lower
case, N, U, an empty string, None, a non-string) is NaN, and so is a sequence shorter than the
longest motif the oracle scans (it cannot hold it): one bad design never fails the batch.

Motifs come from JASPAR (Rauluseviciute et al., Nucleic Acids Res. 2024), read offline from the
SQLite database that ships in the ``pyjaspar`` wheel, CORE collection, one ``release`` (default
JASPAR2024, pinned so that a newer pyjaspar does not change the oracle). A motif is named by its
matrix ID (``"MA0114.4"``; without the version, ``"MA0114"``, the latest version) or by its
transcription-factor name (``"HNF4A"``, case-insensitive), which stands for *every* latest-version
CORE matrix of that name in ``tax_group`` (HNF4A has two in JASPAR2024: MA0114.5 and MA1494.2).

Scores (Biopython ``Bio.motifs``; Wasserman & Sandelin, Nat. Rev. Genet. 2004):

* Position weight matrix of a matrix with counts n_{b,i} (base b, position i):
  P_{b,i} = (n_{b,i} + 0.8) / sum_b' (n_{b',i} + 0.8) (``counts.normalize(pseudocounts=0.8)``; 0.8
  per base keeps every log-odds finite, the raw matrices have zero counts), log-odds
  W_{b,i} = log2(P_{b,i} / 0.25) against a uniform background (``.log_odds()``).
* Score of a window x_{p..p+K-1}: s(x, p) = sum_i W_{x_{p+i}, i}; of the reverse strand, the same
  with the reverse-complement matrix. S(x) = max over all positions p and both strands (bits).
* Hit threshold t: the score whose false-positive rate under the uniform background is ``fpr``
  = 1e-4 per position and strand (the p < 1e-4 default of FIMO, Grant et al., Bioinformatics
  2011), from the exact score distribution (``score_threshold``, 30-200x faster than Biopython's
  ``pssm.distribution().threshold_fpr``, with which it selects the same windows, except that for a
  matrix as short as GATA1's 7 positions Biopython also admits the next word, whose tail
  probability exceeds fpr). A random 200 bp sequence (398 windows) holds a hit with probability
  about 2-7 %.
* Presence: p(x) = sigmoid((S(x) - t) / temperature), 0.5 at the threshold, about 0.73 one bit
  above it (``temperature=1``); the soft version of "has a hit". A name with several matrices
  takes the largest presence (margin) of its matrices.

Scanning is a one-hot ``conv1d`` in torch: all matrices of an oracle (both strands) are one
convolution, sequences of equal length one batch.
"""

from __future__ import annotations

import difflib
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

# seiko.datamodules.sequences.ALPHABETS["dna"], not imported from there: that pulls in Lightning
# (seconds), which an oracle in a worker process does not need. Also the one-hot row order.
DNA_ALPHABET = "ACGT"
_ALLOWED = re.compile(f"[{DNA_ALPHABET}]+")
_ONE_HOT = torch.zeros(256, 4)  # byte -> one-hot row (A, C, G, T); other bytes never get here
for _i, _base in enumerate(DNA_ALPHABET):
    _ONE_HOT[ord(_base), _i] = 1.0

CellType = Literal["HepG2", "K562", "GM12878", "hESC"]
Statistic = Literal["presence", "margin"]

# Master regulators of each DHS cell type of the DNA pretraining data (the ENCODE DHS index's
# GM12878, HepG2, K562 and hESC regions), from the literature:
# HepG2, liver: HNF4A, FOXA2, HNF1A, CEBPB (the hepatocyte "core" factors; Odom et al., Science
#   2004; Kyrmizi et al., Genes Dev. 2006);
# K562, erythroleukaemia: the GATA1-TAL1 complex (Wadman et al., EMBO J. 1997) and the GATA site
#   (WGATAR, bound by GATA1 and GATA2, both expressed in K562) as GATA2's matrix: GATA1's latest
#   (MA0035.5) has only 7 positions, too few for fpr 1e-4 to admit more than its consensus;
# GM12878, lymphoblastoid B cells: SPI1 (PU.1), IRF4, RUNX3 (all ChIP-profiled there by ENCODE,
#   Nature 2012; EBF1 was left out: its motif is not enriched in these GM12878 regions);
# hESC: the OCT4-SOX2 composite element (Boyer et al., Cell 2005).
# Each is enriched in its own cell type's regions of the DHS data (docs/sequences.md).
CELL_TYPE_MOTIFS: dict[str, tuple[str, ...]] = {
    "HepG2": ("HNF4A", "FOXA2", "HNF1A", "CEBPB"),
    "K562": ("GATA1::TAL1", "GATA2"),
    "GM12878": ("SPI1", "IRF4", "RUNX3"),
    "hESC": ("Pou5f1::Sox2",),
}


# ---------------------------------------------------------------------- JASPAR matrices
@dataclass(frozen=True)
class MotifMatrix:
    """One JASPAR matrix as a log-odds scoring matrix.

    Attributes:
        matrix_id: JASPAR ID with version, e.g. "MA0114.5".
        name: the transcription factor's name, e.g. "HNF4A".
        log_odds: (4, K) float64 log2-odds of A, C, G, T at each of the K positions.
        threshold: hit threshold in bits (false-positive rate ``fpr`` per position and strand).
    """

    matrix_id: str
    name: str
    log_odds: Tensor
    threshold: float

    @property
    def length(self) -> int:
        return self.log_odds.shape[1]


def _jaspar(release: str) -> Any:
    import pyjaspar

    # pyjaspar only prints a note for an unknown release and fails later: check it here.
    if release not in pyjaspar.jaspar_releases:
        known = sorted(pyjaspar.jaspar_releases)
        raise ValueError(f"unknown JASPAR release {release!r}; pyjaspar ships {known}")
    return pyjaspar.jaspardb(release=release)


def _fetch(db: Any, spec: str, tax_group: str) -> list[Any]:
    """The latest-version CORE matrices that ``spec`` (an ID or a name) stands for."""
    with warnings.catch_warnings():  # pyjaspar warns on every empty answer; we raise instead
        warnings.simplefilter("ignore")
        if re.fullmatch(r"MA\d{4}(\.\d+)?", spec):  # a CORE ID; no version: the latest one
            motif = db.fetch_motif_by_id(spec)
            return [] if motif is None else [motif]
        motifs = db.fetch_motifs_by_name(spec)
        return [m for m in motifs if m.collection == "CORE" and m.tax_group == tax_group]


def _unknown(db: Any, spec: str, release: str, tax_group: str) -> ValueError:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = sorted({m.name for m in db.fetch_motifs(collection="CORE", tax_group=tax_group)})
    close = difflib.get_close_matches(spec, names, n=5, cutoff=0.6)
    hint = f"; close names: {close}" if close else ""
    return ValueError(
        f"unknown JASPAR motif {spec!r} in {release} CORE {tax_group}: expected a matrix ID like "
        f"'MA0114.4' or one of its {len(names)} transcription-factor names{hint}"
    )


def score_threshold(log_odds: Tensor, fpr: float, resolution: float = 1e-3) -> float:
    """The hit threshold of a log-odds matrix: the score a random window reaches with prob. fpr.

    The exact distribution of the window score under the uniform background, with each entry of
    the matrix rounded to a grid of ``resolution`` bits, is built column by column (each column
    adds one of four equally likely scores: a convolution of the distribution so far with four
    spikes; Staden, CABIOS 1989; Touzet & Varre, Algorithms Mol. Biol. 2007). The hits are the
    windows of the highest rounded scores whose total probability is at most fpr; when even the
    best score is more likely than fpr (a matrix of 6 or fewer positions at fpr 1e-4), the windows
    of the best score. The threshold t is the lowest rounded score of a hit less the largest
    rounding error, K * resolution / 2, so that every hit's exact score is >= t.

    Args:
        log_odds: (4, K) log2-odds.
        fpr: false-positive rate per window, in (0, 1).
        resolution: grid step in bits (the rounding error is at most K * resolution / 2).

    Returns:
        The threshold in bits.
    """
    steps = torch.round(log_odds.double() / resolution).long()  # (4, K)
    low = steps.min(dim=0).values
    offsets = (steps - low).numpy()
    dist = np.ones(1)
    for column in offsets.T:
        grown = np.zeros(len(dist) + column.max())
        for offset in column:
            grown[offset : offset + len(dist)] += 0.25 * dist
        dist = grown
    tail = np.cumsum(dist[::-1])[::-1]  # tail[j] = P(score >= (j + sum(low)) * resolution)
    passing = np.flatnonzero((tail <= fpr) & (dist > 0))
    lowest_hit = int(passing[0]) if len(passing) else len(tail) - 1
    # a window's exact score is within K * resolution / 2 of its rounded one: every hit clears t
    slack = log_odds.shape[1] * resolution / 2
    return (lowest_hit + int(low.sum())) * resolution - slack


def load_motifs(
    specs: Sequence[str],
    release: str = "JASPAR2024",
    tax_group: str = "vertebrates",
    pseudocounts: float = 0.8,
    fpr: float = 1e-4,
) -> dict[str, list[MotifMatrix]]:
    """The JASPAR matrices of each motif spec (an ID or a name), with their hit thresholds.

    Raises:
        ValueError: an unknown release or motif (naming it, with close names), a motif listed
            twice, ``fpr`` not in (0, 1), ``pseudocounts`` not > 0.
    """
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    if not pseudocounts > 0:
        raise ValueError(
            f"pseudocounts must be > 0 (raw log-odds contain -inf), got {pseudocounts}"
        )
    if isinstance(specs, str) or not specs:
        raise ValueError(f"expected a non-empty list of motif IDs or names, got {specs!r}")
    repeated = sorted({spec for spec in specs if list(specs).count(spec) > 1})
    if repeated:
        raise ValueError(f"motifs {repeated} are listed more than once")
    db = _jaspar(release)
    out: dict[str, list[MotifMatrix]] = {}
    for spec in specs:
        if not isinstance(spec, str):
            raise ValueError(f"a motif is named by a string (ID or name), got {spec!r}")
        motifs = _fetch(db, spec, tax_group)
        if not motifs:
            raise _unknown(db, spec, release, tax_group)
        matrices = []
        for motif in sorted(motifs, key=lambda m: m.matrix_id):
            pssm = motif.counts.normalize(pseudocounts=pseudocounts).log_odds()
            log_odds = torch.tensor([list(pssm[b]) for b in DNA_ALPHABET], dtype=torch.float64)
            threshold = score_threshold(log_odds, fpr)
            matrices.append(MotifMatrix(motif.matrix_id, motif.name, log_odds, threshold))
        out[spec] = matrices
    return out


# ---------------------------------------------------------------------- scanning
def is_dna(design: Any) -> bool:
    """True for a non-empty string of upper-case A, C, G, T."""
    return isinstance(design, str) and _ALLOWED.fullmatch(design) is not None


def one_hot_dna(sequences: Sequence[str]) -> Tensor:
    """(N, 4, L) float32 one-hot of N valid DNA strings of one length L (rows A, C, G, T)."""
    length = len(sequences[0]) if sequences else 0
    codes = np.frombuffer("".join(sequences).encode("ascii"), dtype=np.uint8).astype(np.int64)
    return _ONE_HOT[torch.from_numpy(codes).view(len(sequences), length)].transpose(1, 2)


class MotifScanner:
    """Best log-odds score of M matrices over both strands, as one convolution.

    Args:
        matrices: the M matrices to scan.
        chunk_size: sequences per convolution (bounds the memory of the score tensor).

    The forward strand's kernel of a (4, K) matrix W is W itself, the reverse strand's is W with
    both axes flipped (reverse complement: with rows A, C, G, T, complementing reverses the rows).
    Shorter matrices are zero-padded on the right to the longest, K_max; the sequence is padded
    on the right with K_max - K_min zero columns, and a matrix of length K keeps only the
    positions p <= L - K, so every kept window lies inside the sequence.
    """

    def __init__(self, matrices: Sequence[MotifMatrix], chunk_size: int = 4096) -> None:
        self.matrices = list(matrices)
        self.chunk_size = chunk_size
        self.lengths = torch.tensor([m.length for m in self.matrices])
        self.max_length = int(self.lengths.max())
        self.min_length = int(self.lengths.min())
        kernels = []
        for strand in (0, 1):
            for m in self.matrices:
                w = m.log_odds if strand == 0 else m.log_odds.flip(0).flip(1)
                kernels.append(torch.nn.functional.pad(w, (0, self.max_length - m.length)))
        self.weight = torch.stack(kernels).float()  # (2M, 4, K_max)

    def best_scores(self, designs: Sequence[Any]) -> Tensor:
        """(N, M) float64 best score S of each matrix; a NaN row for an invalid or short design."""
        n, m = len(designs), len(self.matrices)
        out = torch.full((n, m), math.nan, dtype=torch.float64)
        by_length: dict[int, list[int]] = {}
        for i, design in enumerate(designs):
            if is_dna(design) and len(design) >= self.max_length:
                by_length.setdefault(len(design), []).append(i)
        for length, same_length in by_length.items():
            positions = torch.arange(length - self.min_length + 1)
            outside = positions[None, :] > (length - self.lengths)[:, None]  # (M, P)
            # chunks bound the (B, 2M, P) float32 scores: 4096 x 24 x 200 is 79 MB
            for start in range(0, len(same_length), self.chunk_size):
                rows = same_length[start : start + self.chunk_size]
                x = one_hot_dna([designs[i] for i in rows])
                x = torch.nn.functional.pad(x, (0, self.max_length - self.min_length))
                with torch.no_grad():
                    scores = torch.nn.functional.conv1d(x, self.weight)  # (B, 2M, P)
                scores = scores.view(len(rows), 2, m, -1).masked_fill(outside, -math.inf)
                out[rows] = scores.amax(dim=(1, 3)).double()
        return out


# ---------------------------------------------------------------------- oracles
class _MotifOracle:
    """Shared set-up: resolve motif specs, build one scanner, turn scores into presences."""

    def __init__(
        self,
        specs: Sequence[str],
        release: str,
        tax_group: str,
        pseudocounts: float,
        fpr: float,
        temperature: float,
    ) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 (bits), got {temperature}")
        self.release = release
        self.temperature = temperature
        self.motifs = load_motifs(specs, release, tax_group, pseudocounts, fpr)
        matrices = [m for group in self.motifs.values() for m in group]
        self.scanner = MotifScanner(matrices)
        self._thresholds = torch.tensor([m.threshold for m in matrices], dtype=torch.float64)
        # column ranges of each spec's matrices in the scanner's output
        self._columns: dict[str, slice] = {}
        start = 0
        for spec, group in self.motifs.items():
            self._columns[spec] = slice(start, start + len(group))
            start += len(group)

    def margins(self, designs: Sequence[Any]) -> dict[str, Tensor]:
        """Each spec's best score minus threshold, S - t in bits, max over its matrices: (N,)."""
        excess = self.scanner.best_scores(designs) - self._thresholds
        return {spec: excess[:, cols].amax(dim=1) for spec, cols in self._columns.items()}

    def presences(self, designs: Sequence[Any]) -> dict[str, Tensor]:
        """Each spec's presence sigmoid((S - t) / temperature) in (0, 1): (N,)."""
        return {
            spec: torch.sigmoid(margin / self.temperature)
            for spec, margin in self.margins(designs).items()
        }


class MotifPresence(_MotifOracle):
    """How strongly a DNA sequence holds given JASPAR motifs (mean over the motifs).

    value = mean over motifs of p(x) = sigmoid((S(x) - t) / temperature) in (0, 1)
    (``statistic="presence"``), or of the margin S(x) - t in bits (``statistic="margin"``),
    where S is the best log-odds score over positions and strands and t the motif's hit threshold
    (see the module docstring). Higher is better.

    Args:
        motifs: JASPAR matrix IDs ("MA0114.4") or transcription-factor names ("HNF4A").
        statistic: "presence" (bounded, saturates once the motif is clearly there) or "margin".
        release: JASPAR release shipped in pyjaspar ("JASPAR2024", "JASPAR2026", ...).
        tax_group: JASPAR taxonomic group that names are looked up in.
        pseudocounts: added to each count before normalising (> 0).
        fpr: per-position false-positive rate that sets each threshold t.
        temperature: width of the sigmoid in bits (> 0).
        name: recorded with every answer; default ``"motif_<statistic>:<motif>+<motif>..."``.

    Raises:
        ValueError: an unknown motif or release, or a parameter out of range, naming it.
    """

    higher_is_better = True

    def __init__(
        self,
        motifs: list[str],
        statistic: Statistic = "presence",
        release: str = "JASPAR2024",
        tax_group: str = "vertebrates",
        pseudocounts: float = 0.8,
        fpr: float = 1e-4,
        temperature: float = 1.0,
        name: str | None = None,
    ) -> None:
        if statistic not in ("presence", "margin"):
            raise ValueError(f"unknown statistic {statistic!r}; expected 'presence' or 'margin'")
        super().__init__(motifs, release, tax_group, pseudocounts, fpr, temperature)
        self.statistic = statistic
        self.name = name or f"motif_{statistic}:{'+'.join(motifs)}"

    def __repr__(self) -> str:
        return f"MotifPresence({list(self.motifs)}, statistic={self.statistic!r})"

    def __call__(self, designs: Sequence[Any]) -> Tensor:
        """(N,) float64 values for N DNA strings, NaN where a design is not valid DNA."""
        per_motif = (
            self.presences(designs) if self.statistic == "presence" else self.margins(designs)
        )
        return torch.stack(list(per_motif.values()), dim=1).mean(dim=1)


class EnhancerScore(_MotifOracle):
    """Cell-type-specific enhancer score: own motifs present, other cell types' motifs absent.

    value = mean_{m in on_target} p_m(x) - mean_{m in off_target} p_m(x), in (-1, 1),

    with the presences p_m of the module docstring. Higher is better: 1 when every on-target
    motif is clearly present and no off-target one is. By default the on-target motifs are the
    cell type's master regulators in ``CELL_TYPE_MOTIFS`` (HepG2: HNF4A, FOXA2, HNF1A, CEBPB) and
    the off-target ones those of the three other DHS cell types (GATA1::TAL1, GATA2, SPI1, IRF4,
    RUNX3, Pou5f1::Sox2 for HepG2). A motif-based proxy for the cell-type-specific enhancer
    activity of an MPRA-trained model (the SEIKO paper's HepG2 task used such a model).

    Args:
        cell_type: the wanted cell type, one of ``CELL_TYPE_MOTIFS``.
        on_target: overrides the cell type's own motifs (IDs or names).
        off_target: overrides the off-target motifs; an empty list means none.
        release, tax_group, pseudocounts, fpr, temperature: as in ``MotifPresence``.
        name: recorded with every answer; default ``"enhancer_<cell_type>"``.

    Raises:
        ValueError: an unknown cell type or motif, or a motif both on and off target.
    """

    higher_is_better = True

    def __init__(
        self,
        cell_type: CellType = "HepG2",
        on_target: list[str] | None = None,
        off_target: list[str] | None = None,
        release: str = "JASPAR2024",
        tax_group: str = "vertebrates",
        pseudocounts: float = 0.8,
        fpr: float = 1e-4,
        temperature: float = 1.0,
        name: str | None = None,
    ) -> None:
        if cell_type not in CELL_TYPE_MOTIFS:
            raise ValueError(
                f"unknown cell type {cell_type!r}; expected one of {list(CELL_TYPE_MOTIFS)}"
            )
        if on_target is None:
            on_target = list(CELL_TYPE_MOTIFS[cell_type])
        if off_target is None:
            off_target = [
                m for other, ms in CELL_TYPE_MOTIFS.items() if other != cell_type for m in ms
            ]
        if not on_target:
            raise ValueError("EnhancerScore needs at least one on-target motif")
        both = sorted(set(on_target) & set(off_target))
        if both:
            raise ValueError(f"motifs {both} are both on-target and off-target")
        super().__init__(
            [*on_target, *off_target], release, tax_group, pseudocounts, fpr, temperature
        )
        self.cell_type = cell_type
        self.on_target = list(on_target)
        self.off_target = list(off_target)
        self.name = name or f"enhancer_{cell_type}"

    def __repr__(self) -> str:
        return (
            f"EnhancerScore({self.cell_type!r}, on_target={self.on_target}, "
            f"off_target={self.off_target})"
        )

    def __call__(self, designs: Sequence[Any]) -> Tensor:
        """(N,) float64 values for N DNA strings, NaN where a design is not valid DNA."""
        p = self.presences(designs)
        on = torch.stack([p[m] for m in self.on_target], dim=1).mean(dim=1)
        if not self.off_target:
            return on
        return on - torch.stack([p[m] for m in self.off_target], dim=1).mean(dim=1)


__all__ = [
    "CELL_TYPE_MOTIFS",
    "DNA_ALPHABET",
    "EnhancerScore",
    "MotifMatrix",
    "MotifPresence",
    "MotifScanner",
    "is_dna",
    "load_motifs",
    "one_hot_dna",
    "score_threshold",
]
