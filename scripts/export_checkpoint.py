"""Strip a Lightning checkpoint to what inference and fine-tuning need, for shipping.

    python scripts/export_checkpoint.py runs/molecules_pretrain/checkpoints/last.ckpt \\
        models/molecules/prior.ckpt

Keeps the weights (``state_dict``), the hyper-parameters (the config the model was built from,
so ``LightningModule.load_from_checkpoint(path)`` rebuilds it), the Lightning version and the
training position (epoch, global step) for the record; drops optimizer and scheduler states,
loop and callback states (several times the weights' size, and of no use to a new run), and
clears the hyper-parameters that name the files the weights were first loaded from.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

KEEP = (
    "state_dict",
    "hyper_parameters",
    "hparams_name",
    "pytorch-lightning_version",
    "epoch",
    "global_step",
    "seiko_mode",
)


def export(source: str | Path, target: str | Path) -> Path:
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    if "state_dict" not in checkpoint:
        raise ValueError(f"{source} is not a Lightning checkpoint (no 'state_dict')")
    slim = {key: checkpoint[key] for key in KEEP if key in checkpoint}
    # The weights are all in state_dict now: paths of the files they were first loaded from
    # (which a user does not have) must not be opened again when the checkpoint is loaded.
    hparams = dict(slim.get("hyper_parameters", {}))
    for key in ("autoencoder_checkpoint", "pretrained_checkpoint"):
        if key in hparams:
            hparams[key] = None
    slim["hyper_parameters"] = hparams
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, target)
    return target


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    path = export(sys.argv[1], sys.argv[2])
    print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB")
