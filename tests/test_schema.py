"""Column kinds from string fields, overrides, the per-record check, and the schema as JSON."""

from __future__ import annotations

import json
import random
from datetime import date, datetime, timedelta, timezone

import pytest

from synthloom.errors import DataError
from synthloom.schema import (
    DATE_FORMATS,
    ISO,
    ColumnSchema,
    Schema,
    check_fields,
    infer_schema,
    parse_value,
)


def column(values: list[str], name: str = "c", **overrides) -> ColumnSchema:
    """The inferred schema of one column holding `values`."""
    return infer_schema([name], [[v] for v in values], overrides=overrides or None).columns[0]


# --------------------------------------------------------------------------- kinds


def test_integers_keep_their_range_and_flags_stay_integers():
    c = column(["3", "-7", "+12", "0", "40"])
    assert (c.kind, c.min, c.max, c.allow_missing, c.missing) == ("integer", -7, 40, False, [])
    flags = column(["0", "1"] * 50)  # two distinct values in 100 rows: numbers stay numbers
    assert (flags.kind, flags.min, flags.max, flags.categories) == ("integer", 0, 1, None)


def test_ints_mixed_with_floats_are_floats():
    c = column(["1", "2.5", "-3e2", ".5", "4."])
    assert (c.kind, c.min, c.max) == ("float", -300.0, 4.0)


@pytest.mark.parametrize(
    "values",
    [
        ["02134", "10001", "94105", "60601", "02139", "73301"],  # ZIP codes: reading them as numbers loses the zero
        ["007", "12", "13", "14"],
        ["01.5", "2.5", "3.5", "4.5"],
    ],
)
def test_a_leading_zero_makes_a_column_not_numeric(values):
    assert column(values).kind == "text"
    assert column(values * 3).kind == "categorical"  # few distinct values: a category, kept as written


def test_non_finite_or_underscored_numbers_are_not_floats():
    assert column(["1.5", "inf", "2.5", "3.5"]).kind == "text"
    assert column(["1.5", "1e999", "2.5", "3.5"]).kind == "text"  # float() would give inf
    assert column(["1_000", "2_000", "3", "4"]).kind == "text"  # float() accepts underscores; a table does not


def test_categorical_needs_few_distinct_values():
    c = column(["US", "DE", "US", "FR", "DE", "US"])  # 3 distinct <= 0.5 * 6
    assert (c.kind, c.categories) == ("categorical", ["DE", "FR", "US"])
    assert column(["US", "DE", "US", "FR", "DE", "IT"]).kind == "text"  # 4 distinct > 3
    many = [f"v{i}" for i in range(51)] * 4  # 51 distinct > 50, though only a quarter of the values
    assert column(many).kind == "text"
    fifty = [f"v{i}" for i in range(50)] * 4
    assert column(fifty).kind == "categorical"


def test_text_keeps_its_longest_length():
    c = column(["a note", "another, longer note", "x", "yz"])
    assert (c.kind, c.max_length, c.categories) == ("text", 20, None)


@pytest.mark.parametrize(
    "values, kind, fmt",
    [
        (["2023-01-05", "2023-12-31"], "date", "%Y-%m-%d"),
        (["2023/01/05", "2023/12/31"], "date", "%Y/%m/%d"),
        (["01/05/2023", "12/31/2023"], "date", "%m/%d/%Y"),  # the 31 rules out day-first
        (["05/01/2023", "31/12/2023"], "date", "%d/%m/%Y"),  # the 31 rules out month-first
        (["01/05/2023", "02/03/2023"], "date", "%m/%d/%Y"),  # ambiguous: month-first wins
        (["05.01.2023", "31.12.2023"], "date", "%d.%m.%Y"),
        (["2023-01-05 10:00:00", "2023-12-31 23:59:59"], "datetime", "%Y-%m-%d %H:%M:%S"),
        (["2023-01-05T10:00:00", "2023-12-31T23:59:59"], "datetime", "%Y-%m-%dT%H:%M:%S"),
        (["2023-01-05 10:00", "2023-12-31 23:59"], "datetime", "%Y-%m-%d %H:%M"),
        (["2023-01-05T10:00:00.250", "2023-12-31T23:59:59+02:00"], "datetime", ISO),
        (["2023-01-05", "2023-01-05T10:00:00.500"], "datetime", ISO),  # no single strptime format: ISO
    ],
)
def test_dates_get_the_first_format_that_parses_every_value(values, kind, fmt):
    c = column(values + ["", "NA"])
    assert (c.kind, c.format, c.missing, c.allow_missing) == (kind, fmt, ["", "NA"], True)


def test_date_ranges_are_iso_strings_even_when_time_zones_mix():
    c = column(["2023-01-05T10:00:00+02:00", "2023-01-05T09:00:00.500", "2023-01-04T23:00:00.100-05:00"])
    # as UTC: 08:00, 09:00:00.5 (naive: read as UTC), 04:00:00.1 (all on 2023-01-05)
    assert (c.kind, c.min, c.max) == ("datetime", "2023-01-04T23:00:00.100000-05:00", "2023-01-05T09:00:00.500000")


