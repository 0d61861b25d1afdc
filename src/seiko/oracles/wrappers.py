"""Composable oracle wrappers, robust evaluation, and loading a user's oracle from a spec.

Every wrapper is itself an ``Oracle`` and offers ``measure(designs) -> Measurement``; the helper
``measure(oracle, designs)`` gives the same for any oracle, so callers never need to know which
kind they hold::

    oracle = ParallelOracle(NoisyOracle(FunctionOracle("mypkg.scores.qed"), sigma=0.1), workers=8)
    m = measure(oracle, designs)   # m.values (noisy), m.noise_free, m.errors
"""

from __future__ import annotations

import concurrent.futures
import copy
import functools
import hashlib
import inspect
import logging
import math
import multiprocessing
import pickle
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seiko.oracles.base import FunctionOracle, Measurement, Oracle, as_float, error_text

log = logging.getLogger(__name__)

OracleSpec = Oracle | Callable[[Any], Any] | str | Mapping[str, Any]


def _as_values(oracle_name: str, answer: Any, n: int) -> Tensor:
    """An oracle's answer for n designs as an (n,) float64 tensor, or a clear ValueError."""
    if isinstance(answer, np.ndarray) and answer.dtype.kind in "biuf":
        answer = torch.from_numpy(answer)
    if isinstance(answer, Tensor):
        if answer.is_complex() or answer.ndim != 1:
            raise ValueError(
                f"oracle {oracle_name!r} returned a {answer.dtype} tensor of shape "
                f"{tuple(answer.shape)}; expected a 1-D float tensor of {n} values"
            )
        values = answer.detach().to("cpu", torch.float64)
    elif isinstance(answer, (list, tuple)):
        values = torch.tensor(
            [as_float(oracle_name, value, i) for i, value in enumerate(answer)], dtype=torch.float64
        )
    else:
        raise ValueError(
            f"oracle {oracle_name!r} returned a non-numeric answer: a {type(answer).__name__}"
            f"{' of ' + str(answer.dtype) if hasattr(answer, 'dtype') else ''}; expected a 1-D "
            f"float tensor of {n} values"
        )
    if len(values) != n:
        raise ValueError(
            f"oracle {oracle_name!r} returned {len(values)} values for {n} designs; expected "
            f"one value per design (NaN for an infeasible one)"
        )
    return values


def measure(oracle: Oracle, designs: Sequence[Any]) -> Measurement:
    """Ask ``oracle`` about ``designs``, robustly.

    An oracle with a ``measure`` method (the wrappers, ``FunctionOracle``, or a user's oracle that
    knows its noise-free values) is asked through it. Otherwise the oracle is called on the whole
    batch; if that raises, each design is retried alone, and a design that still raises is
    infeasible (NaN) with its error text. ``noise_free`` is then None (unknown).

    Args:
        oracle: any ``Oracle``.
        designs: N designs.

    Returns:
        The ``Measurement`` of the N designs.

    Raises:
        ValueError: the oracle answered with the wrong number of values or with non-numbers
            (a bug in the oracle, not a bad design, so it is not retried).
    """
    n = len(designs)
    if n == 0:
        return Measurement(torch.empty(0, dtype=torch.float64), None, [])
    own_measure = getattr(oracle, "measure", None)
    if callable(own_measure):
        result = own_measure(designs)
        if len(result) != n:
            raise ValueError(
                f"oracle {oracle.name!r} measured {len(result)} designs for {n} given; expected "
                f"one per design"
            )
        return result
    try:
        answer = oracle(designs)
    except Exception as batch_error:
        if n == 1:
            return Measurement(
                torch.full((1,), math.nan, dtype=torch.float64), None, [error_text(batch_error)]
            )
        log.warning(
            "oracle %r raised on a batch of %d designs (%s); retrying design by design",
            oracle.name,
            n,
            error_text(batch_error),
        )
        return _measure_one_by_one(oracle, designs)
    return Measurement(_as_values(oracle.name, answer, n), None, [None] * n)


def _measure_one_by_one(oracle: Oracle, designs: Sequence[Any]) -> Measurement:
    values: list[float] = []
    errors: list[str | None] = []
    for design in designs:
        try:
            answer = oracle([design])
        except Exception as error:
            values.append(math.nan)
            errors.append(error_text(error))
            continue
        values.append(float(_as_values(oracle.name, answer, 1)[0]))
        errors.append(None)
    return Measurement(torch.tensor(values, dtype=torch.float64), None, errors)


