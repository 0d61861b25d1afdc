"""VectorDenoiser: shapes, conditioning, the zero-initialised output, validation."""

import pytest
import torch

from seiko.nets import VectorDenoiser


def test_shapes_zero_init_and_class_conditioning():
    torch.manual_seed(0)
    net = VectorDenoiser(6, width=16, n_layers=2, num_classes=3)
    x, t = torch.randn(4, 6), torch.tensor([0, 10, 500, 999])
    assert torch.equal(net(x, t), torch.zeros(4, 6))  # zero output layer: starts at "no noise"
    torch.nn.init.normal_(net.output.weight)
    unconditional = net(x, t)
    torch.testing.assert_close(net(x, t, torch.full((4,), -1)), unconditional)
    assert not torch.allclose(net(x, t, torch.tensor([0, 1, 2, 0])), unconditional)
    out = net(x.requires_grad_(True), t)
    out.sum().backward()
    assert x.grad.abs().sum() > 0


def test_wrong_input_shape_raises():
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 6\)"):
        VectorDenoiser(6, width=8, n_layers=1)(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))
