"""Plots of an online run: oracle value vs oracle calls, several methods overlaid, molecule grids.

Figures are built with matplotlib's object API on an Agg canvas, never through ``pyplot``: no global
figure registry to leak memory in a long run, no GUI backend needed on a headless node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from PIL.Image import Image
from rdkit import Chem
from rdkit.Chem import Draw

from seiko.metrics.molecules import canonical_smiles
from seiko.metrics.oracle_budget import running_top_k_mean


@dataclass(frozen=True)
class RewardCurves:
    """The data of a reward-vs-calls plot.

    Attributes:
        calls: (N,) oracle call count of each value.
        running_best: (N,) best feasible value so far; NaN before the first feasible one.
        running_top_k: (N,) mean of the best k feasible values so far (of all, if fewer than k);
            NaN before the first feasible one.
        round_calls: (R,) call count at the end of each round (empty without rounds).
        round_means: (R,) mean feasible value of each round; NaN for a round with none.
    """

    calls: np.ndarray
    running_best: np.ndarray
    running_top_k: np.ndarray
    round_calls: np.ndarray
    round_means: np.ndarray


def reward_curves(
    calls: ArrayLike, values: ArrayLike, *, rounds: ArrayLike | None = None, top_k: int = 10
) -> RewardCurves:
    """Computes the running best, running top-k mean and per-round means of an oracle history.

    Args:
        calls: (N,) non-decreasing oracle call counts (1 for the first call, ...).
        values: (N,) oracle values in call order; NaN marks an infeasible design.
        rounds: (N,) the round of each call, contiguous (all of round r before round r + 1).
        top_k: how many of the best values the running top-k mean averages.

    Returns:
        The curves.

    Raises:
        ValueError: if the shapes differ, ``calls`` decreases, or a round is not contiguous.
    """
    calls_np, values_np = _history(calls, values)
    round_calls, round_means = np.empty(0), np.empty(0)
    if rounds is not None:
        rounds_np = np.asarray(rounds)
        if rounds_np.shape != values_np.shape:
            raise ValueError(
                f"rounds must have the shape of values {values_np.shape}, got {rounds_np.shape}"
            )
        # Start of each run of equal round ids; a round id seen in two runs is out of order.
        starts = np.flatnonzero(np.r_[True, rounds_np[1:] != rounds_np[:-1]])
        ids = rounds_np[starts]
        if len(set(ids.tolist())) != len(ids):
            raise ValueError(f"each round's calls must be contiguous, got rounds in order {ids}")
        ends = np.r_[starts[1:], len(rounds_np)]
        round_calls = calls_np[ends - 1]
        round_means = np.array(
            [_nanmean(values_np[s:e]) for s, e in zip(starts, ends, strict=True)]
        )
    values_t = torch.from_numpy(values_np)
    return RewardCurves(
        calls=calls_np,
        running_best=running_top_k_mean(values_t, 1).numpy(),
        running_top_k=running_top_k_mean(values_t, top_k).numpy(),
        round_calls=round_calls,
        round_means=round_means,
    )


def plot_reward_curve(
    calls: ArrayLike,
    values: ArrayLike,
    *,
    rounds: ArrayLike | None = None,
    top_k: int = 10,
    title: str = "Oracle value vs oracle calls",
    path: str | Path | None = None,
    figsize: tuple[float, float] = (6.4, 4.8),
    dpi: int = 100,
) -> Figure:
    """Plots one run: each round's mean (or each value), the running best and running top-k mean.

    Args:
        calls: (N,) non-decreasing oracle call counts.
        values: (N,) oracle values in call order; NaN (infeasible) is left out of every curve.
        rounds: (N,) the round of each call; with it the round means are drawn, else each value.
        top_k: how many of the best values the running top-k mean averages.
        title: the axes title.
        path: where to save a PNG of ``figsize * dpi`` pixels; not saved if ``None``.
        figsize: the figure size in inches.
        dpi: pixels per inch.

    Returns:
        The figure.
    """
    curves = reward_curves(calls, values, rounds=rounds, top_k=top_k)
    fig, ax = _new_figure(figsize, dpi)
    if rounds is None:
        ax.scatter(curves.calls, np.asarray(values, dtype=float), s=6, alpha=0.3, label="value")
    else:
        ax.plot(curves.round_calls, curves.round_means, "o-", alpha=0.7, label="round mean")
    ax.plot(curves.calls, curves.running_best, label="best so far")
    ax.plot(curves.calls, curves.running_top_k, label=f"top-{top_k} mean so far")
    _finish(fig, ax, title, path)
    return fig


def plot_methods_curves(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]],
    *,
    top_k: int = 10,
    title: str | None = None,
    path: str | Path | None = None,
    figsize: tuple[float, float] = (6.4, 4.8),
    dpi: int = 100,
) -> Figure:
    """Overlays methods' running top-k mean vs oracle calls, mean ± std over seeds.

    Args:
        curves: method name -> (calls, values): calls (N,) non-decreasing call counts shared by the
            seeds; values (N,) for one seed or (S, N) for S seeds, NaN where infeasible. The mean
            (and the band of ± one sample standard deviation, for S > 1) starts once every seed
            has a feasible value.
        top_k: how many of the best values the running top-k mean averages.
        title: the axes title; default ``"Top-{top_k} mean vs oracle calls"``.
        path: where to save a PNG of ``figsize * dpi`` pixels; not saved if ``None``.
        figsize: the figure size in inches.
        dpi: pixels per inch.

    Returns:
        The figure.

    Raises:
        ValueError: if ``curves`` is empty or a method's shapes disagree.
    """
    if not curves:
        raise ValueError("curves is empty: give at least one method")
    fig, ax = _new_figure(figsize, dpi)
    for name, (calls, values) in curves.items():
        seeds = np.atleast_2d(np.asarray(values, dtype=np.float64))
        if seeds.ndim != 2 or seeds.shape[1] != np.size(calls):
            raise ValueError(
                f"{name}: values must be (N,) or (S, N) with N = len(calls) = "
                f"{np.size(calls)}, got shape {seeds.shape}"
            )
        running = np.stack(
            [reward_curves(calls, seed, top_k=top_k).running_top_k for seed in seeds]
        )
        calls_np = np.asarray(calls, dtype=np.float64)
        mean = running.mean(axis=0)
        (line,) = ax.plot(calls_np, mean, label=f"{name} (n={len(seeds)})")
        if len(seeds) > 1:
            std = running.std(axis=0, ddof=1)
            ax.fill_between(calls_np, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    _finish(fig, ax, title or f"Top-{top_k} mean vs oracle calls", path)
    return fig


def molecule_grid(
    smiles: Sequence[str | None],
    scores: ArrayLike,
    path: str | Path | None = None,
    n: int = 16,
    per_row: int = 4,
    *,
    sub_image_size: tuple[int, int] = (250, 250),
) -> Image:
    """A grid image of the best-scoring molecules, each with its score as legend.

    Invalid SMILES and NaN scores are skipped; a molecule given twice (in any spelling) is drawn
    once, with its best score. The image is ``per_row * width`` wide and
    ``ceil(shown / per_row) * height`` tall.

    Args:
        smiles: (N,) SMILES, ``None`` where infeasible.
        scores: (N,) their scores (higher is better).
        path: where to save the PNG; not saved if ``None``.
        n: how many molecules to draw at most.
        per_row: molecules per row.
        sub_image_size: (width, height) of one molecule's cell in pixels.

    Returns:
        The PIL image.

    Raises:
        ValueError: if the lengths differ, ``n`` or ``per_row`` is < 1, or no molecule is valid.
    """
    scores_np = np.asarray(scores, dtype=np.float64)
    if scores_np.shape != (len(smiles),):
        raise ValueError(f"scores must have shape ({len(smiles)},), got {scores_np.shape}")
    if n < 1 or per_row < 1:
        raise ValueError(f"n and per_row must be >= 1, got n={n}, per_row={per_row}")
    best: dict[str, float] = {}
    for s, score in zip(smiles, scores_np.tolist(), strict=True):
        canonical = canonical_smiles(s) if s is not None else None
        if canonical is not None and not math.isnan(score):
            best[canonical] = max(score, best.get(canonical, -math.inf))
    if not best:
        raise ValueError(f"no valid SMILES with a score among the {len(smiles)} given")
    top = sorted(best.items(), key=lambda item: item[1], reverse=True)[:n]
    image = Draw.MolsToGridImage(
        [Chem.MolFromSmiles(s) for s, _ in top],
        molsPerRow=per_row,
        subImgSize=sub_image_size,
        legends=[f"{score:.3f}" for _, score in top],
        returnPNG=False,  # a PIL image, also inside a notebook
    )
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="PNG")
    return image


def _history(calls: ArrayLike, values: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Checks an oracle history and returns it as (N,) float64 arrays."""
    calls_np = np.asarray(calls, dtype=np.float64)
    values_np = np.asarray(values, dtype=np.float64)
    if calls_np.ndim != 1 or calls_np.shape != values_np.shape:
        raise ValueError(
            f"calls and values must be 1-D of one length, got {calls_np.shape} and "
            f"{values_np.shape}"
        )
    decreasing = np.flatnonzero(np.diff(calls_np) < 0)
    if decreasing.size:
        i = int(decreasing[0]) + 1
        raise ValueError(
            f"calls must be non-decreasing, got {calls_np[i]} after {calls_np[i - 1]} at {i}"
        )
    return calls_np, values_np


def _nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN values; NaN (without numpy's empty-slice warning) when there are none."""
    feasible = values[~np.isnan(values)]
    return float(feasible.mean()) if feasible.size else math.nan


def _new_figure(figsize: tuple[float, float], dpi: int) -> tuple[Figure, Axes]:
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)  # attaches itself to the figure
    return fig, fig.add_subplot()


def _finish(fig: Figure, ax: Axes, title: str, path: str | Path | None) -> None:
    ax.set_xlabel("oracle calls")
    ax.set_ylabel("oracle value")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # No bbox_inches="tight": the PNG keeps exactly figsize * dpi pixels.
        fig.savefig(path, format="png", dpi=fig.dpi)
