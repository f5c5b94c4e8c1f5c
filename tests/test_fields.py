"""Field-level tokens for tables (fields.py, lockstep.py): each column kind round-trips at the data's
precision, sampling never leaves a slot's vocabulary, shuffled column orders let any column be seeded,
and the default config trains and samples a small table end to end."""

from __future__ import annotations

import csv
import json
import random
import re
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from synthloom import GenerationError, load_model, train
from synthloom.config import LSTMConfig, TokenizerConfig
from synthloom.fields import PAD_ID, FieldTokenizer, field_batch, plan_bins
from synthloom.lockstep import _lockstep, job_plans, sample_field_stream
from synthloom.models.lstm import LSTMLanguageModel
from synthloom.schema import infer_schema

CFG = TokenizerConfig(kind="fields")


def round_trip(columns: dict[str, list[str]], **cfg) -> tuple[FieldTokenizer, list[list[str]], list[list[str]]]:
    names = list(columns)
    rows = [list(r) for r in zip(*columns.values())]
    schema = infer_schema(names, rows)
    tok = FieldTokenizer.train(schema, rows, TokenizerConfig(kind="fields", **cfg))
    ids, bad = tok.encode_rows(rows)
    assert bad == []
    for s, slot in enumerate(tok.slots):  # every id in its slot's range (or text filler)
        col = ids[:, s]
        assert (((col >= slot.base) & (col < slot.base + slot.size)) | (col == PAD_ID)).all()
    return tok, rows, tok.decode_rows(ids, np.random.default_rng(0))


def column(rows: list[list[str]], i: int = 0) -> list[str]:
    return [r[i] for r in rows]


# --------------------------------------------------------------------------- each kind round-trips


def test_integers_round_trip_exactly_with_missing_values_and_wide_ranges():
    rng = random.Random(0)
    ints = [str(rng.randint(-50_000, 2_000_000)) for _ in range(3000)] + ["", "NA"] * 10
    wide = [str(rng.choice([0, 0, 0, rng.randint(1, 10**7)])) for _ in range(len(ints))]  # a point mass at 0
    tok, rows, back = round_trip({"a": ints, "b": wide})
    assert back == rows
    assert tok.codecs[0].kind == "number" and tok.codecs[0].exponent == 0


@pytest.mark.parametrize(
    "values",
    [
        ["105.64", "11.10", "0.05", "1200.00"],  # fixed two decimals, kept as written
        ["3.5", "10", "2.25", "-7.125"],  # mixed: trailing zeros never added
        ["1.0", "2.5", "3.0", "-0.5"],  # at least one decimal, as the data writes them
    ],
)
def test_floats_round_trip_as_written(values):
    rng = random.Random(1)
    col = [rng.choice(values) for _ in range(400)] + values
    _, rows, back = round_trip({"x": col})
    assert back == rows


def test_the_grid_is_the_values_not_their_trailing_zeros():
    # pandas writes an integer column with missing values as 93.0: every value sampled is a whole
    # number, written as the data writes it; prices written with 2 decimals but all on 0.1 stay so
    rng = random.Random(4)
    iq = [f"{rng.randint(50, 149)}.0" for _ in range(2000)] + [""] * 100
    price = [f"{rng.randint(10, 900) / 10:.2f}" for _ in range(len(iq))]
    tok, rows, back = round_trip({"iq": iq, "price": price})
    assert back == rows
    assert tok.codecs[0].exponent == 0 and tok.codecs[1].exponent == -1
    for value in every_value(tok.codecs[0]):
        assert value == "" or (value.endswith(".0") and 50 <= float(value) <= 149)
    assert all(v.endswith("0") and len(v.partition(".")[2]) == 2 for v in every_value(tok.codecs[1]))


