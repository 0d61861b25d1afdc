"""Plots: the curve data and logo heights by hand, and PNG files of the expected size."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from seiko.plots import (
    information_content,
    molecule_grid,
    plot_methods_curves,
    plot_reward_curve,
    reward_curves,
    rna_structure_plot,
    sequence_logo,
)

NAN = float("nan")
CALLS = np.arange(1, 7)
VALUES = np.array([NAN, 2.0, 1.0, NAN, 5.0, 3.0])
ROUNDS = np.array([0, 0, 0, 1, 1, 1])


def test_reward_curves_by_hand():
    curves = reward_curves(CALLS, VALUES, rounds=ROUNDS, top_k=2)
    np.testing.assert_array_equal(curves.calls, CALLS)
    # best so far: -, 2, 2, 2, 5, 5; top-2 so far: -, {2}, {2, 1}, same, {5, 2}, {5, 3}
    np.testing.assert_array_equal(curves.running_best, [NAN, 2.0, 2.0, 2.0, 5.0, 5.0])
    np.testing.assert_array_equal(curves.running_top_k, [NAN, 2.0, 1.5, 1.5, 3.5, 4.0])
    # round 0 ends at call 3, mean of {2, 1}; round 1 at call 6, mean of {5, 3}
    np.testing.assert_array_equal(curves.round_calls, [3, 6])
    np.testing.assert_array_equal(curves.round_means, [1.5, 4.0])


def test_reward_curves_of_an_infeasible_round_is_nan():
    curves = reward_curves([1, 2, 3], [NAN, NAN, 1.0], rounds=[7, 7, 9])
    np.testing.assert_array_equal(curves.round_means, [NAN, 1.0])


@pytest.mark.parametrize(
    ("calls", "rounds", "match"),
    [
        ([1, 2, 3], None, r"1-D of one length, got \(3,\) and \(6,\)"),
        ([1, 2, 3, 2, 5, 6], None, "non-decreasing, got 2.0 after 3.0 at 3"),
        (CALLS, [0, 0, 1, 1, 0, 0], r"contiguous, got rounds in order \[0 1 0\]"),
        (CALLS, [0, 1], r"rounds must have the shape of values \(6,\), got \(2,\)"),
    ],
)
def test_reward_curves_rejects_bad_histories(calls, rounds, match):
    with pytest.raises(ValueError, match=match):
        reward_curves(calls, VALUES, rounds=rounds)


@pytest.mark.parametrize("rounds", [None, ROUNDS])
def test_plot_reward_curve_writes_a_png_of_figsize_times_dpi(tmp_path, rounds):
    path = tmp_path / "plots" / "curve.png"
    fig = plot_reward_curve(
        CALLS, VALUES, rounds=rounds, top_k=2, path=path, figsize=(5.0, 3.0), dpi=80
    )
    assert fig.axes[0].get_xlabel() == "oracle calls"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (400, 240)


def test_plot_methods_curves_overlays_methods_with_seed_bands(tmp_path):
    rng = np.random.default_rng(0)
    calls = np.arange(1, 51)
    path = tmp_path / "methods.png"
    fig = plot_methods_curves(
        {"seiko-ucb": (calls, rng.random((3, 50))), "greedy": (calls, rng.random(50))},
        top_k=5,
        path=path,
    )
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["seiko-ucb (n=3)", "greedy (n=1)"]
    assert len(fig.axes[0].collections) == 1  # one band: only the method with seeds
    with Image.open(path) as image:
        assert image.size == (640, 480)


def test_plot_methods_curves_mean_is_of_the_running_top_k():
    calls = np.arange(1, 4)
    seeds = np.array([[1.0, 3.0, 2.0], [2.0, NAN, 4.0]])  # running best: [1, 3, 3], [2, 2, 4]
    fig = plot_methods_curves({"m": (calls, seeds)}, top_k=1)
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), [1.5, 2.5, 3.5])
    # torch tensors, as the feedback-efficiency benchmark passes them
    fig = plot_methods_curves({"m": (torch.arange(1, 4), torch.tensor(seeds))}, top_k=1)
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), [1.5, 2.5, 3.5])


def test_plot_methods_curves_rejects_bad_input():
    with pytest.raises(ValueError, match="curves is empty"):
        plot_methods_curves({})
    with pytest.raises(ValueError, match=r"m: values must be .* N = len\(calls\) = 3, got shape"):
        plot_methods_curves({"m": (np.arange(3), np.zeros((2, 4)))})


def test_molecule_grid_draws_the_best_valid_molecules(tmp_path):
    smiles = ["CCO", "OCC", "not a smiles", "c1ccccc1", None, "CC(=O)O", "CCN"]
    scores = [0.5, 0.9, 1.0, 0.7, 2.0, NAN, 0.1]
    path = tmp_path / "grid.png"
    # valid, scored, distinct: ethanol (best 0.9), benzene, ethylamine -> 3 cells, 2 rows of 2
    image = molecule_grid(smiles, scores, path=path, per_row=2, sub_image_size=(100, 80))
    assert image.size == (200, 160)
    with Image.open(path) as saved:
        assert saved.format == "PNG"
        assert saved.size == (200, 160)
    assert molecule_grid(smiles, scores, n=2, per_row=2, sub_image_size=(100, 80)).size == (200, 80)


def test_molecule_grid_rejects_bad_input():
    with pytest.raises(ValueError, match=r"scores must have shape \(2,\), got \(1,\)"):
        molecule_grid(["CCO", "CC"], [1.0])
    with pytest.raises(ValueError, match="no valid SMILES with a score among the 2 given"):
        molecule_grid(["xx", "CCO"], [1.0, NAN])
    with pytest.raises(ValueError, match="n and per_row must be >= 1, got n=0, per_row=4"):
        molecule_grid(["CCO"], [1.0], n=0)


# ---------------------------------------------------------------------------------------------
# Sequence logos and RNA structures.

# A tiny alignment over ACGT (A = 4 letters, N = 4 sequences):
#   position 0: A A A T -> p(A) = 3/4, p(T) = 1/4;
#     H = -(3/4 log2 3/4 + 1/4 log2 1/4) = 0.75 * 0.415037 + 0.25 * 2 = 0.811278 bits,
#     R = log2 4 - H = 1.188722; heights A = 3/4 R = 0.891541, T = 1/4 R = 0.297180.
#   position 1: C C G G -> p(C) = p(G) = 1/2; H = 1, R = 1; heights C = G = 0.5.
# Small-sample correction e_4 = (4 - 1) / (2 * 4 * ln 2) = 0.541011: R = 0.647711 and 0.458989.
ALIGNMENT = ["AC", "AC", "AG", "TG"]
R_0 = 2 - (0.75 * math.log2(4 / 3) + 0.25 * 2)
E_4 = 3 / (8 * math.log(2))


def test_information_content_of_a_tiny_alignment_by_hand():
    heights = information_content(ALIGNMENT, "ACGT")
    np.testing.assert_allclose(heights, [[0.75 * R_0, 0, 0, 0.25 * R_0], [0, 0.5, 0.5, 0]])
    assert math.isclose(R_0, 1.188722, abs_tol=1e-6)  # the comment's number
    corrected = information_content(ALIGNMENT, "ACGT", small_sample_correction=True)
    np.testing.assert_allclose(corrected.sum(axis=1), [R_0 - E_4, 1 - E_4])
    # One sequence: every position is certain, log2 4 = 2 bits; corrected, e_1 = 2.16 > 2 -> 0.
    np.testing.assert_allclose(information_content(["GT"], "ACGT").sum(axis=1), [2.0, 2.0])
    one = information_content(["GT"], "ACGT", small_sample_correction=True)
    np.testing.assert_array_equal(one, np.zeros((2, 4)))


def test_information_content_rejects_bad_alignments():
    with pytest.raises(ValueError, match="sequences is empty"):
        information_content([], "ACGT")
    with pytest.raises(ValueError, match="sequence 1 has length 3, expected 2"):
        information_content(["AC", "ACG"], "ACGT")
    with pytest.raises(ValueError, match="sequence 0 has letter 'U', not in alphabet 'ACGT'"):
        information_content(["AU"], "ACGT")
    with pytest.raises(ValueError, match="without repeats, got 'ACCA'"):
        information_content(["AC"], "ACCA")


def _stacks(fig) -> dict[int, list[tuple[str, float, float]]]:
    """Position -> [(letter, bottom, height)] of the logo's letter patches, bottom to top."""
    stacks: dict[int, list[tuple[str, float, float]]] = {}
    for patch in fig.axes[0].patches:
        box = patch.get_path().get_extents()
        stacks.setdefault(round((box.x0 + box.x1) / 2), []).append(
            (patch.get_label(), box.y0, box.height)
        )
    return {p: sorted(s, key=lambda item: item[1]) for p, s in stacks.items()}


