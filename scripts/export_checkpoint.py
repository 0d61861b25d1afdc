"""Strip a Lightning checkpoint to what inference and fine-tuning need, for shipping.

    python scripts/export_checkpoint.py runs/molecules_pretrain/checkpoints/last.ckpt \\
        models/molecules/prior.ckpt [--set decode_beam_width=4]

Keeps the weights (``state_dict``), the hyper-parameters (the config the model was built from,
so ``LightningModule.load_from_checkpoint(path)`` rebuilds it), the Lightning version and the
training position (epoch, global step) for the record; drops optimizer and scheduler states,
loop and callback states (several times the weights' size, and of no use to a new run), and
clears the hyper-parameters that name the files the weights were first loaded from.
``--set KEY=VALUE`` (VALUE read as YAML) overrides a hyper-parameter the model already has, for
settings that do not touch the weights (e.g. how latents are decoded).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import yaml

KEEP = (
    "state_dict",
    "hyper_parameters",
    "hparams_name",
    "pytorch-lightning_version",
    "epoch",
    "global_step",
    "seiko_mode",
)


def export(source: str | Path, target: str | Path, overrides: dict[str, Any] | None = None) -> Path:
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
    for key, value in (overrides or {}).items():
        if key not in hparams:
            raise ValueError(
                f"--set {key}: {source} has no hyper-parameter {key!r} (it has {sorted(hparams)})"
            )
        hparams[key] = value
    slim["hyper_parameters"] = hparams
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, target)
    return target


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--set", type=_key_value, action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    path = export(args.source, args.target, dict(args.set))
    print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB")
