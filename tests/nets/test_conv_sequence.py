"""ConvSequenceDenoiser: SequenceDenoiser's contract (shapes, class conditioning and the null
class, input checks), the zero-initialised residual branches, the receptive field, the engine's
checkpointed chain, a tiny overfit and the drop-in swap in the DNA pretraining config."""

from pathlib import Path

import pytest
import torch

from seiko.diffusion.chain import GaussianSampler
from seiko.diffusion.schedule import NoiseSchedule
from seiko.nets import ConvSequenceDenoiser

B, L, V = 4, 7, 5
ROOT = Path(__file__).resolve().parents[2]


def randomise_branches(net: ConvSequenceDenoiser) -> ConvSequenceDenoiser:
    """Re-draw the zero-initialised last layer of every residual branch (as training would move
    it), so that every block does something."""
    for block in net.blocks:
        block.conv2.reset_parameters()
    return net


def make(num_classes: int | None = None, **kwargs) -> ConvSequenceDenoiser:
    torch.manual_seed(0)
    kwargs = {"channels": 16, "n_blocks": 2, "kernel_size": 3, **kwargs}
    net = ConvSequenceDenoiser(V, L, num_classes=num_classes, **kwargs)
    return randomise_branches(net).eval()


def test_output_shape_conditional_and_unconditional():
    x, t = torch.randn(B, L, V), torch.randint(0, 1000, (B,))
    with torch.no_grad():
        assert make()(x, t).shape == (B, L, V)
        net = make(num_classes=3)
        assert net(x, t).shape == (B, L, V)
        assert net(x, t, torch.tensor([0, 1, 2, -1])).shape == (B, L, V)
    assert (net.vocab_size, net.seq_len, net.num_classes) == (V, L, 3)


def test_defaults_size_and_receptive_field():
    net = ConvSequenceDenoiser(4, 200, num_classes=4)  # the DNA prior's setting
    assert sum(p.numel() for p in net.parameters()) == 405_636  # the docstring's count
    assert sum(p.numel() for p in ConvSequenceDenoiser(4, 200).parameters()) == 405_316
    assert len(net.blocks) == 8
    assert [b.conv1.dilation[0] for b in net.blocks] == [1, 2, 4, 8, 1, 2, 4, 8]
    assert net.receptive_field == 1 + 8 * 2 * (1 + 2 + 4 + 8) == 241


def test_zero_initialised_branches_make_every_block_the_identity():
    torch.manual_seed(0)
    net = ConvSequenceDenoiser(V, L, channels=16, n_blocks=3, num_classes=3).eval()
    x = torch.randn(B, L, V)
    with torch.no_grad():
        shallow = net.head(net.norm(net.embed(x)))
        torch.testing.assert_close(net(x, torch.randint(0, 1000, (B,))), shallow)
        torch.testing.assert_close(
            net(x, torch.randint(0, 1000, (B,)), torch.ones(B).long()), shallow
        )


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    net = ConvSequenceDenoiser(V, L, channels=16, n_blocks=3, num_classes=3, dropout=0.1).train()
    x, t, cond = torch.randn(B, L, V), torch.randint(0, 1000, (B,)), torch.tensor([0, 1, 2, -1])
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(x, t, cond).pow(2).sum().backward()
    # at initialisation the branches end in zeros: only their last layer (and what lies outside
    # the branches) gets gradient, and every parameter has a .grad
    assert all(p.grad is not None for p in net.parameters())
    for block in net.blocks:
        assert block.conv2.weight.grad.abs().sum() > 0 and block.conv2.bias.grad.abs().sum() > 0
        assert block.conv1.weight.grad.abs().sum() == 0
    optimizer.step()
    optimizer.zero_grad()
    # after one step, gradient reaches every parameter
    net(x, t, cond).pow(2).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_output_depends_on_timestep():
    net = make()
    x = torch.randn(B, L, V)
    with torch.no_grad():
        assert not torch.allclose(net(x, torch.full((B,), 10)), net(x, torch.full((B,), 900)))


