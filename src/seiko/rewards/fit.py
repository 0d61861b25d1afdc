"""Fitting a ``RewardEnsemble`` on every oracle answer so far, one call per round.

The objective is the mean squared error on normalised targets, summed over members (so each
member's gradient is exactly its own loss's gradient), minimised with AdamW over the stacked
parameters, which is M independent AdamW optimisers in one.

**Bootstrap.** With ``bootstrap=True`` member m is trained on its own resample (n_train draws with
replacement) of the training split. The resample is applied as multiplicity weights: member m's
loss on a minibatch is ``mean_i c[m, i] * err[m, i]``, where c[m, i] counts how often point i was
drawn. That is the bootstrap loss exactly (a point drawn twice counts twice), and it lets every
member read the same minibatch, so the input is shared and the first layer runs as one product.
With ``bootstrap=False`` every member sees all the data and members differ by initialisation only.

**Held-out split and early stopping.** Point i goes to the validation split when
``numpy.random.default_rng(split_seed).random(N)[i] < val_fraction``. The draw for point i does not
depend on N, so across rounds (the data only grows, in the order the answers came) a point never
moves between splits: warm-started weights are never validated on points they were trained on.
That is why the split has its own seed: ``seed`` (bootstrap resamples, minibatch order) may change
every round, ``split_seed`` should not.
After every epoch each member's validation loss is measured; each member keeps its own best
weights. On a refit the weights it started from are a candidate too, so a warm-started fit never
ends worse on the held-out data than it began. On the very first fit they are not: random initial
weights predict a near-constant, and on a small, noisy held-out split (20 points in a first round of
200) a constant can beat a trained model on squared error by chance. The benchmark saw exactly that
(a round-0 model that kept its random weights, held-out Spearman -0.53, so that round's fine-tuning
learned nothing); a first fit therefore always ends with trained weights (epoch >= 1).
Fitting stops when no member has improved for ``patience`` epochs.
With no validation points (tiny data, or ``val_fraction=0``) all epochs run and the last weights
are kept.

**Warm start and normalisation.** A call continues from the ensemble's current weights (a new
optimiser, though: the Adam moments of the previous round are not kept). The target mean and std
are recomputed on every call from the current training split, because over rounds the data grows
and shifts toward higher rewards and stale statistics would leave the targets far from unit scale.
Changing the statistics would change the function the warm-started weights compute, so the linear
head is re-parametrised (w' = w * s / s', b' = (b * s + m - m') / s') to keep every original-scale
output exactly as it was; training then continues from the same function. On the very first fit
(``ensemble.num_fits == 0``) the statistics are simply set, since the random initial function is
not worth preserving. A constant target (std 0) is normalised with std 1.

**Infeasible designs (NaN targets).** An oracle answers NaN for an infeasible design (an invalid
molecule, a rejected sequence). Two rules, chosen by ``infeasible``:

* ``"floor"`` (default): every NaN target becomes ``floor = min(feasible) - margin * std(feasible)``
  (std 1 if the feasible targets are constant). The reward model then learns that infeasible
  regions score below everything feasible, so fine-tuning is pushed away from them instead of
  extrapolating freely there. ``margin`` sets how far below.
* ``"drop"``: infeasible points are removed; the model says nothing about infeasible regions.

The held-out Spearman and Pearson correlations are computed on feasible held-out points only, so
infeasible points (easy to rank under "floor") do not inflate them.

**Measured speed** (``benchmarks/rewards_fit.py --threads 1``; torch 2.13 CPU build on the shared
2-core dev machine, load average about 6): a 4-member ensemble with default widths on 2,000 one-hot
(48 x 27) sequences, 50 epochs, batch 128, no early stopping, takes 18.5 s ("cnn") and 7.3 s
("mlp") in one vectorised fit, against 37.5 s and 15.3 s for a Python loop fitting 4 single
models one by one (2.0x and 2.1x; held-out Spearman 0.999 either way). With torch's default 2
threads on that busy machine OpenMP's spin-waiting made the same small fits 5-25x slower, whatever
the ensemble does; one thread (or ``OMP_WAIT_POLICY=PASSIVE``) avoids it. Numbers in
``benchmarks/results/rewards_fit.json``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.regression import pearson_corrcoef, spearman_corrcoef
from tqdm.auto import tqdm

from seiko.rewards.ensemble import RewardEnsemble

InfeasibleRule = Literal["floor", "drop"]
INFEASIBLE_RULES: tuple[str, ...] = ("floor", "drop")


@dataclass(frozen=True)
class FitReport:
    """What one ``fit_ensemble`` call did.

    Attributes:
        epochs: epochs run (fewer than asked when early stopping fired).
        best_epoch: per member, the epoch whose weights were kept (0: the starting weights).
        train_loss: per member, the kept weights' MSE on its own (bootstrap-weighted) training
            data, in normalised units.
        val_loss: per member, the kept weights' MSE on the held-out split, normalised units
            (NaN without validation points).
        n_train: training points (infeasible ones included under "floor").
        n_val: held-out points (idem).
        n_infeasible: NaN targets in the data (filled or dropped).
        floor: the value NaN targets were replaced by ("floor" rule with some NaN), else None.
        target_mean: the normalisation mean now stored in the ensemble.
        target_std: the normalisation std now stored in the ensemble.
        spearman: Spearman correlation of the ensemble mean with the target on the feasible
            held-out points (NaN with fewer than 2).
        pearson: Pearson correlation, same points.
        seconds: wall-clock time of the call.
    """

    epochs: int
    best_epoch: tuple[int, ...]
    train_loss: tuple[float, ...]
    val_loss: tuple[float, ...]
    n_train: int
    n_val: int
    n_infeasible: int
    floor: float | None
    target_mean: float
    target_std: float
    spearman: float
    pearson: float
    seconds: float

    def metrics(self, prefix: str = "reward_model") -> dict[str, float]:
        """Scalars for a logger, keyed ``f"{prefix}/{field}"`` (e.g. ``reward_model/spearman``).

        Per-member tuples are averaged over members; ``floor`` (possibly None) is left out.
        """
        values = asdict(self)
        for key in ("best_epoch", "train_loss", "val_loss"):
            values[key] = float(np.mean(values[key]))
        values.pop("floor")
        return {f"{prefix}/{key}": float(value) for key, value in values.items()}


def handle_infeasible(
    y: Tensor, infeasible: InfeasibleRule = "floor", margin: float = 1.0
) -> tuple[Tensor, Tensor, float | None]:
    """Apply the infeasible-design rule (see the module docstring) to targets with NaN.

    Args:
        y: (N,) targets, NaN where the design is infeasible.
        infeasible: "floor" (replace NaN by the floor value) or "drop" (leave them out).
        margin: the floor lies ``margin`` feasible standard deviations below the feasible minimum.

    Returns:
        keep: (N,) bool, the points to train on.
        targets: (N,) y with NaN replaced by the floor ("floor"), or y itself ("drop").
        floor: the floor value, or None when nothing was replaced.

    Raises:
        ValueError: an unknown rule, a negative margin, or no feasible target at all.
    """
    if infeasible not in INFEASIBLE_RULES:
        raise ValueError(f"infeasible={infeasible!r} is not one of {INFEASIBLE_RULES}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    nan = torch.isnan(y)
    feasible = y[~nan]
    if feasible.numel() == 0:
        raise ValueError(
            f"all {y.numel()} targets are NaN (infeasible designs): there is nothing to fit a "
            "reward model on"
        )
    if infeasible == "drop" or not nan.any():
        return ~nan, y, None
    floor = float(feasible.min() - margin * _scale(feasible))
    return torch.ones_like(nan), torch.where(nan, torch.full_like(y, floor), y), floor


def fit_ensemble(
    ensemble: RewardEnsemble,
    x: Tensor,
    y: Tensor,
    *,
    bootstrap: bool = True,
    epochs: int = 100,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    val_fraction: float = 0.1,
    patience: int = 10,
    infeasible: InfeasibleRule = "floor",
    margin: float = 1.0,
    seed: int = 0,
    split_seed: int = 0,
    progress: bool = False,
) -> FitReport:
    """Fit (or keep fitting) every member of ``ensemble`` on (x, y), in place.

    See the module docstring for the bootstrap, the split, early stopping, warm start, the
    normalisation and the NaN rule. Deterministic given ``seed``, ``split_seed`` and the
    ensemble's weights.

    Args:
        ensemble: the ensemble to train; its device and dtype are used.
        x: (N, *ensemble.input_shape) designs, all answers so far in the order they came.
        y: (N,) oracle values, NaN for infeasible designs.
        bootstrap: train each member on its own resample (else all on the full training split).
        epochs: maximum passes over the training split.
        batch_size: minibatch size.
        lr: AdamW learning rate.
        weight_decay: AdamW (decoupled) weight decay.
        val_fraction: probability that a point is held out, in [0, 1).
        patience: stop after this many epochs without any member improving on the held-out split.
        infeasible: "floor" or "drop", the rule for NaN targets.
        margin: how far below the feasible minimum the floor lies, in feasible stds.
        seed: seed of the bootstrap resamples and the minibatch order (may change per round).
        split_seed: seed of the held-out split; keep it fixed across rounds.
        progress: show a progress bar over epochs.

    Returns:
        A ``FitReport``.

    Raises:
        ValueError: mismatched or wrong shapes, empty data, non-finite designs, infinite targets,
            all targets NaN, an empty training split, or an argument out of range.
    """
    start = time.perf_counter()
    _check_arguments(ensemble, x, y, epochs, batch_size, lr, weight_decay, val_fraction, patience)
    y64 = y.detach().to("cpu", torch.float64)
    keep, targets, floor = handle_infeasible(y64, infeasible, margin)
    held_out = _held_out(len(y64), val_fraction, split_seed)
    train_idx = (keep & ~held_out).nonzero().squeeze(1)
    val_idx = (keep & held_out).nonzero().squeeze(1)
    if len(train_idx) == 0:
        raise ValueError(
            f"no training points left: {int(keep.sum())} usable points, {len(val_idx)} held out "
            f"(val_fraction={val_fraction}); add data or lower val_fraction"
        )
    mean, std = float(targets[train_idx].mean()), _scale(targets[train_idx])
    _set_normalisation(ensemble, mean, std)

    weight = ensemble.head.weight
    x_train = x[train_idx.to(x.device)].detach().to(weight.device, weight.dtype)
    x_val = x[val_idx.to(x.device)].detach().to(weight.device, weight.dtype)
    y_norm = ((targets - mean) / std).to(weight.device, weight.dtype)
    y_train, y_val = y_norm[train_idx], y_norm[val_idx]
    n_train, n_val, M = len(train_idx), len(val_idx), ensemble.num_members

    generator = torch.Generator().manual_seed(seed)
    counts = torch.ones(M, n_train)
    if bootstrap:
        draws = torch.randint(n_train, (M, n_train), generator=generator)
        counts = torch.zeros(M, n_train).scatter_add_(1, draws, torch.ones(M, n_train))
    counts = counts.to(weight.device, weight.dtype)

    params = list(ensemble.parameters())
    flags = [p.requires_grad for p in params]
    try:
        # The reward may have been frozen for fine-tuning; fitting needs its gradients back.
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            epochs_run, best_epoch, best_val = _train(
                ensemble,
                params,
                x_train,
                y_train,
                counts,
                x_val,
                y_val,
                epochs,
                batch_size,
                lr,
                weight_decay,
                patience,
                generator,
                progress,
                keep_start=ensemble.num_fits > 0,
            )
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
    train_loss = _losses(ensemble, x_train, y_train, counts, batch_size)

    spearman = pearson = float("nan")
    feasible_val = val_idx[~torch.isnan(y64[val_idx])]
    if len(feasible_val) >= 2:
        x_feasible = x[feasible_val.to(x.device)].to(weight.device, weight.dtype)
        with torch.no_grad():
            prediction = (
                torch.cat([ensemble.mean(chunk) for chunk in x_feasible.split(batch_size)])
                .float()
                .cpu()
            )
        truth = y64[feasible_val].float()
        # torchmetrics' functional forms of SpearmanCorrCoef/PearsonCorrCoef: one-shot values,
        # without the Metric classes' warning about buffering every prediction
        spearman = float(spearman_corrcoef(prediction, truth))
        pearson = float(pearson_corrcoef(prediction, truth))
    ensemble.num_fits += 1
    return FitReport(
        epochs=epochs_run,
        best_epoch=tuple(best_epoch.tolist()),
        train_loss=tuple(train_loss.tolist()),
        val_loss=tuple(best_val.tolist()),
        n_train=n_train,
        n_val=n_val,
        n_infeasible=int(torch.isnan(y64).sum()),
        floor=floor,
        target_mean=mean,
        target_std=std,
        spearman=spearman,
        pearson=pearson,
        seconds=time.perf_counter() - start,
    )


def _check_arguments(
    ensemble: RewardEnsemble,
    x: Tensor,
    y: Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    val_fraction: float,
    patience: int,
) -> None:
    shape = ensemble.input_shape
    if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise ValueError(
            f"x has shape {tuple(x.shape)}, but the ensemble takes "
            f"(N, {', '.join(map(str, shape))})"
        )
    if y.dim() != 1 or len(y) != len(x):
        raise ValueError(f"y must have shape ({len(x)},) to match x, got {tuple(y.shape)}")
    if len(x) == 0:
        raise ValueError("the dataset is empty (x and y have 0 rows): nothing to fit")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values; designs must be finite")
    if torch.isinf(y).any():
        raise ValueError("y contains infinite values; mark infeasible designs with NaN, not inf")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not lr > 0 or not weight_decay >= 0:
        raise ValueError(
            f"need lr > 0 and weight_decay >= 0, got lr={lr}, weight_decay={weight_decay}"
        )
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")


def _held_out(n: int, val_fraction: float, seed: int) -> Tensor:
    """(n,) bool: which points are held out; point i's draw does not depend on n (prefix-stable)."""
    return torch.from_numpy(np.random.default_rng(seed).random(n) < val_fraction)


