"""Oracle wrappers: robust evaluation, label noise, process-pool parallelism, loading by spec."""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable

import numpy as np
import pytest
import torch
from jsonargparse import ArgumentParser

from seiko.oracles import (
    FunctionOracle,
    Measurement,
    NoisyOracle,
    Oracle,
    ParallelOracle,
    design_noise,
    load_oracle,
    measure,
)


# ---------------------------------------------------------------- tiny oracles (module level, so
# they pickle by reference into ParallelOracle's spawned workers and import from a config path)
def length_score(design: str) -> float | None:
    """Per-design function: the length, infeasible (None) for designs containing 'X'."""
    return None if "X" in design else float(len(design))


class LengthOracle:
    """A batch oracle: length * scale, NaN for designs containing 'X'."""

    def __init__(self, scale: float = 1.0, name: str = "length") -> None:
        self.scale = scale
        self.name = name
        self.higher_is_better = True

    def __call__(self, designs: list[str]) -> torch.Tensor:
        return torch.tensor(
            [math.nan if "X" in d else self.scale * len(d) for d in designs], dtype=torch.float64
        )


class FragileOracle:
    """Raises on any batch holding a design with '!', so a batch fails but other designs don't."""

    name = "fragile"
    higher_is_better = True

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, designs: list[str]) -> list[float]:
        self.calls.append(list(designs))
        if any("!" in d for d in designs):
            raise RuntimeError("assay failed on '!'")
        return [float(len(d)) for d in designs]


class AnswerOracle:
    """Answers every batch with a fixed object (to provoke malformed answers)."""

    higher_is_better = True

    def __init__(self, answer: object, name: str = "malformed") -> None:
        self.answer = answer
        self.name = name

    def __call__(self, designs: list[str]) -> object:
        return self.answer


class Holder:
    """Stands in for a callback whose config argument is typed ``Oracle`` (as LightningCLI sees)."""

    def __init__(self, oracle: Oracle, budget: int = 10) -> None:
        self.oracle = oracle
        self.budget = budget


DESIGNS = ["A", "CC", "GGG", "XT", "TTTT", "ACGTA"]
EXPECTED = torch.tensor([1, 2, 3, math.nan, 4, 5], dtype=torch.float64)


# ---------------------------------------------------------------- measure: robust evaluation
def test_measure_plain_and_function_oracles_agree(assert_same: Callable[..., None]) -> None:
    batch = measure(LengthOracle(), DESIGNS)
    per_design = measure(FunctionOracle(length_score), DESIGNS)
    for result in (batch, per_design):
        assert_same(result.values, EXPECTED)
        assert result.noise_free is None
        assert result.errors == [None] * len(DESIGNS)
    assert len(measure(LengthOracle(), [])) == 0


def test_raising_batch_is_retried_design_by_design(assert_same: Callable[..., None]) -> None:
    oracle = FragileOracle()
    result = measure(oracle, ["AA", "C!", "GGG"])
    assert_same(result.values, torch.tensor([2.0, math.nan, 3.0], dtype=torch.float64))
    assert result.errors[0] is None and result.errors[2] is None
    assert result.errors[1] == "RuntimeError: assay failed on '!'"
    assert oracle.calls == [["AA", "C!", "GGG"], ["AA"], ["C!"], ["GGG"]]


