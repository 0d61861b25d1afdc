"""``FeedbackStore``: every oracle answer of a run, kept forever in one SQLite file.

It is the single source of truth for what was measured. The file lives in the run directory; a
resumed run opens the same path and continues, reusing every paid answer. Each ``add`` is one
transaction committed (with ``synchronous=FULL``, in WAL mode) before it returns, so a crash or a
SIGKILL right after it loses nothing.

One row per query::

    id | round | design | value | noise_free | feasible | error | oracle | time | source |
        design_hash

``design`` is the canonical string form of the design (the caller canonicalises; the store keeps
what it is given); ``value`` is NULL for an infeasible design; ``noise_free`` is NULL when unknown;
``source`` is ``"oracle"`` for a paid query or ``"offline"`` for warm-start data (``import_rows``),
which counts as already paid and not against a budget. A design is stored at most once per oracle.

Each row also holds ``design_hash``, the SHA-256 of the design's UTF-8 bytes (a 32-byte BLOB), and
the UNIQUE index is on ``(design_hash, oracle)``: a key is stored once, in ``design``, however long
it is (an image's PNG data URI is 0.5 MB at 512 x 512; an index on ``design`` itself held a second
copy of every key). Designs are looked up by hash, then compared in full, so a hash collision can
never merge two designs: a design whose SHA-256 equals a different stored (or batched) design's,
for the same oracle, is refused with a ``ValueError`` naming both, before the oracle is paid for it
when the caller looks it up first (as ``OracleLedger`` does).

Schema versions (``PRAGMA user_version``): 1, ``UNIQUE (design, oracle)``; 2, the hashed index. A
version-1 file is migrated when a ``FeedbackStore`` opens it for writing, once, in one transaction
(a crash during it leaves the version-1 store as it was), then vacuumed to give back the old index's
space; read-only opens (``import_rows``) read either version without changing the file.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

Source = Literal["oracle", "offline"]

OFFLINE_ROUND = -1
"""The round of offline (warm-start) rows: before the first round of the run."""

log = logging.getLogger(__name__)

_SCHEMA_VERSION = 2
_SQLITE_MAGIC = b"SQLite format 3\x00"
# SQLite limits the number of ``?`` parameters of one statement (999 in old builds)
_QUERY_CHUNK = 500
# version 1 had ``UNIQUE (design, oracle)`` here, which SQLite cannot drop from a table, so the
# migration rebuilds the table (its name is the placeholder)
_CREATE_TABLE = """
CREATE TABLE {table} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    round INTEGER NOT NULL,
    design TEXT NOT NULL,
    value REAL,
    noise_free REAL,
    feasible INTEGER NOT NULL CHECK (feasible IN (0, 1)),
    error TEXT,
    oracle TEXT NOT NULL,
    time REAL NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('oracle', 'offline')),
    design_hash BLOB NOT NULL CHECK (typeof(design_hash) = 'blob' AND length(design_hash) = 32)
)
"""
_CREATE_INDEX = "CREATE UNIQUE INDEX feedback_design_hash ON feedback (design_hash, oracle)"


@dataclass(frozen=True)
class FeedbackRow:
    """One stored query.

    Attributes:
        id: insertion order (1, 2, ...).
        round: the round that paid the query; ``OFFLINE_ROUND`` for warm-start rows.
        design: the design's canonical string.
        value: the answer, NaN for an infeasible design.
        noise_free: the answer without label noise, None when unknown (or infeasible).
        feasible: whether ``value`` is a number.
        error: the error text of a design whose evaluation raised, else None.
        oracle: the oracle's name.
        time: unix time of the ``add``.
        source: ``"oracle"`` (paid) or ``"offline"`` (warm start).
    """

    id: int
    round: int
    design: str
    value: float
    noise_free: float | None
    feasible: bool
    error: str | None
    oracle: str
    time: float
    source: str


_COLUMNS = [field.name for field in fields(FeedbackRow)]
_COLUMNS_OF_VERSION = {1: _COLUMNS, 2: [*_COLUMNS, "design_hash"]}


def _design_hash(design: str) -> bytes:
    """The 32-byte SHA-256 of a design's UTF-8 bytes (the bytes SQLite stores for the text)."""
    return hashlib.sha256(design.encode("utf-8")).digest()


