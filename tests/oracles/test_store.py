"""FeedbackStore: a real SQLite file per test (tmp_path), durability against SIGKILL."""

from __future__ import annotations

import base64
import hashlib
import math
import os
import random
import signal
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest
import torch

import seiko.oracles.store as store_module
from seiko.oracles import OFFLINE_ROUND, FeedbackRow, FeedbackStore

NAN = math.nan


def filled_store(path: Path) -> FeedbackStore:
    store = FeedbackStore(path)
    store.add(
        0,
        ["CCO", "c1ccccc1", "C(("],
        [0.5, 0.25, NAN],
        oracle="qed",
        errors=[None, None, "ValueError: unparsable"],
    )
    store.add(1, ["CCN", "CCCl"], torch.tensor([0.75, -1.0]), noise_free=[0.7, NAN], oracle="qed")
    return store


def test_add_and_read_back(tmp_path: Path, assert_same: Callable[..., None]) -> None:
    store = filled_store(tmp_path / "run" / "feedback.sqlite")
    assert len(store) == 5 and store.spent() == 5 and store.spent("qed") == 5
    assert store.rounds() == [0, 1] and store.oracles() == ["qed"]
    assert "CCO" in store and "CCCC" not in store

    lookup = store.lookup(["CCN", "C((", "never", "CCN"])
    assert set(lookup) == {"CCN", "C(("}
    assert lookup["CCN"] == 0.75 and math.isnan(lookup["C(("])

    designs, values = store.designs_and_values()
    assert designs == ["CCO", "c1ccccc1", "C((", "CCN", "CCCl"]
    assert_same(values, [0.5, 0.25, NAN, 0.75, -1.0])
    designs, values = store.designs_and_values(feasible_only=True)
    assert designs == ["CCO", "c1ccccc1", "CCN", "CCCl"]

    infeasible = store.rows(round=0)[2]
    assert isinstance(infeasible, FeedbackRow)
    assert (infeasible.design, infeasible.feasible, infeasible.error) == (
        "C((",
        False,
        "ValueError: unparsable",
    )
    assert math.isnan(infeasible.value) and infeasible.noise_free is None
    with sqlite3.connect(store.path) as raw:  # NULL in the file itself, not a NaN REAL
        assert raw.execute(
            "SELECT value, feasible FROM feedback WHERE design='C(('"
        ).fetchone() == (None, 0)
    first, second = store.rows(round=1)
    assert (first.noise_free, second.noise_free) == (0.7, None)
    assert first.source == "oracle" and first.oracle == "qed" and first.time > 0
    assert [row.id for row in store.rows()] == [1, 2, 3, 4, 5]


def test_lookup_handles_more_designs_than_sqlite_parameters(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "f.sqlite")
    designs = [f"d{i}" for i in range(2500)]
    store.add(0, designs, list(range(2500)), oracle="o")
    assert len(store.lookup(designs + ["missing"])) == 2500


