"""SequenceDataModule: FASTA/FASTQ/GenBank/CSV/TSV/text, bad letters, length policy, labels,
splits (seeded and by column), and the shipped DNA/RNA/protein subsets."""

from __future__ import annotations

import csv
import gzip
import logging
from pathlib import Path

import pytest
import torch
from Bio import SeqIO
from Bio.Seq import Seq
from Bio.SeqRecord import SeqRecord

from seiko.datamodules.sequences import (
    ALPHABETS,
    SequenceDataModule,
    detect_format,
    read_sequences,
)

DATA = Path(__file__).resolve().parents[2] / "data"
DHS = DATA / "dna_dhs_human_200bp_16k.tsv.gz"
TRNA = DATA / "rna_trna1415_with_structure.tsv.gz"
MIRBASE = DATA / "rna_mirbase_hairpin_5k.fa.gz"
UNIPROT = DATA / "protein_uniprot_4k.fa.gz"
LOGGER = "seiko.datamodules.sequences"


def make(path: Path, **kwargs) -> SequenceDataModule:
    kwargs.setdefault("seq_len", 8)
    kwargs.setdefault("val_fraction", 0.0)
    kwargs.setdefault("batch_size", 4)
    dm = SequenceDataModule(str(path), **kwargs)
    dm.setup()
    return dm