def every_value(codec) -> list[str]:
    """What a number codec decodes from every combination of its slots' tokens."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in codec.sizes], indexing="ij"), -1)
    return codec.decode(grid.reshape(-1, len(codec.sizes)), np.random.default_rng(0))


def test_floats_with_many_distinct_values_round_trip_at_their_precision():
    rng = random.Random(2)
    col = [f"{rng.gauss(50, 20):.2f}" for _ in range(5000)]
    tok, rows, back = round_trip({"x": col})
    assert back == rows  # 2 decimals over a range of ~150: every bin exact (under 100^2 units wide)
    assert len(tok.codecs[0].sizes) <= 3


def test_float_artefacts_keep_the_value_to_eight_digits_of_the_range():
    rng = random.Random(3)
    col = [repr(rng.uniform(3.0, 5.8)) for _ in range(2000)]  # 16-17 significant digits
    tok, rows, back = round_trip({"x": col})
    ends = {min(col, key=float), max(col, key=float)}  # the range's ends are bins of their own, written as read
    for a, b in zip(column(rows), column(back)):
        assert abs(float(a) - float(b)) <= 1e-4 and (len(b) <= 12 or b in ends)  # no artefact digits invented
        assert 3.0 <= float(b) <= 5.8


def test_scientific_notation_decodes_to_the_same_value():
    col = ["1e-05", "2.5e-05", "0.0001", "3E-4"] * 30
    _, rows, back = round_trip({"x": col})
    assert [float(v) for v in column(back)] == [float(v) for v in column(rows)]


def test_plan_bins_gives_a_point_mass_its_own_bin_and_covers_every_value():
    rng = np.random.default_rng(0)
    units = np.concatenate([np.zeros(9000, dtype=np.int64), rng.integers(1, 100_000, 1000)])
    lows, highs = plan_bins(units, 64)
    assert lows[0] == highs[0] == 0  # the zeros alone
    assert len(lows) <= 64 and len(lows) > 40  # the other bins spread over the rest, not swallowed
    assert all(lo <= hi < nxt for lo, hi, nxt in zip(lows, highs, lows[1:]))
    b = np.searchsorted(np.asarray(lows), units, side="right") - 1
    assert (units <= np.asarray(highs)[b]).all()  # every value inside its bin


def test_categories_round_trip_and_rare_ones_share_a_token_sampled_back_by_frequency():
    col = ["a"] * 50 + ["b"] * 30 + ["NA"] * 10 + ["r1"] * 3 + ["r2"] * 1 + [""] * 5
    tok, rows, back = round_trip({"x": col, "y": [str(i % 7) for i in range(len(col))]}, rare_category_threshold=4)
    codec = tok.codecs[0]
    assert codec.categories == ["NA", "a", "b"] and codec.rare == ["r1", "r2"] and codec.missing == [""]
    same = [a == b for a, b in zip(column(rows), column(back))]
    assert all(s for s, v in zip(same, column(rows)) if v not in ("r1", "r2"))
    assert {b for a, b in zip(column(rows), column(back)) if a in ("r1", "r2")} <= {"r1", "r2"}
    draws = codec.decode(np.full((4000, 1), codec.rare_token), np.random.default_rng(1))
    assert abs(draws.count("r1") / 4000 - 0.75) < 0.03  # by training frequency (3 of 4)


@pytest.mark.parametrize(
    "texts",
    [
        ["2023-01-05", "2024-02-29", "2023-12-31", ""],
        ["1/5/2023", "12/31/2023", "2/29/2024"],  # unpadded month-first
        ["05.01.2023", "31.12.2023", "29.02.2024"],
        ["2013-01-01 05:00:00", "2013-06-30 23:00:00", "2013-12-31 13:00:00"],
        ["2013-01-01T05:00:00Z", "2013-06-30T23:15:00Z"],
        ["2020-03-01T10:20:30.250+01:00", "2021-07-04T00:00:00.125+02:00"],
    ],
)
def test_dates_and_datetimes_round_trip_in_their_format(texts):
    rng = random.Random(4)
    col = [rng.choice(texts) for _ in range(300)] + texts
    _, rows, back = round_trip({"d": col})
    assert back == rows


def test_a_day_past_its_months_end_decodes_to_a_real_date():
    tok, _, _ = round_trip({"d": ["2023-01-31", "2023-02-01", "2023-03-15", "2024-02-10"] * 20})
    codec = tok.codecs[0]
    # year 2023, month 2, day 31 as local ids (each component counts from its smallest value)
    local = np.array([[2023 - codec.lows[0], 2 - codec.lows[1], 31 - codec.lows[2]]])
    (value,) = codec.decode(local, np.random.default_rng(0))
    assert value == "2023-02-28" and date.fromisoformat(value)


def test_a_datetime_whose_components_are_each_in_range_is_still_kept_within_the_datas_range():
    texts = ["2013-01-01 05:00:00", "2013-06-30 23:00:00", "2013-12-30 18:00:00", "2013-03-31 00:00:00"]
    tok, _, _ = round_trip({"t": texts * 10})
    codec = tok.codecs[0]
    highest = np.array([[hi - lo for lo, hi in zip(codec.lows, codec.highs)]])  # Dec 31, 23:00 of 2013
    lowest = np.zeros_like(highest)  # Jan 1, 00:00
    assert codec.decode(highest, np.random.default_rng(0)) == ["2013-12-30 18:00:00"]
    assert codec.decode(lowest, np.random.default_rng(0)) == ["2013-01-01 05:00:00"]


def test_text_columns_round_trip_with_subwords_and_with_characters():
    rng = random.Random(5)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    long_text = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 6))) + f" #{i}" for i in range(300)]
    short_ids = [f"C{'-' if i % 2 else ''}{i:05d}" for i in range(300)]  # two shapes: not a pattern
    tok, rows, back = round_trip({"note": long_text, "id": short_ids})
    assert back == rows
    assert tok.codecs[0].model_proto is not None  # subwords for the longer values
    assert tok.codecs[1].kind == "text" and tok.codecs[1].model_proto is None  # characters for short ones


def test_constant_and_all_missing_columns_take_no_slot():
    tok, rows, back = round_trip({"k": ["same"] * 100, "m": [""] * 100, "x": [str(i % 9) for i in range(100)]})
    assert back == rows
    assert [len(s) for s in tok.column_slots] == [0, 0, 1]


def test_a_saved_tokenizer_loads_back_identical(tmp_path):
    from synthloom.tokenizers import load_tokenizer

    rng = random.Random(6)
    cols = {
        "n": [f"{rng.uniform(0, 1000):.1f}" for _ in range(500)],
        "c": [rng.choice("abc") for _ in range(500)],
        "d": [f"2020-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}" for _ in range(500)],
        "t": [f"item {rng.randint(0, 10**6)} of the {rng.choice(['red', 'blue'])} batch" for _ in range(500)],
    }
    tok, rows, back = round_trip(cols)
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.to_dict() == tok.to_dict()
    ids, _ = again.encode_rows(rows)
    assert again.decode_rows(ids, np.random.default_rng(0)) == back


# --------------------------------------------------------------------------- text of one shape


def customers(n: int = 600, seed: int = 3) -> dict[str, list[str]]:
    rng = random.Random(seed)
    firsts, lasts = ["James", "Mary", "Wei", "Priya", "Jose"], ["Smith", "Lee", "Nguyen", "Garcia"]
    cols: dict[str, list[str]] = {k: [] for k in ("id", "first", "last", "email", "street", "zip")}
    for i in range(n):
        first, last = rng.choice(firsts), rng.choice(lasts)
        cols["id"].append(f"C-{i + 1:06d}")
        cols["first"].append(first)
        cols["last"].append(last)
        cols["email"].append(f"{first.lower()}.{last.lower()}{rng.randint(1, 99)}@{rng.choice(['gmail', 'yahoo'])}.com")
        street = rng.choice(["Oak", "Pine", "Main"])
        cols["street"].append(f"{rng.randint(1, 9999)} {street} {rng.choice(['St', 'Ave'])}")
        cols["zip"].append("" if i % 50 == 0 else f"{rng.choice([2, 10, 331])}{rng.randint(0, 99):02d}".zfill(5))
    return cols


def every_row(tok: FieldTokenizer, n: int = 2000) -> list[list[str]]:
    """Rows decoded from random tokens, each in its slot's range: whatever a model could sample."""
    rng = np.random.default_rng(0)
    ids = np.stack([slot.base + rng.integers(0, slot.size, n) for slot in tok.slots], axis=1)
    return tok.decode_rows(ids, rng)