def test_add_rejects_duplicates_and_bad_input_atomically(tmp_path: Path) -> None:
    store = filled_store(tmp_path / "f.sqlite")
    with pytest.raises(ValueError, match=r"already holds \['CCO'\] for oracle 'qed'"):
        store.add(2, ["NEW", "CCO"], [1.0, 2.0], oracle="qed")
    with pytest.raises(ValueError, match=r"repeats \['X'\]"):
        store.add(2, ["X", "X"], [1.0, 2.0], oracle="qed")
    with pytest.raises(ValueError, match="got 1 values for 2 designs"):
        store.add(2, ["A", "B"], [1.0], oracle="qed")
    with pytest.raises(ValueError, match="design 0 is a int"):
        store.add(2, [3], [1.0], oracle="qed")
    assert len(store) == 5 and "NEW" not in store
    # the same design under another oracle is a different measurement
    store.add(2, ["CCO"], [9.0], oracle="logp")
    assert store.lookup(["CCO"], oracle="logp") == {"CCO": 9.0}
    with pytest.raises(ValueError, match=r"several oracles \['logp', 'qed'\]; pass oracle="):
        store.lookup(["CCO"])
    assert store.designs_and_values(oracle="logp")[0] == ["CCO"]
    assert store.spent() == 6 and store.spent("logp") == 1


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite"
    filled_store(path).close()
    with FeedbackStore(path) as reopened:
        assert len(reopened) == 5 and reopened.rounds() == [0, 1]
        with sqlite3.connect(path) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sigkill_right_after_add_loses_nothing(
    tmp_path: Path,
    run_then_sigkill: Callable[[Callable[[], object]], None],
    assert_same: Callable[..., None],
) -> None:
    path = tmp_path / "feedback.sqlite"
    run_then_sigkill(
        lambda: FeedbackStore(path).add(0, ["A", "B", "C"], [1.0, NAN, 3.0], oracle="o")
    )
    with FeedbackStore(path) as store:
        designs, values = store.designs_and_values()
    assert designs == ["A", "B", "C"]
    assert_same(values, [1.0, NAN, 3.0])


def test_corrupt_or_foreign_files_are_named_in_the_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match=r"garbage\.sqlite is not a readable FeedbackStore"):
        FeedbackStore(garbage)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as raw:
        raw.execute("CREATE TABLE people (name TEXT)")
    with pytest.raises(
        ValueError, match=r"foreign\.sqlite is an SQLite database but not a FeedbackStore"
    ):
        FeedbackStore(foreign)
    with sqlite3.connect(foreign) as raw:  # refused untouched
        assert raw.execute("SELECT name FROM sqlite_master").fetchall() == [("people",)]


def test_csv_and_parquet_round_trip(tmp_path: Path) -> None:
    store = filled_store(tmp_path / "f.sqlite")
    csv_path = store.to_csv(tmp_path / "feedback.csv")
    parquet_path = store.to_parquet(tmp_path / "feedback.parquet")
    frame = pd.read_parquet(parquet_path)
    assert list(frame.columns) == [
        "id",
        "round",
        "design",
        "value",
        "noise_free",
        "feasible",
        "error",
        "oracle",
        "time",
        "source",
    ]
    assert frame["feasible"].tolist() == [True, True, False, True, True]
    assert pd.read_csv(csv_path)["design"].tolist() == frame["design"].tolist()

    for exported in (csv_path, parquet_path):
        copy = FeedbackStore(tmp_path / f"copy-{exported.suffix[1:]}.sqlite")
        assert copy.import_rows(exported) == 5
        for original, imported in zip(store.rows(), copy.rows(), strict=True):
            assert (imported.design, imported.oracle, imported.error, imported.feasible) == (
                original.design,
                original.oracle,
                original.error,
                original.feasible,
            )
            assert imported.value == original.value or math.isnan(original.value)
            assert imported.noise_free == original.noise_free
            assert (imported.source, imported.round) == ("offline", OFFLINE_ROUND)


def test_warm_start_from_a_store_counts_as_paid_not_spent(tmp_path: Path) -> None:
    old = filled_store(tmp_path / "old.sqlite")
    old.close()
    store = FeedbackStore(tmp_path / "new.sqlite")
    store.add(0, ["CCO"], [0.1], oracle="qed")  # already measured here: kept, not overwritten
    assert store.import_rows(tmp_path / "old.sqlite") == 4
    assert len(store) == 5 and store.spent() == 1
    assert store.lookup(["CCO", "CCN"]) == {"CCO": 0.1, "CCN": 0.75}
    assert store.rounds() == [0]
    assert len(store.rows(round=OFFLINE_ROUND)) == 4
    assert store.import_rows(tmp_path / "old.sqlite") == 0  # importing twice adds nothing