def test_class_conditioning_and_null_class():
    net = make(num_classes=3)
    x, t = torch.randn(B, L, V), torch.randint(0, 1000, (B,))
    with torch.no_grad():
        unconditional = net(x, t, None)
        torch.testing.assert_close(net(x, t, torch.full((B,), -1)), unconditional)
        torch.testing.assert_close(net(x, t, torch.full((B,), 3)), unconditional)  # the null id
        class0 = net(x, t, torch.zeros(B, dtype=torch.long))
        class1 = net(x, t, torch.ones(B, dtype=torch.long))
        assert not torch.allclose(class0, unconditional)
        assert not torch.allclose(class0, class1)
        # Per-row conditioning: a mixed batch equals the rows of the single-class batches.
        mixed = net(x, t, torch.tensor([0, -1, 1, 0]))
        torch.testing.assert_close(mixed[0], class0[0])
        torch.testing.assert_close(mixed[1], unconditional[1])
        torch.testing.assert_close(mixed[2], class1[2])
    assert net.class_embed.num_embeddings == 4  # 3 classes + the null class


def test_unconditional_model_ignores_cond():
    net = make()
    assert net.class_embed is None
    x, t = torch.randn(B, L, V), torch.randint(0, 1000, (B,))
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, torch.ones(B, dtype=torch.long)), net(x, t))


def test_bad_input_shape_raises():
    net = make()
    t = torch.zeros(B, dtype=torch.long)
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 7, 5\), got \(4, 7, 6\)"):
        net(torch.randn(B, L, V + 1), t)
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 7, 5\), got \(4, 8, 5\)"):
        net(torch.randn(B, L + 1, V), t)
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 7, 5\), got \(7, 5\)"):
        net(torch.randn(L, V), t)


def test_bad_constructor_arguments_raise():
    with pytest.raises(ValueError, match="need vocab_size >= 2 and seq_len >= 1, got 1, 7"):
        ConvSequenceDenoiser(1, L)
    with pytest.raises(ValueError, match="need vocab_size >= 2 and seq_len >= 1, got 5, 0"):
        ConvSequenceDenoiser(V, 0)
    with pytest.raises(ValueError, match="need channels >= 1 and n_blocks >= 1, got 16, 0"):
        ConvSequenceDenoiser(V, L, channels=16, n_blocks=0)
    with pytest.raises(ValueError, match="kernel_size must be odd and >= 1.*got 4"):
        ConvSequenceDenoiser(V, L, kernel_size=4)
    with pytest.raises(ValueError, match=r"dilations must be .*got \(1, 0\)"):
        ConvSequenceDenoiser(V, L, dilations=[1, 0])
    with pytest.raises(ValueError, match=r"dilations must be .*got \(\)"):
        ConvSequenceDenoiser(V, L, dilations=())


