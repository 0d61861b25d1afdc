"""Per-step activation checkpointing whose first pass runs without autograd.

``torch.utils.checkpoint(use_reentrant=False)`` runs the checkpointed function's first pass with
autograd on (it builds the graph and drops what the graph saves); this function runs it under
``no_grad`` instead (no graph at all, and modules may take their no-grad fast paths), then
recomputes it with autograd in the backward pass, as checkpointing does. The trainable
parameters are explicit inputs of the autograd node, so each gets its gradient through the
ordinary graph: ``torch.autograd.grad`` works, and DDP's per-parameter hooks fire once per
backward pass (which ``use_reentrant=True`` does not guarantee). The CPU (and CUDA) random state
and the autocast state of the first pass are restored for the recomputation, and so are the
train/eval flags of the ``modules`` given (the backward pass usually runs after the caller has put
its network back in its own mode).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class _Recompute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fn, modules, x: Tensor, constant: Tensor | None, *params: Tensor):
        ctx.fn, ctx.params = fn, params
        ctx.modes = [(m, m.training) for module in modules for m in module.modules()]
        ctx.has_constant = constant is not None
        ctx.save_for_backward(x, *([constant] if constant is not None else []))
        ctx.device_type = x.device.type
        ctx.cpu_state = torch.get_rng_state()
        ctx.cuda_state = torch.cuda.get_rng_state(x.device) if x.is_cuda else None
        ctx.autocast = (
            torch.is_autocast_enabled(ctx.device_type),
            torch.get_autocast_dtype(ctx.device_type),
        )
        mean, kl = fn(x, constant)
        ctx.kl_is_none = kl is None
        return mean, (mean.new_zeros(mean.shape[0]) if kl is None else kl)

    @staticmethod
    def backward(ctx, grad_mean: Tensor, grad_kl: Tensor):
        x, *rest = ctx.saved_tensors
        constant = rest[0] if ctx.has_constant else None
        needs_x = ctx.needs_input_grad[2]
        devices = (
            [torch.device(ctx.device_type, torch.cuda.current_device())]
            if ctx.cuda_state is not None
            else []
        )
        now = [m.training for m, _ in ctx.modes]
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            torch.set_rng_state(ctx.cpu_state)
            if ctx.cuda_state is not None:
                torch.cuda.set_rng_state(ctx.cuda_state)
            enabled, dtype = ctx.autocast
            try:
                for m, training in ctx.modes:
                    m.training = training
                with torch.autocast(ctx.device_type, dtype=dtype, enabled=enabled):
                    x_in = x.detach().requires_grad_(needs_x)
                    mean, kl = ctx.fn(x_in, constant)
            finally:
                for (m, _), training in zip(ctx.modes, now, strict=True):
                    m.training = training
        outputs, grads = [mean], [grad_mean]
        if not ctx.kl_is_none:
            outputs.append(kl)
            grads.append(grad_kl)
        wanted = [p for p, need in zip(ctx.params, ctx.needs_input_grad[4:], strict=True) if need]
        inputs = ([x_in] if needs_x else []) + wanted
        found = torch.autograd.grad(outputs, inputs, grads, allow_unused=True) if inputs else ()
        found = list(found)
        grad_x = found.pop(0) if needs_x else None
        grad_params = [found.pop(0) if need else None for need in ctx.needs_input_grad[4:]]
        return (None, None, grad_x, None, *grad_params)


def recompute(
    fn: Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor | None]],
    x: Tensor,
    constant: Tensor | None,
    params: list[Tensor],
    modules: tuple[torch.nn.Module, ...] = (),
) -> tuple[Tensor, Tensor | None]:
    """``fn(x, constant) -> (mean, kl or None)`` checkpointed: no autograd in the first pass.

    ``params``: every tensor ``fn`` reads that needs a gradient besides ``x`` (the trainable
    parameters); ``constant`` is passed through without gradient; ``modules``: the networks
    ``fn`` calls, whose train/eval flags (of every submodule) at this call are restored for the
    recomputation.
    """
    mean, kl = _Recompute.apply(fn, tuple(modules), x, constant, *params)
    return mean, kl