def test_warm_start_from_a_csv(tmp_path: Path) -> None:
    table = tmp_path / "assays.csv"
    table.write_text('design,value\nCCO,0.5\n"C,C",\nNA,1.5\n', encoding="utf-8")
    store = FeedbackStore(tmp_path / "f.sqlite")
    with pytest.raises(ValueError, match=r"assays\.csv, row 2: no oracle name"):
        store.import_rows(table)
    assert store.import_rows(table, oracle="qed") == 3
    lookup = store.lookup(["CCO", "C,C", "NA"])
    assert lookup["CCO"] == 0.5 and math.isnan(lookup["C,C"]) and lookup["NA"] == 1.5
    assert store.spent() == 0


def test_import_errors_name_the_file(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "f.sqlite")
    no_value = tmp_path / "no_value.csv"
    no_value.write_text("design,score\nCCO,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no_value\.csv lacks the column\(s\) \['value'\]"):
        store.import_rows(no_value, oracle="qed")
    bad_number = tmp_path / "bad_number.csv"
    bad_number.write_text("design,value\nCCO,1\nCCN,high\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad_number\.csv, row 3: value='high' is not a number"):
        store.import_rows(bad_number, oracle="qed")
    with pytest.raises(FileNotFoundError, match="missing.csv does not exist"):
        store.import_rows(tmp_path / "missing.csv", oracle="qed")
    text = tmp_path / "notes.txt"
    text.write_text("hello", encoding="utf-8")
    with pytest.raises(ValueError, match=r"notes\.txt: cannot import"):
        store.import_rows(text)
    assert len(store) == 0


# ---------------------------------------------------------------- keys stored once, by hash


def large_keys(n: int, size: int, seed: int = 0) -> list[str]:
    """``n`` distinct keys like an image's PNG data URI: ``size`` random bytes, base64."""
    rng = random.Random(seed)
    return [
        "data:image/png;base64," + base64.b64encode(rng.randbytes(size)).decode() for _ in range(n)
    ]


