"""Plots of an online run: reward curves, methods overlaid, molecule and image grids, sequence
logos, RNA structures.

Figures are built with matplotlib's object API on an Agg canvas, never through ``pyplot``: no global
figure registry to leak memory in a long run, no GUI backend needed on a headless node.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import PathPatch, Rectangle
from matplotlib.path import Path as MplPath
from matplotlib.textpath import TextPath
from matplotlib.transforms import Affine2D
from numpy.typing import ArrayLike
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from PIL.Image import Image
from rdkit import Chem
from rdkit.Chem import Draw

from seiko.metrics.molecules import canonical_smiles
from seiko.metrics.oracle_budget import running_top_k_mean
from seiko.metrics.sequences import check_alphabet, position_letter_counts


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
        calls = np.asarray(calls)  # a torch tensor too: np.size would read its .size method
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
    _save(fig, path)


# Letter colours: nucleotides as in classic logos; amino acids by chemistry, as WebLogo's
# "chemistry" scheme (Crooks et al., "WebLogo: a sequence logo generator", Genome Res. 2004).
_NUCLEOTIDE_COLORS = {
    "A": "#109648",
    "C": "#255c99",
    "G": "#f7b32b",
    "T": "#d62839",
    "U": "#d62839",
}
_AMINO_ACID_GROUPS = {
    "GSTYC": "#109648",  # polar
    "NQ": "#8e44ad",  # neutral amide
    "KRH": "#255c99",  # basic
    "DE": "#d62839",  # acidic
    "AVLIPWFM": "#222222",  # hydrophobic
}
_AMINO_ACID_COLORS = {a: color for group, color in _AMINO_ACID_GROUPS.items() for a in group}
_OTHER_LETTER_COLOR = "#7f7f7f"
_LOGO_FONT = FontProperties(family="DejaVu Sans", weight="bold")  # ships with matplotlib


def information_content(
    sequences: Sequence[str], alphabet: str, *, small_sample_correction: bool = False
) -> np.ndarray:
    """The letter heights of a sequence logo, in bits (Schneider and Stephens 1990).

    At position i, with letter frequencies p_ic over the N sequences and A letters, the
    information content is R_i = log2 A - (H_i + e_N), H_i = -sum_c p_ic log2 p_ic (0 log 0 = 0),
    and letter c stands p_ic R_i tall. The small-sample correction e_N = (A - 1) / (2 N ln 2)
    (Schneider et al. 1986) is 0 unless asked for; R_i is clipped at 0 when it makes it negative.
    (T. D. Schneider and R. M. Stephens, "Sequence logos: a new way to display consensus
    sequences", Nucleic Acids Res. 1990.)

    Args:
        sequences: N >= 1 aligned sequences of one length L.
        alphabet: the A allowed letters, without repeats; column c is ``alphabet[c]``.
        small_sample_correction: subtract e_N.

    Returns:
        (L, A) float64 heights in bits; row i sums to R_i.

    Raises:
        ValueError: if there is no sequence, the alphabet is empty or repeats a letter, or (naming
            the sequence) one has another length than the first or a letter outside the alphabet.
    """
    if not sequences:
        raise ValueError("sequences is empty: a logo needs at least one sequence")
    check_alphabet(alphabet)
    counts = position_letter_counts(sequences, alphabet, len(sequences[0])).numpy()
    n = len(sequences)
    frequencies = counts / n
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(frequencies > 0, frequencies * np.log2(frequencies), 0.0).sum(axis=1)
    correction = (len(alphabet) - 1) / (2 * n * math.log(2)) if small_sample_correction else 0.0
    information = np.clip(math.log2(len(alphabet)) - entropy - correction, 0.0, None)
    return frequencies * information[:, None]


def sequence_logo(
    sequences: Sequence[str | None],
    scores: ArrayLike | None = None,
    *,
    alphabet: str,
    n: int = 16,
    small_sample_correction: bool = False,
    title: str | None = None,
    path: str | Path | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: int = 100,
) -> Figure:
    """A sequence logo of the best-scoring designs: stacked letters, heights in bits.

    With ``scores``, designs that are ``None`` or score NaN are skipped, a design given twice is
    counted once, and the ``n`` best are drawn; without, all given designs are (duplicates too).
    Heights are :func:`information_content`; at each position the letters are stacked tallest on
    top. Each letter is a matplotlib ``TextPath`` glyph stretched to its height (no logo package
    needed); nucleotides are coloured A green, C blue, G orange, T/U red, amino acids by chemistry.

    Args:
        sequences: (N,) equal-length designs, ``None`` where infeasible.
        scores: (N,) their scores (higher is better); ``None`` to draw every design.
        alphabet: the allowed letters, e.g. ``"ACGU"``.
        n: how many of the best designs to draw, with ``scores``.
        small_sample_correction: subtract Schneider's e_N (worth it for N below ~30).
        title: the axes title; default ``"Top {n} of {N} designs"`` (or ``"{N} designs"``).
        path: where to save a PNG of ``figsize * dpi`` pixels; not saved if ``None``.
        figsize: the figure size in inches; default (1 + L / 4, 2.5), at least 4 wide.
        dpi: pixels per inch.

    Returns:
        The figure; its axes hold one ``PathPatch`` per drawn letter, labelled with the letter.

    Raises:
        ValueError: if the lengths of ``sequences`` and ``scores`` differ, ``n < 1``, no design
            is left to draw, or (see :func:`information_content`) the designs are not aligned or
            use letters outside the alphabet.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if scores is None:
        shown = [s for s in sequences if s is not None]
        default_title = f"{len(shown)} designs"
    else:
        scores_np = np.asarray(scores, dtype=np.float64)
        if scores_np.shape != (len(sequences),):
            raise ValueError(f"scores must have shape ({len(sequences)},), got {scores_np.shape}")
        best: dict[str, float] = {}
        for s, score in zip(sequences, scores_np.tolist(), strict=True):
            if s is not None and not math.isnan(score):
                best[s] = max(score, best.get(s, -math.inf))
        ranked = sorted(best, key=best.__getitem__, reverse=True)
        shown = ranked[:n]
        default_title = f"Top {len(shown)} of {len(ranked)} designs"
    if not shown:
        raise ValueError(f"no design to draw among the {len(sequences)} given")
    heights = information_content(shown, alphabet, small_sample_correction=small_sample_correction)
    length = heights.shape[0]
    fig, ax = _new_figure(figsize or (max(4.0, 1.0 + length / 4), 2.5), dpi)
    glyphs = {
        letter: TextPath((0.0, 0.0), letter, size=1.0, prop=_LOGO_FONT) for letter in alphabet
    }
    colors = _AMINO_ACID_COLORS if len(alphabet) > 5 else _NUCLEOTIDE_COLORS
    for position in range(length):
        bottom = 0.0
        for c in np.argsort(heights[position], kind="stable"):
            height = float(heights[position, c])
            if height <= 0:
                continue
            letter = alphabet[c]
            patch = PathPatch(
                _place(glyphs[letter], position + 1, bottom, height),
                facecolor=colors.get(letter.upper(), _OTHER_LETTER_COLOR),
                edgecolor="none",
                label=letter,
            )
            ax.add_patch(patch)
            bottom += height
    ax.set_xlim(0.5, length + 0.5)
    ax.set_ylim(0.0, math.log2(len(alphabet)))
    ax.set_xlabel("position")
    ax.set_ylabel("bits")
    ax.set_title(title or default_title)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    _save(fig, path)
    return fig


def rna_structure_plot(
    designed: str,
    target: str,
    sequence: str | None = None,
    *,
    title: str | None = None,
    line_width: int = 60,
    draw_2d: bool = False,
    path: str | Path | None = None,
    dpi: int = 100,
) -> Figure:
    """An RNA design's secondary structure against the target, mismatching positions in red.

    The dot-bracket strings (and the sequence, if given) are printed aligned, ``line_width``
    columns a line, and every position whose character differs between the two structures is
    shaded. The title gives the base-pair distance, |P_target Δ P_designed|, the number of base
    pairs in one structure but not the other (ViennaRNA's ``bp_distance``). With ``draw_2d`` the
    two structures are also drawn as 2-D graphs with ViennaRNA's naview layout (Bruccoleri and
    Heinrich 1988; ``pip install viennarna``), mismatching nucleotides in red.

    Args:
        designed: the designed sequence's structure in dot-bracket, e.g. ``"((...))."``.
        target: the target structure in dot-bracket, of the same length.
        sequence: the designed sequence, printed under the structures.
        title: a title line above the distances.
        line_width: columns per line of the alignment.
        draw_2d: also draw the two structures in 2-D (needs ViennaRNA).
        path: where to save a PNG; not saved if ``None``. The figure is 0.11 inch a column plus
            margins wide, and grows with the number of lines (and 4 inches for ``draw_2d``).
        dpi: pixels per inch.

    Returns:
        The figure. In its first axes each shaded position is a ``Rectangle`` labelled
        ``"mismatch"``.

    Raises:
        ValueError: if a structure has a character other than ``(``, ``)``, ``.`` or unbalanced
            brackets (with the position), the lengths differ, the target is empty, or
            ``line_width < 1``.
        ImportError: with ``draw_2d``, if ViennaRNA is not installed.
    """
    if line_width < 1:
        raise ValueError(f"line_width must be >= 1, got {line_width}")
    if not target:
        raise ValueError("target is empty: give a structure of at least one position")
    if len(designed) != len(target):
        raise ValueError(
            f"designed and target must have one length, got {len(designed)} and {len(target)}"
        )
    if sequence is not None and len(sequence) != len(target):
        raise ValueError(
            f"sequence has length {len(sequence)}, but the structures have {len(target)}"
        )
    target_pairs = _base_pairs(target, "target")
    designed_pairs = _base_pairs(designed, "designed")
    mismatches = [i for i, (d, t) in enumerate(zip(designed, target, strict=True)) if d != t]
    layout = _naview_layout() if draw_2d else None  # fails here, before drawing, if missing

    rows = [("target", target), ("designed", designed)]
    if sequence is not None:
        rows.append(("sequence", sequence))
    length = len(target)
    n_lines = math.ceil(length / line_width)
    columns = min(length, line_width)
    row_inches = 0.22
    text_height = (n_lines * (len(rows) + 1.5)) * row_inches + 0.8
    width = max(6.0, 0.11 * columns + 1.6)
    height = text_height + (4.0 if draw_2d else 0.0)
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    if layout is not None:
        grid = fig.add_gridspec(2, 2, height_ratios=[text_height, 4.0])
        ax = fig.add_subplot(grid[0, :])
        axes_2d = [fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])]
    else:
        ax = fig.add_subplot()

    # The alignment, in text cells one unit wide and one unit tall; y grows downwards.
    mismatch_set = set(mismatches)
    y = 0.0
    for start in range(0, length, line_width):
        stop = min(start + line_width, length)
        ax.text(0.0, y, f"{start + 1}", ha="left", va="center", fontsize=7, color="#777777")
        for name, text in rows:
            y += 1.0
            ax.text(-1.0, y, name, ha="right", va="center", family="monospace", fontsize=9)
            for column, i in enumerate(range(start, stop)):
                if i in mismatch_set and name != "sequence":
                    ax.add_patch(
                        Rectangle(
                            (column - 0.5, y - 0.5),
                            1.0,
                            1.0,
                            color="#d62839",
                            alpha=0.35,
                            label="mismatch",
                            linewidth=0,
                        )
                    )
                ax.text(column, y, text[i], ha="center", va="center", family="monospace")
        y += 1.5
    ax.set_xlim(-9.5, columns - 0.5)  # 9 columns of room for the row names
    ax.set_ylim(y - 1.0, -1.0)
    ax.axis("off")
    distance = len(target_pairs ^ designed_pairs)
    summary = f"bp distance {distance}, {len(mismatches)} of {length} positions differ"
    ax.set_title(f"{title}\n{summary}" if title else summary, fontsize=10)

    if layout is not None:
        for ax_2d, name, structure, pairs in (
            (axes_2d[0], "target", target, target_pairs),
            (axes_2d[1], "designed", designed, designed_pairs),
        ):
            _draw_structure_2d(ax_2d, layout(structure), pairs, mismatch_set, sequence)
            ax_2d.set_title(name, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return fig


def _draw_structure_2d(
    ax: Axes,
    xy: np.ndarray,
    pairs: set[tuple[int, int]],
    highlighted: set[int],
    sequence: str | None,
) -> None:
    """Draws a structure's backbone, base pairs and nucleotides at (L, 2) coordinates ``xy``."""
    ax.plot(xy[:, 0], xy[:, 1], color="#999999", linewidth=1.0, zorder=1)
    for i, j in pairs:
        ax.plot(xy[[i, j], 0], xy[[i, j], 1], color="#255c99", linewidth=1.0, zorder=1)
    colors = ["#d62839" if i in highlighted else "#dddddd" for i in range(len(xy))]
    ax.scatter(xy[:, 0], xy[:, 1], s=30, c=colors, edgecolors="#555555", zorder=2)
    if sequence is not None and len(sequence) <= 120:  # beyond that the letters are unreadable
        for i, letter in enumerate(sequence):
            ax.text(*xy[i], letter, ha="center", va="center", fontsize=5, zorder=3)
    ax.set_aspect("equal")
    ax.axis("off")


def _naview_layout() -> Callable[[str], np.ndarray]:
    """ViennaRNA's naview layout: dot-bracket -> (L, 2) nucleotide coordinates."""
    try:
        import RNA  # ViennaRNA: optional, only for the 2-D drawing
    except ImportError as err:
        raise ImportError(
            "draw_2d=True needs ViennaRNA for the layout: pip install viennarna"
        ) from err

    def layout(structure: str) -> np.ndarray:
        coordinates = RNA.naview_xy_coordinates(structure)  # L + 1 points; the last is unused
        return np.array([(coordinates[i].X, coordinates[i].Y) for i in range(len(structure))])

    return layout


def _base_pairs(structure: str, name: str) -> set[tuple[int, int]]:
    """The (i, j), i < j, 0-based base pairs of a dot-bracket structure."""
    opened: list[int] = []
    pairs = set()
    for i, character in enumerate(structure):
        if character == "(":
            opened.append(i)
        elif character == ")":
            if not opened:
                raise ValueError(f"{name} structure has an unmatched ')' at position {i}")
            pairs.add((opened.pop(), i))
        elif character != ".":
            raise ValueError(
                f"{name} structure has {character!r} at position {i}; expected '(', ')' or '.'"
            )
    if opened:
        raise ValueError(f"{name} structure has an unmatched '(' at position {opened[0]}")
    return pairs


def _place(glyph: MplPath, center: float, bottom: float, height: float) -> MplPath:
    """The glyph stretched into [center - 0.45, center + 0.45] x [bottom, bottom + height]."""
    box = glyph.get_extents()
    return (
        Affine2D()
        .translate(-box.x0, -box.y0)
        .scale(0.9 / box.width, height / box.height)
        .translate(center - 0.45, bottom)
        .transform_path(glyph)
    )


def _save(fig: Figure, path: str | Path | None) -> None:
    """Saves a PNG at ``path`` (creating its folder), unless it is ``None``."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # No bbox_inches="tight": the PNG keeps exactly figsize * dpi pixels.
        fig.savefig(path, format="png", dpi=fig.dpi)


def image_grid(
    images: Sequence[Image | None],
    values: ArrayLike,
    path: str | Path | None = None,
    n: int = 64,
    per_row: int = 8,
    *,
    scale: int = 3,
    title: str | None = None,
) -> Image:
    """A grid of images, best value first, each with its value written under it.

    Images with a NaN value or none at all (a design that did not decode) come last, drawn as a
    grey cell captioned "NaN". Images are upscaled ``scale`` times with nearest-neighbour
    sampling (pixels stay visible) and shown in RGB; the cell is the size of the first image.

    Args:
        images: (N,) PIL images (any mode), ``None`` where there is none.
        values: (N,) their values (higher is better); NaN where infeasible.
        path: where to save the PNG; not saved if ``None``.
        n: how many images to draw at most (the best n).
        per_row: images per row.
        scale: integer upscaling of every image.
        title: a line of text above the grid (e.g. the round and its mean value).

    Returns:
        The PIL image, ``per_row * cell width`` wide.

    Raises:
        ValueError: if the lengths differ, ``n``, ``per_row`` or ``scale`` is < 1, or no image
            is given.
    """
    values_np = np.asarray(values, dtype=np.float64)
    if values_np.shape != (len(images),):
        raise ValueError(f"values must have shape ({len(images)},), got {values_np.shape}")
    if n < 1 or per_row < 1 or scale < 1:
        raise ValueError(
            f"n, per_row and scale must be >= 1, got n={n}, per_row={per_row}, scale={scale}"
        )
    present = [image for image in images if image is not None]
    if not present:
        raise ValueError(f"no image among the {len(images)} designs given")
    width, height = present[0].size[0] * scale, present[0].size[1] * scale
    usable = np.array([image is not None for image in images]) & ~np.isnan(values_np)
    # best first; unusable ones last, in their given order
    order = sorted(
        range(len(images)), key=lambda i: (not usable[i], -values_np[i] if usable[i] else i)
    )
    shown = order[:n]
    font = ImageFont.load_default()
    caption = 14
    top = caption + 4 if title else 0
    rows = math.ceil(len(shown) / per_row)
    grid = PILImage.new("RGB", (per_row * width, top + rows * (height + caption)), "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((2, 2), title, fill="black", font=font)
    for slot, index in enumerate(shown):
        x, y = (slot % per_row) * width, top + (slot // per_row) * (height + caption)
        image = images[index]
        if image is None:
            draw.rectangle((x, y, x + width - 1, y + height - 1), fill="#bbbbbb")
        else:
            cell = image.convert("RGB").resize((width, height), PILImage.Resampling.NEAREST)
            grid.paste(cell, (x, y))
        text = f"{values_np[index]:.3f}" if usable[index] else "NaN"
        draw.text((x + 2, y + height + 1), text, fill="black", font=font)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        grid.save(path, format="PNG")
    return grid
