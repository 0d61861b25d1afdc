"""Pictures of an online run, written to the run directory and the logger after every round.

``FeedbackReport`` reads the run's FeedbackStore (the one an exploration callback on the same
Trainer keeps) and writes:

* ``reward_curve.png``: oracle value vs oracle calls (round means, running best, running top-10);
* ``top_designs.png`` (molecules: an RDKit grid with scores; images: the images with their
  values) or ``top_designs.txt`` (any design type: one "value<TAB>design" line each), the best
  designs measured so far;
* for images also ``round_<r>_designs.png``: every round's measured images, best first, with
  their values (``seiko.plots.image_grid``; at most 64 a round);

and logs the images to the logger when it can take images (TensorBoard's ``add_figure``/
``add_image``, or a logger with ``log_image``). At the end of ``fit`` it prints where they are.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
from lightning.pytorch.utilities import rank_zero_info

from seiko.oracles.store import OFFLINE_ROUND, FeedbackStore
from seiko.plots import image_grid, molecule_grid, plot_reward_curve


def _find_store(trainer: L.Trainer) -> tuple[FeedbackStore | None, str | None]:
    """The store (and its oracle's name) of the exploration callback on this Trainer."""
    for callback in trainer.callbacks:
        store = getattr(callback, "store", None)
        if isinstance(store, FeedbackStore):
            oracle = getattr(getattr(callback, "oracle", None), "name", None)
            return store, oracle
    return None, None


class FeedbackReport(L.Callback):
    """Reward curve and best designs after every round (rank 0), into ``directory``.

    Args:
        directory: where the pictures go; default the Trainer's ``default_root_dir``.
        designs: "molecules" (a grid drawn with RDKit), "text" (a list), or "auto" (molecules if
            the module is a molecule model, image grids if it is an image model, else text).
        top_k: the running top-k mean on the curve, and how many designs the grid shows (x1.6
            for molecules, x4 for images).
    """

    def __init__(
        self,
        directory: str | None = None,
        designs: Literal["auto", "molecules", "text"] = "auto",
        top_k: int = 10,
    ) -> None:
        if designs not in ("auto", "molecules", "text"):
            raise ValueError(f"designs={designs!r} is not one of ('auto', 'molecules', 'text')")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.directory = directory
        self.designs = designs
        self.top_k = top_k
        self.paths: dict[str, Path] = {}

    def _kind(self, pl_module: L.LightningModule) -> str:
        if self.designs != "auto":
            return self.designs
        name = type(pl_module).__name__
        if "Molecule" in name:
            return "molecules"
        return "images" if "Image" in name else "text"

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Path]:
        """Write the pictures now; returns {"curve": path, "designs": path} (what was written)."""
        store, oracle = _find_store(trainer)
        if store is None:
            return {}
        rows = [r for r in store.rows(oracle=oracle) if r.round != OFFLINE_ROUND]
        if not rows:
            return {}
        out = Path(self.directory or trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        values = np.array([r.value if r.feasible else math.nan for r in rows], dtype=float)
        calls = np.arange(1, len(rows) + 1)
        rounds = np.array([r.round for r in rows])
        figure = plot_reward_curve(
            calls,
            values,
            rounds=rounds,
            top_k=self.top_k,
            title=f"{oracle or 'oracle'}: {len(rows)} queries",
            path=out / "reward_curve.png",
        )
        paths = {"curve": out / "reward_curve.png"}
        self._log_figure(trainer, "feedback/reward_curve", figure)
        plt.close(figure)
        designs = [r.design for r in rows]
        kind = self._kind(pl_module)
        if kind == "images":  # grids when any image decodes, else the list below
            paths.update(self._image_grids(trainer, pl_module, designs, values, rounds, out))
        if kind == "molecules" and np.isfinite(values).any():
            image = molecule_grid(designs, values, path=out / "top_designs.png", n=16)
            paths["designs"] = out / "top_designs.png"
            self._log_image(trainer, "feedback/top_designs", np.asarray(image.convert("RGB")))
        elif "designs" not in paths:
            order = np.argsort(np.where(np.isfinite(values), -values, np.inf), kind="stable")
            lines = [f"{values[i]:.6g}\t{designs[i]}" for i in order[: 10 * self.top_k]]
            (out / "top_designs.txt").write_text("\n".join(lines) + "\n")
            paths["designs"] = out / "top_designs.txt"
        self.paths = paths
        return paths

    def _image_grids(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        designs: list[str],
        values: np.ndarray,
        rounds: np.ndarray,
        out: Path,
    ) -> dict[str, Path]:
        """Per-round grids and the best images so far; the store's keys are read back through
        the module (``decode(encode([key]))``; a key that does not encode is drawn as missing)."""
        images = []
        for key in designs:
            try:
                images.append(pl_module.decode(pl_module.encode([key]))[0])
            except ValueError:
                images.append(None)
        if not any(image is not None for image in images):
            return {}
        paths = {}
        for round_ in sorted(set(rounds.tolist())):
            members = np.flatnonzero(rounds == round_)
            finite = values[members][np.isfinite(values[members])]
            summary = f", mean {finite.mean():.3f}, best {finite.max():.3f}" if finite.size else ""
            paths[f"round_{round_}"] = out / f"round_{round_}_designs.png"
            image_grid(
                [images[i] for i in members],
                values[members],
                path=paths[f"round_{round_}"],
                title=f"round {round_}: {members.size} queries{summary}",
            )
        top = image_grid(images, values, path=out / "top_designs.png", n=4 * self.top_k)
        paths["designs"] = out / "top_designs.png"
        self._log_image(trainer, "feedback/top_designs", np.asarray(top))
        return paths

    @staticmethod
    def _log_figure(trainer: L.Trainer, tag: str, figure: Any) -> None:
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_figure"):  # TensorBoard
                experiment.add_figure(tag, figure, global_step=trainer.global_step, close=False)

    @staticmethod
    def _log_image(trainer: L.Trainer, tag: str, image: np.ndarray) -> None:
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image(tag, image, global_step=trainer.global_step, dataformats="HWC")
            elif hasattr(logger, "log_image"):  # e.g. WandbLogger
                logger.log_image(key=tag, images=[image], step=trainer.global_step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.write(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        paths = self.write(trainer, pl_module)
        store, _ = _find_store(trainer)
        if paths:
            rank_zero_info(
                f"reward curve: {paths['curve']}\n"
                f"best designs: {paths['designs']}\n"
                f"feedback store: {store.path if store is not None else '?'}"
            )
