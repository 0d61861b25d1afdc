"""Desirability transforms and their weighted geometric mean (Derringer & Suich 1980).

Shared by the multi-property oracles of every domain (``seiko.oracles.molecules``,
``seiko.oracles.protein``); kept free of RDKit and other heavy imports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Protocol

Transform = Literal["linear", "sigmoid", "gaussian", "step"]


def _sigmoid(z: float) -> float:
    # two branches so that exp never overflows for a far-off value
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class DesirabilitySpec(Protocol):
    """What a desirability transform reads from an objective.

    ``PropertyObjective`` here and ``seiko.oracles.protein.ProteinObjective`` have these fields.
    """

    transform: Transform
    low: float | None
    high: float | None
    center: float | None
    width: float | None
    weight: float


def check_desirability(spec: DesirabilitySpec, where: str) -> None:
    """Raise a ValueError starting with ``where`` unless ``spec``'s weight and transform are valid.

    The weight must be > 0; linear and sigmoid take exactly ``low`` != ``high``, gaussian exactly
    ``center`` and ``width`` > 0, step ``low`` and/or ``high`` with low <= high.
    """
    if not spec.weight > 0:
        raise ValueError(f"{where}: weight must be > 0, got {spec.weight}")
    given = {k for k in ("low", "high", "center", "width") if getattr(spec, k) is not None}
    needs = {
        "linear": {"low", "high"},
        "sigmoid": {"low", "high"},
        "gaussian": {"center", "width"},
        "step": {"low", "high"},
    }
    if spec.transform not in needs:
        raise ValueError(f"{where}: unknown transform; expected one of {list(needs)}")
    wanted = needs[spec.transform]
    if spec.transform == "step":
        if not given or given - wanted:
            raise ValueError(f"{where}: step takes 'low' and/or 'high', got {sorted(given)}")
        if given == wanted and spec.low > spec.high:
            raise ValueError(f"{where}: step needs low <= high, got {spec.low} > {spec.high}")
    elif given != wanted:
        raise ValueError(f"{where}: takes exactly {sorted(wanted)}, got {sorted(given)}")
    if spec.transform in ("linear", "sigmoid") and spec.low == spec.high:
        raise ValueError(f"{where}: low and high must differ, both are {spec.low}")
    if spec.transform == "gaussian" and not spec.width > 0:
        raise ValueError(f"{where}: width must be > 0, got {spec.width}")


def desirability(spec: DesirabilitySpec, value: float) -> float:
    """``spec``'s transform of one property value, in [0, 1] (NaN stays NaN).

    See ``PropertyObjective`` for the four transforms.
    """
    if math.isnan(value):
        return math.nan
    if spec.transform == "linear":
        return min(1.0, max(0.0, (value - spec.low) / (spec.high - spec.low)))
    if spec.transform == "sigmoid":
        k = 2.0 * math.log(9.0) / (spec.high - spec.low)
        return _sigmoid(k * (value - (spec.low + spec.high) / 2.0))
    if spec.transform == "gaussian":
        return math.exp(-0.5 * ((value - spec.center) / spec.width) ** 2)
    above = spec.low is None or value >= spec.low
    below = spec.high is None or value <= spec.high
    return 1.0 if above and below else 0.0


def weighted_geometric_mean(values: Sequence[float], exponents: Sequence[float]) -> float:
    """prod_i values_i ** exponents_i: NaN if any value is NaN, 0 as soon as one value is 0.

    With exponents w_i / sum_j w_j and values in [0, 1], the score of a multi-property objective.
    """
    if any(math.isnan(v) for v in values):
        return math.nan
    if min(values) == 0.0:
        return 0.0
    return math.exp(sum(e * math.log(v) for e, v in zip(exponents, values, strict=True)))


__all__ = [
    "DesirabilitySpec",
    "Transform",
    "check_desirability",
    "desirability",
    "weighted_geometric_mean",
]
