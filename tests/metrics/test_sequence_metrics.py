"""Sequence metrics (diversity, novelty, k-mer spectrum) by hand, merged, and under real DDP."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from seiko.metrics import HammingDiversity
from seiko.metrics.sequences import (
    KmerSpectrumCorrelation,
    LevenshteinDiversity,
    NearestReferenceDistance,
    kmer_counts,
    levenshtein_distances,
)


def test_hamming_diversity_of_three_sequences_by_hand():
    # d(ACGT, ACGA) = 1/4, d(ACGT, TTTT) = 3/4, d(ACGA, TTTT) = 4/4; mean = 2/3.
    metric = HammingDiversity(alphabet="ACGT", length=4)
    metric.update(["ACGT", None, "ACGA"])
    metric.update(["TTTT"])
    assert metric.compute().item() == pytest.approx(2 / 3)


def test_hamming_diversity_merged_across_ranks_counts_cross_rank_pairs():
    rank0 = HammingDiversity(alphabet="ACGT", length=4)
    rank1 = HammingDiversity(alphabet="ACGT", length=4)
    rank0.update(["ACGT"])
    rank1.update(["ACGA", "TTTT"])
    rank0.merge_state(rank1)  # the DDP "sum" reduction of the letter counts
    assert rank0.compute().item() == pytest.approx(2 / 3)


def test_hamming_diversity_of_identical_sequences_is_zero_and_nan_below_two():
    metric = HammingDiversity(alphabet="AC", length=3)
    metric.update(["ACA"])
    assert metric.compute().isnan()
    metric.update(["ACA"])
    assert metric.compute().item() == 0.0


def test_hamming_diversity_rejects_bad_sequences_and_alphabets():
    metric = HammingDiversity(alphabet="ACGT", length=4)
    with pytest.raises(ValueError, match="sequence 1 has length 3, expected 4"):
        metric.update(["ACGT", "ACG"])
    with pytest.raises(ValueError, match="sequence 0 has letter 'U', not in alphabet 'ACGT'"):
        metric.update(["ACGU"])
    with pytest.raises(ValueError, match="without repeats, got 'ACGA'"):
        HammingDiversity(alphabet="ACGA", length=4)
    with pytest.raises(ValueError, match="length must be >= 1, got 0"):
        HammingDiversity(alphabet="ACGT", length=0)


# ---------------------------------------------------------------------------------------------
# Edit distance, diversity, novelty, k-mer spectrum: each against a hand computation.


def _wagner_fischer(a: str, b: str) -> int:
    """The textbook O(|a| |b|) edit distance, one cell at a time: the reference to test against."""
    previous = list(range(len(b) + 1))
    for i, letter_a in enumerate(a, start=1):
        current = [i]
        for j, letter_b in enumerate(b, start=1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (letter_a != letter_b))
            )
        previous = current
    return previous[-1]


def test_hamming_diversity_of_infeasible_designs_only_is_nan():
    metric = HammingDiversity(alphabet="ACGT", length=4)
    metric.update([None, None])
    assert metric.compute().isnan()


def test_levenshtein_distances_by_hand():
    # kitten -> sitting: k->s, e->i, insert g (3); flaw -> lawn: delete f, insert n (2);
    # ACGT -> CGTA: delete A, append A (2, where Hamming counts 4); "" -> ACG: 3 insertions;
    # GATTACA -> GCATGCU: 4, aligned G-ATTACA / GCA-TGCU: insert C, delete T, A->G, A->U.
    pairs = [
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("ACGT", "CGTA", 2),
        ("", "ACG", 3),
        ("ACG", "", 3),
        ("", "", 0),
        ("GATTACA", "GCATGCU", 4),
    ]
    a, b, expected = zip(*pairs, strict=True)
    assert levenshtein_distances(a, b).tolist() == list(expected)


def test_levenshtein_distances_agree_with_the_textbook_dynamic_programme():
    rng = random.Random(0)
    a = ["".join(rng.choices("ACG", k=rng.randint(0, 12))) for _ in range(200)]
    b = ["".join(rng.choices("ACG", k=rng.randint(0, 12))) for _ in range(200)]
    expected = [_wagner_fischer(x, y) for x, y in zip(a, b, strict=True)]
    assert levenshtein_distances(a, b).tolist() == expected


def test_levenshtein_distances_rejects_bad_input():
    with pytest.raises(ValueError, match="as many strings, got 2 and 1"):
        levenshtein_distances(["A", "C"], ["A"])
    with pytest.raises(TypeError, match=r"b\[0\] must be a str, got int: 3"):
        levenshtein_distances(["A"], [3])


def test_levenshtein_diversity_of_unequal_lengths_by_hand():
    # d(ACGT, AGT) = 1 (delete C), d(ACGT, ACGTT) = 1 (insert T), d(AGT, ACGTT) = 2 (insert C, T).
    # normalised by the longer length: 1/4, 1/5, 2/5 -> mean 0.85 / 3; raw: 4 / 3.
    normalised, raw = LevenshteinDiversity(), LevenshteinDiversity(normalize=False)
    for metric in (normalised, raw):
        metric.update(["ACGT", None, "AGT"])
        metric.update(["ACGTT"])
    assert normalised.compute().item() == pytest.approx(0.85 / 3)
    assert raw.compute().item() == pytest.approx(4 / 3)


def test_levenshtein_diversity_equals_hamming_when_no_indel_helps():
    # ACGT, ACGA, TTTT: the edit distances are the Hamming ones (1, 3, 4), mean of /4 = 2/3.
    levenshtein, hamming = LevenshteinDiversity(), HammingDiversity(alphabet="ACGT", length=4)
    for metric in (levenshtein, hamming):
        metric.update(["ACGT", "ACGA", "TTTT"])
    assert levenshtein.compute().item() == pytest.approx(2 / 3)
    assert hamming.compute().item() == pytest.approx(2 / 3)


def test_levenshtein_diversity_edge_cases():
    metric = LevenshteinDiversity()
    metric.update([None])
    assert metric.compute().isnan()  # no sequence
    metric.update(["ACGT"])
    assert metric.compute().isnan()  # one sequence: no pair
    metric.update(["ACGT"])
    assert metric.compute().item() == 0.0  # a duplicate pair
    empty = LevenshteinDiversity()
    empty.update(["", "", "AC"])  # d("", "") = 0; d("", AC) = 2, normalised by 2, twice
    assert empty.compute().item() == pytest.approx((0 + 1 + 1) / 3)


def test_levenshtein_diversity_merged_across_ranks_counts_cross_rank_pairs():
    rank0, rank1, idle = LevenshteinDiversity(), LevenshteinDiversity(), LevenshteinDiversity()
    rank0.update(["ACGT"])
    rank1.update(["AGT", "ACGTT"])
    rank0.merge_state(rank1)  # the DDP "cat" reduction of both ranks' code points and lengths
    rank0.merge_state(idle)  # a rank that saw nothing adds nothing
    assert rank0.compute().item() == pytest.approx(0.85 / 3)


def test_nearest_reference_distance_hamming_by_hand():
    metric = NearestReferenceDistance(reference=["AAAA", "CCCC", "ACGT"])
    raw = NearestReferenceDistance(reference=["AAAA", "CCCC", "ACGT"], normalize=False)
    designs = ["AAAC", "ACGA", None, "GGGG", "ACNT"]
    # AAAC: 1 from AAAA; ACGA: 1 from ACGT; GGGG: 4, 4, 3 (G at position 2 of ACGT) -> 3;
    # ACNT: N is in no reference sequence, 1 from ACGT. Mean of /4: (1 + 1 + 3 + 1) / 16.
    for m in (metric, raw):
        m.update(designs)
    assert metric.compute().item() == pytest.approx(6 / 16)
    assert raw.compute().item() == pytest.approx(6 / 4)


def test_nearest_reference_distance_levenshtein_by_hand():
    metric = NearestReferenceDistance(reference=["ACGT", "GGGGGG"], distance="levenshtein")
    # AGT: 1 from ACGT (/4); vs GGGGGG at least 3 (length gap) /6 = 0.5.
    # ACGTT: 1 from ACGT (/5); vs GGGGGG at least 5 (one G can match) /6.
    # GGGG: 2 from GGGGGG (/6); 3 from ACGT (/4). Mean: (1/4 + 1/5 + 1/3) / 3.
    metric.update(["AGT", "ACGTT", None, "GGGG"])
    assert metric.compute().item() == pytest.approx((1 / 4 + 1 / 5 + 1 / 3) / 3)


def test_nearest_reference_distance_levenshtein_agrees_with_brute_force():
    rng = random.Random(1)
    reference = ["".join(rng.choices("ACGU", k=rng.randint(1, 10))) for _ in range(40)]
    designs = ["".join(rng.choices("ACGU", k=rng.randint(0, 10))) for _ in range(15)]
    metric = NearestReferenceDistance(reference=reference, distance="levenshtein")
    metric.update(designs)
    expected = [
        min(_wagner_fischer(d, r) / max(len(d), len(r)) for r in reference) for d in designs
    ]
    assert metric.compute().item() == pytest.approx(sum(expected) / len(expected), rel=1e-6)


def test_nearest_reference_distance_merged_across_ranks():
    rank0 = NearestReferenceDistance(reference=["AAAA", "CCCC"])
    rank1 = NearestReferenceDistance(reference=["AAAA", "CCCC"])
    rank0.update(["AAAC"])  # 1/4
    rank1.update(["CCCC", "ACAC"])  # 0, 2/4
    rank0.merge_state(rank1)  # the DDP "sum" reduction of distance sums and counts
    assert rank0.compute().item() == pytest.approx((1 / 4 + 0 + 2 / 4) / 3)


def test_nearest_reference_distance_rejects_bad_input():
    metric = NearestReferenceDistance(reference=["AAAA"])
    with pytest.warns(UserWarning, match="called before the ``update``"):
        assert metric.compute().isnan()
    with pytest.raises(ValueError, match="design 1 has length 3 but the reference sequences have"):
        metric.update(["AAAA", "AAA"])
    with pytest.raises(ValueError, match="reference sequence 1 has length 2 but reference"):
        NearestReferenceDistance(reference=["AAAA", "AA"])
    with pytest.raises(ValueError, match="reference is empty"):
        NearestReferenceDistance(reference=[])
    with pytest.raises(ValueError, match="'hamming' or 'levenshtein', got 'euclid'"):
        NearestReferenceDistance(reference=["AAAA"], distance="euclid")
    with pytest.raises(TypeError, match="reference sequence 1 must be a str, got NoneType"):
        NearestReferenceDistance(reference=["AAAA", None])
    with pytest.raises(ValueError, match="empty strings"):
        NearestReferenceDistance(reference=["", ""])


def test_kmer_counts_by_hand():
    counts = kmer_counts(["ACGTA", None], "ACGT", 3)
    # ACG = 0*16 + 1*4 + 2 = 6, CGT = 1*16 + 2*4 + 3 = 27, GTA = 2*16 + 3*4 + 0 = 44
    assert counts.shape == (64,)
    assert counts.nonzero().flatten().tolist() == [6, 27, 44]
    assert counts.sum().item() == 3
    # No k-mer spans two sequences; a sequence shorter than k has none.
    assert kmer_counts(["AC", "GT", "A"], "ACGT", 3).sum().item() == 0
    # The alphabet's order, not the letters' code points, orders the k-mers: T=0, A=1.
    assert kmer_counts(["TA"], "TA", 2).nonzero().flatten().tolist() == [1]


def test_kmer_spectrum_correlation_by_hand_over_the_kmers_seen():
    # reference AAC, ACC: AA 1, AC 2, CC 1; designs AACCC: AA 1, AC 1, CC 2. No other 2-mer of
    # the 9 over ACG occurs, so the correlation runs over (AA, AC, CC):
    # x = (1, 1, 2), y = (1, 2, 1), means 4/3; centred x = (-1, -1, 2)/3, y = (-1, 2, -1)/3;
    # r = (1 - 2 - 2)/9 / sqrt(6/9 * 6/9) = -1/2. (Over all 9 2-mers it would be 29/38.)
    metric = KmerSpectrumCorrelation(reference=["AAC", "ACC"], alphabet="ACG", k=2)
    metric.update(["AACCC", None])
    assert metric.compute().item() == pytest.approx(-0.5)


def test_kmer_spectrum_correlation_of_the_reference_itself_is_one_and_merges_across_ranks():
    reference = ["ACGTACGGT", "TTGACA", "GGGCCA"]
    rank0 = KmerSpectrumCorrelation(reference=reference, alphabet="ACGT")
    rank1 = KmerSpectrumCorrelation(reference=reference, alphabet="ACGT")
    rank0.update(reference[:1])
    rank1.update(reference[1:])
    rank0.merge_state(rank1)  # the DDP "sum" reduction of the k-mer counts
    assert rank0.compute().item() == pytest.approx(1.0)


def test_kmer_spectrum_correlation_edge_cases():
    metric = KmerSpectrumCorrelation(reference=["ACGT"], alphabet="ACGT")
    metric.update(["AC", None])  # shorter than k: no 3-mer, a constant zero vector
    assert metric.compute().isnan()
    metric.update(["ACGT"])  # ACG, CGT in both, equal counts: x = y, constant -> undefined
    assert metric.compute().isnan()
    # + TTTT: over (ACG, CGT, TTT) x = (1, 1, 2), y = (1, 1, 0); centred (-1, -1, 2)/3 and
    # (1, 1, -2)/3: r = (-6/9) / sqrt(6/9 * 6/9) = -1.
    metric.update(["TTTT"])
    assert metric.compute().item() == pytest.approx(-1.0)


def test_kmer_spectrum_correlation_rejects_bad_input():
    metric = KmerSpectrumCorrelation(reference=["ACGT"], alphabet="ACGT")
    with pytest.raises(ValueError, match="sequence 2 has letter 'N' at position 2, not in"):
        metric.update(["ACGT", None, "ACNT"])
    with pytest.raises(ValueError, match="reference sequence 1 has letter 'U' at position 0"):
        KmerSpectrumCorrelation(reference=["ACGT", "UU"], alphabet="ACGT")
    with pytest.raises(ValueError, match="no reference sequence has 3 letters"):
        KmerSpectrumCorrelation(reference=["AC", "G"], alphabet="ACGT")
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        KmerSpectrumCorrelation(reference=["ACGT"], alphabet="ACGT", k=0)
    with pytest.raises(ValueError, match=r"20\^6 = 64000000 k-mers exceed MAX_KMERS"):
        KmerSpectrumCorrelation(reference=["ACDE"], alphabet="ACDEFGHIKLMNPQRSTVWY", k=6)
    with pytest.raises(ValueError, match="without repeats, got 'AA'"):
        KmerSpectrumCorrelation(reference=["AA"], alphabet="AA", k=1)


# ---------------------------------------------------------------------------------------------
# Real DDP: two CPU processes (gloo), each with its own designs, one rank with none.

REFERENCE = ["ACGTACGT", "TTTTACGT", "ACGTTTTT", "GGGGCCCC"]
DESIGNS = ["ACGTACGA", "TTTTTTTT", "ACGAACGT", "GGGCCCCC", "ACGTAGGT"]


def _single_process_results() -> dict[str, float]:
    metrics = {
        "levenshtein": LevenshteinDiversity(),
        "nearest_hamming": NearestReferenceDistance(REFERENCE),
        "nearest_levenshtein": NearestReferenceDistance(REFERENCE, distance="levenshtein"),
        "kmer": KmerSpectrumCorrelation(REFERENCE, alphabet="ACGT"),
        "hamming": HammingDiversity(alphabet="ACGT", length=8),
    }
    for metric in metrics.values():
        metric.update(DESIGNS)
    return {name: metric.compute().item() for name, metric in metrics.items()}


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    mine = DESIGNS[:2] if rank == 0 else DESIGNS[2:]
    metrics = {
        "levenshtein": LevenshteinDiversity(),
        "nearest_hamming": NearestReferenceDistance(REFERENCE),
        "nearest_levenshtein": NearestReferenceDistance(REFERENCE, distance="levenshtein"),
        "kmer": KmerSpectrumCorrelation(REFERENCE, alphabet="ACGT"),
        "hamming": HammingDiversity(alphabet="ACGT", length=8),
    }
    for metric in metrics.values():
        metric.update(mine)
    results = {name: metric.compute().item() for name, metric in metrics.items()}
    # Rank 1 alone holds designs: rank 0's code-point list states stay empty but typed.
    one_rank = LevenshteinDiversity()
    if rank == 1:
        one_rank.update(DESIGNS)
    results["levenshtein_one_rank"] = one_rank.compute().item()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


@pytest.mark.skipif(
    not dist.is_available() or "fork" not in mp.get_all_start_methods(),
    reason="needs torch.distributed and the fork start method",
)
def test_sequence_metrics_under_two_process_ddp(tmp_path, monkeypatch):
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # both processes are on this machine
    mp.start_processes(
        _ddp_worker,
        args=(str(tmp_path / "init"), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="fork",  # the children inherit the imported torch
    )
    expected = _single_process_results()
    expected["levenshtein_one_rank"] = expected["levenshtein"]
    for rank in range(2):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert results == pytest.approx(expected, abs=1e-6)