def test_function_oracle_keeps_error_text_without_recomputing(
    assert_same: Callable[..., None],
) -> None:
    calls = []

    def fussy(design: str) -> float:
        calls.append(design)
        if design == "bad":
            raise KeyError("no such residue")
        return 1.0

    result = measure(FunctionOracle(fussy), ["ok", "bad", "ok2"])
    assert_same(result.values, torch.tensor([1.0, math.nan, 1.0], dtype=torch.float64))
    assert result.errors == [None, "KeyError: 'no such residue'", None]
    assert calls == ["ok", "bad", "ok2"]  # each design evaluated exactly once


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (torch.ones(2), r"'malformed' returned 2 values for 3 designs"),
        ([1.0, 2.0, 3.0, 4.0], r"'malformed' returned 4 values for 3 designs"),
        (torch.ones(3, 1), r"'malformed' returned .* shape \(3, 1\); expected a 1-D"),
        ("1,2,3", r"'malformed' returned a non-numeric answer: a str; expected a 1-D float"),
        (np.array(["a", "b", "c"]), r"'malformed' returned a non-numeric answer: a ndarray of <U1"),
        ([1.0, "two", 3.0], r"'malformed' answered design 1 with a str \('two'\)"),
    ],
)
def test_malformed_answer_is_a_clear_error(answer: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        measure(AnswerOracle(answer), ["A", "B", "C"])


def test_numeric_answers_of_any_kind_are_accepted() -> None:
    for answer in (np.array([1, 2, 3]), [1, None, 3.0], torch.tensor([1, 2, 3])):
        values = measure(AnswerOracle(answer), ["A", "B", "C"]).values
        assert values.dtype == torch.float64 and values.shape == (3,)


def test_function_oracle_non_numeric_answer_names_the_oracle() -> None:
    oracle = FunctionOracle(lambda design: "high", name="words")
    with pytest.raises(ValueError, match=r"oracle 'words' answered design 0 with a str"):
        oracle(["A"])


def test_measurement_rejects_misaligned_fields() -> None:
    with pytest.raises(ValueError, match=r"values must be a float64 tensor of shape \(2,\)"):
        Measurement(torch.zeros(3, dtype=torch.float64), None, [None, None])
    with pytest.raises(ValueError, match="noise_free must be None or a float64"):
        Measurement(torch.zeros(1, dtype=torch.float64), torch.zeros(1), [None])


# ---------------------------------------------------------------- NoisyOracle
def test_noisy_oracle_keeps_noise_free_values_and_nan(assert_same: Callable[..., None]) -> None:
    noisy = NoisyOracle(LengthOracle(), sigma=0.3, seed=7)
    result = noisy.measure(DESIGNS)
    assert_same(result.noise_free, EXPECTED)
    assert math.isnan(result.values[3])
    assert not torch.equal(result.values[~EXPECTED.isnan()], EXPECTED[~EXPECTED.isnan()])
    assert_same(noisy(DESIGNS), result.values)
    assert noisy.name == "length+noise(sigma=0.3)"
    assert noisy.higher_is_better


def test_noise_has_the_right_distribution() -> None:
    designs = [f"design-{i}" for i in range(20_000)]
    sigma = 0.25
    result = NoisyOracle(FunctionOracle(lambda d: 1.0), sigma=sigma, seed=3).measure(designs)
    noise = result.values - result.noise_free
    # standard errors: mean sigma/sqrt(n) ~ 0.0018, std sigma/sqrt(2n) ~ 0.0013
    assert abs(noise.mean().item()) < 0.01
    assert abs(noise.std().item() - sigma) < 0.01
    within_one_sigma = (noise.abs() < sigma).double().mean().item()
    assert abs(within_one_sigma - 0.6827) < 0.015


def test_noise_depends_on_seed_and_design_not_on_batching(assert_same: Callable[..., None]) -> None:
    designs = [f"d{i}" for i in range(50)]
    whole = design_noise(designs, seed=1)
    assert_same(torch.cat([design_noise(designs[:20], 1), design_noise(designs[20:], 1)]), whole)
    assert_same(design_noise(designs[::-1], 1), whole.flip(0))
    assert not torch.equal(design_noise(designs, seed=2), whole)
    # non-string designs are keyed by their pickle
    arrays = [np.arange(3), np.arange(3), np.arange(4)]
    noise = design_noise(arrays, seed=1)
    assert noise[0] == noise[1] != noise[2]


def test_nested_noisy_oracle_keeps_the_innermost_noise_free_values(
    assert_same: Callable[..., None],
) -> None:
    twice = NoisyOracle(NoisyOracle(LengthOracle(), sigma=1.0, seed=1), sigma=1.0, seed=2)
    assert_same(twice.measure(DESIGNS).noise_free, EXPECTED)


def test_noisy_oracle_rejects_negative_sigma() -> None:
    with pytest.raises(ValueError, match="sigma >= 0, got -1"):
        NoisyOracle(LengthOracle(), sigma=-1.0)


# ---------------------------------------------------------------- ParallelOracle
def test_parallel_oracle_matches_serial(assert_same: Callable[..., None]) -> None:
    # one pool for the whole test: each spawned worker pays a fresh `import torch`
    designs = [f"{'A' * (i % 7)}{'!' if i % 11 == 3 else ''}G" for i in range(40)]
    serial = NoisyOracle(FragileOracle(), sigma=0.5, seed=4).measure(designs)
    assert any(serial.errors) and not all(serial.errors)
    oracle = NoisyOracle(FragileOracle(), sigma=0.5, seed=4)
    with ParallelOracle(oracle, workers=2, chunk_size=7) as parallel:
        assert parallel.name == oracle.name
        result = parallel.measure(designs)
        # the pool is reused by a second call of the same wrapper
        assert_same(parallel(designs[:3]), serial.values[:3])
    assert_same(result.values, serial.values)
    assert_same(result.noise_free, serial.noise_free)
    assert result.errors == serial.errors


def test_parallel_oracle_needs_a_picklable_oracle() -> None:
    with pytest.raises(TypeError, match=r"must be picklable.*'<lambda>'.*module level"):
        ParallelOracle(FunctionOracle(lambda design: 1.0), workers=2)
    with pytest.raises(ValueError, match="workers >= 1, got 0"):
        ParallelOracle(LengthOracle(), workers=0)


def test_parallel_oracle_pickles_without_its_pool() -> None:
    parallel = ParallelOracle(LengthOracle(scale=2.0), workers=1)
    copy = pickle.loads(pickle.dumps(parallel))
    assert copy.oracle.scale == 2.0 and copy._pool is None


# ---------------------------------------------------------------- load_oracle and configs
def test_load_oracle_from_every_kind_of_spec(assert_same: Callable[..., None]) -> None:
    module = __name__
    instance = LengthOracle()
    assert load_oracle(instance) is instance

    from_function = load_oracle(length_score)
    assert isinstance(from_function, FunctionOracle) and from_function.name == "length_score"

    from_function_path = load_oracle(f"{module}.length_score")
    assert isinstance(from_function_path, FunctionOracle)
    assert_same(from_function_path(DESIGNS), EXPECTED)

    from_class_path = load_oracle(f"{module}.LengthOracle")
    assert isinstance(from_class_path, LengthOracle)

    from_mapping = load_oracle(
        {"class_path": f"{module}.LengthOracle", "init_args": {"scale": 3, "name": "len3"}}
    )
    assert from_mapping.name == "len3"
    assert_same(from_mapping(["AB"]), torch.tensor([6.0], dtype=torch.float64))

    nested = load_oracle(
        {
            "class_path": "seiko.oracles.NoisyOracle",
            "init_args": {"oracle": f"{module}.length_score", "sigma": 0.1, "seed": 5},
        }
    )
    assert isinstance(nested.oracle, FunctionOracle)
    assert nested.name == "length_score+noise(sigma=0.1)"


def test_load_oracle_errors_name_the_spec() -> None:
    with pytest.raises(ValueError, match=r"cannot load an oracle from '.*NoSuchOracle'"):
        load_oracle(f"{__name__}.NoSuchOracle")
    with pytest.raises(ValueError, match="bogus"):
        load_oracle({"class_path": f"{__name__}.LengthOracle", "init_args": {"bogus": 1}})
    with pytest.raises(TypeError, match=r"is not an oracle: it lacks \['name', 'higher_is_better'"):
        load_oracle(object())
    with pytest.raises(TypeError, match="got the class FragileOracle; pass an instance"):
        load_oracle(FragileOracle)


def test_function_oracle_takes_an_import_path() -> None:
    oracle = FunctionOracle(f"{__name__}.length_score", higher_is_better=False)
    assert oracle.fn is length_score and not oracle.higher_is_better
    with pytest.raises(ValueError, match="has no attribute 'missing'"):
        FunctionOracle(f"{__name__}.missing")


def test_config_argument_typed_oracle_accepts_class_and_function_paths() -> None:
    """What LightningCLI does with a callback's ``oracle: Oracle`` argument in a YAML."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(Holder, "holder")
    yaml = f"""
holder:
  oracle:
    class_path: seiko.oracles.NoisyOracle
    init_args:
      sigma: 0.2
      oracle:
        class_path: seiko.oracles.FunctionOracle
        init_args:
          fn: {__name__}.length_score
"""
    holder = parser.instantiate(parser.parse_string(yaml)).holder
    assert isinstance(holder.oracle, NoisyOracle)
    assert holder.oracle.oracle.fn is length_score

    config = parser.parse_string(f"holder: {{oracle: {{class_path: {__name__}.LengthOracle}}}}")
    assert isinstance(parser.instantiate(config).holder.oracle, LengthOracle)

    # a bare function path reaches the callback as the function; load_oracle wraps it
    config = parser.parse_string(f"holder: {{oracle: {__name__}.length_score}}")
    oracle = load_oracle(parser.instantiate(config).holder.oracle)
    assert isinstance(oracle, FunctionOracle) and oracle.fn is length_score


def test_load_oracle_leaves_a_nested_spec_unchanged():
    spec = {
        "class_path": "seiko.oracles.molecules.MultiPropertyOracle",
        "init_args": {
            "objectives": [{"property": "qed", "transform": "linear", "low": 0, "high": 1}]
        },
    }
    before = copy.deepcopy(spec)
    oracle = load_oracle(spec)
    assert spec == before  # the caller's mapping (e.g. a task table) is not turned into Namespaces
    assert isinstance(spec["init_args"], dict)
    assert float(oracle(["CCO"])[0]) > 0