def test_sequence_logo_stacks_letters_to_the_information_content(tmp_path):
    path = tmp_path / "logos" / "logo.png"
    fig = sequence_logo(ALIGNMENT, alphabet="ACGT", path=path, figsize=(3.0, 2.0), dpi=50)
    stacks = _stacks(fig)
    # Position 1 (x = 1): T (short) below A (tall); position 2: C and G, 0.5 bits each.
    assert [letter for letter, _, _ in stacks[1]] == ["T", "A"]
    assert [h for _, _, h in stacks[1]] == pytest.approx([0.25 * R_0, 0.75 * R_0], abs=1e-6)
    assert stacks[1][1][1] == pytest.approx(0.25 * R_0, abs=1e-6)  # A sits on T
    assert sorted(letter for letter, _, _ in stacks[2]) == ["C", "G"]
    assert sum(h for _, _, h in stacks[2]) == pytest.approx(1.0, abs=1e-6)
    assert fig.axes[0].get_ylim() == (0.0, 2.0)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (150, 100)
    assert path.stat().st_size > 0


def test_sequence_logo_draws_the_top_distinct_scored_designs(tmp_path):
    designs = ["AC", "GG", None, "AC", "TT", "CA"]
    scores = [0.9, 0.1, 5.0, 0.2, NAN, 0.5]
    # Feasible and scored: AC (best 0.9), GG, CA -> the top 2 are AC and CA.
    fig = sequence_logo(designs, scores, alphabet="ACGT", n=2, path=tmp_path / "top.png")
    assert fig.axes[0].get_title() == "Top 2 of 3 designs"
    stacks = _stacks(fig)
    # Each position is half A, half C: 1 bit, split evenly; G and T do not appear.
    for position in (1, 2):
        assert sorted(letter for letter, _, _ in stacks[position]) == ["A", "C"]
        assert [h for _, _, h in stacks[position]] == pytest.approx([0.5, 0.5], abs=1e-6)
    assert (tmp_path / "top.png").stat().st_size > 0


