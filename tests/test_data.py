"""Reading records, splitting them, and batching them for training."""

from __future__ import annotations

import csv
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synthloom.config import DataConfig, validate_config
from synthloom.data import (
    IGNORE_INDEX,
    batch_indices,
    collate,
    count_batches,
    decode_row,
    encode_row,
    iterate_batches,
    read_records,
    split_records,
)
from synthloom.errors import DataError

EOR, PAD = 1, 0


def data_config(path: Path, **values) -> DataConfig:
    """A resolved DataConfig (format and delimiter derived as in a real run)."""
    return validate_config({"output_dir": str(path.parent / "model"), "data": {"path": str(path), **values}}).data


def write(tmp_path: Path, name: str, content: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# Fields that need quoting: the delimiter, quotes, newlines, leading/trailing spaces, empties, unicode.
TRICKY_ROWS = [
    ["multi\nline", "cr\rhere", "crlf\r\nend"],
    ["plain", "42", "x"],
    ["has, comma", 'say "hi"', ""],
    ['"quoted"', ",", '""'],
    ["  spaced  ", "tab\there", "café 東京"],
    ["", "", "last"],
]


# --------------------------------------------------------------------------- text files


def test_text_lines_are_records(text_path):
    records = read_records(data_config(text_path))
    assert records.texts == text_path.read_text().splitlines()
    assert records.columns is None
    assert records.skipped_empty == 0 and records.skipped_long == 0


def test_text_blank_lines_skipped_and_counted(tmp_path):
    path = write(tmp_path, "a.txt", "one\n\n  \ntwo\n\t\nthree\n")
    records = read_records(data_config(path))
    assert records.texts == ["one", "two", "three"]
    assert records.skipped_empty == 3
    assert any("3 empty" in note for note in records.notes)


def test_text_crlf_bom_and_final_newline(tmp_path):
    path = write(tmp_path, "a.txt", b"\xef\xbb\xbffirst\r\n  keeps spaces  \r\n\r\nlast\r\n")
    records = read_records(data_config(path))
    assert records.texts == ["first", "  keeps spaces  ", "last"]
    assert records.skipped_empty == 1


@pytest.mark.parametrize("content, expected", [("a\nb", ["a", "b"]), ("a\nb\n", ["a", "b"])])
def test_final_newline_is_not_a_record(tmp_path, content, expected):
    records = read_records(data_config(write(tmp_path, "a.txt", content)))
    assert records.texts == expected
    assert records.skipped_empty == 0


def test_max_records_keeps_the_first_n(tmp_path):
    path = write(tmp_path, "a.txt", "".join(f"line {i}\n" for i in range(50)))
    records = read_records(data_config(path, max_records=7))
    assert records.texts == [f"line {i}" for i in range(7)]


# --------------------------------------------------------------------------- csv files


@pytest.mark.parametrize("suffix, delimiter", [(".csv", ","), (".tsv", "\t")])
def test_csv_rows_round_trip_through_read_records(tmp_path, suffix, delimiter):
    header = ["a", "b", "c"]
    path = tmp_path / f"table{suffix}"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, delimiter=delimiter).writerows([header, *TRICKY_ROWS])  # CRLF line ends
    records = read_records(data_config(path))
    assert records.columns == header
    assert [decode_row(t, delimiter) for t in records.texts] == TRICKY_ROWS
    assert records.texts == [encode_row(row, delimiter) for row in TRICKY_ROWS]


def test_csv_fixture_reads_every_row(csv_path):
    records = read_records(data_config(csv_path))
    assert records.columns == ["name", "age", "city", "state", "note"]
    assert len(records.texts) == 120
    assert all(len(decode_row(t, ",")) == 5 for t in records.texts)
    assert decode_row(records.texts[0], ",")[4] == "moved, new address"


def test_csv_with_bom_has_clean_header(tmp_path):
    path = write(tmp_path, "a.csv", b"\xef\xbb\xbfname,age\nann,3\n")
    records = read_records(data_config(path))
    assert records.columns == ["name", "age"]
    assert records.texts == ["ann,3"]


