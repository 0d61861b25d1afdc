"""Plots: the curve data by hand, and PNG files of the expected size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from seiko.plots import (
    molecule_grid,
    plot_methods_curves,
    plot_reward_curve,
    reward_curves,
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
