"""Ground-truth oracles: the protocol, wrappers and the domain oracles."""

from seiko.oracles.base import FunctionOracle, Oracle

__all__ = ["FunctionOracle", "Oracle"]