def _scale(values: Tensor) -> float:
    """The std of ``values``, or 1 when they are (numerically) constant."""
    std = float(values.std(correction=0))
    return std if std > 1e-8 * max(1.0, abs(float(values.mean()))) else 1.0


@torch.no_grad()
def _set_normalisation(ensemble: RewardEnsemble, mean: float, std: float) -> None:
    """Store the new target statistics; once fitted, re-parametrise the head to keep outputs."""
    if ensemble.num_fits > 0:
        old_mean, old_std = float(ensemble.target_mean), float(ensemble.target_std)
        ensemble.head.weight.mul_(old_std / std)
        ensemble.head.bias.mul_(old_std).add_(old_mean - mean).div_(std)
    ensemble.target_mean.fill_(mean)
    ensemble.target_std.fill_(std)


@torch.no_grad()
def _losses(
    ensemble: RewardEnsemble, x: Tensor, y: Tensor, weights: Tensor | None, batch_size: int
) -> Tensor:
    """Per-member weighted MSE in normalised units: (n, ...), (n,), (M, n) or None -> (M,)."""
    if len(y) == 0:
        return torch.full((ensemble.num_members,), float("nan"))
    if weights is None:
        weights = torch.ones(ensemble.num_members, len(y), device=y.device, dtype=y.dtype)
    total = torch.zeros(ensemble.num_members, device=y.device, dtype=y.dtype)
    batches = zip(
        x.split(batch_size), y.split(batch_size), weights.split(batch_size, 1), strict=True
    )
    for xb, yb, wb in batches:
        total += (wb * (ensemble._normalised(xb) - yb) ** 2).sum(1)
    return (total / weights.sum(1)).cpu()


