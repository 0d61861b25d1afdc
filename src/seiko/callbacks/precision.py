"""Low-precision frozen parts under mixed precision: the ``FrozenPrecision`` callback.

Under ``precision="bf16-mixed"`` (or ``"16-mixed"``) Lightning keeps every weight in float32 and
runs the training step under ``torch.autocast``. The frozen parts of a fine-tuning run (the KL
reference denoiser, a frozen VAE/autoencoder or text encoder, the reward models) never receive an
update, so their float32 copies only cost memory: as in the diffusers and DDPO training scripts,
which move the VAE and text encoder to ``weight_dtype``, this callback casts them to the low
precision dtype and leaves the trainable weights (and the optimizer's state) in float32.

What is cast (a *frozen part*): a maximal submodule with at least one floating-point parameter
and no trainable one (``requires_grad`` False throughout), found

* in the LightningModule's own module tree (``frozen_submodules=True``): e.g. ``autoencoder``, a
  frozen VAE or text encoder, and the frozen base layers inside a LoRA-wrapped denoiser;
* in the modules held by the attributes ``reference`` and ``reward`` (``DiffusionModule`` keeps
  both outside its module tree) and by the dotted attribute paths of ``extra_modules``.

A module without floating parameters (a noise schedule's buffers) is never cast; a part whose
floating tensors are not all float32 (a float64 buffer kept on purpose) is left as it is, with a
warning naming it.

When: at every ``on_train_batch_start`` the callback looks for the frozen parts again, which is
cheap (a walk over the modules). A part seen for the first time is cast (the online loop sets a new
``reward`` and a new ``reference`` each round); a part already cast is left alone (idempotent); a
part that is no longer there (swapped out) or has become trainable again is cast back to float32.
At ``on_train_epoch_end`` (and at the end of training, on an exception, at teardown) everything
cast is cast back to float32, so between epochs, where ``OnlineExploration`` samples, decodes,
queries the oracle and refits its reward ensemble, every module is in its original dtype: the
ensemble is refitted in float32, never in bf16. Each window's cast rounds the values to the low
precision once; the float32 copy restored afterwards holds those rounded values (for a frozen part
used in bf16 anyway that is no loss; a refitted reward ensemble warm-starts from weights rounded
to bf16, a relative change of at most 2^-8). A checkpoint written inside a window
(``every_n_train_steps``) holds the low-precision tensors of the cast submodules;
``load_state_dict`` converts them back to the float32 parameters of a freshly built module.

Where inputs are cast: every submodule of a cast part that directly holds floating weights gets a
forward pre-hook that casts its floating inputs to the low dtype; the part itself gets a forward
hook that, outside autocast, returns its floating outputs in float32. Why not rely on autocast:

* Under CUDA autocast a float32 input meets bf16 weights correctly in matmuls and convolutions
  (cast down) and in layer/group norm (cast up to float32). CPU autocast does not treat
  ``layer_norm``: a float32 input with bf16 LayerNorm weights raises "mixed dtype (CPU): expect
  parameter to have scalar type of Float" even under autocast (tested).
* Outside autocast (sampling, decoding or scoring in another callback's hook, e.g.
  ``OnlinePPO.on_train_batch_start``, or in a validation-time callback), a float32 input raises in
  ``F.linear`` ("mat1 and mat2 must have the same dtype") and in ``layer_norm`` (tested).

With the hooks a cast part takes inputs of any floating dtype, on any device, with or without
autocast, and outside autocast its callers get float32 back as before. Gradients flow through the
casts (the reward's gradient reaches x0 in float32). Two consequences: a *method* other than
``forward`` (``vae.decode``, ``autoencoder.generate``) runs with cast inputs but returns
low-precision tensors (call ``.float()`` before ``.numpy()``); and a floating input of a module
that directly holds weights is cast even if it is not combined with them (a float timestep given
to such a module would be rounded: seiko's chain passes integer timesteps, and diffusers' UNets
hold no weights at their top level). The hooks cost a Python call per weight-holding submodule call.

Only on a CUDA GPU: on another accelerator the callback does nothing and says why once (CPU
autocast is slow and the memory it saves rarely matters); ``force=True`` casts anyway, which is
how the CPU tests exercise the rules with real ``Trainer`` runs. fp16 ("16-mixed") has a narrow
range: a frozen network that overflows in fp16 (Stable Diffusion's VAE is known to) gives inf/NaN;
prefer bf16.

DDP: Lightning wraps the LightningModule in ``DistributedDataParallel`` before training starts;
each rank casts its own copy (the casting is deterministic, so the ranks agree). DDP's gradient
reducer holds only parameters with ``requires_grad``, so the frozen parts are not in its buckets;
``Module.to`` changes a parameter's data in place (the Parameter objects DDP saw stay the same);
DDP re-reads the module's buffers before each buffer broadcast, so the cast buffers of frozen
submodules are broadcast as they are (identical on every rank). ``reference`` and ``reward`` are
outside the module tree and invisible to DDP. A part made trainable in the middle of a run is
cast back to float32 here, but DDP only syncs the gradients it knew of when it wrapped the module.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

#: The Trainer precisions this callback acts on, and the dtype their frozen parts get.
MIXED_PRECISION_DTYPES: dict[str, torch.dtype] = {
    "bf16-mixed": torch.bfloat16,
    "16-mixed": torch.float16,
}

#: Attributes of the LightningModule always searched (``DiffusionModule``'s frozen parts that
#: live outside its module tree); absent or None is fine.
DEFAULT_ATTRIBUTES: tuple[str, ...] = ("reference", "reward")


def low_precision_dtype(precision: str | int) -> torch.dtype | None:
    """The dtype for the frozen parts under a Trainer ``precision``; None if it is not mixed."""
    return MIXED_PRECISION_DTYPES.get(str(precision))


def frozen_parts(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The maximal submodules of ``module`` (itself included) with at least one floating-point
    parameter and no trainable one, as ``(qualified name, module)`` pairs in module order.

    A module with trainable parameters is searched child by child; a module without floating
    parameters (buffers only, integer parameters) is not a part.
    """
    params = list(module.parameters())
    if not any(p.is_floating_point() for p in params):
        return []
    if not any(p.requires_grad for p in params):
        return [(prefix, module)]
    parts: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        parts += frozen_parts(child, f"{prefix}.{name}" if prefix else name)
    return parts


