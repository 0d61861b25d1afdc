"""RewardEnsemble: the vectorised members against plain per-member networks, shapes, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seiko.rewards import RewardEnsemble, RewardMember

SMALL = dict(hidden=8, channels=4)
CASES = [
    pytest.param((6, 5), "mlp", id="mlp-sequence"),
    pytest.param((2, 3, 2), "mlp", id="mlp-any-shape"),
    pytest.param((6, 5), "cnn", id="cnn-sequence"),
    pytest.param((3, 9, 7), "cnn", id="cnn-image-odd-size"),
]


def plain_member(ensemble: RewardEnsemble, i: int) -> nn.Sequential:
    """Member i rebuilt from torch.nn layers with its weights copied out of the stacked ones."""
    layers: list[nn.Module] = []
    if ensemble.architecture == "cnn":
        sequence = len(ensemble.input_shape) == 2
        if sequence:
            layers.append(Transpose())
        conv_cls = nn.Conv1d if sequence else nn.Conv2d
        for stacked in ensemble.convs:
            weight = stacked.weight[i]
            conv = conv_cls(
                weight.shape[1],
                weight.shape[0],
                weight.shape[2],
                stride=stacked.stride,
                padding=weight.shape[2] // 2,
            )
            conv.weight.data.copy_(weight)
            conv.bias.data.copy_(stacked.bias[i])
            layers += [conv, nn.SiLU()]
        pool = nn.AdaptiveAvgPool1d if sequence else nn.AdaptiveAvgPool2d
        layers.append(pool(ensemble.pool_size))
    layers.append(nn.Flatten())
    for stacked in [*ensemble.hidden, ensemble.head]:
        linear = nn.Linear(*stacked.weight.shape[1:])
        linear.weight.data.copy_(stacked.weight[i].T)
        linear.bias.data.copy_(stacked.bias[i])
        layers += [linear, nn.SiLU()]
    return nn.Sequential(*layers[:-1])  # no activation after the head


class Transpose(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


@pytest.mark.parametrize(("shape", "architecture"), CASES)
def test_vectorised_members_equal_plain_networks(shape, architecture):
    ensemble = RewardEnsemble(shape, num_members=3, architecture=architecture, **SMALL, seed=1)
    ensemble.target_mean.fill_(5.0)
    ensemble.target_std.fill_(2.0)
    x = torch.rand(7, *shape, generator=torch.Generator().manual_seed(0))
    values, features = ensemble(x), ensemble.features(x)
    assert values.shape == (3, 7) and features.shape == (3, 7, ensemble.num_features)
    for i in range(3):
        plain = plain_member(ensemble, i)
        expected = plain(x).squeeze(-1) * 2.0 + 5.0  # outputs are in the original target scale
        torch.testing.assert_close(values[i], expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(features[i], plain[:-1](x), rtol=1e-5, atol=1e-5)
        member = ensemble.member(i)
        torch.testing.assert_close(member(x), values[i], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(member.features(x), features[i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("shape", "architecture"), CASES)
def test_members_differ_and_mean_std_reduce_them(shape, architecture):
    ensemble = RewardEnsemble(shape, num_members=4, architecture=architecture, **SMALL)
    x = torch.rand(5, *shape)
    values = ensemble(x)
    for i in range(4):
        for j in range(i):
            assert not torch.allclose(values[i], values[j])
    torch.testing.assert_close(ensemble.mean(x), values.mean(0))
    torch.testing.assert_close(ensemble.std(x), values.std(0))
    assert (ensemble.std(x) > 0).all()


@pytest.mark.parametrize(("shape", "architecture"), CASES)
def test_gradients_flow_to_the_input(shape, architecture):
    ensemble = RewardEnsemble(shape, num_members=3, architecture=architecture, **SMALL)
    outputs = {
        "mean": lambda x: ensemble.mean(x),
        "std": lambda x: ensemble.std(x),
        "features": lambda x: ensemble.features(x),
        "member": lambda x: ensemble.member(2)(x),
    }
    for name, fn in outputs.items():
        x = torch.rand(4, *shape, requires_grad=True)
        fn(x).square().sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all(), name
        assert x.grad.abs().sum() > 0, name


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (RewardEnsemble((6, 5), seed=s, **SMALL) for s in (0, 0, 1))
    x = torch.rand(3, 6, 5)
    torch.testing.assert_close(a(x), b(x))
    assert not torch.allclose(a(x), c(x))


def test_state_dict_holds_weights_and_normalisation():
    ensemble = RewardEnsemble((6, 5), **SMALL)
    ensemble.target_mean.fill_(3.0)
    ensemble.target_std.fill_(0.5)
    ensemble.num_fits += 2
    copy = RewardEnsemble((6, 5), seed=7, **SMALL)
    copy.load_state_dict(ensemble.state_dict())
    x = torch.rand(3, 6, 5)
    torch.testing.assert_close(copy(x), ensemble(x))
    assert int(copy.num_fits) == 2


def test_low_precision_ensemble_takes_fp32_designs():
    ensemble = RewardEnsemble((6, 5), **SMALL).to(torch.bfloat16)
    assert ensemble.mean(torch.rand(3, 6, 5)).dtype == torch.bfloat16


def test_member_is_a_view_sharing_parameters():
    ensemble = RewardEnsemble((6, 5), num_members=3, **SMALL)
    member = ensemble.member(-1)
    assert isinstance(member, RewardMember) and member.index == 2
    x = torch.rand(3, 6, 5)
    before = member(x)
    with torch.no_grad():
        ensemble.head.bias[2] += 1.0
    torch.testing.assert_close(member(x), before + 1.0)
    with pytest.raises(IndexError, match="member index 3 is out of range for 3 members"):
        ensemble.member(3)


def test_wrong_input_shape_is_reported():
    ensemble = RewardEnsemble((6, 5), **SMALL)
    with pytest.raises(ValueError, match=r"x has shape \(2, 5, 6\).*takes \(B, 6, 5\)"):
        ensemble(torch.rand(2, 5, 6))
    with pytest.raises(ValueError, match=r"x has shape \(6, 5\)"):
        ensemble.mean(torch.rand(6, 5))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(input_shape=()), "input_shape must be non-empty"),
        (dict(input_shape=(4, 0)), "positive sizes"),
        (dict(input_shape=(4, 3), architecture="rnn"), "architecture='rnn' is not one of"),
        (dict(input_shape=(12,), architecture="cnn"), "architecture='cnn' takes"),
        (dict(input_shape=(4, 3), num_members=0), "num_members must be >= 1, got 0"),
        (dict(input_shape=(4, 3), kernel_size=4), "kernel_size must be odd"),
        (dict(input_shape=(4, 3), pool_size=0), "pool_size must be >= 1"),
        (dict(input_shape=(8, 5), reverse_complement=True), r"\(L, 4\).*input_shape \(8, 5\)"),
        (
            dict(input_shape=(8, 4), architecture="mlp", reverse_complement=True),
            "architecture='mlp'",
        ),
    ],
)
def test_bad_construction_is_reported(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RewardEnsemble(**kwargs)


def test_std_of_a_single_member_is_an_error():
    with pytest.raises(ValueError, match="std needs an ensemble of >= 2 members"):
        RewardEnsemble((6, 5), num_members=1, **SMALL).std(torch.rand(2, 6, 5))


@pytest.mark.parametrize(("shape", "architecture"), CASES)
def test_an_empty_batch_gives_empty_outputs(shape, architecture):
    ensemble = RewardEnsemble(shape, num_members=3, architecture=architecture, **SMALL)
    x = torch.rand(0, *shape)
    assert ensemble(x).shape == (3, 0) and ensemble.member(1)(x).shape == (0,)
    assert ensemble.features(x).shape == (3, 0, ensemble.num_features)


def _reverse_complement(x):
    """(B, L, 4) ACGT one-hot -> the reverse complement (T<->A, G<->C = channels reversed)."""
    return x.flip(1, 2)


def test_reverse_complement_reads_both_strands():
    """With global max pooling a sequence and its reverse complement get the same reward (a
    binding site scores on either strand); without the option the strands differ."""
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (5, 30)), 4).float()
    both = RewardEnsemble(
        (30, 4), 2, kernel_size=7, pool="max", pool_size=1, reverse_complement=True
    )
    torch.testing.assert_close(both(_reverse_complement(x)), both(x))
    one = RewardEnsemble((30, 4), 2, kernel_size=7, pool="max", pool_size=1)
    assert not torch.allclose(one(_reverse_complement(x)), one(x))
    # and gradients reach the design through both strands
    x.requires_grad_(True)
    both(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
