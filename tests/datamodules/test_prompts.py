"""Prompt files, the shipped prompt lists, and the prompts datamodule."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
import torch

from seiko.datamodules.prompts import (
    PromptDataModule,
    PromptDataset,
    UniformDraws,
    collate_prompts,
    read_prompts,
)

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ROOT / "data" / "prompts"


def write(tmp_path: Path, data: bytes | str, name: str = "prompts.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# ---------------------------------------------------------------------------- the file format
def test_comments_blank_lines_and_whitespace_are_skipped(tmp_path):
    path = write(
        tmp_path,
        "\ufeff# a header\n\ncat\n   a dog  running \r\n\t# indented comment\n\t\nfish #1\n",
    )
    assert read_prompts(path) == ["cat", "a dog  running", "fish #1"]


def test_a_line_that_is_not_utf8_is_reported_with_file_and_line(tmp_path):
    path = write(tmp_path, b"cat\n# fine\ndo\xffg\n")
    with pytest.raises(ValueError, match=rf"^{path}:3: not valid UTF-8 \(byte 2: 0xff\)"):
        read_prompts(path)


def test_a_control_character_is_reported_with_file_line_and_column(tmp_path):
    path = write(tmp_path, "cat\nd\x07og\n")
    with pytest.raises(ValueError, match=rf"^{path}:2: control character U\+0007 at column 2"):
        read_prompts(path)
    assert read_prompts(write(tmp_path, "a\tcat\n", "tab.txt")) == ["a\tcat"]  # a tab is fine


def test_a_file_without_prompts_or_missing_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="holds no prompt"):
        read_prompts(write(tmp_path, "# only a comment\n\n"))
    with pytest.raises(FileNotFoundError, match="nowhere.txt' does not exist; expected a UTF-8"):
        read_prompts(tmp_path / "nowhere.txt")


# ---------------------------------------------------------------------------- the shipped lists
def _provenance_digest(name: str) -> str:
    for line in (PROMPTS / "PROVENANCE.md").read_text().splitlines():
        if line.startswith(f"| `{name}`"):
            return line.split("`")[3]
    raise AssertionError(f"{name} is not in PROVENANCE.md")


@pytest.mark.parametrize(
    ("name", "count"), [("simple_animals.txt", 45), ("eval_simple_animals.txt", 6)]
)
def test_shipped_lists_match_their_provenance(name, count):
    prompts = read_prompts(PROMPTS / name)
    assert len(prompts) == count == len(set(prompts))
    body = "".join(f"{prompt}\n" for prompt in prompts).encode()
    assert hashlib.sha256(body).hexdigest() == _provenance_digest(name)


def test_evaluation_animals_are_held_out():
    train = read_prompts(PROMPTS / "simple_animals.txt")
    held_out = read_prompts(PROMPTS / "eval_simple_animals.txt")
    assert train[:3] == ["cat", "dog", "horse"] and held_out[0] == "snail"
    assert not set(train) & set(held_out)


# ---------------------------------------------------------------------------- batches
def test_dataset_and_collate():
    dataset = PromptDataset(["cat", "dog"], repeats=2)
    assert [dataset[i] for i in range(len(dataset))] == [(0, "cat"), (0, "cat"), (1, "dog")] + [
        (1, "dog")
    ]
    with pytest.raises(IndexError, match="index 4 is out of range for 4 prompts"):
        dataset[4]
    batch = collate_prompts([(1, "dog"), (0, "cat")])
    assert batch["prompt"] == ["dog", "cat"] and torch.equal(batch["index"], torch.tensor([1, 0]))


def _epoch(loader) -> list[str]:
    return [prompt for batch in loader for prompt in batch["prompt"]]


def test_training_draws_prompts_uniformly_with_replacement(tmp_path):
    path = write(tmp_path, "cat\ndog\nfish\n")
    data = PromptDataModule(str(path), batch_size=8, samples_per_epoch=300, seed=1)
    data.setup("fit")
    loader = data.train_dataloader()
    first, second = _epoch(loader), _epoch(loader)
    batch = next(iter(loader))
    assert len(batch["prompt"]) == 8 and batch["index"].dtype == torch.long
    assert [data.train_prompts[i] for i in batch["index"].tolist()] == batch["prompt"]
    assert len(first) == len(second) == 300 and first != second  # new draws each epoch
    counts = Counter(first)
    assert set(counts) == {"cat", "dog", "fish"} and min(counts.values()) > 70  # ~100 each
    again = PromptDataModule(str(path), batch_size=8, samples_per_epoch=300, seed=1)
    assert _epoch(again.train_dataloader()) == first  # reproducible from the seed


def test_without_samples_per_epoch_every_prompt_once_per_epoch(tmp_path):
    path = write(tmp_path, "cat\ndog\nfish\nbee\nant\n")
    data = PromptDataModule(str(path), batch_size=2, samples_per_epoch=None)
    loader = data.train_dataloader()
    first, second = _epoch(loader), _epoch(loader)
    assert sorted(first) == sorted(second) == ["ant", "bee", "cat", "dog", "fish"]
    assert len(loader) == 3


def test_uniform_draws_sampler():
    sampler = UniformDraws(size=4, num_samples=10, seed=0)
    first, second = list(sampler), list(sampler)
    assert len(sampler) == len(first) == 10 and first != second
    assert all(0 <= i < 4 for i in first + second)
    assert list(UniformDraws(size=4, num_samples=10, seed=0)) == first
    with pytest.raises(ValueError, match="need size >= 1"):
        UniformDraws(size=0, num_samples=3)


def test_predict_repeats_each_prompt_in_file_order(tmp_path):
    train = write(tmp_path, "cat\n")
    held_out = write(tmp_path, "snail\nlobster\n", "eval.txt")
    data = PromptDataModule(str(train), predict_file=str(held_out), batch_size=3, predict_repeats=2)
    batches = list(data.predict_dataloader())
    assert [b["prompt"] for b in batches] == [["snail", "snail", "lobster"], ["lobster"]]
    assert torch.equal(batches[0]["index"], torch.tensor([0, 0, 1]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"samples_per_epoch": 0}, "samples_per_epoch must be >= 1 or None"),
        ({"predict_repeats": 0}, "predict_repeats must be >= 1"),
        ({"num_workers": -1}, "num_workers must be >= 0"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PromptDataModule(**kwargs)


def test_setup_reports_a_bad_file_at_once(tmp_path):
    data = PromptDataModule(str(write(tmp_path, "cat\n\x1b[31mred\n")))
    with pytest.raises(ValueError, match=r"prompts.txt:2: control character U\+001B"):
        data.setup("fit")
