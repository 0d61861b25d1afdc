"""LightningDataModules: each domain's pretraining data (and conditions for fine-tuning)."""

from seiko.datamodules.images import ImageDataModule
from seiko.datamodules.molecules import MoleculeDataModule
from seiko.datamodules.prompts import PromptDataModule, read_prompts
from seiko.datamodules.sequences import (
    ALPHABETS,
    DEFAULT_SPLIT_VALUES,
    SequenceDataModule,
    SequenceRecord,
    detect_format,
    read_sequences,
)

__all__ = [
    "ALPHABETS",
    "DEFAULT_SPLIT_VALUES",
    "ImageDataModule",
    "MoleculeDataModule",
    "PromptDataModule",
    "SequenceDataModule",
    "SequenceRecord",
    "detect_format",
    "read_prompts",
    "read_sequences",
]
