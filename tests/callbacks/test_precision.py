"""FrozenPrecision: which parts are cast, when, how they take float32 inputs, and real fits."""

from __future__ import annotations

import json
import logging
import math
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from seiko.callbacks.precision import FrozenPrecision, frozen_parts, low_precision_dtype
from seiko.lightning_modules import DiffusionModule, SamplerConfig, ScheduleConfig
from seiko.nets import VectorDenoiser

DIM = 4
BF16 = torch.bfloat16


class FrozenReward(nn.Module):
    """A frozen reward with a LayerNorm; records the dtype of its weights at every call."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(DIM, 16), nn.LayerNorm(16), nn.Linear(16, 1))
        self.requires_grad_(False)
        self.seen: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.net[0].weight.dtype)
        return self.net(x).squeeze(-1)


class ModuleWithDecoder(DiffusionModule):
    """A fine-tuning module with a frozen decoder (with a buffer) in its own module tree, like a
    latent model's autoencoder; records the dtypes of its parts at every training step."""

    def __init__(self) -> None:
        super().__init__(
            VectorDenoiser(DIM, width=16, n_layers=1),
            data_shape=(DIM,),
            mode="finetune",
            schedule=ScheduleConfig(num_train_timesteps=20),
            sampler=SamplerConfig(num_steps=3),
            kl_weight=0.1,
            optimizer=partial(torch.optim.Adam, lr=1e-2),
        )
        self.decoder = nn.Sequential(nn.Linear(DIM, 8), nn.LayerNorm(8)).requires_grad_(False)
        self.decoder.register_buffer("scale", torch.ones(8))
        self.seen: list[dict[str, str]] = []
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(dtypes(self))
        loss = super().training_step(batch, batch_idx)
        self.losses.append(float(loss.detach()))
        return loss


def dtypes(module: ModuleWithDecoder) -> dict[str, str]:
    """The dtypes of every floating tensor of each part, as strings (one per part if uniform)."""

    def of(tensors) -> str:
        return ",".join(sorted({str(t.dtype) for t in tensors if t.is_floating_point()}))

    return {
        "denoiser": of(module.denoiser.parameters()),
        "decoder": of([*module.decoder.parameters(), *module.decoder.buffers()]),
        "reference": of(module.reference.parameters()) if module.reference is not None else "",
        "reward": of(module.reward.parameters()) if isinstance(module.reward, nn.Module) else "",
    }


def hook_count(module: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in module.modules())


def make_module() -> ModuleWithDecoder:
    torch.manual_seed(0)
    module = ModuleWithDecoder()
    module.reward = FrozenReward()
    module.snapshot_reference()
    return module


def loader(n: int = 8, batch_size: int = 4) -> DataLoader:
    def collate(items):
        return {"index": torch.stack([item[0] for item in items])}

    return DataLoader(TensorDataset(torch.arange(n)), batch_size=batch_size, collate_fn=collate)


def trainer(**kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**(defaults | kwargs))


# ---------------------------------------------------------------------- the casting rules
def test_precision_names_map_to_dtypes():
    assert low_precision_dtype("bf16-mixed") == torch.bfloat16
    assert low_precision_dtype("16-mixed") == torch.float16
    for other in ("32-true", "64-true", "bf16-true", 32):
        assert low_precision_dtype(other) is None


def test_frozen_parts_are_the_maximal_frozen_submodules():
    root = nn.Module()
    root.trainable = nn.Linear(2, 2)
    root.frozen = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)).requires_grad_(False)
    root.lora_like = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    root.lora_like[0].requires_grad_(False)  # a frozen base layer inside a trained block
    root.buffers_only = nn.Module()
    root.buffers_only.register_buffer("alphas", torch.ones(3))  # a schedule: never cast
    root.integer = nn.Module()
    root.integer.codes = nn.Parameter(torch.zeros(2, dtype=torch.long), requires_grad=False)
    assert [name for name, _ in frozen_parts(root)] == ["frozen", "lora_like.0"]
    root.requires_grad_(False)
    assert frozen_parts(root) == [("", root)]