def file_bytes(path: Path) -> int:
    """The store's bytes on disk, its WAL and shared-memory files included."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def test_large_keys_are_stored_once(tmp_path: Path) -> None:
    # a 512 x 512 image's key is 0.5-0.65 MB; schema version 1's UNIQUE(design, oracle) index kept a
    # second copy of each: these 20 keys made a 12.1 MB file, 2.02x their bytes
    keys = large_keys(20, 225_000)  # 300 kB each
    raw = sum(len(key.encode()) for key in keys)
    path = tmp_path / "feedback.sqlite"
    with FeedbackStore(path) as store:
        for round_, key in enumerate(keys):
            store.add(round_, [key], [float(round_)], oracle="o")
    size = file_bytes(path)
    print(f"20 keys, {raw:,} bytes of keys: {size:,} bytes on disk ({size / raw:.3f}x)")
    assert size < 1.1 * raw
    with FeedbackStore(path) as store:
        designs, values = store.designs_and_values()
        assert designs == keys and values.tolist() == [float(i) for i in range(20)]
        assert store.lookup([keys[7], keys[7] + "x"]) == {keys[7]: 7.0}
        with pytest.raises(ValueError, match=r"already holds \['data:image/png;base64,"):
            store.add(20, [keys[3]], [1.0], oracle="o")  # the same key is never paid twice
        assert store.spent() == 20


def test_keys_that_differ_in_one_late_character_are_never_merged(tmp_path: Path) -> None:
    (key,) = large_keys(1, 30_000)
    twin = key[:-1] + ("A" if key[-1] != "A" else "B")
    store = FeedbackStore(tmp_path / "f.sqlite")
    store.add(0, [key], [1.0], oracle="o")
    assert store.lookup([twin]) == {} and twin not in store and key in store
    store.add(1, [twin], [2.0], oracle="o")
    assert store.lookup([key, twin]) == {key: 1.0, twin: 2.0}
    assert store.designs_and_values()[0] == [key, twin]
    with pytest.raises(ValueError, match="already holds"):
        store.add(2, [twin], [3.0], oracle="o")
    assert store.import_rows(store.to_csv(tmp_path / "copy.csv")) == 0  # both already stored
    assert len(store) == 2


def test_a_hash_collision_is_refused_never_merged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a SHA-256 collision cannot be produced, so the store hashes the first 4 characters here
    monkeypatch.setattr(
        store_module, "_design_hash", lambda design: hashlib.sha256(design[:4].encode()).digest()
    )
    store = FeedbackStore(tmp_path / "f.sqlite")
    store.add(0, ["AAAA-1"], [1.0], oracle="o")
    collision = r"'AAAA-2' has the same SHA-256 as the different design 'AAAA-1'"
    with pytest.raises(ValueError, match=collision):
        store.lookup(["AAAA-2"])  # before the oracle is paid for it
    with pytest.raises(ValueError, match=collision):
        store.add(1, ["BBBB", "AAAA-2"], [2.0, 3.0], oracle="o")
    with pytest.raises(ValueError, match="'CCCC-2' has the same SHA-256 as .* 'CCCC-1'"):
        store.add(1, ["CCCC-1", "CCCC-2"], [2.0, 3.0], oracle="o")  # within one batch
    table = tmp_path / "warm.csv"
    table.write_text("design,value\nDDDD,1\nAAAA-2,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=collision):
        store.import_rows(table, oracle="o")  # not silently ignored as "already stored"
    table.write_text("design,value\nEEEE-1,1\nEEEE-2,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'EEEE-2' has the same SHA-256 as .* 'EEEE-1'"):
        store.import_rows(table, oracle="o")
    assert store.designs_and_values()[0] == ["AAAA-1"] and "AAAA-2" not in store
    assert store.lookup(["AAAA-1"]) == {"AAAA-1": 1.0}
    store.add(1, ["AAAA-2"], [5.0], oracle="other")  # another oracle's row: no conflict
    assert store.lookup(["AAAA-2"], oracle="other") == {"AAAA-2": 5.0}


# ---------------------------------------------------------------- schema versions

# What FeedbackStore wrote before schema version 2, written out here so the test keeps the old
# format whatever the module becomes: the key itself under a UNIQUE index.
VERSION_1_SCHEMA = """
CREATE TABLE feedback (
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
    UNIQUE (design, oracle)
)
"""
BIG = large_keys(4, 75_000, seed=1)  # 100 kB each
# id | round | design | value | noise_free | feasible | error | oracle | time | source; id 5 is
# missing and the AUTOINCREMENT counter is past the last id, as both may be in a real store
VERSION_1_ROWS = [
    (1, 0, "CCO", 0.5, 0.45, 1, None, "qed", 1000.25, "oracle"),
    (2, 0, "C((", None, None, 0, "ValueError: unparsable", "qed", 1000.25, "oracle"),
    (3, 1, BIG[0], 0.75, None, 1, None, "qed", 1001.5, "oracle"),
    (4, 1, "CCO", 9.0, None, 1, None, "logp", 1001.5, "oracle"),
    (6, OFFLINE_ROUND, BIG[1], -1.0, None, 1, None, "qed", 999.0, "offline"),
    (7, 2, BIG[2], 0.125, 0.1, 1, None, "qed", 1002.0, "oracle"),
    (8, 2, BIG[3], 0.0, None, 1, None, "qed", 1002.0, "oracle"),
]


def write_version_1_store(path: Path) -> None:
    with closing(sqlite3.connect(path)) as raw:
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute(VERSION_1_SCHEMA)
        raw.execute("PRAGMA user_version=1")
        raw.executemany("INSERT INTO feedback VALUES (?,?,?,?,?,?,?,?,?,?)", VERSION_1_ROWS)
        raw.execute("UPDATE sqlite_sequence SET seq = 9 WHERE name = 'feedback'")
        raw.commit()


def schema(path: Path) -> tuple[int, list[str], list[tuple[str, str]]]:
    """user_version, the feedback table's columns, and the (name, table) of every index."""
    with closing(sqlite3.connect(path)) as raw:
        version = raw.execute("PRAGMA user_version").fetchone()[0]
        columns = [row[1] for row in raw.execute("PRAGMA table_info(feedback)")]
        query = "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' ORDER BY name"
        return version, columns, raw.execute(query).fetchall()


