"""``seiko fit|validate|test|predict``: the LightningCLI entry point.

Values the data fixes are linked from the datamodule, never written twice: for sequence data the
vocabulary, its size, the padded length and the pad symbol flow into the module and its denoiser.
``predict`` writes the decoded designs, one per line, to ``<log_dir>/predictions.txt``.
"""

from __future__ import annotations

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from seiko.callbacks.writers import DesignWriter


class SeikoCLI(LightningCLI):
    """LightningCLI with seiko's links between data and model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        links = {
            "data.vocabulary": "model.init_args.vocabulary",
            "data.seq_len": "model.init_args.seq_len",
            "data.pad_symbol": "model.init_args.pad_symbol",
            "data.vocab_size": "model.init_args.denoiser.init_args.vocab_size",
        }
        for source, target in links.items():
            parser.link_arguments(source, target, apply_on="instantiate")
        parser.link_arguments(
            "data.seq_len", "model.init_args.denoiser.init_args.seq_len", apply_on="instantiate"
        )


def build_cli(args: list[str] | None = None, run: bool = True) -> SeikoCLI:
    """Build (and with ``run`` execute) the CLI; ``args`` for tests, None reads ``sys.argv``."""
    import lightning as L

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