def test_text_of_one_shape_round_trips_and_every_sampled_value_keeps_the_shape():
    tok, rows, back = round_trip(customers())
    assert back == rows
    kinds = {name: codec.kind for name, codec in zip(tok.columns, tok.codecs)}
    assert kinds == {"id": "pattern", "first": "category", "last": "category", "email": "pattern",
                     "street": "pattern", "zip": "pattern"}  # fmt: skip
    email = tok.codecs[tok.columns.index("email")]
    assert [p.get("copy") for p in email.parts if "copy" in p] == [1, 2]  # the names are copied, not learnt
    zip_codec = tok.codecs[tok.columns.index("zip")]
    assert zip_codec.codecs[0].kind == "digits" and zip_codec.missing == [""]
    for r in every_row(tok):
        assert re.fullmatch(r"C-\d{6}", r[0])
        assert re.fullmatch(re.escape(f"{r[1].lower()}.{r[2].lower()}") + r"\d{1,2}@(gmail|yahoo)\.com", r[3])
        number, name, kind = r[4].split(" ")
        assert 1 <= int(number) <= 9999 and name in ("Oak", "Pine", "Main") and kind in ("St", "Ave")
        assert r[5] == "" or re.fullmatch(r"\d{5}", r[5])
    # saved and loaded, it decodes the same
    again = FieldTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())), "test")
    ids, _ = tok.encode_rows(rows)
    assert again.decode_rows(ids, np.random.default_rng(1)) == rows