def _collision(path: Path, oracle: str | None, design: str, other: str) -> ValueError:
    of_oracle = "" if oracle is None else f" for oracle {oracle!r}"
    return ValueError(
        f"{path}: design {_preview(design)} has the same SHA-256 as the different design "
        f"{_preview(other)}{of_oracle}; the store deduplicates designs by SHA-256 and never "
        f"merges two, so it cannot hold both"
    )


def _preview(design: str) -> str:
    """A design for an error message: a PNG data URI is half a megabyte."""
    return repr(design) if len(design) <= 80 else f"{design[:60]!r}... ({len(design)} characters)"


def _row(record: tuple[Any, ...]) -> FeedbackRow:
    id_, round_, design, value, noise_free, feasible, error, oracle, time_, source = record
    value = math.nan if value is None else value
    return FeedbackRow(
        id_, round_, design, value, noise_free, bool(feasible), error, oracle, time_, source
    )


def _floats(values: Tensor | Sequence[float | None], n: int, what: str) -> list[float | None]:
    """Values as Python floats, NaN and None as None (SQL NULL)."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().tolist()
    if len(values) != n:
        raise ValueError(f"got {len(values)} {what} for {n} designs")
    return [None if v is None or math.isnan(v) else float(v) for v in values]


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit) to a checked FeedbackStore file.

    The schema is checked before anything is written, so another program's SQLite file (or a
    store of a newer schema version) is refused untouched. A writable connection creates the
    schema in an empty file and migrates an older store (see the module docstring).
    """
    try:
        if readonly:
            connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        else:
            connection = sqlite3.connect(path, timeout=60.0, isolation_level=None)
    except sqlite3.Error as error:
        raise ValueError(f"cannot open {path} as a FeedbackStore: {error}") from error
    try:
        version = _schema_version(connection, path, allow_empty=not readonly)
        if not readonly:
            # WAL: readers never block the writer; FULL: a commit survives power loss too. Where a
            # file system cannot do WAL, SQLite keeps its rollback journal, which is as durable.
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            if version < _SCHEMA_VERSION:
                _upgrade(connection, path)
    except sqlite3.DatabaseError as error:
        connection.close()
        raise ValueError(
            f"{path} is not a readable FeedbackStore (SQLite) database: {error}"
        ) from error
    except BaseException:
        connection.close()
        raise
    return connection


def _schema_version(connection: sqlite3.Connection, path: Path, allow_empty: bool) -> int:
    """The file's FeedbackStore schema version, 0 for an empty database (when allowed).

    Raises:
        ValueError: a store of a newer version, or a database that is not a FeedbackStore.
    """
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    tables = [name for (name,) in connection.execute("SELECT name FROM sqlite_master")]
    if allow_empty and version == 0 and not tables:
        return 0
    if version > _SCHEMA_VERSION and "feedback" in tables:
        raise ValueError(
            f"{path} is a FeedbackStore of schema version {version}, written by a newer seiko; "
            f"this one reads schema versions 1 to {_SCHEMA_VERSION} (upgrade seiko to open it)"
        )
    columns = [row[1] for row in connection.execute("PRAGMA table_info(feedback)")]
    if columns != _COLUMNS_OF_VERSION.get(version):
        raise ValueError(
            f"{path} is an SQLite database but not a FeedbackStore of schema version 1 to "
            f"{_SCHEMA_VERSION}: its 'feedback' table has columns {columns} and user_version "
            f"{version}; expected columns {_COLUMNS_OF_VERSION[_SCHEMA_VERSION]} (version "
            f"{_SCHEMA_VERSION}) or {_COLUMNS_OF_VERSION[1]} (version 1)"
        )
    return version


def _upgrade(connection: sqlite3.Connection, path: Path) -> None:
    """Create the schema in an empty file, or migrate a version-1 store, in one transaction."""
    version = None
    connection.execute("BEGIN IMMEDIATE")
    try:
        # checked again under the write lock: another process may have done it meanwhile
        version = _schema_version(connection, path, allow_empty=True)
        if version == 0:
            connection.execute(_CREATE_TABLE.format(table="feedback"))
            connection.execute(_CREATE_INDEX)
        elif version == 1:
            _migrate_from_version_1(connection)
        connection.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException as error:
        if connection.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
            connection.execute("ROLLBACK")
        if version == 1 and isinstance(error, sqlite3.Error):
            raise ValueError(
                f"{path}: migrating the FeedbackStore from schema version 1 to {_SCHEMA_VERSION} "
                f"failed, and the file was left a version-1 store, unchanged: {error}"
            ) from error
        raise
    if version == 1:
        log.info("migrated %s to FeedbackStore schema version %d", path, _SCHEMA_VERSION)
        try:
            # the old index's pages are free now: give them back (its own transaction, atomic)
            connection.execute("VACUUM")
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as error:  # e.g. no disk space for its copy: harmless
            log.warning(
                "%s: migrated, but VACUUM failed (the file keeps its size): %s", path, error
            )