def test_impossible_dates_are_not_dates():
    assert column(["2023-02-30", "2023-01-05"]).kind == "text"
    assert column(["2023-13-01", "2023-01-05"]).kind == "text"


STRPTIME_SAMPLES = [
    "2023-01-05",
    "2023-1-5",
    "2023-13-01",
    "2023-02-29",
    "2024-02-29",
    "2023-01-05 ",
    "99-01-05",
    "2023/01/05",
    "05/01/2023",
    "13/01/2023",
    "1/2/2023",
    "5.1.2023",
    "2023-01-05 10:00:00",
    "2023-01-05T10:00:00",
    "2023-01-05 10:00",
    "2023-01-05  10:00",
    "2023-01-05 24:00",
    "2023-01-05 1:2:3",
    "2023-01-05 10:60",
    "2023-01-05 10:00:60",
    "12/31/2023 23:59:59",
    "31/12/2023 23:59",
    "31.12.2023 23:59:01",
]


@pytest.mark.parametrize("fmt", [f for f in DATE_FORMATS if f != ISO])
def test_each_format_accepts_exactly_what_strptime_accepts(fmt):
    for text in STRPTIME_SAMPLES:
        try:
            expected = datetime.strptime(text, fmt)
            expected = expected if "%H" in fmt else expected.date()
        except ValueError:
            expected = None
        kind = "datetime" if "%H" in fmt else "date"
        col = ColumnSchema("d", kind, format=fmt)
        try:
            got = parse_value(col, text)
        except ValueError:
            got = None
        assert got == expected, (fmt, text)


# --------------------------------------------------------------------------- missing values


def test_missing_markers_count_only_in_typed_columns():
    ints = column(["1", "", "NA", "3", "null", "4"])
    assert (ints.kind, ints.missing, ints.allow_missing, ints.min, ints.max) == (
        "integer",
        ["", "NA", "null"],
        True,
        1,
        4,
    )
    floats = column(["1.5", "NaN", "2.5", "nan", "None"])
    assert (floats.kind, floats.missing) == ("float", ["NaN", "nan", "None"])
    countries = column(["NA", "US", "NA", "US", "", "DE", "US"])  # "NA" is Namibia here
    assert (countries.kind, countries.categories, countries.missing) == ("categorical", ["DE", "NA", "US"], [""])
    all_missing = column(["", "", ""])
    assert (all_missing.kind, all_missing.allow_missing, all_missing.max_length) == ("text", True, 0)


def test_a_missing_value_is_valid_only_where_training_had_some():
    schema = infer_schema(["age", "email"], [["41", "a@x.org"], ["", "b@y.org"], ["NA", "c@z.org"]])
    assert check_fields(schema, ["", "d@w.org"]) is None
    assert check_fields(schema, ["N/A", "d@w.org"]) is None  # any marker is a missing number
    assert check_fields(schema, ["52", ""]) == "email: missing value (none in training)"
    assert parse_value(schema.columns[0], "NA") is None
    assert parse_value(schema.columns[1], "") is None


# --------------------------------------------------------------------------- overrides


def test_an_override_sets_the_kind():
    rows = [["02134", "5"], ["10001", "6"], ["02134", "7"], ["94105", "8"]]
    schema = infer_schema(["zip", "n"], rows, overrides={"zip": "categorical", "n": "text"})
    assert [c.kind for c in schema.columns] == ["categorical", "text"]
    assert schema.columns[0].categories == ["02134", "10001", "94105"]
    as_int = infer_schema(["zip", "n"], rows, overrides={"zip": "integer"}).columns[0]
    assert (as_int.kind, as_int.min, as_int.max) == ("integer", 2134, 94105)  # the user asked for it


def test_an_override_the_values_do_not_fit_names_the_column_and_first_bad_value():
    rows = [["1"], [""], ["2"], ["abc"], ["xyz"]]
    with pytest.raises(DataError, match=r"column 'age'.*'integer'.*first bad value: 'abc', row 4"):
        infer_schema(["age"], rows, overrides={"age": "integer"})
    with pytest.raises(DataError, match=r"column 'd'.*'date'.*'2023-01-05 10:00'"):
        infer_schema(["d"], [["2023-01-04"], ["2023-01-05 10:00"]], overrides={"d": "date"})


def test_bad_overrides_and_ragged_rows_are_data_errors():
    with pytest.raises(DataError, match=r"unknown column\(s\) 'zipp'.*'zip'"):
        infer_schema(["zip"], [["1"]], overrides={"zipp": "categorical"})
    with pytest.raises(DataError, match=r"'zip': unknown kind 'int'; use one of integer, float"):
        infer_schema(["zip"], [["1"]], overrides={"zip": "int"})
    with pytest.raises(DataError, match=r"row 2 has 1 field\(s\), expected 2"):
        infer_schema(["a", "b"], [["1", "2"], ["3"]])


# --------------------------------------------------------------------------- the per-record check


@pytest.fixture
def people() -> Schema:
    rows = [
        ["ann", "41", "US", "2023-01-05", "1.5"],
        ["bob", "37", "DE", "2023-02-05", ""],
        ["cy", "29", "US", "2023-03-05", "2.25"],
        ["dee", "52", "DE", "2023-04-05", "3"],
    ]
    return infer_schema(["name", "age", "country", "signup", "score"], rows)