@pytest.mark.parametrize(
    "values",
    [
        ["007", "12", "4"] * 40,  # a zero-padded run beside unpadded ones: neither a code nor a number
        [f"{w} {n}" for w, n in zip(["a b", "c"] * 60, range(120))],  # two shapes
        [f"{name}{i} St" for i, name in enumerate(f"w{k:03d}".replace("0", "x") for k in range(300))],  # words all rare
    ],
)
def test_text_of_several_shapes_or_free_words_stays_text(values):
    tok, rows, back = round_trip({"t": values, "n": [str(i) for i in range(len(values))]})
    assert back == rows
    assert tok.codecs[0].kind in ("text", "category")


def test_characters_python_calls_digits_but_are_not_0_9_are_not_numbers():
    # "²".isdigit() is True, int("²") fails: a shape must read digit runs as [0-9] only
    values = ["²" * (i % 3 + 1) + f"-{i}" for i in range(600)]  # a varying run of "²": a word, not a number
    tok, rows, back = round_trip({"area": values})
    assert back == rows and tok.codecs[0].kind == "pattern"


def test_a_seeded_value_is_written_as_given_even_where_its_parts_copy_other_columns():
    cols = customers()
    names = list(cols)
    rows = [list(r) for r in zip(*cols.values())]
    tok = FieldTokenizer.train(infer_schema(names, rows), rows, CFG)
    net = LSTMLanguageModel(LSTMConfig(embedding_dim=8, hidden_size=16, num_layers=1), tok.vocab_size,
                            tok.allowed_mask()).eval()  # fmt: skip
    (job,) = job_plans(tok, [{"email": "wei.lee7@gmail.com"}])
    out = []
    sample_field_stream(net, tok, [job], (1.0, 0, 1.0), torch.Generator().manual_seed(0), 20,
                        lambda free: [(0, i) for i in range(free)] if not out else [],
                        lambda got, tickets: out.extend(got))  # fmt: skip
    assert len(out) == 20 and all(r[3] == "wei.lee7@gmail.com" for r in out)


# --------------------------------------------------------------------------- batches and the model


def small_table() -> tuple[FieldTokenizer, list[list[str]]]:
    rng = random.Random(7)
    rows = []
    for _ in range(200):
        city = rng.choice(["Boston", "Denver", "Austin"])
        rows.append([city, str(rng.randint(18, 90)), f"{rng.uniform(0, 500):.2f}", f"note {rng.randint(0, 99)} ok"])
    schema = infer_schema(["city", "age", "spend", "note"], rows)
    return FieldTokenizer.train(schema, rows, CFG), rows


def test_a_shuffled_batch_keeps_leading_columns_first_and_each_columns_slots_together():
    tok, rows = small_table()
    ids, _ = tok.encode_rows(rows)
    inputs, targets, positions = field_batch(tok, ids[:64], leading=1, rng=np.random.default_rng(0))
    s = tok.num_slots
    assert inputs.shape == targets.shape == positions.shape == (64, s + 1)
    assert (positions[:, s] == s).all() and (targets[:, s] == 1).all()
    col_of = tok.slot_column()
    orders = set()
    for row in positions[:, :s].tolist():
        cols = [int(col_of[p]) for p in row]
        assert cols[0] == 0  # the leading column first
        assert sorted(row) == list(range(s))  # every slot once
        blocks = [c for i, c in enumerate(cols) if i == 0 or c != cols[i - 1]]
        assert len(blocks) == len(set(blocks))  # a column's slots together, and in order:
        assert all(row.index(a) < row.index(b) for a, b in zip(row, row[1:]) if col_of[a] == col_of[b])
        orders.add(tuple(blocks))
    assert len(orders) > 1
    # each target is the token of the slot its position names (text filler excepted)
    for r in range(64):
        for t in range(s):
            token = ids[r, positions[r, t]]
            assert targets[r, t] == (token if token != PAD_ID else -100)
            assert inputs[r, t + 1] == token


