"""FeedbackStore: a real SQLite file per test (tmp_path), durability against SIGKILL."""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch

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