def test_csv_without_header_keeps_first_row(tmp_path):
    path = write(tmp_path, "a.csv", "x,1\ny,2\n")
    records = read_records(data_config(path, header=False))
    assert records.columns is None
    assert records.texts == ["x,1", "y,2"]


def test_csv_blank_lines_skipped_and_counted(tmp_path):
    path = write(tmp_path, "a.csv", "k,v\n\na,1\n\nb,2\n")
    records = read_records(data_config(path))
    assert records.texts == ["a,1", "b,2"]
    assert records.skipped_empty == 2


@pytest.mark.parametrize("row", TRICKY_ROWS + [[""], ["only"], ["a;b", "c"]])
@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_encode_decode_row_round_trip(row, delimiter):
    record = encode_row(row, delimiter)
    assert not record.endswith(("\n", "\r"))  # no line terminator: one record is one row
    assert decode_row(record, delimiter) == row


FIELD_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(FIELD_TEXT, min_size=1, max_size=6), st.sampled_from([",", "\t", ";"]))
def test_encode_decode_row_round_trip_property(row, delimiter):
    assert decode_row(encode_row(row, delimiter), delimiter) == row


def test_decode_row_rejects_two_rows():
    with pytest.raises(csv.Error):
        decode_row("a,b\r\nc,d", ",")


# --------------------------------------------------------------------------- long records


def test_long_records_are_skipped_and_counted(tmp_path):
    path = write(tmp_path, "a.txt", "short\n" + "x" * 11 + "\nok\n" + "y" * 20 + "\n")
    records = read_records(data_config(path, max_record_chars=10))
    assert records.texts == ["short", "ok"]
    assert records.skipped_long == 2
    assert any("2 record(s) longer than 10" in note for note in records.notes)


def test_record_at_the_limit_is_kept(tmp_path):
    path = write(tmp_path, "a.txt", "x" * 10 + "\n")
    assert read_records(data_config(path, max_record_chars=10)).texts == ["x" * 10]


def test_long_records_error_names_the_limit(tmp_path):
    path = write(tmp_path, "a.txt", "short\n" + "x" * 11 + "\n")
    with pytest.raises(DataError, match=r"max_record_chars=10.*record 2, 11 characters"):
        read_records(data_config(path, max_record_chars=10, long_records="error"))


def test_all_records_too_long_is_an_error(tmp_path):
    path = write(tmp_path, "a.txt", "x" * 11 + "\n")
    with pytest.raises(DataError, match="no records to train on.*longer than 10"):
        read_records(data_config(path, max_record_chars=10))


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("missing.txt", None, "not found"),
        ("a.txt", b"", "empty"),
        ("a.txt", b"  \n\t\r\n \n", "empty"),
        ("a.txt", b"\xef\xbb\xbf\n\n", "no records"),
        ("a.csv", b"name,age\n", "only a header"),
        ("a.csv", b"name,age\r\n\r\n", "only a header"),
        ("a.csv", b"a,b\n1,2\n3\n", r"line 3 has 1 field\(s\), expected 2"),
        ("a.csv", b"a,b\n1,2,3\n", r"line 2 has 3 field\(s\), expected 2"),
        ("a.csv", b'a,b\n"x"y,2\n', "malformed CSV"),
        ("a.txt", b"fine\n\xff\xfe broken\n", r"not valid UTF-8 \(byte 5, line 2\)"),
        ("a.csv", b"a,b\nc\x00,d\n", r"NUL bytes \(line 2\)"),
    ],
)
def test_bad_input_raises_data_error_naming_the_problem(tmp_path, name, content, expected):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=expected):
        read_records(data_config(path))


def test_directory_is_rejected(tmp_path):
    (tmp_path / "d.txt").mkdir()
    with pytest.raises(DataError, match="directory"):
        read_records(data_config(tmp_path / "d.txt"))


# --------------------------------------------------------------------------- split