def as_records(rows: list[FeedbackRow]) -> list[tuple[object, ...]]:
    """Rows as the version-1 table held them (NaN back to NULL, feasible as 0/1)."""
    return [
        (
            r.id,
            r.round,
            r.design,
            None if math.isnan(r.value) else r.value,
            r.noise_free,
            int(r.feasible),
            r.error,
            r.oracle,
            r.time,
            r.source,
        )
        for r in rows
    ]


VERSION_1_COLUMNS = [
    "id",
    "round",
    "design",
    "value",
    "noise_free",
    "feasible",
    "error",
    "oracle",
    "time",
    "source",
]
VERSION_1_INDEX = [("sqlite_autoindex_feedback_1", "feedback")]


def test_a_version_1_store_migrates_once_with_every_row_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "feedback.sqlite"
    write_version_1_store(path)
    key_bytes = sum(len(key.encode()) for key in BIG)
    before = file_bytes(path)
    assert schema(path) == (1, VERSION_1_COLUMNS, VERSION_1_INDEX)
    migrations = []
    migrate = store_module._migrate_from_version_1
    monkeypatch.setattr(
        store_module,
        "_migrate_from_version_1",
        lambda connection: migrations.append(path) or migrate(connection),
    )

    with FeedbackStore(path) as store:
        assert migrations == [path]
        assert as_records(store.rows()) == VERSION_1_ROWS
        assert store.spent() == 6 and store.spent("qed") == 5 and store.rounds() == [0, 1, 2]
        assert store.oracles() == ["logp", "qed"]
        assert len(store.rows(round=OFFLINE_ROUND)) == 1
        qed = store.lookup(["CCO", "C((", *BIG, "never"], oracle="qed")
        assert qed.keys() == {"CCO", "C((", *BIG} and math.isnan(qed["C(("])
        assert qed[BIG[2]] == 0.125 and store.lookup(["CCO"], oracle="logp") == {"CCO": 9.0}
        assert BIG[1] in store
        with pytest.raises(ValueError, match="already holds"):
            store.add(3, [BIG[1]], [1.0], oracle="qed")  # a migrated design is not paid twice
        store.add(3, ["CCN"], [0.25], oracle="qed")
        assert store.rows()[-1].id == 10  # after the old counter (9): no id is ever reused
    after = file_bytes(path)
    print(
        f"version-1 store: {before:,} bytes ({before / key_bytes:.2f}x its {key_bytes:,} bytes of "
        f"large keys), migrated: {after:,} bytes ({after / key_bytes:.2f}x)"
    )
    assert before > 1.9 * key_bytes and after < 1.15 * key_bytes  # the old index's space is back
    assert schema(path) == (
        2,
        [*VERSION_1_COLUMNS, "design_hash"],
        [("feedback_design_hash", "feedback")],
    )
    with FeedbackStore(path) as reopened:  # opening again does not migrate again
        assert migrations == [path] and len(reopened) == 8
        assert reopened.lookup(["CCN"], oracle="qed") == {"CCN": 0.25}