def _train(
    ensemble: RewardEnsemble,
    params: list[torch.nn.Parameter],
    x_train: Tensor,
    y_train: Tensor,
    counts: Tensor,
    x_val: Tensor,
    y_val: Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    patience: int,
    generator: torch.Generator,
    progress: bool,
    keep_start: bool,
) -> tuple[int, Tensor, Tensor]:
    """The epoch loop with per-member early stopping; leaves each member's best weights in place.

    ``keep_start``: the starting weights (epoch 0) are a candidate (a refit); else the first
    epoch's weights always replace them (a first fit from random initial weights).

    Returns (epochs run, (M,) best epoch per member, (M,) best validation loss per member).
    """
    M = ensemble.num_members
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    validate = len(y_val) > 0
    # On a refit epoch 0 (the starting weights) is a candidate too: a warm start never ends up
    # worse. On a first fit it is not (random weights; see the module docstring).
    best_val = _losses(ensemble, x_val, y_val, None, batch_size)
    if validate and not keep_start:
        best_val = torch.full_like(best_val, math.inf)
    best_state = [p.detach().clone() for p in params]
    best_epoch = torch.zeros(M, dtype=torch.long)
    stale = torch.zeros(M, dtype=torch.long)
    epochs_run = 0
    bar = tqdm(range(1, epochs + 1), desc="reward ensemble", disable=not progress, leave=False)
    for epoch in bar:
        order = torch.randperm(len(y_train), generator=generator).to(y_train.device)
        for idx in order.split(batch_size):
            prediction = ensemble._normalised(x_train[idx])  # (M, b)
            # Sum over members: each member's gradient is that of its own loss alone.
            loss = (counts[:, idx] * (prediction - y_train[idx]) ** 2).mean(1).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        epochs_run = epoch
        if not validate:
            best_epoch.fill_(epoch)
            continue
        val = _losses(ensemble, x_val, y_val, None, batch_size)
        improved = val < best_val
        with torch.no_grad():
            mask = improved.to(params[0].device)
            for p, best in zip(params, best_state, strict=True):
                best[mask] = p[mask]
        best_val = torch.where(improved, val, best_val)
        best_epoch[improved] = epoch
        stale = torch.where(improved, 0, stale + 1)
        bar.set_postfix(val_loss=f"{best_val.mean():.4f}")
        if bool((stale >= patience).all()):
            break
    if validate:
        with torch.no_grad():
            for p, best in zip(params, best_state, strict=True):
                p.copy_(best)
    return epochs_run, best_epoch, best_val