def load_oracle(spec: OracleSpec) -> Oracle:
    """The oracle a user names, in any of the forms a config or a script gives it.

    ``spec`` may be:

    * an ``Oracle`` instance: returned as is;
    * a plain function ``fn(design) -> float | None``: wrapped in ``FunctionOracle``;
    * a dotted import path string: of an oracle class (instantiated with its defaults), e.g.
      ``"mypkg.oracles.DockingOracle"``, or of a per-design function, e.g.
      ``"mypkg.scores.my_score"`` (wrapped in ``FunctionOracle``);
    * a mapping ``{"class_path": ..., "init_args": {...}}``, exactly as in a LightningCLI YAML
      (nested oracles of wrappers included).

    Strings and mappings are resolved by jsonargparse, the parser LightningCLI uses, so a spec
    means the same here and in a YAML. A callback argument typed ``Oracle`` receives, from a YAML,
    an oracle instance or (for a function path) the function itself; passing it through
    ``load_oracle`` makes both an ``Oracle``.

    Raises:
        ValueError: the spec cannot be imported or instantiated (the parser's reason included).
        TypeError: the object is neither an ``Oracle`` nor a plain function.
    """
    if isinstance(spec, (str, Mapping)):
        # imported here: ParallelOracle's workers import this module and never need the parser
        from jsonargparse import ArgumentParser

        parser = ArgumentParser(exit_on_error=False)
        parser.add_argument("--oracle", type=Oracle, required=True)
        # a deep copy: the parser turns nested mappings of what it is given into Namespaces
        given = spec if isinstance(spec, str) else copy.deepcopy(dict(spec))
        try:
            obj = parser.instantiate(parser.parse_object({"oracle": given})).oracle
        except Exception as error:  # jsonargparse's ArgumentError, or the oracle's own __init__
            raise ValueError(f"cannot load an oracle from {spec!r}: {error}") from error
    else:
        obj = spec
    if inspect.isclass(obj):  # a class would pass the protocol check below through class attributes
        raise TypeError(
            f"got the class {obj.__qualname__}; pass an instance, or its import path string to "
            f"instantiate it with its defaults"
        )
    if isinstance(obj, Oracle):
        return obj
    if inspect.isroutine(obj) or isinstance(obj, functools.partial):
        return FunctionOracle(obj)
    missing = [attr for attr in ("name", "higher_is_better", "__call__") if not hasattr(obj, attr)]
    raise TypeError(
        f"{obj!r} is not an oracle: it lacks {missing}. An oracle class needs a `name`, a "
        f"`higher_is_better` and `__call__(designs) -> (N,) float tensor`; a plain per-design "
        f"function is wrapped in FunctionOracle"
    )


def _noise_key(design: Any) -> bytes:
    if isinstance(design, str):
        return design.encode("utf-8")
    if isinstance(design, bytes):
        return design
    return pickle.dumps(design, protocol=4)


def design_noise(designs: Sequence[Any], seed: int) -> Tensor:
    """A standard normal draw per design, a fixed function of (seed, design).

    Keying the noise on the design (not on a running generator) makes a noisy answer independent of
    batch order, of how ``ParallelOracle`` chunks a batch, and of a restart: a resumed run does not
    replay the noise of its first rounds. Distinct designs get independent draws; a design is never
    paid twice, so repeated queries of one design do not arise. Designs that are neither ``str``
    nor ``bytes`` are keyed by their pickle, which must be deterministic (it is for PIL images and
    numpy arrays).

    Returns:
        (N,) float64 standard normal noise.
    """
    seed_key = str(int(seed)).encode()
    noise = []
    for design in designs:
        digest = hashlib.blake2b(_noise_key(design), digest_size=16, key=seed_key).digest()
        # two uniforms in (0, 1) with 53-bit resolution -> Box-Muller
        u1 = ((int.from_bytes(digest[:8], "little") >> 11) + 0.5) / 2**53
        u2 = ((int.from_bytes(digest[8:], "little") >> 11) + 0.5) / 2**53
        noise.append(math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2))
    return torch.tensor(noise, dtype=torch.float64)


