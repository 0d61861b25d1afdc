"""DiffusionModule / SequenceDiffusion: pretraining, fine-tuning, sampling, checkpoints."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from seiko.lightning_modules import (
    SamplerConfig,
    ScheduleConfig,
    SequenceDiffusion,
    straight_through_one_hot,
)
from seiko.nets import SequenceDenoiser

VOCAB = ["A", "C", "G", "T", "_"]
L_SEQ = 8


def make_module(**overrides) -> SequenceDiffusion:
    torch.manual_seed(0)
    kwargs = dict(
        denoiser=SequenceDenoiser(len(VOCAB), L_SEQ, d_model=16, n_layers=1, n_heads=2),
        vocabulary=VOCAB,
        seq_len=L_SEQ,
        pad_symbol="_",
        schedule=ScheduleConfig(num_train_timesteps=50),
        sampler=SamplerConfig(num_steps=4, checkpoint=True),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
    )
    kwargs.update(overrides)
    return SequenceDiffusion(**kwargs)


def data_loader(module: SequenceDiffusion, n: int = 32) -> DataLoader:
    designs = ["ACGTACGT", "AAAACCCC", "GGGT", "TTTTTTTT"] * (n // 4)
    x = module.encode(designs)

    def collate(items):
        return {"x": torch.stack([it[0] for it in items])}

    return DataLoader(TensorDataset(x), batch_size=8, collate_fn=collate)


def count_reward(x: torch.Tensor) -> torch.Tensor:
    """Differentiable: the number of 'G' positions of the straight-through one-hot, (B,)."""
    return x[..., VOCAB.index("G")].sum(-1)


def trainer(**kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    defaults.update(kwargs)
    return L.Trainer(**defaults)


def test_encode_decode_round_trip_with_padding():
    module = make_module()
    designs = ["ACGT", "ACGTACGT", "T"]
    x = module.encode(designs)
    assert x.shape == (3, L_SEQ, len(VOCAB))
    assert set(x.unique().tolist()) == {-1.0, 1.0}
    assert module.decode(x) == designs


def test_encode_rejects_bad_designs_with_the_culprit_named():
    module = make_module()
    with pytest.raises(ValueError, match="'X' outside the vocabulary"):
        module.encode(["ACXT"])
    with pytest.raises(ValueError, match="has 9 symbols"):
        module.encode(["ACGTACGTA"])


def test_pretrain_fast_dev_run_updates_weights():
    module = make_module()
    before = [p.detach().clone() for p in module.denoiser.parameters()]
    trainer(fast_dev_run=2).fit(module, data_loader(module))
    after = list(module.denoiser.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_finetune_with_known_reward_raises_it_and_keeps_a_frozen_reference():
    module = make_module(mode="finetune", kl_weight=0.01)
    module.reward = count_reward
    generator = torch.Generator().manual_seed(0)
    start = count_reward(straight_through_one_hot(module.sample(64, generator=generator))).mean()
    trainer(max_steps=30).fit(module, data_loader(module, n=240))
    end = count_reward(
        straight_through_one_hot(module.sample(64, generator=torch.Generator().manual_seed(0)))
    ).mean()
    assert module.reference is not None
    assert all(not p.requires_grad for p in module.reference.parameters())
    ref_params = dict(module.reference.named_parameters())
    # the reference stayed at the starting weights while the denoiser moved
    moved = [not torch.equal(p, ref_params[name]) for name, p in module.denoiser.named_parameters()]
    assert any(moved)
    assert end > start + 0.5, (start, end)


def test_finetune_without_reward_fails_with_instructions():
    module = make_module(mode="finetune")
    with pytest.raises(RuntimeError, match="needs a reward"):
        trainer(fast_dev_run=1).fit(module, data_loader(module))


def test_reward_of_wrong_shape_is_a_clear_error():
    module = make_module(mode="finetune")
    module.reward = lambda x: x.sum()
    with pytest.raises(ValueError, match="reward returned shape"):
        module.finetune_loss(4)


def test_finetune_loss_terms_and_kl_weight():
    module = make_module(mode="finetune", kl_weight=2.0, learn_initial_noise=True)
    module.reward = count_reward
    module.snapshot_reference()
    with torch.no_grad():  # move the denoiser away from the reference: the KL becomes positive
        for p in module.denoiser.parameters():
            p.add_(0.05 * torch.randn_like(p))
        module.initial_noise.mean.fill_(0.3)
    torch.manual_seed(1)
    terms = module.finetune_loss(6)
    assert terms["kl"] > 0 and terms["kl_initial"] > 0
    expected = -terms["reward"] + 2.0 * (terms["kl"] + terms["kl_initial"])
    torch.testing.assert_close(terms["loss"], expected)
    terms["loss"].backward()
    assert module.initial_noise.mean.grad is not None
    assert module.denoiser.head.weight.grad is not None


def test_checkpoint_round_trip_keeps_reference_and_hparams(tmp_path):
    module = make_module(mode="finetune")
    module.reward = count_reward
    t = trainer(max_steps=2, default_root_dir=tmp_path, enable_checkpointing=True)
    t.fit(module, data_loader(module))
    path = tmp_path / "m.ckpt"
    t.save_checkpoint(path)
    denoiser = SequenceDenoiser(len(VOCAB), L_SEQ, d_model=16, n_layers=1, n_heads=2)
    restored = SequenceDiffusion.load_from_checkpoint(path, denoiser=denoiser)
    assert (
        restored.vocabulary == VOCAB and restored.seq_len == L_SEQ and restored.mode == "finetune"
    )
    assert restored.sampler.num_steps == 4
    for name, p in module.reference.state_dict().items():
        torch.testing.assert_close(restored.reference.state_dict()[name], p)
    for name, p in module.denoiser.state_dict().items():
        torch.testing.assert_close(restored.denoiser.state_dict()[name], p)


def test_pretrained_checkpoint_loads_denoiser_weights(tmp_path):
    module = make_module()
    trainer(fast_dev_run=1).fit(module, data_loader(module))
    path = tmp_path / "pre.ckpt"
    torch.save({"state_dict": module.state_dict()}, path)
    other = make_module(
        mode="finetune",
        denoiser=SequenceDenoiser(len(VOCAB), L_SEQ, d_model=16, n_layers=1, n_heads=2),
        pretrained_checkpoint=str(path),
    )
    for name, p in module.denoiser.state_dict().items():
        torch.testing.assert_close(other.denoiser.state_dict()[name], p)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_module(pretrained_checkpoint=str(tmp_path / "missing.ckpt"))


def test_sample_is_batched_reproducible_and_restores_train_mode():
    module = make_module()
    module.train()
    a = module.sample(10, batch_size=3, generator=torch.Generator().manual_seed(3))
    b = module.sample(10, batch_size=3, generator=torch.Generator().manual_seed(3))
    assert a.shape == (10, L_SEQ, len(VOCAB))
    torch.testing.assert_close(a, b)
    assert module.training


def test_straight_through_one_hot_is_hard_forward_soft_backward():
    x = torch.tensor([[2.0, 1.0, 0.0]], requires_grad=True)
    y = straight_through_one_hot(x)
    assert y.tolist() == [[1.0, 0.0, 0.0]]
    y[0, 1].backward()
    soft = torch.softmax(x.detach(), -1)[0]
    expected = soft[1] * (torch.eye(3)[1] - soft)  # d softmax_1 / d x
    torch.testing.assert_close(x.grad[0], expected)


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="mode"):
        make_module(mode="train")
    with pytest.raises(ValueError, match="kl_weight"):
        make_module(kl_weight=-1.0)
    with pytest.raises(ValueError, match="pad_symbol"):
        make_module(pad_symbol="N")


@pytest.mark.parametrize("train_mode", [False, True])
def test_finetune_chain_runs_in_the_configured_mode_and_restores_it(train_mode):
    # Dropout 0.5 makes the two modes give different chains from the same random state.
    denoiser = SequenceDenoiser(len(VOCAB), L_SEQ, d_model=16, n_layers=1, n_heads=2, dropout=0.5)
    module = make_module(
        mode="finetune",
        denoiser=denoiser,
        sampler=SamplerConfig(num_steps=4, checkpoint=True, train_mode=train_mode),
    )
    chain_modes, reward_modes = [], []
    module.reward = lambda x: (reward_modes.append(module.denoiser.training), count_reward(x))[1]
    hook = module.denoiser.register_forward_pre_hook(lambda m, a: chain_modes.append(m.training))
    module.train()
    module.finetune_loss(4)["loss"].backward()
    hook.remove()
    # every forward of the chain, the recomputations in the backward pass included
    assert len(chain_modes) == 8 and set(chain_modes) == {train_mode}
    assert reward_modes == [True]  # restored before the reward is computed
    assert module.denoiser.training
    assert module.hparams["sampler"]["train_mode"] is train_mode


def test_kl_sampled_steps_reaches_the_module_chain_and_keeps_the_loss_value():
    """``SamplerConfig(kl_sampled_steps=...)`` is handed to the chain; the fine-tuning loss is
    the same number, and the KL now also has a gradient from the steps run without autograd."""
    terms = {}
    for m in (0, 8):
        sampler = SamplerConfig(num_steps=4, checkpoint=True, truncate=1, kl_sampled_steps=m)
        module = make_module(mode="finetune", sampler=sampler)
        assert module.sampler.kl_sampled_steps == m
        module.reward = count_reward
        module.snapshot_reference()
        with torch.no_grad():
            for p in module.denoiser.parameters():
                p.add_(0.05 * torch.randn_like(p))
        torch.manual_seed(1)
        terms[m] = module.finetune_loss(4)
        assert module.hparams["sampler"]["kl_sampled_steps"] == m
    torch.testing.assert_close(terms[8]["kl"], terms[0]["kl"])
    # truncate=1: the only autograd step is the deterministic last one, without a KL term
    assert not terms[0]["kl"].requires_grad
    assert terms[8]["kl"].requires_grad
