"""Ground-truth oracles: the protocol, wrappers, the feedback store and the budget ledger."""

from seiko.oracles.base import FunctionOracle, Measurement, Oracle
from seiko.oracles.ledger import LedgerReport, OracleLedger
from seiko.oracles.store import OFFLINE_ROUND, FeedbackRow, FeedbackStore
from seiko.oracles.wrappers import (
    NoisyOracle,
    OracleSpec,
    ParallelOracle,
    ProductOracle,
    design_noise,
    load_oracle,
    measure,
)

__all__ = [
    "OFFLINE_ROUND",
    "FeedbackRow",
    "FeedbackStore",
    "FunctionOracle",
    "LedgerReport",
    "Measurement",
    "NoisyOracle",
    "Oracle",
    "OracleLedger",
    "OracleSpec",
    "ParallelOracle",
    "ProductOracle",
    "design_noise",
    "load_oracle",
    "measure",
]