def _migrate_from_version_1(connection: sqlite3.Connection) -> None:
    """Rebuild the version-1 table with ``design_hash`` (inside the caller's transaction).

    Version 1's ``UNIQUE (design, oracle)`` is a table constraint, whose index cannot be dropped,
    so the rows (ids included) move to a new table. Its AUTOINCREMENT counter is carried over, so
    an id is never reused.
    """
    # a Python function (looked up per call, so tests can replace ``_design_hash``)
    connection.create_function(
        "seiko_design_hash", 1, lambda design: _design_hash(design), deterministic=True
    )
    counter = connection.execute(
        "SELECT seq FROM sqlite_sequence WHERE name = 'feedback'"
    ).fetchone()
    columns = ", ".join(_COLUMNS)
    connection.execute(_CREATE_TABLE.format(table="feedback_version_2"))
    connection.execute(
        f"INSERT INTO feedback_version_2 ({columns}, design_hash) "
        f"SELECT {columns}, seiko_design_hash(design) FROM feedback ORDER BY id"
    )
    connection.execute("DROP TABLE feedback")
    connection.execute("ALTER TABLE feedback_version_2 RENAME TO feedback")
    connection.execute(_CREATE_INDEX)
    if counter is not None:
        connection.execute("DELETE FROM sqlite_sequence WHERE name = 'feedback'")
        connection.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('feedback', ?)", (counter[0],)
        )


