"""Fixtures shared by the oracle tests."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable

import pytest
import torch


@pytest.fixture
def run_then_sigkill() -> Callable[[Callable[[], object]], None]:
    """Run an action in a forked child that then SIGKILLs itself (no cleanup, no atexit).

    Fork rather than a fresh interpreter: the child needs no second ``import torch``, and the
    parent, a different process, is what reopens the store afterwards.
    """
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("needs SIGKILL and fork (POSIX)")

    def run(action: Callable[[], object]) -> None:
        def child() -> None:
            action()
            os.kill(os.getpid(), signal.SIGKILL)

        process = multiprocessing.get_context("fork").Process(target=child)
        process.start()
        process.join(timeout=60)
        assert process.exitcode == -signal.SIGKILL, f"child exited with {process.exitcode}"

    return run


@pytest.fixture
def assert_same() -> Callable[[torch.Tensor, torch.Tensor | list[float]], None]:
    """Exact float64 equality with NaN equal to NaN.

    Plain comparisons rather than ``torch.testing.assert_close``, whose first call imports sympy
    for seconds.
    """

    def check(actual: torch.Tensor, expected: torch.Tensor | list[float]) -> None:
        expected = torch.as_tensor(expected, dtype=torch.float64)
        assert actual.dtype == torch.float64, actual.dtype
        same = actual.shape == expected.shape and torch.equal(actual.isnan(), expected.isnan())
        assert same and torch.equal(actual.nan_to_num(), expected.nan_to_num()), (
            f"{actual.tolist()} != {expected.tolist()}"
        )

    return check