def test_split_is_seeded():
    texts = [f"record {i}" for i in range(200)]
    assert split_records(texts, 0.2, seed=1) == split_records(texts, 0.2, seed=1)
    assert split_records(texts, 0.2, seed=1) != split_records(texts, 0.2, seed=2)


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5, 0.9])
def test_split_size_follows_fraction(fraction):
    texts = [f"r{i}" for i in range(1000)]
    train, val = split_records(texts, fraction, seed=0)
    assert len(val) == round(1000 * fraction)
    assert sorted(train + val) == sorted(texts)


def test_split_keeps_duplicates_on_one_side():
    rng = random.Random(3)
    texts = [f"r{rng.randint(0, 40)}" for _ in range(500)]
    train, val = split_records(texts, 0.2, seed=5)
    assert not set(train) & set(val)
    assert Counter(train) + Counter(val) == Counter(texts)
    biggest = max(Counter(texts).values())
    assert abs(len(val) - 100) <= biggest


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from("abcdefgh"), min_size=2, max_size=60).filter(lambda t: len(set(t)) >= 2),
    st.floats(min_value=0.01, max_value=0.9),
    st.integers(min_value=0, max_value=10_000),
)
def test_split_properties(texts, fraction, seed):
    train, val = split_records(texts, fraction, seed=seed)
    assert not set(train) & set(val)
    assert Counter(train) + Counter(val) == Counter(texts)
    assert train and val
    # order within each side is the input order
    assert train == [t for t in texts if t in set(train)]


def test_zero_split_has_no_validation():
    texts = ["a", "b", "a"]
    assert split_records(texts, 0, seed=0) == (texts, [])
    assert split_records(["same"] * 5, 0.0, seed=0) == (["same"] * 5, [])


@pytest.mark.parametrize("texts", [["only"], ["same"] * 10])
def test_too_few_distinct_records_to_split(texts):
    with pytest.raises(DataError, match="too few.*validation_split: 0"):
        split_records(texts, 0.2, seed=0)


# --------------------------------------------------------------------------- batches


