"""``seiko fit|validate|test|predict``: the LightningCLI entry point.

Values the data fixes are linked from the datamodule, never written twice: for sequence data the
vocabulary, its size, the padded length and the pad symbol flow into the module and its denoiser,
and for labelled data the label vocabulary and the number of classes.
``predict`` writes the decoded designs, one per line, to ``<log_dir>/predictions.txt``.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, _InstantiatorFn

from seiko.callbacks.writers import DesignWriter


class _TolerantInstantiator(_InstantiatorFn):
    """Lightning's instantiator (which records linked values in the saved hyper-parameters),
    minus the links whose target the chosen class does not have.

    jsonargparse already skips such a link (e.g. ``denoiser.vocab_size`` for the autoencoder
    module, which has no denoiser), but Lightning then still writes its value into the
    hyper-parameters and fails on the missing key.
    """

    def __call__(self, class_type: type, *args: Any, applied_instantiation_links: dict, **kwargs):
        self.cli._dump_config()
        hparams = self.cli.config_dump.get(self.key, {})
        hparams = {**hparams.get("init_args", {}), **hparams.get("dict_kwargs", {}), **hparams}

        def present(key: str) -> bool:
            """Whether the class that ``key`` (model.init_args.net.init_args.field, or
            model.init_args.field) ends in takes ``field``: the links target the module itself
            or network classes named by a class path."""
            parts = [p for p in key.split(".") if p != "init_args"]
            if parts[0] != self.key:
                return True
            if len(parts) == 2:  # a module argument (``labels``): only where the module takes it
                return parts[1] in inspect.signature(class_type).parameters
            node: Any = hparams
            for part in parts[1:-1]:
                if not isinstance(node, dict):
                    return False
                node = {**node.get("init_args", {}), **node}.get(part)
            if not isinstance(node, dict) or "class_path" not in node:
                return False
            module, _, name = node["class_path"].rpartition(".")
            target = getattr(importlib.import_module(module), name)
            return parts[-1] in inspect.signature(target).parameters

        links = {k: v for k, v in applied_instantiation_links.items() if present(k)}
        return super().__call__(class_type, *args, applied_instantiation_links=links, **kwargs)


class SeikoCLI(LightningCLI):
    """LightningCLI with seiko's links between data and model.

    A link applies where the chosen classes take its target: the denoiser's sizes for the
    one-hot diffusion modules, the autoencoder's for the latent ones.
    """

    def _add_instantiators(self) -> None:
        super()._add_instantiators()
        self.parser.add_instantiator(
            _TolerantInstantiator(cli=self, key="model"),
            L.LightningModule,
            subclasses=self.subclass_mode_model,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        links = {
            "data.vocabulary": "model.init_args.vocabulary",
            "data.seq_len": "model.init_args.seq_len",
            "data.pad_symbol": "model.init_args.pad_symbol",
            "data.labels": "model.init_args.labels",  # where both sides have labels
            # a SequenceClassifier (pretrained reward features) takes these itself
            "data.vocab_size": "model.init_args.vocab_size",
            "data.num_classes": "model.init_args.num_classes",
        }
        for source, target in links.items():
            parser.link_arguments(source, target, apply_on="instantiate")
        for net in ("denoiser", "autoencoder"):  # the autoencoder: latent diffusion's stages
            for field in ("vocab_size", "seq_len"):
                parser.link_arguments(
                    f"data.{field}",
                    f"model.init_args.{net}.init_args.{field}",
                    apply_on="instantiate",
                )
        parser.link_arguments(
            "data.num_classes",
            "model.init_args.denoiser.init_args.num_classes",
            apply_on="instantiate",
        )


def build_cli(args: list[str] | None = None, run: bool = True) -> SeikoCLI:
    """Build (and with ``run`` execute) the CLI; ``args`` for tests, None reads ``sys.argv``."""
    return SeikoCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": [DesignWriter()]},
        args=args,
        run=run,
    )


def main() -> None:
    """Console entry point ``seiko``."""
    build_cli()


if __name__ == "__main__":
    main()