@pytest.mark.parametrize(
    ("length", "kwargs", "radius"),
    [
        # kernel 3, dilations 1, 2, 1: r = 1 * (1 + 2 + 1)
        (24, {"channels": 8, "n_blocks": 3, "kernel_size": 3, "dilations": (1, 2)}, 4),
        (300, {}, 120),  # the defaults: r = 4 * 2 * (1 + 2 + 4 + 8)
    ],
    ids=["small", "defaults"],
)
def test_receptive_field(length, kwargs, radius):
    torch.manual_seed(0)
    net = randomise_branches(ConvSequenceDenoiser(4, length, num_classes=2, **kwargs))
    net = net.double().eval()
    assert net.receptive_field == 2 * radius + 1
    positions = torch.arange(length)
    for i in (length // 2, 1, length - 1):  # the middle and both ends (the padding's zeros)
        x = torch.randn(2, length, 4, dtype=torch.float64, requires_grad=True)
        out = net(x, torch.tensor([3, 700]), torch.tensor([0, 1]))
        out[:, i].sum().backward()
        # per input position, the largest gradient over the batch and the letters
        sensitivity = x.grad.abs().amax(dim=(0, 2))
        inside = (positions - i).abs() <= radius
        assert (sensitivity[~inside] == 0).all(), i  # exactly nothing beyond the field
        assert (sensitivity[inside] > 0).all(), i  # every position within it, its edges included


def test_eval_is_deterministic_and_the_input_is_left_alone():
    net = make(num_classes=3, dropout=0.5)
    x, t = torch.randn(B, L, V), torch.randint(0, 1000, (B,))
    x_before = x.clone()
    with torch.no_grad():
        torch.testing.assert_close(net(x, t), net(x, t), rtol=0, atol=0)
        net.train()
        assert not torch.allclose(net(x, t), net(x, t))  # dropout is on in train mode
    assert torch.equal(x, x_before)


def test_checkpointed_and_plain_chains_give_the_same_gradients():
    """The engine's chain with per-step recomputation (seiko.diffusion.recompute), in train mode
    with dropout (the recomputation must replay the same masks), against the plain chain."""
    schedule, steps, length = NoiseSchedule.create(), 4, 12
    torch.manual_seed(1)
    x_T = torch.randn(2, length, V)
    noises = [torch.randn(2, length, V) for _ in range(steps)]
    cond = torch.tensor([1, -1])
    results = []
    for checkpoint in (False, True):
        torch.manual_seed(0)
        net = ConvSequenceDenoiser(V, length, channels=8, n_blocks=2, num_classes=2, dropout=0.2)
        net = randomise_branches(net).train()
        torch.manual_seed(2)  # the same dropout masks in both runs
        sampler = GaussianSampler(schedule, num_steps=steps, checkpoint=checkpoint)
        out = sampler(net, x_T, cond=cond, grad=True, noises=noises)
        out.x0.pow(2).sum().backward()
        results.append((out.x0, {n: p.grad for n, p in net.named_parameters()}))
    (plain_x0, plain), (ckpt_x0, ckpt) = results
    torch.testing.assert_close(ckpt_x0, plain_x0)
    for name, grad in plain.items():
        assert grad is not None and grad.abs().sum() > 0, name
        torch.testing.assert_close(ckpt[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_overfits_a_tiny_batch():
    """60 Adam steps predicting x0 from noisy copies of 8 fixed sequences halve the error."""
    torch.manual_seed(0)
    length, schedule = 16, NoiseSchedule.create()
    x0 = torch.nn.functional.one_hot(torch.randint(0, 4, (8, length)), 4).float() * 2 - 1
    net = ConvSequenceDenoiser(4, length, channels=32, n_blocks=4)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)

    def noisy(generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.randint(0, 500, (8,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        return schedule.add_noise(x0, noise, t), t

    held_out = noisy(torch.Generator().manual_seed(123))  # fixed: the same before and after

    def error() -> float:
        with torch.no_grad():
            return torch.nn.functional.mse_loss(net.eval()(*held_out), x0).item()

    before = error()
    net.train()
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(net(*noisy()), x0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = error()
    assert after < 0.5 * before, (before, after)


def test_drop_in_for_the_dna_pretraining_config(monkeypatch, tmp_path):
    """configs/dna/pretrain.yaml with only the denoiser's class swapped builds through the CLI;
    the sizes and classes are linked from the data and the module samples."""
    from seiko.cli import build_cli

    monkeypatch.chdir(ROOT)  # the config's data path is relative to the repository
    cli = build_cli(
        [
            "--config",
            str(ROOT / "configs" / "dna" / "pretrain.yaml"),
            "--model.init_args.denoiser.class_path",
            "seiko.nets.ConvSequenceDenoiser",
            "--trainer.default_root_dir",
            str(tmp_path),
        ],
        run=False,
    )
    denoiser = cli.model.denoiser
    assert isinstance(denoiser, ConvSequenceDenoiser)
    assert (denoiser.vocab_size, denoiser.seq_len, denoiser.num_classes) == (4, 200, 4)
    assert len(cli.model.labels) == 4 and cli.model.labels == cli.datamodule.labels
    assert cli.model.sampler.num_steps == 50  # the config's sampler, unchanged
    # the transformer's d_model / n_layers / n_heads did not leak into the new class
    saved = cli.model.hparams["denoiser"]
    assert saved["class_path"] == "seiko.nets.ConvSequenceDenoiser"
    assert {"d_model", "n_layers", "n_heads"}.isdisjoint(saved["init_args"])
    samples = cli.model.sample(2)
    assert samples.shape == (2, 200, 4) and torch.isfinite(samples).all()
    designs = cli.model.decode(samples)
    assert len(designs) == 2 and all(len(d) == 200 and set(d) <= set("ACGT") for d in designs)