def test_logits_are_masked_to_each_slots_vocabulary_and_the_sampled_step_matches_the_full_pass():
    tok, rows = small_table()
    net = LSTMLanguageModel(LSTMConfig(embedding_dim=16, hidden_size=32, num_layers=2), tok.vocab_size,
                            tok.allowed_mask()).eval()  # fmt: skip
    ids, _ = tok.encode_rows(rows[:8])
    inputs, _, positions = field_batch(tok, ids)
    logits, _ = net(inputs, positions=positions)
    allowed = tok.allowed_mask()[positions]
    assert torch.isinf(logits[~allowed]).all() and torch.isfinite(logits[allowed]).all()
    # step_slot on the sampling plan gives the same slot logits as the full forward pass; with the
    # recurrent products in bf16 (generate.precision) within bf16's rounding
    for precision, tolerance in (("fp32", 1e-5), ("bf16", 2e-2)):
        plan = net.sampling_plan(precision)
        state = (torch.zeros(2, 8, 32), torch.zeros(2, 8, 32))
        token, fed = inputs[:, 0], None  # <eor> first
        for t in range(tok.num_slots):
            slot = tok.slots[t]
            step, state = net.step_slot(token, fed, t, state, plan)
            want = logits[:, t, slot.base : slot.base + slot.size]
            torch.testing.assert_close(step, want, atol=tolerance, rtol=10 * tolerance)
            token, fed = inputs[:, t + 1], t


@pytest.mark.parametrize("shuffle", [False, True])
def test_the_slot_sliced_loss_equals_the_loss_over_masked_full_logits(shuffle):
    tok, rows = small_table()
    torch.manual_seed(0)
    net = LSTMLanguageModel(LSTMConfig(embedding_dim=16, hidden_size=32, num_layers=1, dropout=0.0), tok.vocab_size,
                            tok.allowed_mask())  # fmt: skip
    ids, _ = tok.encode_rows(rows[:16])
    inputs, targets, positions = field_batch(tok, ids, rng=np.random.default_rng(0) if shuffle else None)
    loss, correct = net.loss(inputs, targets, positions)
    logits, _ = net(inputs, positions=positions)
    full = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum"
    )
    torch.testing.assert_close(loss, full, atol=1e-4, rtol=1e-5)
    assert int(correct) == int(((logits.argmax(-1) == targets) & (targets != -100)).sum())
    grads = torch.autograd.grad(loss, [net.head.weight, net.lstm.weight_hh_l0])
    expected = torch.autograd.grad(full, [net.head.weight, net.lstm.weight_hh_l0])
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_sampling_never_emits_a_token_outside_its_slots_vocabulary():
    tok, rows = small_table()
    torch.manual_seed(0)
    net = LSTMLanguageModel(LSTMConfig(embedding_dim=16, hidden_size=32, num_layers=1), tok.vocab_size,
                            tok.allowed_mask()).eval()  # fmt: skip
    with torch.no_grad():  # an untrained net with large random weights: it would put mass anywhere
        for p in net.parameters():
            p.normal_(0, 3.0)
    plan = net.sampling_plan()
    (job,) = job_plans(tok, None)
    for temperature in (0.5, 1.0, 5.0):
        ids = _lockstep(net, plan, tok, job.order, [()] * 500, (temperature, 0, 1.0), torch.Generator().manual_seed(1),
                        None)  # fmt: skip
        for s, slot in enumerate(tok.slots):
            col = ids[:, s]
            assert (((col >= slot.base) & (col < slot.base + slot.size)) | (col == PAD_ID)).all()
        back = tok.decode_rows(ids, np.random.default_rng(0))
        assert all(r[0] in ("Boston", "Denver", "Austin") and 18 <= int(r[1]) <= 90 for r in back)
        assert all(0.0 <= float(r[2]) <= 500.0 and len(r[2].partition(".")[2]) <= 2 for r in back)