def dhs_rows() -> list[dict[str, str]]:
    with gzip.open(DHS, "rt", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@pytest.fixture(scope="module")
def dhs() -> SequenceDataModule:
    """The whole shipped DHS subset, split by its chromosome column, labelled by cell type."""
    dm = SequenceDataModule(
        str(DHS),
        seq_len=200,
        label_column="TAG",
        id_column="dhs_id",
        split_column="data_label",
        on_invalid="fatal",
        batch_size=16,
    )
    dm.setup()
    return dm


# ---------------------------------------------------------------------- formats
def test_formats_come_from_the_file_name():
    names = {
        "a.fa": "fasta",
        "a.fasta.gz": "fasta",
        "b.faa": "fasta",
        "c.fq.gz": "fastq",
        "c.fastq": "fastq",
        "d.gb": "genbank",
        "d.gbk.gz": "genbank",
        "e.csv": "csv",
        "f.tsv.gz": "tsv",
        "g.txt": "text",
        "h": "text",
    }
    assert {name: detect_format(name) for name in names} == names


def test_fasta_gz_with_a_bad_letter_reports_record_position_and_letter(tmp_path: Path, caplog):
    path = tmp_path / "dna.fa.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(">s1 first\nACGT\nACGT\n>s2\nacgtacgt\n>s3 bad\nACGTNCGT\n>s4\nTTTTGGGG\n")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        dm = make(path)
    # multi-line records are joined, lower case is upper-cased, the bad record is dropped
    assert sorted(dm.sequences["train"]) == ["ACGTACGT", "ACGTACGT", "TTTTGGGG"]
    assert dm.num_invalid == 1
    text = caplog.text
    assert f"{path}: record 's3' (#3): position 5: letter 'N' is not in the DNA alphabet" in text
    assert "3 sequences kept (0 padded, 0 cropped to 8), 1 rejected" in text
    with pytest.raises(ValueError, match=r"record 's3' \(#3\): position 5: letter 'N'"):
        make(path, on_invalid="fatal")


def test_malformed_fasta_is_reported_with_file_and_line(tmp_path: Path):
    leading = tmp_path / "leading.fa"
    leading.write_text("\nACGTACGT\n>s1\nACGTACGT\n")
    with pytest.raises(ValueError, match=r"leading.fa: line 2: malformed FASTA: expected a header"):
        make(leading)
    fastq = tmp_path / "reads.fa"
    fastq.write_text("@r1\nACGTACGT\n+\nIIIIIIII\n")
    with pytest.raises(ValueError, match=r"line 1: .*found '@r1' \(this looks like FASTQ"):
        make(fastq)
    empty = tmp_path / "empty_record.fa"
    empty.write_text(">s1\nACGTACGT\n>s2\n>s3\nTTTTTTTT\n")
    with pytest.raises(ValueError, match=r"record 's2' \(#2\): empty sequence"):
        make(empty, on_invalid="fatal")
    nothing = tmp_path / "nothing.fa"
    nothing.write_text("")
    with pytest.raises(ValueError, match=r"nothing.fa: no usable sequence \(0 rejected\)"):
        make(nothing)


def test_fastq_is_read_and_a_truncated_one_is_reported(tmp_path: Path):
    path = tmp_path / "reads.fastq"
    path.write_text("@r1\nACGTACGT\n+\nIIIIIIII\n@r2 second\nGGGGCCCC\n+\nIIIIIIII\n")
    assert [r.id for r in read_sequences(path)] == ["r1", "r2"]
    assert sorted(make(path).sequences["train"]) == ["ACGTACGT", "GGGGCCCC"]
    broken = tmp_path / "broken.fq"
    broken.write_text("@r1\nACGTACGT\n+\nIIIIIIII\n@r2\nGGGGCCCC\n+\nIII\n")
    with pytest.raises(ValueError, match=r"broken.fq: malformed FASTQ after record 'r1' \(#1\): "):
        make(broken)


def test_genbank_written_by_biopython_is_read(tmp_path: Path):
    records = [
        SeqRecord(Seq(seq), id=f"X{n}.1", name=f"X{n}", annotations={"molecule_type": "RNA"})
        for n, seq in enumerate(["ACGUACGUAC", "UUUUGGGG", "ACGUTT"])
    ]
    path = tmp_path / "rna.gbk"
    with open(path, "w") as handle:
        SeqIO.write(records, handle, "genbank")
    dm = make(path, alphabet="rna", seq_len=9, pad_symbol="-", val_fraction=0.0)
    # the 10-letter record is cropped (on_long="crop"), the short one padded, the T rejected
    assert sorted(dm.sequences["train"]) == ["ACGUACGUA", "UUUUGGGG"]
    assert (dm.num_cropped, dm.num_padded, dm.num_invalid) == (1, 1, 1)
    with pytest.raises(ValueError, match=r"record 'X2.1' \(#3\): position 5: letter 'T' .* RNA"):
        make(path, alphabet="rna", seq_len=9, pad_symbol="-", on_invalid="fatal")


def test_text_and_csv_keep_the_old_behaviour(tmp_path: Path):
    text = tmp_path / "dna.txt"
    text.write_text("# comment\nACGTACGT\n\nTTTTTTTT\n")
    assert sorted(make(text).sequences["train"]) == ["ACGTACGT", "TTTTTTTT"]
    table = tmp_path / "dna.csv"
    table.write_text("name,sequence\na,ACGTACGT\nb,ACGXACGT\n")
    dm = make(table)
    assert dm.sequences["train"] == ["ACGTACGT"] and dm.num_invalid == 1
    with pytest.raises(ValueError, match=r"dna.csv: line 3: position 4: letter 'X'"):
        make(table, on_invalid="fatal")
    with pytest.raises(ValueError, match=r"line 3 \(id 'b'\): position 4: letter 'X'"):
        make(table, id_column="name", on_invalid="fatal")
    with pytest.raises(ValueError, match=r"no column \['seq'\] in the header"):
        make(table, column="seq")


# ---------------------------------------------------------------------- length policy
def test_length_policy_fixed_pad_crop_and_skip(tmp_path: Path):
    path = tmp_path / "dna.txt"
    path.write_text("ACGT\nACGTACGT\nACGTACGTAA\n")
    fixed = make(path)  # no pad: short rejected; long cropped (on_long="crop")
    assert sorted(fixed.sequences["train"]) == ["ACGTACGT", "ACGTACGT"]
    assert (fixed.num_invalid, fixed.num_cropped, fixed.num_padded) == (1, 1, 0)
    with pytest.raises(ValueError, match=r"line 1: length 4 is shorter than seq_len=8 and there"):
        make(path, on_invalid="fatal")
    padded = make(path, pad_symbol="-", on_long="skip")
    assert sorted(padded.sequences["train"]) == ["ACGT", "ACGTACGT"]
    assert padded.vocabulary == ["A", "C", "G", "T", "-"] and padded.num_invalid == 1
    with pytest.raises(ValueError, match=r"line 3: length 10 is longer than seq_len=8"):
        make(path, pad_symbol="-", on_long="skip", on_invalid="fatal")
    x = next(iter(padded.train_dataloader()))["x"]
    assert x.shape == (2, 8, 5) and set(x.unique().tolist()) == {-1.0, 1.0}
    short = [row for row in x if row[-1, 4] == 1]  # "ACGT" + four pads
    assert len(short) == 1 and short[0][4:, 4].eq(1).all() and short[0][:4, 4].eq(-1).all()


def test_bad_arguments_are_rejected_with_the_allowed_values(tmp_path: Path):
    fasta = tmp_path / "a.fa"
    fasta.write_text(">a\nACGT\n")
    with pytest.raises(ValueError, match=r"\['label_column'\] need a CSV/TSV file"):
        SequenceDataModule(str(fasta), label_column="TAG")
    with pytest.raises(ValueError, match="pad_symbol must be one letter outside the alphabet"):
        SequenceDataModule(str(fasta), pad_symbol="A")
    with pytest.raises(ValueError, match=r"split_values \{'x': 'holdout'\} map to splits"):
        SequenceDataModule(str(tmp_path / "a.tsv"), split_column="s", split_values={"x": "holdout"})
    with pytest.raises(ValueError, match="no label_column"):
        SequenceDataModule(str(tmp_path / "a.tsv"), labels=["a"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make(tmp_path / "missing.fa")


# ---------------------------------------------------------------------- labels and splits
def test_labels_sorted_or_given_and_carried_as_cond(tmp_path: Path):
    path = tmp_path / "cells.tsv"
    path.write_text(
        "id\tcell\tsequence\n"
        "a\tK562\tACGTACGT\nb\tHepG2\tTTTTACGT\nc\tK562\tGGGGACGT\nd\tGM12878\tCCCCACGT\n"
        "e\t\tAAAAACGT\n"
    )
    dm = make(path, label_column="cell", id_column="id", batch_size=8)
    assert dm.labels == ["GM12878", "HepG2", "K562"] and dm.num_classes == 3
    assert dm.num_invalid == 1  # row e has no label
    assert len(dm.val_set) == 0
    batch = next(iter(dm.train_dataloader()))
    by_sequence = dict(zip(dm.sequences["train"], dm.train_set.tensors[1].tolist(), strict=True))
    assert by_sequence == {"ACGTACGT": 2, "TTTTACGT": 1, "GGGGACGT": 2, "CCCCACGT": 0}
    assert batch["cond"].dtype == torch.long and batch["x"].shape == (4, 8, 4)
    # a fine-tuning run gives the pretrained order; a label outside it is rejected
    given = make(path, label_column="cell", labels=["K562", "HepG2"], id_column="id")
    assert given.labels == ["K562", "HepG2"] and given.num_invalid == 2
    assert sorted(given.train_set.tensors[1].tolist()) == [0, 0, 1]
    with pytest.raises(ValueError, match=r"line 5 \(id 'd'\): label 'GM12878' is not one of"):
        make(
            path, label_column="cell", labels=["K562", "HepG2"], id_column="id", on_invalid="fatal"
        )
    unlabelled = make(path)
    assert unlabelled.labels is None and unlabelled.num_classes is None
    assert "cond" not in next(iter(unlabelled.train_dataloader()))


def test_chromosome_split_of_the_shipped_dhs_file(dhs: SequenceDataModule):
    rows = dhs_rows()
    assert len(rows) == 16_000 and dhs.num_invalid == 0
    assert dhs.labels == sorted({row["TAG"] for row in rows}) and dhs.num_classes == 4
    expected = {"train": "training", "val": "validation", "test": "test"}
    for split, value in expected.items():
        # every split is the file's own, in file order; test is chromosome 1, validation 2
        wanted = [row["sequence"] for row in rows if row["data_label"] == value]
        assert dhs.sequences[split] == wanted
    chromosomes = {v: {r["chr"] for r in rows if r["data_label"] == v} for v in expected.values()}
    assert chromosomes["test"] == {"chr1"} and chromosomes["validation"] == {"chr2"}
    assert not chromosomes["training"] & {"chr1", "chr2"}
    # the labels travel with their rows
    test_tags = [dhs.labels[k] for k in dhs.test_set.tensors[1].tolist()]
    assert test_tags == [row["TAG"] for row in rows if row["data_label"] == "test"]
    batch = next(iter(dhs.test_dataloader()))
    assert batch["x"].shape == (16, 200, 4) and batch["cond"].shape == (16,)


def test_split_by_any_column_with_a_catch_all(tmp_path: Path):
    rows = dhs_rows()[:300]
    path = tmp_path / "dhs.tsv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    values = {"chr1": "test", "chr2": "val", "*": "train"}
    dm = make(path, seq_len=200, split_column="chr", split_values=values)
    for split, chosen in (("test", {"chr1"}), ("val", {"chr2"})):
        assert dm.sequences[split] == [r["sequence"] for r in rows if r["chr"] in chosen]
    assert len(dm.sequences["train"]) == sum(r["chr"] not in ("chr1", "chr2") for r in rows)
    strict = {"chr1": "test", "chr2": "val"}
    with pytest.raises(ValueError, match=r"line 2: chr value '\w+' is none of the split_values"):
        make(path, seq_len=200, split_column="chr", split_values=strict, on_invalid="fatal")


def test_random_split_is_deterministic_for_a_seed(tmp_path: Path):
    rows = dhs_rows()[:200]
    path = tmp_path / "dhs.txt"
    path.write_text("\n".join(row["sequence"] for row in rows))

    def split(seed: int) -> dict[str, list[str]]:
        return make(path, seq_len=200, val_fraction=0.25, seed=seed).sequences

    first, again, other = split(0), split(0), split(1)
    assert first == again
    assert len(first["val"]) == 50 and len(first["train"]) == 150
    assert first["test"] == first["val"]  # no test split: validation serves as test
    assert sorted(first["train"] + first["val"]) == sorted(r["sequence"] for r in rows)
    assert set(first["val"]) != set(other["val"])


# ---------------------------------------------------------------------- shipped subsets
@pytest.mark.parametrize(
    ("path", "kwargs", "count", "padded"),
    [
        (TRNA, {"alphabet": "rna", "column": "seq", "id_column": "id", "seq_len": 128}, 1405, 1405),
        (MIRBASE, {"alphabet": "rna", "seq_len": 300}, 5000, None),
        (UNIPROT, {"alphabet": "protein", "seq_len": 300}, 4000, None),
    ],
)
def test_shipped_rna_and_protein_subsets_are_clean(path: Path, kwargs, count, padded):
    dm = SequenceDataModule(
        str(path), pad_symbol="-", on_invalid="fatal", val_fraction=0.1, **kwargs
    )
    dm.setup()
    kept = sum(len(v) for k, v in dm.sequences.items() if k != "test")
    assert kept == count and dm.num_cropped == 0
    assert padded is None or dm.num_padded == padded
    letters = set(ALPHABETS[kwargs["alphabet"]])
    assert all(set(seq) <= letters for seq in dm.sequences["train"])
    lengths = [len(seq) for seq in dm.sequences["train"]]
    assert min(lengths) >= 50 and max(lengths) <= 300


def test_shipped_fasta_records_are_read_unchanged():
    with gzip.open(MIRBASE, "rt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    records = list(read_sequences(MIRBASE))
    assert [r.id for r in records[:2]] == [lines[0][1:].split()[0], lines[2][1:].split()[0]]
    assert [r.sequence for r in records] == lines[1::2]