def _floating_tensors(module: nn.Module) -> Iterator[Tensor]:
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.is_floating_point():
            yield tensor


def _holds_weights(module: nn.Module) -> bool:
    """Whether the module itself (not its children) holds floating parameters or buffers."""
    own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    return any(t.is_floating_point() for t in own)


def _convert(value: Any, dtype: torch.dtype) -> Any:
    """``value`` with every floating tensor in it (nested in tuples, lists, dicts) cast to dtype."""
    if isinstance(value, Tensor):
        return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value
    if isinstance(value, tuple):
        items = [_convert(v, dtype) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [_convert(v, dtype) for v in value]
    if type(value) is dict:  # a new dict: the caller's own dict keeps its tensors
        return {key: _convert(item, dtype) for key, item in value.items()}
    if isinstance(value, dict):
        # an output such as transformers' ModelOutput (fresh for each call): in place, which
        # keeps the subclass and its attributes in step
        for key, item in list(value.items()):
            value[key] = _convert(item, dtype)
        return value
    return value


def _cast_inputs(
    module: nn.Module, args: tuple, kwargs: dict, *, dtype: torch.dtype
) -> tuple[tuple, dict]:
    """Forward pre-hook: the floating inputs in the weights' dtype, autocast or not."""
    return _convert(args, dtype), _convert(kwargs, dtype)


def _float_outputs(module: nn.Module, args: tuple, output: Any, *, dtype: torch.dtype) -> Any:
    """Forward hook of a cast part: outside autocast, floating outputs in ``dtype`` (float32,
    what its callers got before the cast)."""
    device = next((t.device for t in _leaves(output)), None)
    if device is None or torch.is_autocast_enabled(device.type):
        return output  # autocast decides its callers' dtypes, as it would without the cast
    return _convert(output, dtype)


def _leaves(value: Any) -> Iterator[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)


@dataclass
class _Cast:
    """A part this callback cast: the module, its name, and the hooks to remove on restore."""

    name: str
    module: nn.Module
    handles: list[RemovableHandle] = field(default_factory=list)


class FrozenPrecision(Callback):
    """Casts the frozen parts to bf16/fp16 under mixed precision on a GPU; trainable stay float32.

    See the module docstring for what counts as a frozen part, when they are cast and cast back,
    how inputs are handled, and DDP. Add it to the Trainer's callbacks; it has no state to
    checkpoint.

    Args:
        extra_modules: dotted attribute paths of the LightningModule, besides ``reference`` and
            ``reward``, whose modules hold frozen parts kept outside the module tree (e.g.
            ``"oracle.model"``). Each must exist (checked when fitting starts); a path whose value
            is None or not an ``nn.Module`` is skipped.
        frozen_submodules: also cast the frozen parts of the LightningModule's own module tree.
        force: cast even when the accelerator is not a CUDA GPU (the CPU tests use it; CPU
            autocast supports bf16). The Trainer's precision must still be a mixed one.
    """

    def __init__(
        self,
        extra_modules: Sequence[str] = (),
        frozen_submodules: bool = True,
        force: bool = False,
    ) -> None:
        for path in extra_modules:
            if not path or any(not part.isidentifier() for part in path.split(".")):
                raise ValueError(
                    f"extra_modules entry {path!r} is not a dotted attribute path like "
                    "'oracle.model'"
                )
        self.extra_modules = tuple(extra_modules)
        self.frozen_submodules = frozen_submodules
        self.force = force
        self.dtype: torch.dtype | None = None
        #: Why the callback does nothing in this run (None while it acts, or before ``setup``).
        self.inactive_reason: str | None = None
        self._cast: dict[int, _Cast] = {}  # id(part) -> what was done to it
        self._announced = False
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        for path in self.extra_modules:
            self._resolve(pl_module, path, strict=True)
        dtype = low_precision_dtype(trainer.precision)
        device = trainer.strategy.root_device
        if dtype is None:
            reason = (
                f"precision={trainer.precision!r} is not a mixed low precision "
                f"(it acts on {sorted(MIXED_PRECISION_DTYPES)})"
            )
        elif device.type != "cuda" and not self.force:
            reason = f"the accelerator is {device.type!r}, not a CUDA GPU (force=True casts anyway)"
        else:
            reason = None
        self.dtype = None if reason else dtype
        if reason is not None and reason != self.inactive_reason:
            rank_zero_info(f"FrozenPrecision does nothing: {reason}")
        self.inactive_reason = reason

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.dtype is None:
            return
        names = self.apply(pl_module, self.dtype)
        if not self._announced and names:
            self._announced = True
            rank_zero_info(
                f"FrozenPrecision: {len(names)} frozen part(s) in {self.dtype}, "
                f"{self.saved_bytes() / 2**20:.1f} MiB saved: {', '.join(names)}"
            )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.restore()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.restore()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.restore()

    # ------------------------------------------------------------------ the work
    def apply(self, pl_module: nn.Module, dtype: torch.dtype) -> list[str]:
        """Cast the current frozen parts of ``pl_module`` to ``dtype``; cast back to float32 the
        parts cast before that are gone or trainable again. Idempotent.

        Returns:
            The names of the parts now in ``dtype`` by this callback's doing.
        """
        current = self._current_parts(pl_module)
        for key in [key for key in self._cast if key not in current]:
            self._restore(self._cast.pop(key))
        for key, (name, module) in current.items():
            done = self._cast.get(key)
            if done is not None:
                done.name = name
                if any(t.dtype != dtype for t in _floating_tensors(module)):
                    module.to(dtype)  # cast back by someone else (e.g. ``.float()``): again
                continue
            dtypes = {t.dtype for t in _floating_tensors(module)}
            if dtypes == {torch.float32}:
                self._cast[key] = self._cast_part(name, module, dtype)
            elif not dtypes <= {dtype} and name not in self._warned:
                self._warned.add(name)
                rank_zero_warn(
                    f"FrozenPrecision leaves frozen part {name!r} as it is: its floating tensors "
                    f"are {sorted(str(d) for d in dtypes)}, expected all torch.float32"
                )
        return [done.name for done in self._cast.values()]

    def restore(self) -> None:
        """Cast every part this callback cast back to float32 and remove its hooks."""
        while self._cast:
            _, done = self._cast.popitem()
            self._restore(done)

    @property
    def cast_names(self) -> list[str]:
        """Names of the parts currently in low precision by this callback's doing."""
        return [done.name for done in self._cast.values()]

    def saved_bytes(self) -> int:
        """Memory the current casts save (float32 bytes minus low-precision bytes)."""
        total = 0
        for done in self._cast.values():
            for tensor in _floating_tensors(done.module):
                total += tensor.numel() * (4 - tensor.element_size())
        return total

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _resolve(pl_module: nn.Module, path: str, strict: bool) -> Any:
        value: Any = pl_module
        for depth, attribute in enumerate(path.split(".")):
            if value is None:
                return None
            if not hasattr(value, attribute):
                if not strict:
                    return None
                owner = type(value).__name__
                where = "" if depth == 0 else f" (at {'.'.join(path.split('.')[:depth])})"
                raise ValueError(
                    f"FrozenPrecision(extra_modules=...): {owner} has no attribute "
                    f"{attribute!r}{where} for the path {path!r}"
                )
            value = getattr(value, attribute)
        return value

    def _current_parts(self, pl_module: nn.Module) -> dict[int, tuple[str, nn.Module]]:
        found: list[tuple[str, nn.Module]] = []
        if self.frozen_submodules:
            for name, child in pl_module.named_children():
                found += frozen_parts(child, name)
        for path in (*DEFAULT_ATTRIBUTES, *self.extra_modules):
            value = self._resolve(pl_module, path, strict=False)
            if isinstance(value, nn.Module):
                found += frozen_parts(value, path)
        parts: dict[int, tuple[str, nn.Module]] = {}
        for name, module in found:
            parts.setdefault(id(module), (name, module))
        # a part inside another part (an extra path into a discovered part) is cast with it
        inner = {id(sub) for _, module in parts.values() for sub in list(module.modules())[1:]}
        return {key: value for key, value in parts.items() if key not in inner}

    @staticmethod
    def _cast_part(name: str, module: nn.Module, dtype: torch.dtype) -> _Cast:
        module.to(dtype)
        done = _Cast(name, module)
        for sub in module.modules():
            if _holds_weights(sub):
                hook = partial(_cast_inputs, dtype=dtype)
                done.handles.append(sub.register_forward_pre_hook(hook, with_kwargs=True))
        hook = partial(_float_outputs, dtype=torch.float32)
        done.handles.append(module.register_forward_hook(hook))
        return done

    @staticmethod
    def _restore(done: _Cast) -> None:
        for handle in done.handles:
            handle.remove()
        done.module.to(torch.float32)


__all__ = ["FrozenPrecision", "MIXED_PRECISION_DTYPES", "frozen_parts", "low_precision_dtype"]