def test_sequence_logo_rejects_bad_input():
    with pytest.raises(ValueError, match=r"scores must have shape \(2,\), got \(1,\)"):
        sequence_logo(["AC", "AG"], [1.0], alphabet="ACGT")
    with pytest.raises(ValueError, match="no design to draw among the 2 given"):
        sequence_logo(["AC", None], [NAN, 1.0], alphabet="ACGT")
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        sequence_logo(["AC"], [1.0], alphabet="ACGT", n=0)
    with pytest.raises(ValueError, match="sequence 1 has length 3, expected 2"):
        sequence_logo(["AC", "ACG"], alphabet="ACGT")


TARGET = "((((...))))..((...))"
DESIGNED = "(((.....)))..((...))"


def test_rna_structure_plot_highlights_mismatches_and_reports_the_bp_distance(tmp_path):
    # target pairs (0,10) (1,9) (2,8) (3,7) (13,19) (14,18); designed lacks (3,7) only:
    # bp distance 1; positions 3 and 7 differ ('(' vs '.', ')' vs '.').
    path = tmp_path / "rna" / "structure.png"
    fig = rna_structure_plot(DESIGNED, TARGET, "GGGGAAACCCCAAGGAAACC", title="round 2", path=path)
    ax = fig.axes[0]
    assert ax.get_title() == "round 2\nbp distance 1, 2 of 20 positions differ"
    shaded = sorted(p.get_x() + 0.5 for p in ax.patches if p.get_label() == "mismatch")
    assert shaded == [3, 3, 7, 7]  # in the target row and the designed row
    with Image.open(path) as image:
        assert image.format == "PNG"
    assert path.stat().st_size > 0


def test_rna_structure_plot_wraps_long_structures_into_lines():
    # 2 lines of 12 columns: mismatch at position 15 is column 3 of the second line.
    target = "." * 24
    designed = "." * 15 + "()" + "." * 7
    fig = rna_structure_plot(designed, target, line_width=12)
    shaded = [p for p in fig.axes[0].patches if p.get_label() == "mismatch"]
    assert sorted(p.get_x() + 0.5 for p in shaded) == [3, 3, 4, 4]
    assert fig.axes[0].get_title() == "bp distance 1, 2 of 24 positions differ"


def test_rna_structure_plot_draws_2d_layouts_with_viennarna(tmp_path):
    RNA = pytest.importorskip("RNA")
    path = tmp_path / "structure_2d.png"
    fig = rna_structure_plot(DESIGNED, TARGET, draw_2d=True, path=path)
    assert [ax.get_title() for ax in fig.axes[1:]] == ["target", "designed"]
    assert RNA.bp_distance(DESIGNED, TARGET) == 1  # the distance the title reports
    for ax in fig.axes[1:]:
        colors = ax.collections[0].get_facecolors()
        red = np.flatnonzero(np.all(np.isclose(colors[:, :3], [214 / 255, 40 / 255, 57 / 255]), 1))
        assert red.tolist() == [3, 7]
        # backbone + one line per base pair: 4 + 2 for the target, 3 + 2 for the design
        assert len(ax.get_lines()) == 1 + (6 if ax.get_title() == "target" else 5)
    assert path.stat().st_size > 0


def test_rna_structure_plot_rejects_bad_structures():
    with pytest.raises(ValueError, match="target structure has an unmatched '\\(' at position 0"):
        rna_structure_plot("...", "((.")
    with pytest.raises(ValueError, match="designed structure has an unmatched '\\)' at position 2"):
        rna_structure_plot("..)", "...")
    with pytest.raises(ValueError, match="designed structure has 'x' at position 1; expected"):
        rna_structure_plot(".x.", "...")
    with pytest.raises(ValueError, match="one length, got 2 and 3"):
        rna_structure_plot("..", "...")
    with pytest.raises(ValueError, match="sequence has length 2, but the structures have 3"):
        rna_structure_plot("...", "...", "AC")
    with pytest.raises(ValueError, match="line_width must be >= 1, got 0"):
        rna_structure_plot("...", "...", line_width=0)
    with pytest.raises(ValueError, match="target is empty"):
        rna_structure_plot("", "")