def test_an_interrupted_migration_leaves_the_version_1_store_usable(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    run_then_sigkill: Callable[[Callable[[], object]], None],
) -> None:
    path = tmp_path / "feedback.sqlite"
    write_version_1_store(path)
    hashed = []

    def fail_on_the_fourth_row(design: str) -> bytes:
        hashed.append(design)
        if len(hashed) == 4:
            raise OSError("interrupted")
        return hashlib.sha256(design.encode()).digest()

    with monkeypatch.context() as patch:
        patch.setattr(store_module, "_design_hash", fail_on_the_fourth_row)
        with pytest.raises(
            ValueError, match=r"feedback\.sqlite: migrating .* version 1 to 2 failed"
        ):
            FeedbackStore(path)
    assert len(hashed) == 4
    assert schema(path) == (1, VERSION_1_COLUMNS, VERSION_1_INDEX)

    def sigkill_on_the_fourth_row(design: str) -> bytes:
        hashed.append(design)
        if len(hashed) == 4 + 4:  # the fourth row of this attempt
            os.kill(os.getpid(), signal.SIGKILL)  # in the middle of the migration's transaction
        return hashlib.sha256(design.encode()).digest()

    def migrate_and_die() -> None:
        monkeypatch.setattr(store_module, "_design_hash", sigkill_on_the_fourth_row)
        FeedbackStore(path)

    run_then_sigkill(migrate_and_die)  # in a forked child: the patch stays there
    assert schema(path) == (1, VERSION_1_COLUMNS, VERSION_1_INDEX)
    with closing(sqlite3.connect(path)) as raw:  # still the version-1 store, rows and all
        assert raw.execute("SELECT * FROM feedback ORDER BY id").fetchall() == VERSION_1_ROWS
    with FeedbackStore(path) as store:
        assert as_records(store.rows()) == VERSION_1_ROWS
    assert schema(path)[0] == 2


def test_two_openers_of_a_version_1_store_migrate_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the second opener reads version 1, then waits for the write lock while the first migrates:
    # under the lock it reads the version again and leaves the migrated table alone
    path = tmp_path / "feedback.sqlite"
    write_version_1_store(path)
    migrations = []
    migrate = store_module._migrate_from_version_1
    monkeypatch.setattr(
        store_module,
        "_migrate_from_version_1",
        lambda connection: migrations.append(path) or migrate(connection),
    )
    real_version = store_module._schema_version
    raced = []

    def another_process_migrates_meanwhile(*args: object, **kwargs: object) -> int:
        version = real_version(*args, **kwargs)
        if not raced:  # the first check, outside the transaction
            raced.append(version)
            with FeedbackStore(path) as other:
                other.add(3, ["CCN"], [0.25], oracle="qed")
        return version

    monkeypatch.setattr(store_module, "_schema_version", another_process_migrates_meanwhile)
    with FeedbackStore(path) as store:
        assert raced == [1] and migrations == [path]
        assert as_records(store.rows()[:-1]) == VERSION_1_ROWS and store.rows()[-1].id == 10


def test_a_version_1_store_is_imported_read_only_and_left_unchanged(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite"
    write_version_1_store(old)
    store = FeedbackStore(tmp_path / "new.sqlite")
    assert store.import_rows(old, oracle="qed") == 6  # "CCO" twice (two oracles) -> one row
    assert store.designs_and_values()[0] == ["CCO", "C((", *BIG]
    assert schema(old) == (1, VERSION_1_COLUMNS, VERSION_1_INDEX)


def test_a_store_of_a_newer_schema_version_is_refused_naming_file_and_versions(
    tmp_path: Path,
) -> None:
    path = tmp_path / "future.sqlite"
    filled_store(path).close()
    with closing(sqlite3.connect(path)) as raw:
        raw.execute("PRAGMA user_version=3")
        raw.commit()
    newer = (
        r"future\.sqlite is a FeedbackStore of schema version 3, written by a newer seiko; this "
        r"one reads schema versions 1 to 2"
    )
    with pytest.raises(ValueError, match=newer):
        FeedbackStore(path)
    with pytest.raises(ValueError, match=newer):
        FeedbackStore(tmp_path / "f.sqlite").import_rows(path)
    assert schema(path)[0] == 3  # untouched
