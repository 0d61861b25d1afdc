"""ProductOracle: an objective gated by a constraint, NaN-propagating, loadable from YAML."""

from __future__ import annotations

import math

import pytest
import torch

from seiko.oracles import FunctionOracle, NoisyOracle, ProductOracle, load_oracle, measure


def length(design: str) -> float:
    return float(len(design))


def vowel_share(design: str) -> float | None:
    if not design:
        return None  # infeasible
    return sum(c in "aeiou" for c in design) / len(design)


def test_product_of_values_and_nan_propagation():
    oracle = ProductOracle([FunctionOracle(length), FunctionOracle(vowel_share)])
    values = oracle(["abcd", "aa", ""])
    assert values[0].item() == pytest.approx(4 * 0.25)
    assert values[1].item() == pytest.approx(2 * 1.0)
    assert math.isnan(values[2].item())  # one factor infeasible: the product is infeasible
    assert oracle.name == "length*vowel_share"
    assert oracle.higher_is_better


def test_noise_free_product_when_a_factor_is_noisy():
    noisy = NoisyOracle(FunctionOracle(length), sigma=1.0, seed=3)
    oracle = ProductOracle([noisy, FunctionOracle(vowel_share)])
    m = measure(oracle, ["abcd", "aaaa"])
    assert m.noise_free is not None
    assert torch.allclose(m.noise_free, torch.tensor([1.0, 4.0], dtype=torch.float64))
    assert not torch.allclose(m.values, m.noise_free)


def test_loads_from_a_yaml_style_spec_with_nested_oracles():
    spec = {
        "class_path": "seiko.oracles.ProductOracle",
        "init_args": {
            "oracles": [
                {
                    "class_path": "seiko.oracles.FunctionOracle",
                    "init_args": {"fn": f"{__name__}.length"},
                },
                {
                    "class_path": "seiko.oracles.FunctionOracle",
                    "init_args": {"fn": f"{__name__}.vowel_share"},
                },
            ]
        },
    }
    oracle = load_oracle(spec)
    assert isinstance(oracle, ProductOracle)
    assert oracle(["aeio"]).item() == pytest.approx(4.0)


def test_rejects_fewer_than_two_factors_and_minimised_factors():
    with pytest.raises(ValueError, match="two or more"):
        ProductOracle([FunctionOracle(length)])

    class Lower:
        name = "cost"
        higher_is_better = False

        def __call__(self, designs):
            return torch.zeros(len(designs), dtype=torch.float64)

    with pytest.raises(ValueError, match="cost"):
        ProductOracle([FunctionOracle(length), Lower()])