class FeedbackStore:
    """Every oracle answer of a run, in an SQLite file (see the module docstring).

    Methods that select by oracle take ``oracle=None`` to mean "the store's only oracle"; they
    raise if the store holds answers of several oracles, rather than mix them.

    Designs are deduplicated by the SHA-256 of their key and then compared in full: two different
    designs are never merged, even if their hashes collide (such a design is refused loudly).

    Args:
        path: the database file, created (with its parent folders) if missing; a store of schema
            version 1 is migrated to the current version once (see the module docstring).

    Raises:
        ValueError: the file exists but is not a FeedbackStore database (corrupt, or another
            program's SQLite file), or is a store of a newer schema version, or its migration
            failed (the file is then unchanged); the message names the file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = _connect(self.path, readonly=False)

    def __repr__(self) -> str:
        return f"FeedbackStore({str(self.path)!r})"

    def __reduce__(self) -> tuple[type[FeedbackStore], tuple[str]]:
        # a copy in another process (e.g. a spawned DDP worker) opens the same file
        return FeedbackStore, (str(self.path),)

    def close(self) -> None:
        """Close the connection (everything added is already committed)."""
        self._connection.close()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing
    def add(
        self,
        round: int,
        designs: Sequence[str],
        values: Tensor | Sequence[float | None],
        noise_free: Tensor | Sequence[float | None] | None = None,
        errors: Sequence[str | None] | None = None,
        *,
        oracle: str,
        source: Source = "oracle",
    ) -> None:
        """Record a batch of answers in one transaction, committed before returning.

        Args:
            round: the round that paid for the batch.
            designs: N canonical design strings, none already stored for ``oracle``.
            values: N answers, NaN (or None) for an infeasible design.
            noise_free: N answers without label noise, or None when unknown.
            errors: N error texts (None where the design evaluated fine), or None.
            oracle: the oracle's name.
            source: ``"oracle"`` for paid queries, ``"offline"`` for warm-start data.

        Raises:
            ValueError: mismatched lengths, a non-string design, an unknown source, a design
                already stored for this oracle, or one whose SHA-256 collides with a different
                design's (then nothing of the batch is stored).
        """
        n = len(designs)
        for index, design in enumerate(designs):
            if not isinstance(design, str):
                raise ValueError(
                    f"design {index} is a {type(design).__name__}; the store keeps canonical "
                    f"strings (canonicalise designs before adding them)"
                )
        if source not in ("oracle", "offline"):
            raise ValueError(f"source={source!r} is not one of ('oracle', 'offline')")
        if not isinstance(oracle, str) or not oracle:
            raise ValueError(f"oracle must be a non-empty name, got {oracle!r}")
        value_list = _floats(values, n, "values")
        noise_free_list = [None] * n if noise_free is None else _floats(noise_free, n, "noise_free")
        error_list = [None] * n if errors is None else list(errors)
        if len(error_list) != n:
            raise ValueError(f"got {len(error_list)} errors for {n} designs")
        repeated = [design for design, count in Counter(designs).items() if count > 1]
        stored = list(self.lookup(designs, oracle=oracle))
        if repeated or stored:
            raise ValueError(
                f"{self.path}: nothing added; a design is stored at most once per oracle, but "
                f"the batch repeats {repeated[:5]} and already holds {stored[:5]} for oracle "
                f"{oracle!r} (look designs up first, as OracleLedger does)"
            )
        now = time.time()
        records = [
            (round, d, v, nf, int(v is not None), e, oracle, now, source)
            for d, v, nf, e in zip(designs, value_list, noise_free_list, error_list, strict=True)
        ]
        self._insert(records, ignore_stored=False)

    def _insert(self, records: list[tuple[Any, ...]], ignore_stored: bool) -> int:
        """Insert rows (all columns but id and hash) in one committed transaction.

        With ``ignore_stored``, a design already stored for its oracle is skipped (the stored row
        stays). A design whose hash collides with a different design's raises, checked under the
        write lock so no other process can slip one in between.

        Returns:
            The number of rows added.
        """
        verb = "INSERT OR IGNORE" if ignore_stored else "INSERT"
        hashed = [(*record, _design_hash(record[1])) for record in records]
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            self._check_no_collision(hashed)
            before = connection.total_changes
            connection.executemany(
                f"{verb} INTO feedback ({', '.join(_COLUMNS[1:])}, design_hash) "
                f"VALUES (?,?,?,?,?,?,?,?,?,?)",
                hashed,
            )
            added = connection.total_changes - before
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return added

    def _check_no_collision(self, hashed: list[tuple[Any, ...]]) -> None:
        """Raise if two different designs of one oracle, stored or in ``hashed``, share a hash."""
        # (design_hash, oracle) -> design, of the batch, then checked against the stored rows
        seen: dict[tuple[bytes, str], str] = {}
        for record in hashed:
            design, oracle, digest = record[1], record[6], record[-1]
            other = seen.setdefault((digest, oracle), design)
            if other != design:
                raise _collision(self.path, oracle, design, other)
        digests = list(dict.fromkeys(digest for digest, _ in seen))
        for start in range(0, len(digests), _QUERY_CHUNK):
            chunk = digests[start : start + _QUERY_CHUNK]
            query = (
                f"SELECT design_hash, oracle, design FROM feedback "
                f"WHERE design_hash IN ({', '.join('?' * len(chunk))})"
            )
            for digest, oracle, stored in self._connection.execute(query, chunk):
                design = seen.get((digest, oracle))
                if design is not None and design != stored:
                    raise _collision(self.path, oracle, design, stored)

    def import_rows(self, other: str | os.PathLike[str], oracle: str | None = None) -> int:
        """Add offline warm-start rows from another store or a table of measurements.

        Imported rows count as already paid: ``spent()`` ignores them, and a design among them is
        never queried again. A design already stored for the same oracle keeps its stored row.

        Args:
            other: a FeedbackStore ``.sqlite`` file, or a ``.csv`` / ``.parquet`` table with
                columns ``design`` and ``value`` (empty / NaN = infeasible), and optionally
                ``noise_free``, ``error`` and ``oracle`` (what ``to_csv`` / ``to_parquet`` write).
            oracle: the oracle name given to every imported row; default: the rows' own
                ``oracle`` column (required then).

        Returns:
            The number of rows added.

        Raises:
            FileNotFoundError: ``other`` does not exist.
            ValueError: an unsupported format, missing columns, a non-numeric value, no oracle
                name, or a design whose SHA-256 collides with a different design's (then nothing
                is added); the message names the file.
        """
        source = Path(other)
        if not source.is_file():
            raise FileNotFoundError(f"{source} does not exist (import_rows needs a file)")
        if source.resolve() == self.path.resolve():
            raise ValueError(f"{source} is this store's own file; nothing to import")
        with open(source, "rb") as handle:
            is_sqlite = handle.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
        if is_sqlite:
            records = _read_store(source)
        elif source.suffix.lower() == ".csv":
            records = _read_csv(source)
        elif source.suffix.lower() == ".parquet":
            records = _read_parquet(source)
        else:
            raise ValueError(
                f"{source}: cannot import; expected a FeedbackStore SQLite file, a .csv or a "
                f".parquet table"
            )
        now = time.time()
        rows = []
        for line, (design, value, noise_free, error, row_oracle) in records:
            name = oracle or row_oracle
            if not name:
                raise ValueError(
                    f"{source}, row {line}: no oracle name (no 'oracle' column); pass oracle="
                )
            rows.append(
                (
                    OFFLINE_ROUND,
                    design,
                    value,
                    noise_free,
                    int(value is not None),
                    error,
                    name,
                    now,
                    "offline",
                )
            )
        return self._insert(rows, ignore_stored=True)

    # ------------------------------------------------------------------ reading
    def oracles(self) -> list[str]:
        """The names of the oracles with stored answers, sorted."""
        query = "SELECT DISTINCT oracle FROM feedback ORDER BY oracle"
        return [name for (name,) in self._connection.execute(query)]

    def _oracle_filter(self, oracle: str | None) -> tuple[str, tuple[str, ...]]:
        """SQL condition and parameters selecting one oracle's rows (see the class docstring)."""
        if oracle is not None:
            return "oracle = ?", (oracle,)
        names = self.oracles()
        if len(names) > 1:
            raise ValueError(
                f"{self.path} holds answers of several oracles {names}; pass oracle= to choose one"
            )
        return "1", ()

    def lookup(self, designs: Iterable[str], oracle: str | None = None) -> dict[str, float]:
        """The stored values of those ``designs`` that were measured (NaN if infeasible).

        Designs are found by their SHA-256 and compared in full, so a stored design is returned
        only for exactly its own key.

        Args:
            designs: canonical design strings; those never measured are absent from the result.
            oracle: whose answers; None: the store's only oracle.

        Raises:
            ValueError: several oracles and ``oracle=None``; or a design whose SHA-256 equals a
                different stored or requested design's (the store could not hold it, so it is
                refused before anyone pays to measure it).
        """
        condition, parameters = self._oracle_filter(oracle)
        by_hash: dict[bytes, str] = {}
        for design in dict.fromkeys(designs):
            if not isinstance(design, str):  # never stored (add takes strings only)
                continue
            other = by_hash.setdefault(_design_hash(design), design)
            if other != design:
                raise _collision(self.path, oracle, design, other)
        digests = list(by_hash)
        found: dict[str, float] = {}
        for start in range(0, len(digests), _QUERY_CHUNK):
            chunk = digests[start : start + _QUERY_CHUNK]
            query = (
                f"SELECT design_hash, oracle, design, value FROM feedback WHERE {condition} "
                f"AND design_hash IN ({', '.join('?' * len(chunk))})"
            )
            for digest, name, stored, value in self._connection.execute(
                query, (*parameters, *chunk)
            ):
                if stored != by_hash[digest]:
                    raise _collision(self.path, name, by_hash[digest], stored)
                found[stored] = math.nan if value is None else value
        return found

    def __contains__(self, design: object) -> bool:
        """Whether ``design`` was measured by any oracle."""
        if not isinstance(design, str):
            return False
        query = "SELECT 1 FROM feedback WHERE design_hash = ? AND design = ? LIMIT 1"
        parameters = (_design_hash(design), design)
        return self._connection.execute(query, parameters).fetchone() is not None

    def __len__(self) -> int:
        """The number of rows (paid and offline)."""
        return self._connection.execute("SELECT COUNT(*) FROM feedback").fetchone()[0]

    def spent(self, oracle: str | None = None) -> int:
        """The number of paid queries (offline rows excluded), of ``oracle`` or of all oracles."""
        query = "SELECT COUNT(*) FROM feedback WHERE source = 'oracle'"
        if oracle is None:
            return self._connection.execute(query).fetchone()[0]
        return self._connection.execute(query + " AND oracle = ?", (oracle,)).fetchone()[0]

    def designs_and_values(
        self, feasible_only: bool = False, oracle: str | None = None
    ) -> tuple[list[str], Tensor]:
        """All stored designs and their values, in insertion order (what a reward model fits).

        Args:
            feasible_only: drop infeasible designs.
            oracle: whose answers; None: the store's only oracle.

        Returns:
            N designs and an (N,) float64 tensor of their values (NaN where infeasible).
        """
        condition, parameters = self._oracle_filter(oracle)
        if feasible_only:
            condition += " AND feasible = 1"
        query = f"SELECT design, value FROM feedback WHERE {condition} ORDER BY id"
        records = self._connection.execute(query, parameters).fetchall()
        designs = [design for design, _ in records]
        values = [math.nan if value is None else value for _, value in records]
        return designs, torch.tensor(values, dtype=torch.float64)

    def rows(self, round: int | None = None, oracle: str | None = None) -> list[FeedbackRow]:
        """Stored rows in insertion order, optionally of one round and/or one oracle.

        ``round=OFFLINE_ROUND`` selects the warm-start rows; ``oracle=None`` means all oracles.
        """
        conditions, parameters = ["1"], []
        if round is not None:
            conditions.append("round = ?")
            parameters.append(round)
        if oracle is not None:
            conditions.append("oracle = ?")
            parameters.append(oracle)
        query = (
            f"SELECT {', '.join(_COLUMNS)} FROM feedback WHERE {' AND '.join(conditions)} "
            f"ORDER BY id"
        )
        return [_row(record) for record in self._connection.execute(query, parameters)]

    def rounds(self) -> list[int]:
        """The rounds that paid queries, ascending (offline rows have no round of the run)."""
        query = "SELECT DISTINCT round FROM feedback WHERE source = 'oracle' ORDER BY round"
        return [round_ for (round_,) in self._connection.execute(query)]

    # ------------------------------------------------------------------ export
    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write every row to a CSV file (NaN / None as empty cells); returns its path."""
        path = Path(path)
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(_COLUMNS)
            for row in self.rows():
                record = astuple(row)
                writer.writerow(
                    "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                    for v in record
                )
        return path

    def to_parquet(self, path: str | os.PathLike[str]) -> Path:
        """Write every row to a Parquet file (NaN for missing numbers); returns its path."""
        import pandas as pd

        path = Path(path)
        frame = pd.DataFrame([astuple(row) for row in self.rows()], columns=_COLUMNS)
        frame = frame.astype({"value": "float64", "noise_free": "float64", "feasible": "bool"})
        frame.to_parquet(path, index=False)
        return path


_Record = tuple[int, tuple[str, float | None, float | None, str | None, str | None]]


def _read_store(path: Path) -> list[_Record]:
    connection = _connect(path, readonly=True)
    try:
        query = "SELECT design, value, noise_free, error, oracle FROM feedback ORDER BY id"
        return [(index + 1, record) for index, record in enumerate(connection.execute(query))]
    finally:
        connection.close()


def _number(path: Path, line: int, column: str, cell: Any) -> float | None:
    """A table cell as a float, empty / NaN / None as None (infeasible or unknown)."""
    if cell is None or cell == "":
        return None
    try:
        value = float(cell)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}, row {line}: {column}={cell!r} is not a number") from error
    return None if math.isnan(value) else value


def _text(cell: Any) -> str | None:
    if cell is None or cell == "" or (isinstance(cell, float) and math.isnan(cell)):
        return None
    return str(cell)


def _table_records(path: Path, header: list[str], rows: Iterable[dict[str, Any]]) -> list[_Record]:
    missing = [column for column in ("design", "value") if column not in header]
    if missing:
        raise ValueError(
            f"{path} lacks the column(s) {missing}; it has {header}, and an import needs "
            f"'design' and 'value' (optional: 'noise_free', 'error', 'oracle')"
        )
    records = []
    # line numbers as a spreadsheet shows them: the header is line 1
    for line, row in enumerate(rows, start=2):
        design = row["design"]
        if not isinstance(design, str) or not design:
            raise ValueError(f"{path}, row {line}: design {design!r} is not a non-empty string")
        records.append(
            (
                line,
                (
                    design,
                    _number(path, line, "value", row["value"]),
                    _number(path, line, "noise_free", row.get("noise_free")),
                    _text(row.get("error")),
                    _text(row.get("oracle")),
                ),
            )
        )
    return records


def _read_csv(path: Path) -> list[_Record]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return _table_records(path, list(reader.fieldnames or []), reader)


def _read_parquet(path: Path) -> list[_Record]:
    import pandas as pd

    frame = pd.read_parquet(path)
    frame = frame.astype(object).where(frame.notna(), None)
    return _table_records(path, list(frame.columns), frame.to_dict("records"))
