"""How fast synthloom reads large or hostile input: the times that tests used to assert.

    python benchmarks/bench_inputs.py            # markdown on stdout

- schema inference and the type checks on a 20,000-row, 20-column table (integers, floats,
  datetimes, categories, text), as tests/test_schema.py builds it;
- training refused on a file of one 10 MB line (tests/test_bad_inputs.py's "ten-mb-single-line"):
  the seconds until the DataError, which must come without reading the line into a model.
Each is run 3 times; the median is reported, with the machine.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lstm import machine  # noqa: E402  (one description of the machine for every benchmark)

from synthloom import DataError, TrainingConfig, train  # noqa: E402
from synthloom.schema import check_fields, infer_schema  # noqa: E402


def wide_table() -> tuple[list[str], list[list[str]]]:
    rng = random.Random(0)
    start = datetime(2023, 1, 1)
    rows = [
        [
            str(rng.randint(0, 10**6)),
            f"{rng.random():.6f}",
            (start + timedelta(seconds=rng.randint(0, 10**8))).strftime("%Y-%m-%d %H:%M:%S"),
            rng.choice(["a", "b", "c", ""]),
            f"note {i}",
        ]
        for i in range(20_000)
    ]
    return ["n", "x", "at", "cat", "note"] * 4, [row * 4 for row in rows]


def median_seconds(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    columns, rows = wide_table()
    infer = median_seconds(lambda: infer_schema(columns, rows))
    schema = infer_schema(columns, rows)
    check = median_seconds(lambda: [check_fields(schema, row, check_categories=True) for row in rows[:5000]])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "huge.txt"
        path.write_bytes(b"x" * (10 * 1024 * 1024) + b"\n")

        def refuse() -> None:
            where = {"data": {"path": str(path)}, "output_dir": str(Path(tmp) / "model")}
            config = TrainingConfig.model_validate(where)
            try:
                train(config, progress=False)
            except DataError:
                return
            raise AssertionError("a file of one 10 MB line trained")

        refused = median_seconds(refuse)
    print(f"Machine: {machine()}\n")
    print("| what | median of 3 |\n|---|---|")
    print(f"| infer_schema, 20,000 rows x 20 columns | {infer:.2f} s |")
    print(f"| check_fields, 5,000 of those rows | {check:.2f} s |")
    print(f"| train refused on one 10 MB line (DataError) | {refused:.2f} s |")


if __name__ == "__main__":
    main()