# --------------------------------------------------------------------------- end to end


def write_small_table(path: Path, n: int = 320) -> Path:
    """A few hundred rows with dependencies (state from city, spend from plan) and missing values."""
    rng = random.Random(8)
    cities = {"Boston": "MA", "Denver": "CO", "Austin": "TX", "Seattle": "WA"}
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["city", "state", "plan", "spend", "age", "joined"])
        for _ in range(n):
            city = rng.choice(list(cities))
            plan = rng.choice(["basic", "plus", "premium"])
            base = {"basic": 10, "plus": 40, "premium": 100}[plan]
            spend = "" if rng.random() < 0.1 else f"{base + rng.uniform(0, 9):.2f}"
            joined = datetime(2020, 1, 1).toordinal() + rng.randint(0, 900)
            w.writerow([city, cities[city], plan, spend, rng.randint(18, 80), date.fromordinal(joined).isoformat()])
    return path


def test_the_default_config_trains_and_samples_a_small_table_with_every_row_valid(tmp_path):
    data = write_small_table(tmp_path / "t.csv")
    out = tmp_path / "model"
    config = {
        "output_dir": str(out),
        "data": {"path": str(data)},
        "model": {"embedding_dim": 32, "hidden_size": 64, "num_layers": 1},
        "train": {"epochs": 8},
    }
    result = train(config, progress=False)
    assert result.steps > 0
    model = load_model(out)
    assert model.tokenizer.kind == "fields" and model.config.tokenizer.kind == "fields"
    records = model.generate(num_records=300, seed=1)
    assert len(records) == 300 and all(r.valid for r in records)
    cities = {"Boston": "MA", "Denver": "CO", "Austin": "TX", "Seattle": "WA"}
    for r in records:
        city, state, plan, spend, age, joined = r.fields
        assert city in cities and plan in ("basic", "plus", "premium")
        assert spend == "" or 10.0 <= float(spend) <= 109.0
        assert 18 <= int(age) <= 80 and date.fromisoformat(joined)
    agree = sum(cities[r.fields[0]] == r.fields[1] for r in records)
    assert agree > 0.9 * len(records)  # the dependency was learnt, not just the marginals


def test_a_shuffled_order_model_honours_seeds_in_any_column(tmp_path):
    data = write_small_table(tmp_path / "t.csv")
    out = tmp_path / "model"
    config = {
        "output_dir": str(out),
        "data": {"path": str(data), "column_order": "shuffle"},
        "model": {"embedding_dim": 32, "hidden_size": 64, "num_layers": 1},
        "train": {"epochs": 3},
    }
    train(config, progress=False)
    model = load_model(out)
    for seed in ({"plan": "premium"}, {"age": "33", "state": "TX"}, {"joined": "2021-05-02"}):
        records = model.generate(num_records=40, seed=2, seed_fields=seed)
        assert all(r.valid for r in records) and len(records) == 40
        for r in records:
            for name, value in seed.items():
                assert r.fields[model.columns.index(name)] == value
    many = model.generate(seed_fields=[{"spend": "55.55"}, {"city": "Denver"}], seed=3)
    assert [r.fields[3] for r in many][0] == "55.55" and many[1].fields[0] == "Denver"
    with pytest.raises(GenerationError, match="outside the training range"):
        model.generate(num_records=3, seed_fields={"age": "200"})


def test_a_fixed_order_model_refuses_seeds_that_are_not_its_leading_columns(tmp_path):
    data = write_small_table(tmp_path / "t.csv")
    out = tmp_path / "model"
    train({"output_dir": str(out), "data": {"path": str(data)}, "model": {"hidden_size": 16, "embedding_dim": 8},
           "train": {"epochs": 1}}, progress=False)  # fmt: skip
    with pytest.raises(GenerationError, match="column_order: shuffle"):
        load_model(out).generate(num_records=3, seed_fields={"plan": "basic"})
    records = load_model(out).generate(num_records=5, seed_fields={"city": "Austin"}, seed=1)
    assert all(r.fields[0] == "Austin" for r in records)