def test_the_people_schema(people):
    assert [c.kind for c in people.columns] == ["text", "integer", "categorical", "date", "float"]
    assert [c.allow_missing for c in people.columns] == [False, False, False, False, True]


@pytest.mark.parametrize(
    "fields, check_categories, problem",
    [
        (["eve", "33", "US", "2023-05-05", "2"], True, None),
        (["eve", "990", "DE", "1999-12-31", "-1e9"], True, None),  # outside the observed ranges: still valid
        (["eve", "abc", "US", "2023-05-05", "2"], False, "age: 'abc' is not an integer"),
        (["eve", "33.0", "US", "2023-05-05", "2"], False, "age: '33.0' is not an integer"),
        (["eve", "33", "US", "2023-13-45", "2"], False, "signup: '2023-13-45' is not a date like %Y-%m-%d"),
        (["eve", "33", "US", "2023-05-05", "two"], False, "score: 'two' is not a number"),
        (["eve", "33", "US", "2023-05-05", "inf"], False, "score: 'inf' is not a number"),
        (["eve", "33", "US"], False, "3 field(s), expected 5"),
        (["eve", "33", "Atlantis", "2023-05-05", ""], True, "country: unseen category 'Atlantis'"),
        (["eve", "33", "Atlantis", "2023-05-05", ""], False, None),
        (["", "33", "US", "2023-05-05", ""], False, "name: missing value (none in training)"),
        (["eve", "NA", "US", "2023-05-05", ""], False, "age: missing value (none in training)"),
    ],
)
def test_check_fields_explains_the_first_problem(people, fields, check_categories, problem):
    assert check_fields(people, fields, check_categories=check_categories) == problem


def test_parse_value_gives_typed_values(people):
    name, age, country, signup, score = people.columns
    assert parse_value(age, "33") == 33 and isinstance(parse_value(age, "33"), int)
    assert parse_value(score, "2") == 2.0 and isinstance(parse_value(score, "2"), float)
    assert parse_value(signup, "2023-05-06") == date(2023, 5, 6)
    assert parse_value(country, "FR") == "FR" and parse_value(name, "zed") == "zed"
    assert parse_value(score, "") is None
    with pytest.raises(ValueError, match="age: 'x' is not an integer"):
        parse_value(age, "x")
    stamp = column(["2023-01-05T10:00:00.500+01:00", "2023-01-06T10:00:00+00:00"])
    assert parse_value(stamp, "2023-01-07T00:00:00.250+00:00") == datetime(2023, 1, 7, 0, 0, 0, 250000, timezone.utc)


# --------------------------------------------------------------------------- as JSON


def test_the_schema_round_trips_through_json(people):
    d = people.to_dict()
    again = Schema.from_dict(json.loads(json.dumps(d)))
    assert again == people and again.to_dict() == d
    assert d["columns"][2]["categories"] == ["DE", "US"]


def test_a_private_schema_keeps_no_category_values(people):
    d = people.to_dict(include_categories=False)
    assert "US" not in json.dumps(d)
    private = Schema.from_dict(json.loads(json.dumps(d)))
    assert private.columns[2].categories is None and private.to_dict(include_categories=False) == d
    # the unseen-category check cannot run without the values; the kind checks still do
    assert check_fields(private, ["eve", "33", "Atlantis", "2023-05-05", ""], check_categories=True) is None
    assert check_fields(private, ["eve", "x", "US", "2023-05-05", ""]) == "age: 'x' is not an integer"
    no_ranges = people.to_dict(include_ranges=False)
    assert [(c["min"], c["max"], c["max_length"]) for c in no_ranges["columns"]] == [(None, None, None)] * 5


@pytest.mark.parametrize(
    "d, message",
    [
        ({}, "expected a dict with a 'columns' list"),
        ({"columns": [{"name": "a", "kind": "number"}]}, r"columns\[0\] \('a'\): unknown kind 'number'"),
        ({"columns": [{"name": "a", "kind": "date", "format": "%Y"}]}, "unknown date format '%Y'"),
        ({"columns": [{"kind": "text"}]}, r"columns\[0\]: expected a dict with a string 'name'"),
        ({"version": 2, "columns": []}, "unsupported version 2"),
    ],
)
def test_a_malformed_schema_dict_is_a_data_error(d, message):
    with pytest.raises(DataError, match=message):
        Schema.from_dict(d)


# --------------------------------------------------------------------------- speed


def test_inference_and_checks_hold_on_a_large_table():
    """20,000 rows x 20 columns: inferred and checked right (how fast: benchmarks/bench_inputs.py)."""
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
    columns = ["n", "x", "at", "cat", "note"]
    schema = infer_schema(columns * 4, [row * 4 for row in rows])  # 20k rows x 20 columns
    assert [c.kind for c in schema.columns[:5]] == ["integer", "float", "datetime", "categorical", "text"]
    assert all(check_fields(schema, row * 4, check_categories=True) is None for row in rows[:5000])
