"""SequenceDenoiser: shapes, class conditioning and the null class, input checks."""

import pytest
import torch

from seiko.nets import SequenceDenoiser

B, L, V = 4, 7, 5


def make(num_classes: int | None = None) -> SequenceDenoiser:
    torch.manual_seed(0)
    return SequenceDenoiser(V, L, d_model=16, n_layers=2, n_heads=2, num_classes=num_classes).eval()


def test_output_shape_and_gradient_reaches_every_parameter():
    net = make().train()
    x, t = torch.randn(B, L, V), torch.randint(0, 1000, (B,))
    out = net(x, t)
    assert out.shape == (B, L, V)
    out.pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


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


def test_unconditional_model_ignores_cond():
    net = make()
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


def test_bad_constructor_arguments_raise():
    with pytest.raises(ValueError, match="need vocab_size >= 2 and seq_len >= 1, got 1, 7"):
        SequenceDenoiser(1, L)
    with pytest.raises(ValueError, match="d_model=10 is not divisible by n_heads=4"):
        SequenceDenoiser(V, L, d_model=10, n_heads=4)
