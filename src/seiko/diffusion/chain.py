"""The sampling chain: x_T in; x0 and the KL to a reference chain out.

This interface is the seam between the Lightning modules (and the callbacks behind them) and a
diffusion family. ``GaussianSampler`` implements it for DDPM/DDIM. Another family (masked discrete
diffusion with a categorical KL per step, or a latent chain whose x0 a frozen decoder turns into a
design) implements the same two methods, ``prior(n, shape)`` and ``__call__(denoiser, x_T, ...)``
returning a ``ChainOutput``, and nothing else in the library notices.

Gradient through the chain (Clark et al. 2023 "DRaFT"; Prabhudesai et al. 2023 "AlignProp";
Uehara et al. 2024 "SEIKO"):
  * ``checkpoint=True`` recomputes each step's activations in the backward pass (memory flat in the
    number of steps, ~1 extra forward per step, of the reference too when there is one);
  * ``truncate=K`` lets only the last K steps carry gradient (the first T-K run without autograd);
    with ``truncate_min=k`` K is drawn uniformly from {k, ..., truncate} at every call, AlignProp's
    randomised truncation, which keeps the expected gradient informative about early steps
    without paying for all of them each time.
  * ``kl_sampled_steps=m`` gives the KL a gradient on the steps that run without autograd too. A
    truncated chain's reward gradient reaches only its last K steps, but the weights it updates
    also move the first T-K steps, where, without this, the KL measures the drift but never pulls
    back (its value counts every step, its gradient only the last K). At each call m of those
    steps are drawn uniformly without replacement; each one's KL is recomputed with autograd at
    its stored x_t (a constant) and added as (T'/m) * (KL_i - stop_gradient(KL_i)), T' being the
    number of such stochastic steps. The returned KL's value is unchanged, and its gradient adds
    an unbiased estimate of sum_i d KL_i / d theta at the sampled x_i: the per-step KL regulariser
    of DPOK (Fan et al. 2023: the KL between the two chains is bounded by the sum of per-step
    KLs, evaluated on the model's own trajectory). It costs m more forward and backward passes of
    the denoiser per call.

The KL's gradient (``kl_gradient``). KL_t = ||mu_theta(x_t) - mu_ref(x_t)||^2 / (2 sigma_t^2) is
evaluated on the trained chain's own x_t, which depends on theta through the earlier steps. Its
exact pathwise gradient therefore also flows through the reference's input: d mu_ref / d x_t.
  * ``"exact"`` keeps that term. With checkpointing, the reference is then recomputed and
    backpropagated (for its input) at every step: about 8 forward passes per step in all, against
    about 5 without it (measured in benchmarks/engine.py).
  * ``"detached"`` (the default) evaluates the reference network under ``no_grad`` on x_t and
    treats its output as a constant; the gradient keeps the mu_theta side of the pathwise term and
    drops only the reference network's d(output)/d x_t (the step mean's own x_t term, the same in
    both means, stays differentiable and cancels). The KL's value is the same number. Public
    SEIKO/AlignProp-style code does the same: the old model's prediction is taken without
    gradient. The dropped term is weighted by the mean difference, so it vanishes where the two
    models agree, which the KL keeps them close to.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from seiko.diffusion.guidance import RewardGuidance
from seiko.diffusion.recompute import recompute
from seiko.diffusion.schedule import NoiseSchedule, TimestepSpacing
from seiko.diffusion.step import (
    KLReduction,
    SamplerKind,
    StepCoefficients,
    gaussian_kl,
    gaussian_log_prob,
    step_coefficients,
    step_mean,
)

#: A denoiser maps (x_t (B, ...), t (B,) long, cond or None) to its output (B, ...).
Denoiser = Callable[[Tensor, Tensor, Tensor | None], Tensor]

#: How the KL's gradient treats the reference's input (see the module docstring).
KLGradient = Literal["detached", "exact"]


@dataclass
class ChainOutput:
    """What a chain returns.

    Attributes:
        x0: (B, ...) the final sample.
        kl: (B,) KL to the reference chain summed over steps (zeros without a reference).
        kl_per_step: (S, B) the per-step terms, S = number of steps (zero on deterministic steps).
        trajectory: the samples x_T, ..., x0 if asked for (each (B, ...)), else an empty list.
    """

    x0: Tensor
    kl: Tensor
    kl_per_step: Tensor
    trajectory: list[Tensor] = field(default_factory=list)


@dataclass
class GaussianSampler:
    """DDPM / DDIM(eta) sampling chain with exact per-step KL to a reference denoiser.

    Attributes:
        schedule: the noise schedule.
        num_steps: number of reverse steps.
        kind: "ddim" or "ddpm".
        eta: DDIM stochasticity in [0, 1]; the KL needs eta > 0 (see ``gaussian_kl``).
        spacing: how inference timesteps are spread (diffusers' ``timestep_spacing``).
        checkpoint: per-step activation checkpointing when the chain carries gradient.
        truncate: only the last ``truncate`` steps carry gradient (None: all of them).
        truncate_min: if set, the number of gradient steps is drawn from {truncate_min..truncate}.
        kl_reduction: "sum" (the KL) or "mean" (per-dimension average, see diffusion.step).
        kl_gradient: "detached" (reference taken without gradient, ~5 forwards per checkpointed
            step) or "exact" (gradient also through the reference's input, ~8); see above.
        kl_sampled_steps: how many of the steps without autograd (the first T-K of a truncated
            chain) get a KL gradient at each call, drawn at random (0: none); see above.
    """

    schedule: NoiseSchedule
    num_steps: int = 50
    kind: SamplerKind = "ddim"
    eta: float = 1.0
    spacing: TimestepSpacing = "leading"
    checkpoint: bool = False
    truncate: int | None = None
    truncate_min: int | None = None
    kl_reduction: KLReduction = "mean"
    kl_gradient: KLGradient = "detached"
    kl_sampled_steps: int = 0

    def __post_init__(self) -> None:
        if self.kl_gradient not in ("detached", "exact"):
            raise ValueError(f"kl_gradient must be 'detached' or 'exact', got {self.kl_gradient!r}")
        if not (isinstance(self.kl_sampled_steps, int) and self.kl_sampled_steps >= 0):
            raise ValueError(
                f"kl_sampled_steps must be an integer >= 0, got {self.kl_sampled_steps!r}"
            )
        self.timesteps = self.schedule.timesteps(self.num_steps, self.spacing)
        prev = self.timesteps[1:] + [-1]
        self.coefficients: list[StepCoefficients] = [
            step_coefficients(self.schedule, t, tp, self.kind, self.eta)
            for t, tp in zip(self.timesteps, prev, strict=True)
        ]
        if self.truncate is not None and not 1 <= self.truncate <= self.num_steps:
            raise ValueError(
                f"truncate must be in [1, num_steps={self.num_steps}], got {self.truncate}"
            )
        if self.truncate_min is not None:
            if self.truncate is None:
                raise ValueError("truncate_min needs truncate (the upper end of the random range)")
            if not 1 <= self.truncate_min <= self.truncate:
                raise ValueError(
                    f"truncate_min must be in [1, truncate={self.truncate}], "
                    f"got {self.truncate_min}"
                )

    def prior(
        self,
        n: int,
        shape: tuple[int, ...],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """x_T ~ N(0, I), shape (n, *shape)."""
        return torch.randn((n, *shape), generator=generator, device=device, dtype=dtype)

    def grad_steps(self, generator: random.Random | None = None) -> int:
        """How many final steps carry gradient on this call."""
        if self.truncate is None:
            return self.num_steps
        if self.truncate_min is None:
            return self.truncate
        return (generator or random).randint(self.truncate_min, self.truncate)

    def __call__(
        self,
        denoiser: Denoiser,
        x_T: Tensor,
        *,
        cond: Tensor | None = None,
        reference: Denoiser | None = None,
        grad: bool = False,
        generator: torch.Generator | None = None,
        noises: list[Tensor] | None = None,
        grad_steps: int | None = None,
        return_trajectory: bool = False,
        guidance: RewardGuidance | None = None,
    ) -> ChainOutput:
        """Run the chain from x_T.

        Args:
            denoiser: the model being sampled (and, with ``grad``, trained).
            x_T: (B, ...) the initial noise (it may itself carry gradient, e.g. a learned prior).
            cond: optional conditioning passed to both denoisers.
            reference: frozen denoiser for the KL; evaluated at the same x_t as ``denoiser``,
                i.e. on the trained model's own trajectory.
            grad: build the autograd graph (for fine-tuning); otherwise runs under no_grad.
            generator: torch generator for the per-step noise.
            noises: the per-step noise to use instead (one (B, ...) tensor per step).
            grad_steps: override how many final steps carry gradient (default: ``grad_steps()``).
            return_trajectory: keep every x_t (detached).
            guidance: reward guidance applied to ``denoiser`` at every step (sampling only; see
                ``seiko.diffusion.guidance``); the KL reference is not guided.

        Returns:
            ``ChainOutput`` with x0 (B, ...), kl (B,), kl_per_step (num_steps, B) and, if asked
            for, the trajectory of num_steps + 1 tensors (B, ...).
        """
        n = self.num_steps
        if guidance is not None:
            if grad:
                raise ValueError("guidance is for sampling: run the chain with grad=False")
            denoiser = guidance.wrap(denoiser, self.schedule)
        if noises is not None and len(noises) != n:
            raise ValueError(f"noises has {len(noises)} tensors, the chain has {n} steps")
        k = n if not grad else (grad_steps if grad_steps is not None else self.grad_steps())
        if not 0 <= k <= n:
            raise ValueError(f"grad_steps must be in [0, {n}], got {k}")
        batch = x_T.shape[0]
        # All timestep tensors are built once: the loop below does only the model calls and the
        # affine updates, which keeps it as fast as diffusers' own scheduler loop.
        t_tensors = [
            torch.full((batch,), t, device=x_T.device, dtype=torch.long) for t in self.timesteps
        ]
        no_kl = x_T.new_zeros(batch)
        x = x_T
        kls: list[Tensor] = []
        trajectory = [x_T.detach()] if return_trajectory else []
        detached = self.kl_gradient == "detached"
        # (step, x_t) of the stochastic steps that run without autograd, for kl_sampled_steps
        sample_kl = grad and reference is not None and self.kl_sampled_steps > 0
        no_grad_states: list[tuple[int, Tensor]] = []
        # The trainable tensors of a module denoiser, for seiko's recompute; anything else (a
        # plain callable, a conditioning that itself needs gradient) takes torch's checkpoint.
        params = None
        cond_needs_grad = isinstance(cond, Tensor) and cond.requires_grad
        if (
            grad
            and self.checkpoint
            and isinstance(denoiser, torch.nn.Module)
            and not cond_needs_grad
        ):
            params = [p for p in denoiser.parameters() if p.requires_grad]
        for i, coef in enumerate(self.coefficients):
            step_reference: Denoiser | Tensor | None = reference
            if reference is not None and detached and coef.std > 0 and grad and i >= n - k:
                # The reference network's output as a constant, computed once, outside any
                # checkpoint: neither recomputed nor backpropagated. Only the network is cut off:
                # the step mean's own x_t term stays differentiable (it cancels in the KL).
                with torch.no_grad():
                    step_reference = reference(x, t_tensors[i], cond)
            args = (denoiser, step_reference, x, t_tensors[i], cond, coef)
            if not (grad and i >= n - k):
                if sample_kl and coef.std > 0:
                    no_grad_states.append((i, x.detach()))
                with torch.no_grad():
                    mean, kl = self._step(*args)
            elif self.checkpoint and params is not None:
                # no autograd in the first pass (see seiko.diffusion.recompute)
                constant = step_reference if isinstance(step_reference, Tensor) else None
                module_ref = None if constant is not None else step_reference

                def fn(x_in, c, i=i, coef=coef, module_ref=module_ref):
                    ref = c if c is not None else module_ref
                    return self._step(denoiser, ref, x_in, t_tensors[i], cond, coef)

                modules = (denoiser,) + (
                    (module_ref,) if isinstance(module_ref, torch.nn.Module) else ()
                )
                mean, kl = recompute(fn, x, constant, params, modules=modules)
                if reference is None or coef.std == 0:
                    kl = None
            elif self.checkpoint:
                mean, kl = activation_checkpoint(self._step, *args, use_reentrant=False)
            else:
                mean, kl = self._step(*args)
            # The noise is added outside the checkpointed step: the sum needs neither operand for
            # its backward pass, so neither the noise nor the mean is kept alive until backward.
            if coef.std > 0:
                noise = (
                    noises[i]
                    if noises is not None
                    else torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                )
                x = torch.add(mean, noise, alpha=coef.std)
            else:
                x = mean
            kls.append(no_kl if kl is None else kl)
            if return_trajectory:
                trajectory.append(x.detach())
        if no_grad_states:
            self._add_sampled_kl_gradients(
                denoiser, reference, no_grad_states, t_tensors, cond, kls
            )
        kl_per_step = x.new_zeros(n, batch) if reference is None else torch.stack(kls)
        return ChainOutput(
            x0=x, kl=kl_per_step.sum(0), kl_per_step=kl_per_step, trajectory=trajectory
        )

    def stochastic_steps(self) -> list[int]:
        """Indices of the steps with std > 0 (the ones with a log-probability and a KL term)."""
        return [i for i, coef in enumerate(self.coefficients) if coef.std > 0]

    def log_prob(
        self,
        denoiser: Denoiser,
        trajectory: list[Tensor],
        steps: list[int] | None = None,
        *,
        cond: Tensor | None = None,
        reference: Denoiser | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Per-step Gaussian log-likelihood of a sampled trajectory under ``denoiser``.

        log p(x_{i+1} | x_i) = log N(x_{i+1}; mu_theta(x_i), sigma_i^2 I), summed over data
        dimensions (DDPO, Black et al. 2024, eq. 4), with autograd on if it is on here: the policy
        gradient of online PPO. With ``reference``, also each step's exact KL to it (at the same
        x_i, ``kl_reduction`` as the chain's; the reference is evaluated without gradient). With
        ``checkpoint`` and autograd on, each step's denoiser call is checkpointed, as in the
        chain: memory flat in the number of steps (a 50-step Stable Diffusion trajectory would
        otherwise hold 50 UNets' activations until the backward pass).

        Args:
            trajectory: x_T, ..., x0 as returned with ``return_trajectory=True`` (S + 1 tensors).
            steps: which steps (indices into the chain); default every stochastic step. A
                deterministic step (std 0) has no density and is refused.
            cond: the conditioning the trajectory was sampled with.

        Returns:
            log-probabilities (len(steps), B) and KL terms (len(steps), B) (zeros without
            ``reference``).
        """
        if len(trajectory) != self.num_steps + 1:
            raise ValueError(
                f"trajectory has {len(trajectory)} tensors, expected num_steps + 1 = "
                f"{self.num_steps + 1}"
            )
        steps = self.stochastic_steps() if steps is None else list(steps)
        if any(self.coefficients[i].std == 0 for i in steps):
            raise ValueError(f"steps {steps} include a deterministic step (std 0): no density")
        log_probs, kls = [], []
        for i in steps:
            coef, x = self.coefficients[i], trajectory[i]
            t = torch.full((x.shape[0],), coef.t, device=x.device, dtype=torch.long)
            if self.checkpoint and torch.is_grad_enabled():
                prediction = activation_checkpoint(denoiser, x, t, cond, use_reentrant=False)
            else:
                prediction = denoiser(x, t, cond)
            mean = step_mean(self.schedule, coef, prediction, x)
            log_probs.append(gaussian_log_prob(trajectory[i + 1], mean, coef.std))
            if reference is None:
                kls.append(torch.zeros_like(log_probs[-1]))
            else:
                with torch.no_grad():
                    ref_mean = step_mean(self.schedule, coef, reference(x, t, cond), x)
                kls.append(gaussian_kl(mean, ref_mean, coef.std, self.kl_reduction))
        if not steps:
            empty = trajectory[0].new_zeros(0, trajectory[0].shape[0])
            return empty, empty
        return torch.stack(log_probs), torch.stack(kls)

    def _add_sampled_kl_gradients(
        self,
        denoiser: Denoiser,
        reference: Denoiser,
        states: list[tuple[int, Tensor]],
        t_tensors: list[Tensor],
        cond: Tensor | None,
        kls: list[Tensor],
    ) -> None:
        """``kl_sampled_steps``: give ``kls`` at m random no-autograd steps a zero-valued term
        whose gradient is (T'/m) d KL_i / d theta at the step's stored x_i (see the module
        docstring)."""
        m = min(self.kl_sampled_steps, len(states))
        scale = len(states) / m
        for i, x in random.sample(states, m):
            coef = self.coefficients[i]
            with torch.no_grad():
                ref_out = reference(x, t_tensors[i], cond)
            _, kl = self._step(denoiser, ref_out, x, t_tensors[i], cond, coef)
            kls[i] = kls[i] + scale * (kl - kl.detach())

    def _step(
        self,
        denoiser: Denoiser,
        reference: Denoiser | Tensor | None,
        x: Tensor,
        t: Tensor,
        cond: Tensor | None,
        coef: StepCoefficients,
    ) -> tuple[Tensor, Tensor | None]:
        """The step's mean (B, ...) and its KL term (B,), or None without a reference.

        ``reference`` is the reference denoiser, or its output at (x, t) already computed (a
        constant, for ``kl_gradient="detached"``). A deterministic step (std 0) has no KL term (see
        ``gaussian_kl``), so the reference is not even evaluated there.
        """
        mean = step_mean(self.schedule, coef, denoiser(x, t, cond), x)
        if reference is None or coef.std == 0:
            return mean, None
        ref_out = reference if isinstance(reference, Tensor) else reference(x, t, cond)
        ref_mean = step_mean(self.schedule, coef, ref_out, x)
        return mean, gaussian_kl(mean, ref_mean, coef.std, self.kl_reduction)