class NoisyOracle:
    """Adds N(0, sigma^2) label noise to an oracle's answers (the paper's noisy-feedback setting).

    The noise-free answers stay available for evaluation through ``measure(designs).noise_free``.
    Infeasible designs stay NaN. The noise of a design is a fixed function of (seed, design), see
    ``design_noise``.

    Args:
        oracle: the noise-free oracle (any ``load_oracle`` spec).
        sigma: the noise's standard deviation, >= 0.
        seed: selects the noise realisation.
        name: recorded with every answer; default ``"<oracle name>+noise(sigma=<sigma>)"``, so noisy
            and noise-free answers are never mixed under one name in a FeedbackStore.
    """

    def __init__(
        self, oracle: Oracle, sigma: float, seed: int = 0, name: str | None = None
    ) -> None:
        if not sigma >= 0:
            raise ValueError(f"NoisyOracle needs sigma >= 0, got {sigma}")
        self.oracle = load_oracle(oracle)
        self.sigma = float(sigma)
        self.seed = int(seed)
        self.name = name or f"{self.oracle.name}+noise(sigma={self.sigma:g})"
        self.higher_is_better = self.oracle.higher_is_better

    def __repr__(self) -> str:
        return f"NoisyOracle({self.oracle!r}, sigma={self.sigma:g}, seed={self.seed})"

    def __getattr__(self, name: str) -> Any:
        # the inner oracle's free screen (``fits``), where it has one; nothing else is forwarded
        if name == "fits":
            return self.__dict__["oracle"].fits
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def measure(self, designs: Sequence[Any]) -> Measurement:
        """Noisy values, the noise-free ones, and the inner oracle's error texts."""
        inner = measure(self.oracle, designs)
        # a noisy oracle wrapped in another one keeps the innermost noise-free values
        noise_free = inner.values if inner.noise_free is None else inner.noise_free
        values = inner.values + self.sigma * design_noise(designs, self.seed)
        return Measurement(values, noise_free, inner.errors)

    def __call__(self, designs: Sequence[Any]) -> Tensor:
        """(N,) float64 noisy values, NaN where a design is infeasible."""
        return self.measure(designs).values


class ProductOracle:
    """The product of several oracles' answers: an objective gated by constraints in [0, 1].

    A design is NaN (infeasible) when any factor is, with the first factor's reason. Typical use
    is one open-ended objective times a probability that the design is still what it should be,
    e.g. the MNIST task "an incompressible 3": ``JPEGIncompressibility`` (kB) times
    ``DigitConfidence(target=3)``, so noise alone (which raises the JPEG size) does not pay
    unless the image still reads as a 3.

    Args:
        oracles: two or more oracles (any ``load_oracle`` spec), all maximised
            (``higher_is_better``); a factor meant as a constraint should be in [0, 1].
        name: recorded with every answer; default the factors' names joined by ``*``.
    """

    higher_is_better = True

    def __init__(self, oracles: Sequence[Oracle], name: str | None = None) -> None:
        if isinstance(oracles, (str, Mapping)) or len(oracles) < 2:
            raise ValueError(f"ProductOracle needs a list of two or more oracles, got {oracles!r}")
        self.oracles = [load_oracle(oracle) for oracle in oracles]
        lower = [o.name for o in self.oracles if not getattr(o, "higher_is_better", True)]
        if lower:
            raise ValueError(
                f"ProductOracle multiplies answers that are maximised; {lower} are minimised "
                f"(higher_is_better False): wrap them so that higher is better first"
            )
        self.name = name or "*".join(o.name for o in self.oracles)

    def __repr__(self) -> str:
        return f"ProductOracle({self.oracles!r})"

    def measure(self, designs: Sequence[Any]) -> Measurement:
        """The product of the factors' values (noise-free product too when a factor is noisy)."""
        parts = [measure(oracle, designs) for oracle in self.oracles]
        values = torch.ones(len(designs), dtype=torch.float64)
        noise_free = torch.ones(len(designs), dtype=torch.float64)
        for part in parts:
            values = values * part.values
            noise_free = noise_free * (part.values if part.noise_free is None else part.noise_free)
        errors: list[str | None] = [None] * len(designs)
        for part in parts:
            if part.errors is not None:
                errors = [mine or theirs for mine, theirs in zip(errors, part.errors, strict=True)]
        noisy = any(part.noise_free is not None for part in parts)
        return Measurement(values, noise_free if noisy else None, errors)

    def __call__(self, designs: Sequence[Any]) -> Tensor:
        """(N,) float64 products, NaN where any factor is infeasible."""
        return self.measure(designs).values


