"""Metrics of generated sequences (DNA, RNA, protein): diversity, novelty, k-mer realism.

- :class:`HammingDiversity`: mean pairwise normalised Hamming distance (equal lengths).
- :class:`LevenshteinDiversity`: mean pairwise (normalised) edit distance (any lengths).
- :class:`NearestReferenceDistance`: novelty as the mean distance from each design to its nearest
  reference (training) sequence.
- :class:`KmerSpectrumCorrelation`: Pearson correlation of the designs' and the reference set's
  k-mer frequencies, DRAKES' realism check.

Designs are strings; ``None`` marks an infeasible one and is skipped. The oracle-budget metrics
(:class:`~seiko.metrics.TopKAUC` and friends) apply to sequences unchanged.

DDP: each rank updates with its own designs and ``compute`` sees all ranks. Counts are "sum"
states; the designs that a pairwise metric needs are kept as Unicode code points in typed "cat"
list states (``_typed_lists``), so a rank without designs still gathers well-typed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from seiko.metrics._typed_lists import TypedListStateMetric
from seiko.metrics.designs import feasible_designs

# Pairwise dynamic programmes and one-hot matmuls run in blocks of at most this many entries
# (4 MiB of int32), so that memory stays flat however many pairs there are.
BLOCK_ENTRIES = 2**20
# A k-mer spectrum larger than this (e.g. 20 amino acids, k = 6: 64M) is refused.
MAX_KMERS = 2**24


class HammingDiversity(Metric):
    """Mean pairwise normalised Hamming distance of equal-length sequences.

    The mean of d(a, b) = (number of positions where a and b differ) / L over the N(N-1)/2 distinct
    pairs of the N feasible sequences (duplicates stay in). It needs no pairwise pass: at a position
    where letter c occurs n_c times, the pairs that differ there number (N^2 - sum_c n_c^2) / 2, so

        diversity = (L N^2 - sum_{position, c} n_c^2) / (L N (N - 1)).

    The states are these per-position letter counts, (L, A) summed over ranks, so DDP is exact and
    the memory does not grow with N. NaN with fewer than two sequences.

    Args:
        alphabet: the allowed letters, e.g. ``"ACGT"``.
        length: the sequence length L.
        kwargs: torchmetrics ``Metric`` options.

    Raises:
        ValueError: if the alphabet is empty or repeats a letter, or ``length < 1``.

    Example:
        >>> metric = HammingDiversity(alphabet="ACGT", length=4)
        >>> metric.update(["AAAA", "AACC", None])
        >>> float(metric.compute())
        0.5
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(self, alphabet: str, length: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_alphabet(alphabet)
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.alphabet, self.length = alphabet, length
        self.add_state(
            "letter_counts",
            default=torch.zeros(length, len(alphabet), dtype=torch.long),
            dist_reduce_fx="sum",
        )
        self.add_state("n_sequences", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, sequences: Sequence[str | None]) -> None:
        """Counts the letters of each feasible sequence at each position.

        Args:
            sequences: N sequences of length L, ``None`` where infeasible.

        Raises:
            ValueError: naming the sequence, if one has the wrong length or a letter outside the
                alphabet.
        """
        counts = position_letter_counts(sequences, self.alphabet, self.length)
        self.letter_counts += counts.to(self.letter_counts.device)
        self.n_sequences += int(counts[0].sum())

    def compute(self) -> Tensor:
        """() mean pairwise normalised Hamming distance."""
        n = int(self.n_sequences)
        if n < 2:
            return torch.tensor(math.nan)
        squares = (self.letter_counts.double() ** 2).sum()
        return ((self.length * n**2 - squares) / (self.length * n * (n - 1))).float()


class LevenshteinDiversity(TypedListStateMetric):
    """Mean pairwise edit (Levenshtein) distance of sequences of any lengths.

    The mean of d(a, b) over the N(N-1)/2 distinct pairs of the N feasible sequences (duplicates
    stay in), where d is the least number of single-letter insertions, deletions and substitutions
    turning a into b (Levenshtein 1966). With ``normalize`` (the default) each distance is divided
    by max(|a|, |b|), which bounds it in [0, 1] and makes it equal the normalised Hamming distance
    when no indel helps; two empty sequences are at distance 0. NaN with fewer than two sequences.

    Cost: exact, by :func:`levenshtein_distances` on all pairs: O(N^2 L^2) table cells in all, at
    5-10 ns each on one CPU core (measured; 128 sequences of 200 letters are 3.3e8 cells, 2-3 s),
    and O(L) memory per pair. For equal-length sequences :class:`HammingDiversity` is O(N L).

    DDP: each rank updates with its own sequences; their code points are gathered, so pairs across
    ranks count.

    Args:
        normalize: divide each distance by the longer sequence's length.
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> metric = LevenshteinDiversity(normalize=False)
        >>> metric.update(["ACGT", "AGT", None])
        >>> float(metric.compute())  # delete the C
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0

    def __init__(self, normalize: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.normalize = normalize
        self._add_typed_list_state("codes", torch.int32)
        self._add_typed_list_state("lengths", torch.int64)

    def update(self, sequences: Sequence[str | None]) -> None:
        """Records the feasible sequences.

        Args:
            sequences: N sequences, ``None`` where infeasible.
        """
        codes, lengths = code_points(feasible_designs(sequences))
        self.codes.append(codes.to(self.device))
        self.lengths.append(lengths.to(self.device))

    def compute(self) -> Tensor:
        """() mean pairwise (normalised) edit distance."""
        lengths = self._gathered("lengths")
        n = lengths.numel()
        if n < 2:
            return torch.tensor(math.nan, device=lengths.device)
        padded = _padded(self._gathered("codes"), lengths)
        i, j = torch.triu_indices(n, n, offset=1, device=lengths.device)
        total = torch.zeros((), dtype=torch.float64, device=lengths.device)
        chunk = max(1, BLOCK_ENTRIES // (padded.shape[1] + 1))
        for start in range(0, i.numel(), chunk):
            a, b = i[start : start + chunk], j[start : start + chunk]
            distances = _levenshtein(padded[a], lengths[a], padded[b], lengths[b])
            if self.normalize:
                distances = distances / torch.maximum(lengths[a], lengths[b]).clamp(min=1)
            total += distances.double().sum()
        return (total / i.numel()).float()


class NearestReferenceDistance(Metric):
    """Novelty: the mean distance from each design to its nearest reference sequence.

    For each feasible design a, min over the reference sequences r of d(a, r), averaged over the
    designs (duplicates stay in). With ``normalize`` (the default) the distance is divided by the
    length, so 0 means "a copy of a training sequence" and 1 "differs from every one at every
    position":

    - ``distance="hamming"``: d = positions where a and r differ, divided by L. The reference must
      share one length L and every design must have it. Cost: one (N, L A) x (L A, M) matmul of
      one-hot codes, O(N M L A), fast for tens of thousands of references.
    - ``distance="levenshtein"``: d = edit distance (see :class:`LevenshteinDiversity`), divided by
      max(|a|, |r|); any lengths. Cost: exact dynamic programming on all N M pairs, O(N M L^2)
      at 5-10 ns per cell on one CPU core (64 designs against 1,000 references of 200 letters are
      2.6e9 cells, 15-25 s), so give a reference subset when M is large.

    The per-design distances are computed in ``update`` (the reference is the same on every rank),
    so the states are a sum and a count: DDP is exact and memory does not grow with N. NaN before
    any feasible design.

    Args:
        reference: the reference (training) sequences, at least one.
        distance: ``"hamming"`` or ``"levenshtein"``.
        normalize: divide distances by the length (the longer one's, for Levenshtein).
        kwargs: torchmetrics ``Metric`` options.

    Raises:
        ValueError: if the reference is empty, ``distance`` is unknown, or (Hamming) the reference
            sequences differ in length or are empty strings.
        TypeError: if a reference sequence is not a string.

    Example:
        >>> metric = NearestReferenceDistance(reference=["AAAA", "CCCC"])
        >>> metric.update(["AAAC", "CCCC", None])
        >>> float(metric.compute())  # (1/4 + 0) / 2
        0.125
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0

    def __init__(
        self,
        reference: Iterable[str],
        distance: Literal["hamming", "levenshtein"] = "hamming",
        normalize: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if distance not in ("hamming", "levenshtein"):
            raise ValueError(f"distance must be 'hamming' or 'levenshtein', got {distance!r}")
        reference = list(reference)
        if not reference:
            raise ValueError("reference is empty: give at least one reference sequence")
        for i, sequence in enumerate(reference):
            if not isinstance(sequence, str):
                raise TypeError(
                    f"reference sequence {i} must be a str, got {type(sequence).__name__}: "
                    f"{sequence!r}"
                )
        self.distance, self.normalize = distance, normalize
        codes, lengths = code_points(reference)
        if distance == "hamming":
            self.length = len(reference[0])
            for i, sequence in enumerate(reference):
                if len(sequence) != self.length:
                    raise ValueError(
                        f"reference sequence {i} has length {len(sequence)} but reference "
                        f"sequence 0 has {self.length}; distance='hamming' needs one length, "
                        "use distance='levenshtein'"
                    )
            if self.length == 0:
                raise ValueError("the reference sequences are empty strings")
            # Letters as indices into the reference's sorted letters: the one-hot width is the
            # number of letters actually used, and a design letter outside it never matches.
            letters = torch.unique(codes)
            self.register_buffer("reference_letters", letters, persistent=False)
            indices = torch.searchsorted(letters, codes).to(torch.int32)
            self.register_buffer(
                "reference_codes", indices.reshape(len(reference), self.length), persistent=False
            )
        else:
            # Buffers, not states: the same on every rank, and they move with the metric's device.
            self.register_buffer("reference_codes", _padded(codes, lengths), persistent=False)
            self.register_buffer("reference_lengths", lengths, persistent=False)
        self.add_state(
            "distance_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("n_designs", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, sequences: Sequence[str | None]) -> None:
        """Adds each feasible design's distance to its nearest reference sequence.

        Args:
            sequences: N designs, ``None`` where infeasible.

        Raises:
            ValueError: (Hamming) naming the design, if one has a length other than the
                reference's.
        """
        designs = feasible_designs(sequences)
        if not designs:
            return
        if self.distance == "hamming":
            for i, sequence in enumerate(sequences):
                if sequence is not None and len(sequence) != self.length:
                    raise ValueError(
                        f"design {i} has length {len(sequence)} but the reference sequences have "
                        f"length {self.length}; Hamming distance needs equal lengths, use "
                        "distance='levenshtein'"
                    )
            nearest = self._nearest_hamming(designs)
        else:
            nearest = self._nearest_levenshtein(designs)
        self.distance_sum += nearest.double().sum()
        self.n_designs += len(designs)

    def compute(self) -> Tensor:
        """() mean distance to the nearest reference sequence."""
        n = int(self.n_designs)
        if n == 0:
            return torch.tensor(math.nan, device=self.distance_sum.device)
        return (self.distance_sum / n).float()

    def _nearest_hamming(self, designs: list[str]) -> Tensor:
        """(N,) distance of each design to its nearest reference sequence, Hamming."""
        letters = self.reference_letters
        n_letters = letters.numel()
        codes = code_points(designs)[0].to(letters.device)
        indices = torch.searchsorted(letters, codes).clamp(max=n_letters - 1)
        # A letter the reference never uses gets the extra index n_letters, cut off below.
        indices = torch.where(letters[indices] == codes, indices, n_letters)
        one_hot = torch.nn.functional.one_hot(
            indices.reshape(len(designs), self.length), n_letters + 1
        )
        designs_flat = one_hot[..., :n_letters].reshape(len(designs), -1).float()
        # Float32 sums of 0/1 products are exact up to 2^24 matches.
        best = torch.zeros(len(designs), device=letters.device)
        width = self.length * n_letters
        chunk = max(1, BLOCK_ENTRIES // width)
        for start in range(0, self.reference_codes.shape[0], chunk):
            block = self.reference_codes[start : start + chunk].long()
            block_flat = torch.nn.functional.one_hot(block, n_letters).reshape(len(block), width)
            matches = designs_flat @ block_flat.float().T
            best = torch.maximum(best, matches.max(dim=1).values)
        distances = self.length - best
        return distances / self.length if self.normalize else distances

    def _nearest_levenshtein(self, designs: list[str]) -> Tensor:
        """(N,) distance of each design to its nearest reference sequence, Levenshtein."""
        device = self.reference_codes.device
        codes, lengths = code_points(designs)
        padded, lengths = _padded(codes, lengths).to(device), lengths.to(device)
        n, m = len(designs), self.reference_lengths.numel()
        best = torch.full((n,), math.inf, dtype=torch.float64, device=device)
        width = max(padded.shape[1], self.reference_codes.shape[1]) + 1
        chunk = max(1, BLOCK_ENTRIES // width)
        for start in range(0, n * m, chunk):
            pairs = torch.arange(start, min(start + chunk, n * m), device=device)
            design, ref = pairs // m, pairs % m
            ref_lengths = self.reference_lengths[ref]
            distances = _levenshtein(
                padded[design], lengths[design], self.reference_codes[ref], ref_lengths
            ).double()
            if self.normalize:
                distances = distances / torch.maximum(lengths[design], ref_lengths).clamp(min=1)
            best.scatter_reduce_(0, design, distances, reduce="amin")
        return best


class KmerSpectrumCorrelation(Metric):
    """Pearson correlation between the k-mer frequencies of the designs and of a reference set.

    A realism check for designed sequences: a model that drifts off the data manifold (a reward
    hacked by repeating one motif, say) changes which short words it uses. The k-mers (k = 3 by
    default) of all feasible designs are counted, overlapping, within each sequence; so are the
    reference's. Over the k-mers that occur in either set, the Pearson correlation

        r = sum_w (x_w - x̄)(y_w - ȳ) / sqrt(sum_w (x_w - x̄)^2 sum_w (y_w - ȳ)^2)

    of the two frequency vectors is returned (frequencies or counts give the same r). This is the
    "3-mer Pearson correlation" of DRAKES (Wang et al., "Fine-Tuning Discrete Diffusion Models via
    Reward Optimization with Applications to DNA and Protein Design", ICLR 2025, arXiv:2410.13643),
    which, like its ``cal_kmer_corr``, correlates over the union of the k-mers seen. NaN when fewer
    than two k-mers occur or either vector is constant.

    DDP: the designs' k-mer counts are a (A^k,) "sum" state, exact across ranks; the reference
    counts are a buffer, the same on every rank.

    Args:
        reference: the reference sequences (the training data, or its top-scoring part as in
            DRAKES); together they must hold at least one k-mer.
        alphabet: the allowed letters, e.g. ``"ACGT"``; a k-mer is indexed by its letters' order
            here.
        k: the word length.
        kwargs: torchmetrics ``Metric`` options.

    Raises:
        ValueError: if the alphabet is empty or repeats a letter, ``k < 1``, ``len(alphabet)**k``
            exceeds ``MAX_KMERS``, a reference letter is outside the alphabet, or the reference
            has no k-mer.

    Example:
        >>> metric = KmerSpectrumCorrelation(reference=["AACC", "ACCA"], alphabet="AC", k=2)
        >>> metric.update(["AACCC"])  # AA AC CA CC: designs 1 1 0 2, reference 1 2 1 2
        >>> round(float(metric.compute()), 4)  # 1 / sqrt(2)
        0.7071
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = -1.0
    plot_upper_bound = 1.0

    def __init__(self, reference: Iterable[str], alphabet: str, k: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_alphabet(alphabet)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if len(alphabet) ** k > MAX_KMERS:
            raise ValueError(
                f"{len(alphabet)}^{k} = {len(alphabet) ** k} k-mers exceed MAX_KMERS = "
                f"{MAX_KMERS}; use a smaller k"
            )
        self.alphabet, self.k = alphabet, k
        reference_counts = kmer_counts(list(reference), alphabet, k, name="reference sequence")
        if reference_counts.sum() == 0:
            raise ValueError(f"no reference sequence has {k} letters, so there is no {k}-mer")
        self.register_buffer("reference_counts", reference_counts, persistent=False)
        self.add_state(
            "kmer_counts",
            default=torch.zeros(len(alphabet) ** k, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, sequences: Sequence[str | None]) -> None:
        """Counts the k-mers of the feasible sequences.

        Args:
            sequences: N sequences, ``None`` where infeasible.

        Raises:
            ValueError: naming the sequence and position, if a letter is outside the alphabet.
        """
        self.kmer_counts += kmer_counts(sequences, self.alphabet, self.k).to(self.device)

    def compute(self) -> Tensor:
        """() Pearson correlation of the designs' and the reference's k-mer frequencies."""
        x, y = self.kmer_counts.double(), self.reference_counts.double().to(self.device)
        seen = (x > 0) | (y > 0)
        x, y = x[seen], y[seen]
        if x.numel() < 2:
            return torch.tensor(math.nan, device=self.device)
        x, y = x - x.mean(), y - y.mean()
        denominator = torch.sqrt((x * x).sum() * (y * y).sum())
        if denominator == 0:
            return torch.tensor(math.nan, device=self.device)
        return ((x * y).sum() / denominator).float()


def kmer_counts(
    sequences: Sequence[str | None], alphabet: str, k: int, *, name: str = "sequence"
) -> Tensor:
    """Counts the overlapping k-mers of the sequences (none across two sequences).

    The k-mer w_1 ... w_k has index sum_j a(w_j) A^(k - j), where a(c) is c's position in the
    alphabet and A its size: lexicographic order in the alphabet's order. A sequence shorter than
    k has no k-mer.

    Args:
        sequences: N sequences, ``None`` where infeasible (skipped).
        alphabet: the allowed letters, without repeats.
        k: the word length, >= 1.
        name: what a sequence is called in error messages.

    Returns:
        (A^k,) int64 counts.

    Raises:
        ValueError: naming the sequence and position, if a letter is outside the alphabet.
    """
    n_letters = len(alphabet)
    counts = torch.zeros(n_letters**k, dtype=torch.long)
    texts = feasible_designs(sequences)
    if not texts:
        return counts
    codes, lengths = code_points(texts)
    ends = lengths.cumsum(0)
    alphabet_codes, order = torch.sort(code_points([alphabet])[0])
    found = torch.searchsorted(alphabet_codes, codes).clamp(max=n_letters - 1)
    unknown = (alphabet_codes[found] != codes).nonzero()
    if unknown.numel():
        flat_position = int(unknown[0, 0])
        sequence = int(torch.searchsorted(ends, flat_position, right=True))
        position = flat_position - int(ends[sequence] - lengths[sequence])
        index = [i for i, s in enumerate(sequences) if s is not None][sequence]
        raise ValueError(
            f"{name} {index} has letter {texts[sequence][position]!r} at position {position}, "
            f"not in alphabet {alphabet!r}"
        )
    letters = order[found]  # each letter's position in the alphabet
    total = letters.numel()
    if total < k:
        return counts
    # The index of the k-mer starting at every flat position, ...
    index = torch.zeros(total - k + 1, dtype=torch.long)
    for j in range(k):
        index = index * n_letters + letters[j : total - k + 1 + j]
    # ... kept where the k-mer ends inside the sequence it starts in.
    inside = (
        torch.arange(total - k + 1) + k <= torch.repeat_interleave(ends, lengths)[: total - k + 1]
    )
    return torch.bincount(index[inside], minlength=n_letters**k)


def position_letter_counts(sequences: Sequence[str | None], alphabet: str, length: int) -> Tensor:
    """How often each letter occurs at each position of equal-length sequences.

    Args:
        sequences: N sequences of length L, ``None`` where infeasible (skipped).
        alphabet: the allowed letters, without repeats; column c counts ``alphabet[c]``.
        length: the sequence length L.

    Returns:
        (L, A) int64 counts; each row sums to the number of feasible sequences.

    Raises:
        ValueError: naming the sequence, if one has the wrong length or a letter outside the
            alphabet.
    """
    letter_index = {letter: i for i, letter in enumerate(alphabet)}
    codes = []
    for i, sequence in enumerate(sequences):
        if sequence is None:
            continue
        if len(sequence) != length:
            raise ValueError(f"sequence {i} has length {len(sequence)}, expected {length}")
        try:
            codes.append([letter_index[letter] for letter in sequence])
        except KeyError as err:
            raise ValueError(
                f"sequence {i} has letter {err.args[0]!r}, not in alphabet {alphabet!r}"
            ) from None
    if not codes:
        return torch.zeros(length, len(alphabet), dtype=torch.long)
    return torch.nn.functional.one_hot(torch.tensor(codes), len(alphabet)).sum(dim=0)


def levenshtein_distances(a: Sequence[str], b: Sequence[str]) -> Tensor:
    """Edit (Levenshtein) distances of P pairs of strings, d(a[p], b[p]).

    The least number of single-letter insertions, deletions and substitutions that turn one string
    into the other (Levenshtein 1966), by the Wagner-Fischer dynamic programme, vectorised over the
    pairs (in blocks of ``BLOCK_ENTRIES`` table entries); see :func:`_levenshtein` for how each row
    is a few tensor operations. Cost: O(sum_p |a_p| |b_p|) cells, 5-10 ns each on one CPU core.

    Args:
        a: P strings.
        b: P strings.

    Returns:
        (P,) int64 distances.

    Raises:
        ValueError: if ``a`` and ``b`` differ in length.
        TypeError: if an item is not a string.
    """
    if len(a) != len(b):
        raise ValueError(f"a and b must hold as many strings, got {len(a)} and {len(b)}")
    for name, strings in (("a", a), ("b", b)):
        for i, string in enumerate(strings):
            if not isinstance(string, str):
                raise TypeError(
                    f"{name}[{i}] must be a str, got {type(string).__name__}: {string!r}"
                )
    a_codes, a_lengths = code_points(a)
    b_codes, b_lengths = code_points(b)
    a_padded, b_padded = _padded(a_codes, a_lengths), _padded(b_codes, b_lengths)
    chunk = max(1, BLOCK_ENTRIES // (b_padded.shape[1] + 1))
    parts = [
        _levenshtein(
            a_padded[start : start + chunk],
            a_lengths[start : start + chunk],
            b_padded[start : start + chunk],
            b_lengths[start : start + chunk],
        )
        for start in range(0, len(a), chunk)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def code_points(sequences: Sequence[str]) -> tuple[Tensor, Tensor]:
    """The Unicode code points of the concatenated sequences, and each sequence's length.

    Code points, not an alphabet's indices, so that any letters can be stored and gathered across
    DDP ranks as one int32 tensor.

    Args:
        sequences: N strings.

    Returns:
        (sum of lengths,) int32 code points, and (N,) int64 lengths.
    """
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
    # UTF-32 is one 4-byte code unit per code point, so the bytes are the code points.
    joined = "".join(sequences).encode("utf-32-le")
    return torch.from_numpy(np.frombuffer(joined, dtype="<i4").copy()), lengths


def _padded(codes: Tensor, lengths: Tensor) -> Tensor:
    """(total,) concatenated codes and (N,) lengths -> (N, max length) int32 codes, padded by -1."""
    width = int(lengths.max()) if lengths.numel() else 0
    padded = torch.full((lengths.numel(), width), -1, dtype=torch.int32, device=codes.device)
    padded[torch.arange(width, device=codes.device) < lengths[:, None]] = codes
    return padded


def _levenshtein(a: Tensor, a_lengths: Tensor, b: Tensor, b_lengths: Tensor) -> Tensor:
    """Edit distances of P padded pairs, one dynamic-programming row at a time.

    The Wagner-Fischer table D[i, j] = d(a[:i], b[:j]) has D[0, j] = j, D[i, 0] = i and

        D[i, j] = min(D[i-1, j] + 1, D[i-1, j-1] + [a_i != b_j], D[i, j-1] + 1).

    The last term chains along the row; with c_j = min of the first two (c_0 = i), unrolling it
    gives D[i, j] = min_{k <= j} (c_k + j - k) = j + cummin_k (c_k - k), so a whole row is a few
    tensor operations over (P, Lb + 1). Row i of a pair is read off at i = |a|; letters past a
    sequence's length (the padding) never reach the entries read. Cost: max|a| rows of
    O(P (max|b| + 1)) each.

    Args:
        a: (P, La) int codes, padded past ``a_lengths``.
        a_lengths: (P,) int64 lengths of the a's.
        b: (P, Lb) int codes, padded past ``b_lengths``.
        b_lengths: (P,) int64 lengths of the b's.

    Returns:
        (P,) int64 distances.
    """
    n_pairs, width = b.shape
    # int16 is ~30% faster than int32 here, and exact while every entry (<= La + Lb) fits.
    dtype = torch.int16 if a.shape[1] + width < 2**15 else torch.int32
    columns = torch.arange(width + 1, dtype=dtype, device=b.device)
    row = columns.expand(n_pairs, width + 1).clone()
    distances = b_lengths.clone()  # row 0, for the empty a's
    # Preallocated, written with out= and in place: ~25% faster than fresh tensors every row.
    candidates = torch.empty(n_pairs, width + 1, dtype=dtype, device=b.device)
    substitute = torch.empty(n_pairs, width, dtype=dtype, device=b.device)
    rows = int(a_lengths.max()) if n_pairs else 0
    for i in range(1, rows + 1):
        torch.ne(a[:, i - 1 : i], b, out=substitute)
        substitute += row[:, :-1]
        torch.minimum(substitute, row[:, 1:] + 1, out=candidates[:, 1:])  # substitute, delete
        candidates[:, 0] = i
        candidates -= columns
        row = torch.cummin(candidates, dim=1).values
        row += columns  # D[i, j] = j + cummin_k (c_k - k): insert
        done = a_lengths == i
        if done.any():
            read = row.gather(1, b_lengths[:, None]).squeeze(1).long()
            distances = torch.where(done, read, distances)
    return distances


def check_alphabet(alphabet: str) -> None:
    """Raises ValueError, naming it, unless ``alphabet`` is non-empty letters without repeats."""
    if not alphabet or len(set(alphabet)) != len(alphabet):
        raise ValueError(f"alphabet must be non-empty letters without repeats, got {alphabet!r}")