def test_apply_casts_the_frozen_parts_and_keeps_the_trainable_weights_in_float32():
    module = make_module()
    names = FrozenPrecision().apply(module, BF16)
    assert sorted(names) == ["decoder", "reference", "reward"]
    assert dtypes(module) == {
        "denoiser": "torch.float32",
        "decoder": "torch.bfloat16",  # its buffer too
        "reference": "torch.bfloat16",
        "reward": "torch.bfloat16",
    }
    optimizer = module.configure_optimizers()
    assert all(p.dtype == torch.float32 for g in optimizer.param_groups for p in g["params"])


def test_a_plain_function_reward_is_left_alone():
    module = make_module()
    module.reward = lambda x: x.sum(-1)
    assert sorted(FrozenPrecision().apply(module, BF16)) == ["decoder", "reference"]


def test_apply_is_idempotent():
    module = make_module()
    callback = FrozenPrecision()
    first = callback.apply(module, BF16)
    pointers = [p.data_ptr() for p in module.reference.parameters()]
    hooks = hook_count(module.reward) + hook_count(module.reference) + hook_count(module.decoder)
    assert callback.apply(module, BF16) == first
    assert [p.data_ptr() for p in module.reference.parameters()] == pointers
    again = hook_count(module.reward) + hook_count(module.reference) + hook_count(module.decoder)
    assert again == hooks > 0


def test_a_swapped_reward_is_cast_and_the_old_one_restored():
    module = make_module()
    callback = FrozenPrecision()
    old = module.reward
    weight = old.net[0].weight.detach().clone()
    callback.apply(module, BF16)
    new = FrozenReward()
    module.reward = new  # what the online loop does every round
    callback.apply(module, BF16)
    assert new.net[0].weight.dtype == BF16
    assert all(p.dtype == torch.float32 for p in old.parameters())
    assert hook_count(old) == 0
    # restored values: the float32 weights rounded to bf16 once
    assert torch.equal(old.net[0].weight, weight.to(BF16).float())


def test_a_part_made_trainable_again_goes_back_to_float32():
    module = make_module()
    callback = FrozenPrecision()
    callback.apply(module, BF16)
    module.decoder[0].requires_grad_(True)
    names = callback.apply(module, BF16)
    assert sorted(names) == ["decoder.1", "reference", "reward"]
    assert module.decoder[0].weight.dtype == torch.float32
    assert module.decoder.scale.dtype == torch.float32  # held by the decoder, not by a part
    assert module.decoder[1].weight.dtype == BF16
    assert hook_count(module.decoder[0]) == 0


def test_restore_brings_back_float32_and_removes_the_hooks():
    module = make_module()
    callback = FrozenPrecision()
    before = {name: p.detach().clone() for name, p in module.reference.named_parameters()}
    callback.apply(module, BF16)
    assert callback.saved_bytes() > 0
    callback.restore()
    assert callback.cast_names == [] and callback.saved_bytes() == 0
    assert set(dtypes(module).values()) == {"torch.float32"}
    for name, p in module.reference.named_parameters():
        assert torch.equal(p, before[name].to(BF16).float()), name
    assert hook_count(module.reference) + hook_count(module.reward) == 0


def test_a_part_with_another_float_dtype_is_left_alone_with_one_warning():
    module = make_module()
    module.reward.register_buffer("sigma_inv", torch.eye(2, dtype=torch.float64))
    callback = FrozenPrecision()
    with pytest.warns(UserWarning, match=r"'reward'.*torch.float64"):
        names = callback.apply(module, BF16)
    assert "reward" not in names
    assert module.reward.net[0].weight.dtype == torch.float32
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        callback.apply(module, BF16)  # warned once only