def _measure_chunk(
    oracle: Oracle, designs: Sequence[Any]
) -> tuple[list[float], list[float] | None, list[str | None]]:
    # Plain lists cross the process boundary: torch's shared-memory tensor pickling would hand the
    # parent file descriptors of a worker it does not control.
    result = measure(oracle, designs)
    noise_free = None if result.noise_free is None else result.noise_free.tolist()
    return result.values.tolist(), noise_free, result.errors


class ParallelOracle:
    """Evaluates a batch in chunks on a pool of worker processes.

    Workers are started with ``spawn`` (safe with torch threads and CUDA on every platform) on the
    first call and reused; ``close()`` (or a ``with`` block) stops them. The wrapped oracle is
    pickled to the workers, so it must be picklable: defined at module level in an importable
    module, with no lambdas, open files or live connections among its attributes. Each chunk is
    evaluated robustly (see ``measure``) inside its worker.

    Args:
        oracle: the oracle to parallelise (any ``load_oracle`` spec).
        workers: number of worker processes, >= 1.
        chunk_size: designs per task; default: the batch split evenly over the workers.
    """

    def __init__(self, oracle: Oracle, workers: int = 2, chunk_size: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"ParallelOracle needs workers >= 1, got {workers}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"ParallelOracle needs chunk_size >= 1 or None, got {chunk_size}")
        self.oracle = load_oracle(oracle)
        try:
            pickle.dumps(self.oracle)
        except Exception as error:
            raise TypeError(
                f"ParallelOracle sends its oracle to worker processes, so the oracle must be "
                f"picklable, but pickling oracle {self.oracle.name!r} "
                f"({type(self.oracle).__qualname__}) failed: {error_text(error)}. Define the "
                f"oracle (and any function it holds) at module level in an importable module, "
                f"not as a lambda or a local function"
            ) from error
        self.workers = workers
        self.chunk_size = chunk_size
        self.name = self.oracle.name  # parallelism does not change the answers
        self.higher_is_better = self.oracle.higher_is_better
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"ParallelOracle({self.oracle!r}, workers={self.workers})"

    def __getattr__(self, name: str) -> Any:
        # the inner oracle's free screen (``fits``), where it has one; nothing else is forwarded
        if name == "fits":
            return self.__dict__["oracle"].fits
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def measure(self, designs: Sequence[Any]) -> Measurement:
        """Measure ``designs`` in parallel; the result is aligned with ``designs``."""
        designs = list(designs)
        if not designs:
            return measure(self.oracle, designs)
        size = self.chunk_size or math.ceil(len(designs) / self.workers)
        chunks = [designs[i : i + size] for i in range(0, len(designs), size)]
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn")
            )
        try:
            parts = list(self._pool.map(_measure_chunk, [self.oracle] * len(chunks), chunks))
        except BrokenProcessPool as error:
            self.close()
            raise RuntimeError(
                f"a worker process of ParallelOracle died while evaluating oracle "
                f"{self.name!r} (killed, out of memory, or a crash in native code)"
            ) from error
        values = [v for part_values, _, _ in parts for v in part_values]
        errors = [e for _, _, part_errors in parts for e in part_errors]
        noise_free = None
        if all(part_noise_free is not None for _, part_noise_free, _ in parts):
            noise_free = torch.tensor(
                [v for _, part_noise_free, _ in parts for v in part_noise_free],
                dtype=torch.float64,
            )
        return Measurement(torch.tensor(values, dtype=torch.float64), noise_free, errors)

    def __call__(self, designs: Sequence[Any]) -> Tensor:
        """(N,) float64 values, NaN where a design is infeasible."""
        return self.measure(designs).values

    def close(self) -> None:
        """Stop the worker processes (a later call starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> ParallelOracle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # a copy (deepcopy, pickling into a DDP worker) starts its own pool
        return {**self.__dict__, "_pool": None}
