"""An ensemble of M small reward networks evaluated as one vectorised network.

Every parameter is stored stacked, with the member as its leading dimension ((M, ...)), and the
forward pass evaluates all members at once: batched matrix products for linear layers, one
convolution with M output blocks for the first conv layer (the input is shared) and grouped
convolutions (``groups=M``) after it. There is no Python loop over members: fitting M models costs
about as much Python overhead as fitting one (see ``seiko.rewards.fit`` for measured times).

The stacking also makes per-member bookkeeping vectorised: member i's weights are ``p[i]`` for every
parameter ``p``, so keeping each member's best weights during early stopping is one masked copy, and
AdamW (element-wise) over the stacked parameters is exactly M independent AdamW optimisers.

Outputs are in the original target scale: the network predicts normalised targets and the
ensemble stores the target mean and std (buffers ``target_mean``, ``target_std``) that undo it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

Architecture = Literal["mlp", "cnn"]
ARCHITECTURES: tuple[str, ...] = ("mlp", "cnn")
Pooling = Literal["avg", "max"]
POOLINGS: tuple[str, ...] = ("avg", "max")


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> nn.Parameter:
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)): the scale of torch's default nn.Linear/nn.Conv init
    return nn.Parameter((torch.rand(shape, generator=generator) * 2 - 1) * bound)


class _StackedLinear(nn.Module):
    """M linear layers: weight (M, in, out), bias (M, out)."""

    def __init__(self, members: int, fan_in: int, fan_out: int, generator: torch.Generator):
        super().__init__()
        bound = fan_in**-0.5
        self.weight = _uniform((members, fan_in, fan_out), bound, generator)
        self.bias = _uniform((members, fan_out), bound, generator)

    def forward(self, h: Tensor, members: slice) -> Tensor:
        """h: (B, in) shared by all members or (m, B, in) per member -> (m, B, out)."""
        # matmul broadcasts a shared (B, in) input against the (m, in, out) weights
        return torch.matmul(h, self.weight[members]) + self.bias[members].unsqueeze(1)


class _StackedConv(nn.Module):
    """M conv layers ("same" padding): weight (M, out, in, *kernel), bias (M, out)."""

    def __init__(
        self,
        members: int,
        dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        generator: torch.Generator,
    ):
        super().__init__()
        bound = (in_channels * kernel_size**dims) ** -0.5
        self.weight = _uniform(
            (members, out_channels, in_channels) + (kernel_size,) * dims, bound, generator
        )
        self.bias = _uniform((members, out_channels), bound, generator)
        self.in_channels, self.stride, self.padding = in_channels, stride, kernel_size // 2
        self.conv = F.conv1d if dims == 1 else F.conv2d

    def forward(self, h: Tensor, members: slice) -> Tensor:
        """h: (B, in, *S) shared, or (B, m*in, *S) member-major blocks -> (B, m*out, *S')."""
        weight = self.weight[members]
        # A shared input has `in` channels: one ordinary conv with m*out outputs computes every
        # member. A per-member input has m*in channels: groups=m keeps the members apart.
        groups = h.shape[1] // self.in_channels
        return self.conv(
            h,
            weight.flatten(0, 1),
            self.bias[members].flatten(),
            stride=self.stride,
            padding=self.padding,
            groups=groups,
        )


class RewardEnsemble(nn.Module):
    """M small differentiable reward networks with stacked parameters, evaluated together.

    Architectures (SiLU activations everywhere, because the fine-tuning objective backpropagates
    through the reward into the designs and ReLU's piecewise-constant input gradient is a poor
    ascent direction):

    * ``"mlp"``: flatten the input, ``num_layers`` hidden layers of width ``hidden``.
    * ``"cnn"``: ``num_layers`` conv layers of ``channels`` channels, then average (``pool="avg"``)
      or max (``pool="max"``) pooling to a fixed grid, one hidden layer of width ``hidden``. For
      (L, V) sequences the conv is 1-D over positions (V input channels, stride 1) and the
      pooling keeps ``pool_size`` position bins (so the reward can still depend on where a motif
      is); for (C, H, W) images the conv is 2-D with stride 2 and the pooling keeps a
      ``pool_size`` x ``pool_size`` grid.

    The features (``features``) are the last hidden layer's activations, F = ``hidden``; the value
    is a linear head on them, mapped back to the original target scale.

    Members differ through their random initialisation (one generator seeded with ``seed`` draws
    all members' weights) and, in ``fit_ensemble``, through their bootstrap resamples.

    Args:
        input_shape: shape of one design as the reward sees it: (L, V) one-hot sequences,
            (C, H, W) images, or any shape for "mlp".
        num_members: M, the number of networks.
        architecture: "mlp" or "cnn".
        hidden: width of the hidden (feature) layer(s), F.
        channels: conv channels ("cnn" only).
        num_layers: hidden layers ("mlp") or conv layers ("cnn").
        kernel_size: odd conv kernel size; None: 5 for sequences, 3 for images.
        pool_size: pooled positions (sequences) or grid side (images); None: 8 for sequences,
            4 for images (at most the input's own size).
        pool: "avg" or "max" pooling of the conv features. Max pooling with ``pool_size=1`` and a
            kernel as wide as a binding site is the motif-scanner shape of DeepBind/Basset (a
            feature is "this motif is somewhere"); it learns a motif-presence oracle from far fewer
            measurements than averaging does (benchmarks/reward_architectures.py measures both).
        reverse_complement: ("cnn" on (L, 4) DNA or RNA one-hots, ACGT / ACGU order) read both
            strands: the conv stack runs on x and on its reverse complement (positions reversed,
            channels reversed, since A<->T/U and C<->G), the second output is reversed back
            along the positions, and the two are combined by an elementwise max before pooling.
            The features of the reverse complement are then the position-mirrored features of
            x, so with ``pool_size=1`` the reward is exactly strand-invariant, as a binding-site
            score on double-stranded DNA is (JASPAR scores both strands). Measured on the HepG2
            enhancer task (benchmarks/reward_features.py): see docs/sequences.md.
        seed: seed of the weight initialisation.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_members: int = 4,
        architecture: Architecture = "cnn",
        hidden: int = 64,
        channels: int = 16,
        num_layers: int = 2,
        kernel_size: int | None = None,
        pool_size: int | None = None,
        pool: Pooling = "avg",
        reverse_complement: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        shape = tuple(int(d) for d in input_shape)
        if not shape or min(shape) < 1:
            raise ValueError(f"input_shape must be non-empty with positive sizes, got {shape}")
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture={architecture!r} is not one of {ARCHITECTURES}")
        if pool not in POOLINGS:
            raise ValueError(f"pool={pool!r} is not one of {POOLINGS}")
        if architecture == "cnn" and len(shape) not in (2, 3):
            raise ValueError(
                f"architecture='cnn' takes (L, V) sequences or (C, H, W) images, got input_shape "
                f"{shape}; use architecture='mlp' for other shapes"
            )
        for name, value in (
            ("num_members", num_members),
            ("hidden", hidden),
            ("channels", channels),
            ("num_layers", num_layers),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if reverse_complement and (architecture != "cnn" or len(shape) != 2 or shape[1] != 4):
            raise ValueError(
                "reverse_complement=True reads both strands of (L, 4) nucleotide one-hots with "
                f"architecture='cnn'; got architecture={architecture!r}, input_shape {shape}"
            )
        self.reverse_complement = reverse_complement
        self.input_shape = shape
        self.num_members = num_members
        self.architecture = architecture
        generator = torch.Generator().manual_seed(seed)

        self.convs = nn.ModuleList()
        self.pool = pool
        self.pool_size: tuple[int, ...] = ()
        if architecture == "cnn":
            dims = len(shape) - 1  # (L, V): 1-D over positions; (C, H, W): 2-D
            kernel_size = kernel_size if kernel_size is not None else (5 if dims == 1 else 3)
            if kernel_size < 1 or kernel_size % 2 == 0:
                raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
            in_channels = shape[1] if dims == 1 else shape[0]
            stride = 1 if dims == 1 else 2  # sequences are short; images are downsampled
            for layer in range(num_layers):
                self.convs.append(
                    _StackedConv(
                        num_members,
                        dims,
                        in_channels if layer == 0 else channels,
                        channels,
                        kernel_size,
                        stride,
                        generator,
                    )
                )
            spatial = shape[:1] if dims == 1 else shape[1:]
            for _ in range(num_layers):
                spatial = tuple((s - 1) // stride + 1 for s in spatial)
            side = pool_size if pool_size is not None else (8 if dims == 1 else 4)
            if side < 1:
                raise ValueError(f"pool_size must be >= 1, got {pool_size}")
            self.pool_size = tuple(min(side, s) for s in spatial)
            widths = [channels * math.prod(self.pool_size)] + [hidden]
        else:
            widths = [math.prod(shape)] + [hidden] * num_layers
        self.hidden = nn.ModuleList(
            _StackedLinear(num_members, a, b, generator) for a, b in pairwise(widths)
        )
        self.head = _StackedLinear(num_members, hidden, 1, generator)
        # Set by fit_ensemble; outputs are head * target_std + target_mean.
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))
        # How many times fit_ensemble ran: 0 means the normalisation can be set freely.
        self.register_buffer("num_fits", torch.zeros((), dtype=torch.long))

    @property
    def num_features(self) -> int:
        """F, the width of ``features``."""
        return self.head.weight.shape[1]

    def extra_repr(self) -> str:
        return (
            f"input_shape={self.input_shape}, num_members={self.num_members}, "
            f"architecture={self.architecture!r}, num_features={self.num_features}"
        )

    # ------------------------------------------------------------------ internals
    def _check_input(self, x: Tensor) -> None:
        if x.dim() != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"x has shape {tuple(x.shape)}, but the reward ensemble takes "
                f"(B, {', '.join(map(str, self.input_shape))})"
            )

    def _features(self, x: Tensor, members: slice) -> Tensor:
        """(B, *input_shape) -> (m, B, F) features of the members in ``members``."""
        self._check_input(x)
        h = x.to(self.head.weight.dtype)  # e.g. a bf16 reward model on an fp32 design
        if self.architecture == "mlp":
            h = h.flatten(1)
        else:
            if len(self.input_shape) == 2:
                h = h.transpose(1, 2)  # (B, L, V) -> (B, V, L): the alphabet is the channels
            h_in = h
            h = self._conv_stack(h, members)
            if self.reverse_complement:
                # (B, V, L): positions and channels reversed is the reverse complement
                rc = self._conv_stack(h_in.flip(1, 2), members).flip(2)
                h = torch.maximum(h, rc)
            pools = {
                ("avg", 1): F.adaptive_avg_pool1d,
                ("avg", 2): F.adaptive_avg_pool2d,
                ("max", 1): F.adaptive_max_pool1d,
                ("max", 2): F.adaptive_max_pool2d,
            }
            h = pools[self.pool, len(self.pool_size)](
                h, self.pool_size
            )  # (B, m*C, *P), channels in member-major blocks
            m, width = len(range(self.num_members)[members]), self.hidden[0].weight.shape[1]
            h = h.reshape(h.shape[0], m, width).transpose(0, 1)  # (m, B, C*P)
        for layer in self.hidden:
            h = F.silu(layer(h, members))
        return h

    def _conv_stack(self, h: Tensor, members: slice) -> Tensor:
        for conv in self.convs:
            h = F.silu(conv(h, members))
        return h

    def _normalised(self, x: Tensor, members: slice = slice(None)) -> Tensor:
        """(B, *input_shape) -> (m, B) predictions of the normalised target (what is trained)."""
        return self.head(self._features(x, members), members).squeeze(-1)

    def _to_original(self, values: Tensor) -> Tensor:
        return values * self.target_std + self.target_mean

    # ------------------------------------------------------------------ public API
    def forward(self, x: Tensor) -> Tensor:
        """Every member's predicted reward, in the original target scale.

        Args:
            x: (B, *input_shape) designs (e.g. a straight-through one-hot (B, L, V) in {0, 1}).

        Returns:
            (M, B) values; differentiable w.r.t. x.
        """
        return self._to_original(self._normalised(x))

    def mean(self, x: Tensor) -> Tensor:
        """Ensemble mean reward, (B, *input_shape) -> (B,).

        To get mean and std together, reduce one ``forward(x)`` call instead of calling both.
        """
        return self(x).mean(0)

    def std(self, x: Tensor) -> Tensor:
        """Ensemble standard deviation (Bessel-corrected, over members), (B, *input_shape) -> (B,).

        Raises:
            ValueError: with a single member, which carries no spread.
        """
        if self.num_members < 2:
            raise ValueError("std needs an ensemble of >= 2 members, this one has 1")
        return self(x).std(0)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features of every member, (B, *input_shape) -> (M, B, F).

        They are what the linear head reads, so a UCB bonus sqrt(phi^T Sigma^-1 phi) with
        Sigma = Phi^T Phi + lambda I measures novelty in the space the reward is linear in.
        """
        return self._features(x, slice(None))

    def member(self, index: int) -> RewardMember:
        """Member ``index`` as a callable module (B, *input_shape) -> (B,) (Thompson sampling).

        The member shares this ensemble's parameters (a view, not a copy) and evaluates only its
        own slice of them, so calling it costs 1/M of the ensemble.
        """
        if not -self.num_members <= index < self.num_members:
            raise IndexError(f"member index {index} is out of range for {self.num_members} members")
        return RewardMember(self, index % self.num_members)


class RewardMember(nn.Module):
    """One member of a ``RewardEnsemble``, sharing its parameters. Made by ``ensemble.member(i)``.

    Args:
        ensemble: the ensemble.
        index: which member, in [0, M).
    """

    def __init__(self, ensemble: RewardEnsemble, index: int) -> None:
        super().__init__()
        self.ensemble = ensemble
        self.index = index
        self._members = slice(index, index + 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, *input_shape) -> (B,) this member's reward in the original target scale."""
        ensemble = self.ensemble
        return ensemble._to_original(ensemble._normalised(x, self._members)).squeeze(0)

    def features(self, x: Tensor) -> Tensor:
        """(B, *input_shape) -> (B, F) this member's penultimate-layer features."""
        return self.ensemble._features(x, self._members).squeeze(0)