def test_extra_modules_are_cast_and_bad_paths_are_errors():
    with pytest.raises(ValueError, match="'oracle net' is not a dotted attribute path"):
        FrozenPrecision(extra_modules=["oracle net"])
    module = make_module()
    object.__setattr__(module, "scorer", nn.Module())  # outside the module tree, like `reward`
    module.scorer.model = FrozenReward()
    callback = FrozenPrecision(extra_modules=["scorer.model"], frozen_submodules=False)
    assert sorted(callback.apply(module, BF16)) == ["reference", "reward", "scorer.model"]
    assert module.decoder[0].weight.dtype == torch.float32  # frozen_submodules=False
    missing = FrozenPrecision(extra_modules=["scorer.mdoel"])
    with pytest.raises(ValueError, match=r"Module has no attribute 'mdoel' \(at scorer\)"):
        trainer(precision="bf16-mixed", callbacks=[missing]).fit(module, loader())


# ---------------------------------------------------------------------- inputs outside autocast
def test_a_cast_part_takes_float32_inputs_with_and_without_autocast():
    torch.manual_seed(0)
    reward = FrozenReward()
    x = torch.randn(5, DIM, requires_grad=True)
    expected = reward(x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)

    # Why the hooks: a bf16 copy fails on a float32 input, outside CPU autocast (in F.linear)
    # and inside it too (CPU autocast leaves layer_norm alone: the bf16 LayerNorm weights meet
    # the float32 input of the test's second case).
    plain = FrozenReward().to(BF16)
    with pytest.raises(RuntimeError, match="dtype"):
        plain(x)
    with torch.autocast("cpu", dtype=BF16), pytest.raises(RuntimeError, match="dtype"):
        plain.net[1](torch.randn(2, 16))

    holder = nn.Module()
    object.__setattr__(holder, "reward", reward)
    FrozenPrecision().apply(holder, BF16)
    out = reward(x)
    assert out.dtype == torch.float32  # outside autocast: the caller's dtype back
    torch.testing.assert_close(out, expected, atol=0.05, rtol=0.05)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.dtype == torch.float32
    torch.testing.assert_close(grad, expected_grad, atol=0.05, rtol=0.05)
    with torch.autocast("cpu", dtype=BF16):
        inside = reward(x)
    assert inside.dtype == BF16  # under autocast: what autocast makes of it
    torch.testing.assert_close(inside.float(), expected, atol=0.05, rtol=0.05)
    # keyword inputs are cast too (the caller's own dict keeps its float32 tensor); a submodule
    # called on its own returns the low precision (only the part's forward gives float32 back)
    kwargs = {"input": x.detach()}
    assert reward.net[0](**kwargs).dtype == BF16
    assert kwargs["input"].dtype == torch.float32


# ---------------------------------------------------------------------- real fits on CPU
class SwapRewardEachEpoch(L.Callback):
    """Like the online loop: a new reward at each epoch start; and, inside the epoch, a call of
    the frozen decoder outside autocast (as OnlinePPO decodes in on_train_batch_start)."""

    def __init__(self) -> None:
        self.at_epoch_start: list[dict[str, str]] = []
        self.rewards: list[FrozenReward] = []
        self.decoded: list[torch.dtype] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.at_epoch_start.append(dtypes(pl_module))
        pl_module.reward = FrozenReward().to(pl_module.device)
        self.rewards.append(pl_module.reward)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        x = torch.randn(2, DIM, device=pl_module.device)
        self.decoded.append(pl_module.decoder(x).dtype)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_on_cpu_it_does_nothing_and_says_why(precision, caplog):
    module = make_module()
    callback = FrozenPrecision()
    with caplog.at_level(logging.INFO):
        trainer(precision=precision, max_epochs=1, callbacks=[callback]).fit(module, loader())
    assert module.seen and all(set(s.values()) == {"torch.float32"} for s in module.seen)
    expected = "'32-true' is not a mixed" if precision == "32-true" else "'cpu', not a CUDA GPU"
    assert expected in callback.inactive_reason
    messages = [r.getMessage() for r in caplog.records if "FrozenPrecision does" in r.getMessage()]
    assert len(messages) == 1 and expected in messages[0]


