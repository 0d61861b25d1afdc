"""Pretrained, frozen feature networks for the reward model: what it can learn from 64 answers.

Why: a reward ensemble trained from scratch on a round's few dozen measurements cannot learn an
oracle that looks for short motifs anywhere in a 200 bp sequence. Measured on the HepG2 enhancer
score (benchmarks/reward_features.py): the default CNN reaches a held-out Spearman of about 0 from
64-256 measured sequences and 0.12 from 1,024; the same fit on the features of a network pretrained
to tell the DHS data's four cell types apart (no oracle call involved: the labels come with the
pretraining data) reaches 0.3-0.5 from 64-256. The pretraining data say which sequence features
matter; the oracle's answers only have to say how much.

``SequenceClassifier`` is a LightningModule trained on a labelled ``SequenceDataModule`` (cross
entropy on the label, optional reverse-complement augmentation for DNA) by its LightningCLI
config (e.g. configs/dna/features.yaml). Its ``features`` submodule, a ``SequenceFeatures``, maps
a (B, L, V) one-hot in {0, 1} (the sequence modules' ``reward_input``) to (B, F) standardised
features: two convolutions as wide as binding sites, SiLU (so the fine-tuning gradient through
it is not piecewise constant), max pooling over positions ("the motif is somewhere"), and a
BatchNorm without affine terms whose running statistics standardise the features in eval mode.
``load_features(path)`` reads it back frozen; ``OnlineExploration(reward_model={"features":
path})`` fits the reward ensemble (an MLP) on those features and composes the two, so the
optimistic reward stays differentiable in the design.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import Tensor, nn
from torch.nn import functional as F


class SequenceFeatures(nn.Module):
    """(B, L, V) one-hot in {0, 1} -> (B, channels) standardised motif-detector features.

    Args:
        vocab_size: V, the alphabet size (channels of the first convolution).
        channels: feature width F (and the first convolution's width).
        kernel_size: first convolution's width in positions (odd): about a binding site.
        kernel_size2: second convolution's width, after max pooling by ``pool``.
        pool: max-pooling stride between the convolutions.
    """

    def __init__(
        self,
        vocab_size: int = 4,
        channels: int = 128,
        kernel_size: int = 15,
        kernel_size2: int = 7,
        pool: int = 4,
    ) -> None:
        super().__init__()
        for name, value in (("kernel_size", kernel_size), ("kernel_size2", kernel_size2)):
            if value < 1 or value % 2 == 0:
                raise ValueError(f"{name} must be odd and >= 1, got {value}")
        if vocab_size < 1 or channels < 1 or pool < 1:
            raise ValueError(
                f"vocab_size, channels and pool must be >= 1, got {vocab_size}, {channels}, {pool}"
            )
        self.vocab_size, self.num_features = vocab_size, channels
        self.conv1 = nn.Conv1d(vocab_size, channels, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size2, padding=kernel_size2 // 2)
        self.pool = pool
        self.norm = nn.BatchNorm1d(channels, affine=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.vocab_size:
            raise ValueError(
                f"x has shape {tuple(x.shape)}, expected (B, L, {self.vocab_size}) one-hot"
            )
        h = F.silu(self.conv1(x.transpose(1, 2).to(self.conv1.weight.dtype)))
        if h.shape[-1] >= 2 * self.pool:
            h = F.max_pool1d(h, self.pool)
        h = F.silu(self.conv2(h))
        return self.norm(h.amax(dim=-1))


class FeaturePretrainer(L.LightningModule):
    """Shared loop of the feature pretrainers: train/val/test all run ``_step(batch, stage)``
    (which logs and returns the loss), optimised by AdamW with ``hparams.lr`` and
    ``hparams.weight_decay``."""

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        raise NotImplementedError

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )


class SequenceClassifier(FeaturePretrainer):
    """Pretrains ``SequenceFeatures`` by classifying a labelled sequence datamodule's labels.

    Batches are the ``SequenceDataModule``'s: ``{"x": (B, L, V) in {-1, +1}, "cond": (B,)}``.

    Args:
        vocab_size: V (linked from the datamodule by the CLI).
        num_classes: the number of labels (linked from the datamodule).
        channels, kernel_size, kernel_size2, pool: the ``SequenceFeatures``.
        reverse_complement: train on both strands (DNA: the alphabet order ACGT reversed is its
            complement), each batch flipped with probability 1/2.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
    """

    def __init__(
        self,
        vocab_size: int = 4,
        num_classes: int = 2,
        channels: int = 128,
        kernel_size: int = 15,
        kernel_size2: int = 7,
        pool: int = 4,
        reverse_complement: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (a label to tell apart), got {num_classes}")
        self.save_hyperparameters()
        self.features = SequenceFeatures(vocab_size, channels, kernel_size, kernel_size2, pool)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, V) one-hot in {0, 1} -> (B, num_classes) logits."""
        return self.head(self.features(x))

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        if "cond" not in batch:
            raise ValueError(
                "SequenceClassifier needs labelled batches: give the datamodule a label_column"
            )
        x = (batch["x"] + 1) / 2  # {-1, +1} -> {0, 1}, what reward_input gives the reward
        if stage == "train" and self.hparams.reverse_complement and bool(torch.rand(()) < 0.5):
            x = x.flip(1).flip(2)
        logits = self(x)
        loss = F.cross_entropy(logits, batch["cond"])
        accuracy = (logits.argmax(-1) == batch["cond"]).float().mean()
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=stage != "train")
        self.log(f"{stage}/accuracy", accuracy, prog_bar=stage != "train", sync_dist=True)
        return loss


def load_features(path: str | Path) -> nn.Module:
    """The frozen (eval mode, no gradients to its weights) features of a ``SequenceClassifier``
    checkpoint (a ``SequenceFeatures``) or of a ``FingerprintRegressor`` checkpoint (a
    ``LatentFingerprintFeatures``, see ``seiko.rewards.latent_features``).

    Raises:
        FileNotFoundError: naming the path, when there is no such file.
        ValueError: the checkpoint holds no ``SequenceClassifier`` features.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"reward feature checkpoint {path} not found (make it with the domain's features "
            "config, e.g. `seiko fit --config configs/dna/features.yaml`)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    hparams = state.get("hyper_parameters", {})
    weights = state.get("state_dict", {})
    if not any(key.startswith("features.") for key in weights):
        raise ValueError(
            f"{path} holds no SequenceClassifier or FingerprintRegressor features (no "
            "'features.*' weights in its state_dict)"
        )
    if "latent_checkpoint" in hparams:  # a FingerprintRegressor's
        from seiko.rewards.latent_features import LatentFingerprintFeatures

        features: nn.Module = LatentFingerprintFeatures(
            latent_dim=int(weights["features.layer1.weight"].shape[1]),
            width=int(weights["features.layer1.weight"].shape[0]),
        )
    else:
        names = ("vocab_size", "channels", "kernel_size", "kernel_size2", "pool")
        features = SequenceFeatures(**{k: hparams[k] for k in names if k in hparams})
    features.load_state_dict(
        {k.removeprefix("features."): v for k, v in weights.items() if k.startswith("features.")}
    )
    return features.requires_grad_(False).eval()


__all__ = ["SequenceClassifier", "SequenceFeatures", "load_features"]
