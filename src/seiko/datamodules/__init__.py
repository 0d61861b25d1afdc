"""LightningDataModules: each domain's pretraining data (and conditions for fine-tuning)."""

from seiko.datamodules.molecules import MoleculeDataModule
from seiko.datamodules.sequences import ALPHABETS, SequenceDataModule, read_sequences

__all__ = ["ALPHABETS", "MoleculeDataModule", "SequenceDataModule", "read_sequences"]