def test_forced_on_cpu_it_casts_in_the_training_batches_and_restores_between_epochs():
    module = make_module()
    start = [p.detach().clone() for p in module.denoiser.parameters()]
    swap = SwapRewardEachEpoch()
    callback = FrozenPrecision(force=True)
    trainer(precision="bf16-mixed", callbacks=[callback, swap]).fit(module, loader())
    assert len(module.seen) == 4  # 2 epochs x 2 batches
    for seen in module.seen:
        assert seen == {
            "denoiser": "torch.float32",
            "decoder": "torch.bfloat16",
            "reference": "torch.bfloat16",
            "reward": "torch.bfloat16",
        }
    # between epochs (where the online loop refits its reward) everything is float32 again
    assert [set(s.values()) - {""} for s in swap.at_epoch_start] == [{"torch.float32"}] * 2
    assert all(reward.seen == [BF16, BF16] for reward in swap.rewards)  # each epoch's new one
    assert swap.decoded == [torch.float32] * 4  # called outside autocast inside the window
    assert set(dtypes(module).values()) == {"torch.float32"}  # after fit
    assert hook_count(module.decoder) + hook_count(module.reference) == 0
    assert all(math.isfinite(loss) for loss in module.losses)
    moved = [
        not torch.equal(a, b) for a, b in zip(start, module.denoiser.parameters(), strict=True)
    ]
    assert any(moved)


class WriteRankRecord(L.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module) -> None:
        record = {
            "seen": pl_module.seen,
            "losses": pl_module.losses,
            "denoiser": [float(p.double().sum()) for p in pl_module.denoiser.parameters()],
        }
        Path(self.out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs the fork start method")
def test_under_two_process_ddp_each_rank_casts_its_copy_and_gradients_sync(tmp_path, monkeypatch):
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # both processes are on this machine
    module = make_module()
    trainer(
        precision="bf16-mixed",
        devices=2,
        strategy="ddp_fork",  # the children inherit the imported torch (no second import)
        max_epochs=1,
        callbacks=[FrozenPrecision(force=True), WriteRankRecord(str(tmp_path))],
    ).fit(module, loader(n=16))
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for record in records:
        assert len(record["seen"]) == 2  # 16 items, 2 ranks, batches of 4
        for seen in record["seen"]:
            assert seen["denoiser"] == "torch.float32"
            assert seen["decoder"] == seen["reference"] == seen["reward"] == "torch.bfloat16"
        assert all(math.isfinite(loss) for loss in record["losses"])
    # the trainable weights stayed identical across ranks: DDP averaged the float32 gradients
    assert records[0]["denoiser"] == records[1]["denoiser"]


# ---------------------------------------------------------------------- a real GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_bf16_mixed_fine_tuning_casts_the_frozen_parts():
    module = make_module()
    swap = SwapRewardEachEpoch()
    callback = FrozenPrecision()  # no force: a CUDA GPU is the real condition
    trainer(accelerator="gpu", precision="bf16-mixed", callbacks=[callback, swap]).fit(
        module, loader()
    )
    assert callback.inactive_reason is None
    assert len(module.seen) == 4
    for seen in module.seen:
        assert seen["denoiser"] == "torch.float32"
        assert seen["decoder"] == seen["reference"] == seen["reward"] == "torch.bfloat16"
    assert all(reward.seen == [BF16, BF16] for reward in swap.rewards)
    assert swap.decoded == [torch.float32] * 4
    assert all(math.isfinite(loss) for loss in module.losses)
    assert set(dtypes(module).values()) == {"torch.float32"}