def test_collate_shifts_targets_and_pads():
    seqs = [[5, 6, 7], [8], []]
    inputs, targets = collate(seqs, eor_id=EOR, pad_id=PAD)
    assert inputs.dtype == targets.dtype == torch.long
    assert inputs.tolist() == [[EOR, 5, 6, 7], [EOR, 8, PAD, PAD], [EOR, PAD, PAD, PAD]]
    assert targets.tolist() == [
        [5, 6, 7, EOR],
        [8, EOR, IGNORE_INDEX, IGNORE_INDEX],
        [EOR, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
    ]
    assert IGNORE_INDEX == -100


def _records(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    # first token is the record's index + 3, so each row of a batch can be traced back
    return [[i + 3] + [rng.randint(3, 30) for _ in range(rng.randint(0, 9))] for i in range(n)]


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_cover_every_record_once_and_are_consistent(shuffle):
    encoded = _records(150)
    rng = random.Random(0) if shuffle else None
    seen = []
    for inputs, targets in iterate_batches(encoded, batch_size=16, rng=rng, eor_id=EOR, pad_id=PAD):
        assert inputs.shape == targets.shape and inputs.shape[0] <= 16
        for row_in, row_t in zip(inputs.tolist(), targets.tolist()):
            seq = encoded[row_in[1] - 3]
            n = len(seq)
            assert row_in[0] == EOR
            assert row_in[1 : n + 1] == seq and all(x == PAD for x in row_in[n + 1 :])
            assert row_t[:n] == row_in[1 : n + 1] and row_t[n] == EOR
            assert all(x == IGNORE_INDEX for x in row_t[n + 1 :])
            seen.append(row_in[1] - 3)
    assert sorted(seen) == list(range(150))
    if not shuffle:
        assert seen == list(range(150))


def test_shuffled_batches_are_seeded_and_vary_by_epoch():
    encoded = _records(100)
    first = batch_indices(encoded, 8, random.Random(1))
    assert first == batch_indices(encoded, 8, random.Random(1))
    rng = random.Random(1)
    assert batch_indices(encoded, 8, rng) != batch_indices(encoded, 8, rng)


def test_batches_group_similar_lengths():
    rng = random.Random(0)
    encoded = [[3] * rng.randint(1, 100) for _ in range(256)]
    padded = sum(inp.numel() for inp, _ in iterate_batches(encoded, 16, random.Random(0), EOR, PAD))
    unsorted = sum(inp.numel() for inp, _ in iterate_batches(encoded, 16, None, EOR, PAD))
    assert padded < 0.75 * unsorted


@pytest.mark.parametrize("n", [1, 5, 16, 17, 100, 511, 512, 513, 1100])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_count_batches_matches_iterate_batches(n, batch_size):
    encoded = [[3] * (i % 7) for i in range(n)]
    for rng in (random.Random(n), None):
        batches = list(iterate_batches(encoded, batch_size, rng, EOR, PAD))
        assert len(batches) == count_batches(n, batch_size)
        assert sum(inp.shape[0] for inp, _ in batches) == n


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|", " "])
def test_the_fast_csv_paths_write_and_read_what_the_csv_module_does(delimiter):
    """encode_row / decode_row skip the csv module when nothing needs quoting; whatever the
    fields hold (delimiters, quotes, line breaks, NULs, spaces, empties), the text and the
    fields must be exactly the csv module's."""
    import io

    def slow_encode(fields):
        buf = io.StringIO()
        csv.writer(buf, delimiter=delimiter, lineterminator="\r\n").writerow(fields)
        return buf.getvalue()[:-2]

    def slow_decode(text):
        return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))

    rng = random.Random(0)
    alphabet = ["a", "B", "7", " ", "-", ".", delimiter, '"', "\r", "\n", "\0", "é", ""]
    for _ in range(3000):
        fields = ["".join(rng.choices(alphabet, k=rng.randint(0, 4))) for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.7:  # mostly plain fields: the fast path
            fields = [f.translate({ord(c): None for c in (delimiter + '"\r\n\0')}) for f in fields]
        text = encode_row(fields, delimiter)
        assert text == slow_encode(fields), fields
        rows = slow_decode(text)
        if len(rows) == 1:
            assert decode_row(text, delimiter) == rows[0] == fields
        else:
            with pytest.raises(csv.Error):
                decode_row(text, delimiter)
    for text in ["", "a", "a" + delimiter, delimiter * 3, 'x"y', "a\nb", " lead", "trail "]:
        try:
            expected = slow_decode(text)
        except csv.Error:
            expected = None
        if expected is not None and len(expected) == 1:
            assert decode_row(text, delimiter) == expected[0], text
        else:
            with pytest.raises(csv.Error):
                decode_row(text, delimiter)


@pytest.mark.parametrize("delimiter", [";", "\t", "|", ","])
def test_the_delimiter_is_sniffed_when_not_given(tmp_path, delimiter):
    """A semicolon (or tab, or pipe) CSV is read as its columns, not as one text column, and the
    resolved config says which delimiter it found; a field holding another candidate stays whole."""
    other = ";" if delimiter == "," else ","
    lines = [delimiter.join(["city", "note", "amount"])]
    lines += [delimiter.join([f"c{i}", f"a{other}b", f"{i}.5"]) for i in range(30)]
    path = write(tmp_path, "t.csv", "\n".join(lines) + "\n")
    cfg = data_config(path)
    assert cfg.field_delimiter == delimiter
    records = read_records(cfg)
    assert records.columns == ["city", "note", "amount"]
    assert decode_row(records.texts[3], delimiter) == ["c3", f"a{other}b", "3.5"]
    assert data_config(path, field_delimiter=",").field_delimiter == ","  # given: kept
    one = write(tmp_path, "one.csv", "name\nann\nbob\n")
    assert data_config(one).field_delimiter == ","  # one column: nothing to sniff
