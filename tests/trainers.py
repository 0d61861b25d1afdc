"""A CPU Trainer for tests: no logger, checkpoints, progress bar or model summary."""

from __future__ import annotations

from typing import Any

import lightning as L

QUIET = {
    "accelerator": "cpu",
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}


def quiet_trainer(**kwargs: Any) -> L.Trainer:
    """``L.Trainer(**QUIET, **kwargs)``; ``kwargs`` may override any of ``QUIET``."""
    return L.Trainer(**{**QUIET, **kwargs})
