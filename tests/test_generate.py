"""Sampling from trained model dirs: settings, reproducibility, checks, and loading errors.

Two tiny models are trained once for the whole module (a text-lines model and a CSV model)
and shared by every test; tests that damage a model dir work on a copy.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import HEADER, WORDS, tiny_config, write_people_csv, write_word_lines

from synthloom import (
    ConfigError,
    GeneratedRecord,
    GenerationError,
    ModelDirError,
    TrainedModel,
    TrainingConfig,
    load_model,
    train,
)
from synthloom.config import LSTMConfig
from synthloom.generate import resolve_settings
from synthloom.models.lstm import LSTMLanguageModel
from synthloom.records import format_records
from synthloom.sampling import sample_next
from synthloom.tokenizers import EOR_ID, PAD_ID, UNK_ID

# --------------------------------------------------------------------------- module fixtures


def _train_tiny(tmp_path_factory, data_name: str, write_data, epochs: int) -> Path:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("model")
    data = write_data(root / data_name)
    out = root / "model"
    train(tiny_config(data, out, train={"epochs": epochs}), progress=False)
    return out


@pytest.fixture(scope="module")
def text_model_dir(tmp_path_factory) -> Path:
    return _train_tiny(tmp_path_factory, "lines.txt", write_word_lines, epochs=15)


@pytest.fixture(scope="module")
def csv_model_dir(tmp_path_factory) -> Path:
    return _train_tiny(tmp_path_factory, "people.csv", write_people_csv, epochs=20)


@pytest.fixture(scope="module")
def text_model(text_model_dir) -> TrainedModel:
    return load_model(text_model_dir, device="cpu")


@pytest.fixture(scope="module")
def csv_model(csv_model_dir) -> TrainedModel:
    return load_model(csv_model_dir, device="cpu")


def one_batch(model: TrainedModel, n: int, **settings) -> list[GeneratedRecord]:
    """The first n records sampled, valid or not: records come back in start order, each an
    independent draw, so these are n draws from the model whatever their validity."""
    try:  # n valid, or more than n invalid: either way at least n records
        records = model.generate(n, batch_size=n, max_invalid=n, **settings)
    except GenerationError as exc:
        records = exc.records
    assert len(records) >= n
    return records[:n]


def texts(records: list[GeneratedRecord]) -> list[str]:
    return [r.text for r in records]


# --------------------------------------------------------------------------- basics


def test_load_model_and_generate_returns_exactly_num_records_valid(text_model_dir):
    model = load_model(text_model_dir, device="cpu")
    assert isinstance(model, TrainedModel)
    assert model.columns is None  # a text model has no header
    records = model.generate(25, seed=1)

    assert all(isinstance(r, GeneratedRecord) for r in records)
    valid = [r for r in records if r.valid]
    assert len(valid) == 25  # exactly num_records valid: never more, never fewer
    for r in records:
        assert isinstance(r.text, str) and isinstance(r.valid, bool)
        assert r.fields is None  # only table models parse fields
        if r.valid:
            assert r.explanation is None
            assert r.text.strip() and "\n" not in r.text
            assert set(r.text) <= set(" ".join(WORDS))  # only characters the model was trained on
        else:
            assert r.explanation  # every invalid record says why


def test_generate_function_defaults_from_saved_config(text_model_dir):
    # the module-level helper loads the dir; num_records falls back to the saved generate section (20)
    from synthloom import generate

    records = generate(text_model_dir, seed=5)
    assert sum(r.valid for r in records) == 20


def test_same_seed_same_records_and_different_seeds_differ(text_model):
    a = texts(text_model.generate(30, seed=7))
    b = texts(text_model.generate(30, seed=7))
    c = texts(text_model.generate(30, seed=8))
    assert a == b
    assert a != c


def test_batch_size_smaller_than_num_records(text_model):
    calls = []
    records = text_model.generate(10, batch_size=3, seed=2, progress=lambda v, i: calls.append((v, i)))
    assert sum(r.valid for r in records) == 10
    assert len(calls) >= 4  # at least ceil(10 / 3) batches, progress after each
    assert [v for v, _ in calls] == sorted(v for v, _ in calls)
    assert calls[-1] == (10, len(records) - 10)


# --------------------------------------------------------------------------- sampling settings


def test_temperature_zero_is_greedy(text_model, csv_model):
    """temperature 0: the likeliest token every step, as Hugging Face's do_sample=False: the same
    record every time, whatever the seed, and the argmax of the logits."""
    greedy = texts(one_batch(text_model, 8, seed=1, temperature=0))
    assert len(set(greedy)) == 1 and texts(one_batch(text_model, 8, seed=2, temperature=0)) == greedy
    logits = torch.randn(5, 30)
    gen = torch.Generator().manual_seed(0)
    want = logits.clone()
    want[:, [PAD_ID, UNK_ID]] = float("-inf")
    assert sample_next(logits.clone(), 0.0, 0, 1.0, gen).tolist() == want.argmax(-1).tolist()
    assert sample_next(logits.clone(), 1e-300, 0, 1.0, gen).tolist() == want.argmax(-1).tolist()  # the limit, no NaN
    assert len(set(texts(one_batch(csv_model, 8, seed=1, temperature=0, privacy_filter=False)))) == 1


def test_low_temperature_gives_far_fewer_distinct_records(text_model):
    cold = set(texts(one_batch(text_model, 40, seed=3, temperature=0.05)))
    warm = set(texts(one_batch(text_model, 40, seed=3, temperature=1.5)))
    assert len(warm) >= 30
    assert len(cold) <= 5
    assert len(cold) * 4 <= len(warm)


def test_top_k_1_is_greedy(text_model, csv_model):
    for seed in (1, 2):
        assert len(set(texts(one_batch(text_model, 16, seed=seed, top_k=1)))) == 1
        assert len(set(texts(one_batch(text_model, 16, seed=seed, top_k=1, prefix="cat ")))) == 1
    greedy_csv = one_batch(csv_model, 16, seed=1, top_k=1)
    assert len(set(texts(greedy_csv))) == 1
    # greedy does not depend on the seed
    assert texts(one_batch(csv_model, 4, seed=99, top_k=1)) == texts(greedy_csv)[:4]


def test_tiny_top_p_is_greedy(text_model, csv_model):
    greedy = texts(one_batch(text_model, 12, seed=1, top_k=1))
    nucleus = texts(one_batch(text_model, 12, seed=4, top_p=1e-6))
    assert len(set(nucleus)) == 1
    assert nucleus == greedy
    assert texts(one_batch(csv_model, 12, seed=4, top_p=1e-6)) == texts(one_batch(csv_model, 12, seed=1, top_k=1))


def test_sample_next_top_k_never_leaves_the_top_k():
    gen = torch.Generator().manual_seed(0)
    # the top two real tokens (3, 4) hold well under half the mass: without top_k others would show up
    row = torch.tensor([0.0, 0.0, 0.0, 2.0, 1.9, 1.8, 1.7, 1.6, 1.5])
    logits = row.repeat(3000, 1)
    counts = Counter(sample_next(logits, 1.0, 2, 1.0, gen).tolist())
    assert set(counts) == {3, 4}
    # control: without top_k the same logits do sample other tokens
    assert set(sample_next(logits, 1.0, 0, 1.0, gen).tolist()) - {3, 4}
    # the caller's logits are not modified in place
    torch.testing.assert_close(logits[0], row)


def test_sample_next_top_p_keeps_only_the_nucleus():
    gen = torch.Generator().manual_seed(0)
    probs = torch.tensor([1e-9, 1e-9, 1e-9, 0.5, 0.3, 0.1, 0.05, 0.05])
    logits = probs.log().repeat(4000, 1)

    counts = Counter(sample_next(logits, 1.0, 0, 0.75, gen).tolist())
    assert set(counts) == {3, 4}  # 0.5 + 0.3 is the smallest set holding 0.75
    # renormalised inside the nucleus: P(3) = 0.5 / 0.8
    assert abs(counts[3] / 4000 - 0.625) < 0.04

    counts = Counter(sample_next(logits, 1.0, 0, 0.85, gen).tolist())
    assert set(counts) == {3, 4, 5}

    assert set(sample_next(logits, 1.0, 0, 1e-6, gen).tolist()) == {3}  # the top token always stays


def test_sample_next_never_samples_pad_or_unk():
    gen = torch.Generator().manual_seed(0)
    # PAD and UNK get nearly all the mass; they must still never come out
    logits = torch.tensor([20.0, 0.0, 20.0, 0.0, 0.5]).repeat(2000, 1)
    for top_k, top_p, temperature in [(0, 1.0, 1.0), (1, 1.0, 1.0), (2, 1.0, 1.0), (0, 0.5, 1.0), (0, 1.0, 50.0)]:
        out = sample_next(logits.clone(), temperature, top_k, top_p, gen)
        assert out.shape == (2000,)
        assert PAD_ID not in out.tolist() and UNK_ID not in out.tolist(), (top_k, top_p, temperature)
    # greedy picks the best token that is not PAD or UNK
    assert set(sample_next(logits.clone(), 1.0, 1, 1.0, gen).tolist()) == {4}
    # the end-of-record token is a legitimate sample
    assert EOR_ID in sample_next(logits.clone(), 1.0, 0, 1.0, gen).tolist()


# --------------------------------------------------------------------------- max_tokens, stop, prefix


def test_small_max_tokens_marks_records_invalid(text_model):
    records = text_model.generate(5, seed=1, max_tokens=12, max_invalid=100_000)
    assert sum(r.valid for r in records) == 5
    too_long = [r for r in records if not r.valid and "max_tokens" in (r.explanation or "")]
    assert too_long, "some records of this model are longer than 12 characters"
    for r in too_long:
        assert "max_tokens=12" in r.explanation
        assert len(r.text) == 12  # char tokenizer: exactly max_tokens characters were sampled
    assert all(len(r.text) < 12 for r in records if r.valid)


def test_max_invalid_zero_raises_with_partial_records(text_model):
    with pytest.raises(GenerationError) as info:
        text_model.generate(10, seed=1, max_tokens=3, max_invalid=0, batch_size=10)
    exc = info.value
    assert "max_invalid=0" in str(exc)
    assert "max_tokens" in str(exc)  # the last reason is given
    records = exc.records
    assert len(records) == 10  # the whole first batch is kept
    invalid = [r for r in records if not r.valid]
    assert invalid
    assert any("max_tokens=3" in r.explanation for r in invalid)
    assert all(len(r.text) <= 3 for r in records)


def test_stop_string_cuts_records(text_model):
    plain = texts(text_model.generate(20, seed=1))
    assert sum(" " in t for t in plain) >= 10  # without the stop string most records hold a space

    records = text_model.generate(20, seed=1, stop=[" "])
    assert sum(r.valid for r in records) == 20
    for r in records:
        assert " " not in r.text  # cut where the stop string appears; the stop string is not kept
        if r.valid:
            assert r.text.isalpha()  # one word
    for r in text_model.generate(20, seed=1, stop=["ee", "ue"]):
        assert "ee" not in r.text and "ue" not in r.text


def test_every_record_starts_with_the_prefix(text_model, csv_model):
    records = text_model.generate(15, seed=1, prefix="blue ")
    assert sum(r.valid for r in records) == 15
    assert all(r.text.startswith("blue ") for r in records)

    records = csv_model.generate(8, seed=1, prefix="ann,", privacy_filter=False)  # the tiny model copies rows
    assert all(r.text.startswith("ann,") for r in records)
    assert all(r.fields[0] == "ann" for r in records if r.valid)


def test_prefix_with_unseen_character_raises(text_model):
    with pytest.raises(GenerationError, match="never saw"):
        text_model.generate(3, seed=1, prefix="red X")


# --------------------------------------------------------------------------- validators


def test_validator_returning_false_rejects(text_model):
    records = text_model.generate(8, seed=1, validator=lambda text: "e" not in text)
    valid = [r for r in records if r.valid]
    rejected = [r for r in records if not r.valid]
    assert len(valid) == 8
    assert all("e" not in r.text for r in valid)
    assert rejected and all(r.explanation for r in rejected)
    by_validator = [r for r in rejected if r.text.strip() and "max_tokens" not in r.explanation]
    assert by_validator
    assert all("e" in r.text and "validator" in r.explanation for r in by_validator)


def test_validator_raising_gives_its_message(text_model):
    def check(text: str) -> None:
        if "e" in text:
            raise ValueError("bad")

    records = text_model.generate(8, seed=1, validator=check)
    valid = [r for r in records if r.valid]
    assert len(valid) == 8
    assert all("e" not in r.text for r in valid)
    # every record that ended and holds an 'e' was rejected by the validator, with its message
    raised = [r for r in records if not r.valid and r.text.strip() and "max_tokens" not in r.explanation]
    assert raised
    assert all("e" in r.text and "bad" in r.explanation for r in raised)


# --------------------------------------------------------------------------- CSV models


def test_csv_records_parse_to_header_width(csv_model):
    assert csv_model.columns == HEADER
    records = csv_model.generate(15, seed=1)
    valid = [r for r in records if r.valid]
    assert len(valid) == 15
    for r in valid:
        assert r.fields is not None and len(r.fields) == len(HEADER)
        assert next(csv.reader(io.StringIO(r.text))) == r.fields
    for r in records:
        if not r.valid and r.fields is not None:  # the wrong width, or a field that fails its column's type
            if len(r.fields) != len(HEADER):
                assert r.explanation == f"{len(r.fields)} field(s), expected {len(HEADER)}"
            else:
                assert r.explanation.split(":")[0] in HEADER, r.explanation


def test_format_records_writes_header_first(csv_model):
    records = csv_model.generate(6, seed=2)
    text = format_records(records, csv_model.columns, ",")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == HEADER
    assert rows[1:] == [r.fields for r in records if r.valid]  # only valid records, in order
    assert len(rows) == 7
    # a text model writes one record per line and no header
    plain = [GeneratedRecord("a b", True), GeneratedRecord("zz", False, "nope"), GeneratedRecord("c", True)]
    assert format_records(plain, None, None) == "a b\nc\n"


# --------------------------------------------------------------------------- settings


def test_resolve_settings_rejects_bad_values(text_model):
    base = text_model.config.generate
    with pytest.raises(ConfigError, match="temperature"):
        resolve_settings(base, temperature=-0.5)
    with pytest.raises(ConfigError, match="top_p"):
        resolve_settings(base, top_p=1.5)
    with pytest.raises(ConfigError, match="generate.top_k"):
        resolve_settings(base, top_k=-1)
    with pytest.raises(ConfigError, match="temprature"):
        resolve_settings(base, temprature=0.5)
    # generate() goes through the same checks
    with pytest.raises(ConfigError):
        text_model.generate(3, temperature=-1)
    with pytest.raises(ConfigError, match="unknown"):
        text_model.generate(3, tempreature=0.5)


def test_resolve_settings_merges_overrides(text_model):
    base = text_model.config.generate
    opts = resolve_settings(base, temperature=0.5, top_k=None, num_records=None)
    assert opts.temperature == 0.5
    assert opts.top_k == base.top_k and opts.num_records == base.num_records == 20  # None = keep the saved value
    assert base.temperature == 1.0  # the saved section is not modified


# --------------------------------------------------------------------------- the model


def test_step_by_step_matches_full_forward(text_model):
    """Sampling feeds one token at a time and carries the LSTM state; that must give the
    same logits as running the whole sequence at once, so a prefix is never re-run."""
    net = text_model.net
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, text_model.tokenizer.vocab_size, (4, 12), generator=gen)
    tokens[:, 0] = EOR_ID
    with torch.no_grad():
        full, (h_full, c_full) = net(tokens)
        state = None
        steps = []
        for t in range(tokens.shape[1]):
            logits, state = net.step(tokens[:, t], state)
            steps.append(logits)
        torch.testing.assert_close(torch.stack(steps, dim=1), full)
        torch.testing.assert_close(state[0], h_full)
        torch.testing.assert_close(state[1], c_full)

        # a prefix run once, then steps from its state: the same as the full pass
        prefix_logits, state = net(tokens[:, :5])
        torch.testing.assert_close(prefix_logits, full[:, :5])
        for t in range(5, tokens.shape[1]):
            logits, state = net.step(tokens[:, t], state)
            torch.testing.assert_close(logits, full[:, t])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_step_with_a_sampling_plan_matches_full_forward(num_layers, precision):
    """The sampling plan's step (doubled g-gate weights, tanh from sigmoid, reused buffers,
    state updated in place) computes what nn.LSTM computes, for every layer count, and keeps
    doing so when the batch shrinks between steps, as it does at the end of a run. With the
    recurrent products in bf16 (generate.precision) it does so within bf16's rounding."""
    torch.manual_seed(0)
    net = LSTMLanguageModel(LSTMConfig(embedding_dim=12, hidden_size=16, num_layers=num_layers), 40).eval()
    tokens = torch.randint(3, 40, (6, 9))
    tokens[:, 0] = EOR_ID
    tol = 1e-5 if precision == "fp32" else 2e-2
    with torch.no_grad():
        full, (h_full, c_full) = net(tokens)
        plan = net.sampling_plan(precision)
        assert plan.w_hh0.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
        h = torch.zeros(num_layers, 6, 16)
        state = (h, h.clone())
        rows = torch.arange(6)
        for t in range(tokens.shape[1]):
            if t == 5:  # two records end: the batch shrinks to four rows
                rows = rows[[0, 2, 3, 5]]
                state = tuple(s[:, [0, 2, 3, 5]] for s in state)
            logits, state = net.step(tokens[rows, t], state, plan)
            torch.testing.assert_close(logits, full[rows, t], atol=tol, rtol=tol)
        torch.testing.assert_close(state[0], h_full[:, rows], atol=tol, rtol=tol)
        torch.testing.assert_close(state[1], c_full[:, rows], atol=tol, rtol=tol)
        assert state[0].dtype == state[1].dtype == logits.dtype == torch.float32  # the state stays fp32
        assert plan.buffers["logits"].data_ptr() == logits.data_ptr()  # a reused buffer, not a new tensor


# --------------------------------------------------------------------------- broken model dirs


@pytest.fixture
def model_copy(text_model_dir, tmp_path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(text_model_dir, copy)
    load_model(copy, device="cpu")  # the copy itself is fine
    return copy


def test_missing_weights_raise_model_dir_error(model_copy):
    (model_copy / "model.safetensors").unlink()
    with pytest.raises(ModelDirError, match="model.safetensors"):
        load_model(model_copy, device="cpu")


def test_corrupted_weights_raise_model_dir_error(model_copy):
    (model_copy / "model.safetensors").write_bytes(b"not a safetensors file \x00\xff\xfe" * 16)
    with pytest.raises(ModelDirError, match="model.safetensors"):
        load_model(model_copy, device="cpu")


def test_truncated_weights_raise_model_dir_error(model_copy):
    path = model_copy / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelDirError):
        load_model(model_copy, device="cpu")


def test_unknown_config_key_raises_model_dir_error(model_copy):
    path = model_copy / "config.json"
    config = json.loads(path.read_text())
    config["model"]["hiden_size"] = 8
    path.write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="hiden_size"):
        load_model(model_copy, device="cpu")


def test_weights_not_matching_config_raise_model_dir_error(model_copy):
    path = model_copy / "config.json"
    config = json.loads(path.read_text())
    config["model"]["hidden_size"] = 48
    path.write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="do not match"):
        load_model(model_copy, device="cpu")


def test_missing_model_dir_raises_model_dir_error(tmp_path):
    with pytest.raises(ModelDirError, match="not found"):
        load_model(tmp_path / "nope", device="cpu")


# --------------------------------------------------------------------------- the sampler itself


def test_inverse_cdf_sampler_matches_the_distribution_and_never_picks_zero_weights():
    from synthloom.sampling import sample_from

    probs = torch.tensor([0.1, 0.0, 0.6, 0.3, 0.0])  # zero weights inside and at the end
    n = 40_000
    draws = sample_from(probs.expand(n, -1).contiguous(), torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=5).double() / n
    assert counts[1] == 0 and counts[4] == 0
    torch.testing.assert_close(counts, probs.double(), atol=0.01, rtol=0)  # ~4 standard errors
    unnormalised = sample_from(torch.tensor([[0.0, 2.0, 0.0]] * 100), torch.Generator().manual_seed(1))
    assert unnormalised.eq(1).all()


@pytest.mark.parametrize("width", [128, 1000, 1027])
def test_the_two_level_sampler_of_wide_rows_matches_the_distribution(width):
    """Rows of 128+ weights are searched lane by lane (sampling.LANES): the same distribution,
    zero weights never drawn, including in the shorter lanes and at lane edges."""
    from synthloom.sampling import LANES, sample_from

    gen = torch.Generator().manual_seed(0)
    weights = (torch.rand(width, generator=gen) ** 2 + 0.02) * 3.0  # unnormalised, uneven
    weights[::7] = 0.0  # zeros inside lanes
    weights[::LANES] = 0.0  # a whole lane of zeros
    weights[LANES - 1 : LANES + 2] = 0.0  # around a lane edge
    weights[-1] = 0.0
    weights[width - 2] = 50.0  # a heavy entry in a shorter lane
    n, chunk = 120_000, 10_000
    draws = torch.cat([sample_from(weights.expand(chunk, -1).contiguous(), gen) for _ in range(n // chunk)])
    counts = torch.bincount(draws, minlength=width).double()
    assert draws.min() >= 0 and draws.max() < width
    assert counts[weights == 0].sum() == 0
    expected = weights.double() / weights.double().sum() * n
    fit = expected >= 5  # where the chi-square approximation holds
    chi2 = float(((counts - expected) ** 2 / expected)[fit].sum())
    dof = int(fit.sum()) - 1
    assert chi2 < dof + 5 * (2 * dof) ** 0.5  # 5 standard deviations of the chi-square
    # a row whose only weight is its last entry
    one = torch.zeros(3, width)
    one[:, width - 1] = 1e-30
    assert sample_from(one, gen).eq(width - 1).all()


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_refilled_slots_start_from_the_prefix_state(csv_model, batch_size):
    # greedy sampling is deterministic: a record started in a freed slot (continuous batching)
    # must be exactly the record sampled alone, whatever ran in that slot before
    # greedy decoding reproduces a training row: the privacy filter is off, this is about the slots
    alone = csv_model.generate(1, top_k=1, batch_size=1, max_invalid=30, privacy_filter=False)[0].text
    records = csv_model.generate(12, top_k=1, batch_size=batch_size, max_invalid=30, privacy_filter=False)
    assert {r.text for r in records} == {alone}
    with_prefix = csv_model.generate(
        12, top_k=1, batch_size=batch_size, prefix="cy,", max_invalid=30, privacy_filter=False
    )
    assert len({r.text for r in with_prefix}) == 1 and with_prefix[0].text.startswith("cy,")


def test_field_count_is_checked_without_a_header_and_csv_is_written_canonically():
    from synthloom.records import check_record

    short = check_record("a,b", True, 10, ",", 3, None)
    assert not short.valid and "expected 3" in short.explanation
    trailing = check_record("a,b,c\n", True, 10, ",", 3, None)  # a stray newline would be a blank line in the file
    assert trailing.valid and trailing.text == "a,b,c" and trailing.fields == ["a", "b", "c"]


def test_ctrl_c_during_sampling_keeps_the_records_made(text_model):
    calls = {"n": 0}

    def validator(text):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt

    with pytest.raises(GenerationError, match="interrupted") as info:
        text_model.generate(50, seed=0, batch_size=4, validator=validator, streams=1)
    assert len(info.value.records) == 5 and all(r.valid for r in info.value.records)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without CUDA")
def test_loading_onto_cuda_without_a_gpu_is_a_config_error(csv_model_dir):
    with pytest.raises(ConfigError, match="no CUDA device"):
        load_model(csv_model_dir, device="cuda")
    assert load_model(csv_model_dir, device="cpu").delimiter == ","


# --------------------------------------------------------------------------- streams


def test_streams_give_the_same_records_for_a_seed_on_any_thread_count(csv_model):
    """Two streams sample side by side in threads; each has its own share of the records, of
    max_invalid and its own seed, so the records depend on the seed and generate.streams, not
    on timing or on how many CPU threads torch has."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = csv_model.generate(30, seed=5, streams=2, max_invalid=500)
        torch.set_num_threads(2)
        two_threads = csv_model.generate(30, seed=5, streams=2, max_invalid=500)
    finally:
        torch.set_num_threads(before)
    assert texts(one_thread) == texts(two_threads)
    assert sum(r.valid for r in two_threads) == 30
    single = csv_model.generate(30, seed=5, streams=1, max_invalid=500)
    assert sum(r.valid for r in single) == 30
    assert torch.get_num_threads() == before  # restored after the streams ran


def test_an_error_in_a_stream_reaches_the_caller_and_stops_every_stream(text_model):
    import threading

    threads = threading.active_count()
    calls = []

    def progress(valid, invalid):
        calls.append(threading.current_thread() is threading.main_thread())
        if len(calls) == 3:
            raise RuntimeError("boom in progress")

    with pytest.raises(RuntimeError, match="boom in progress"):
        text_model.generate(400, seed=1, batch_size=8, streams=2, progress=progress)
    assert threading.active_count() == threads  # no stream left running


def test_ctrl_c_in_any_stream_keeps_what_was_sampled(text_model):
    calls = []

    def progress(valid, invalid):
        calls.append(valid)
        if len(calls) == 6:
            raise KeyboardInterrupt

    with pytest.raises(GenerationError, match="interrupted after") as info:
        text_model.generate(400, seed=1, batch_size=8, streams=2, progress=progress)
    assert info.value.records and all(isinstance(r, GeneratedRecord) for r in info.value.records)


def test_generate_precision_auto_follows_the_cpu_and_every_precision_gives_valid_rows(tmp_path):
    """generate.precision: auto is bf16 exactly where the CPU has bf16 instructions (a fixed
    property, so a seed repeats on one machine); bf16 and fp32 both sample valid table rows, and a
    seed gives the same rows twice at either."""
    from synthloom.models.precision import cpu_has_native_bf16, sampling_precision

    assert sampling_precision("auto", torch.device("cpu")) == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert sampling_precision("fp32", torch.device("cpu")) == "fp32"
    assert sampling_precision("auto", torch.device("meta")) == "fp32"  # not a CPU: fp32
    rows = [[c, str(a), f"{s:.2f}"] for c, a, s in zip("ABCD" * 60, range(18, 258), range(240))]
    data = tmp_path / "t.csv"
    data.write_text("city,age,spend\n" + "\n".join(",".join(r) for r in rows) + "\n")
    config = TrainingConfig.model_validate(
        {"data": {"path": str(data)}, "output_dir": str(tmp_path / "m"), "train": {"epochs": 1, "batch_size": 32},
         "model": {"hidden_size": 16, "embedding_dim": 8}}
    )  # fmt: skip
    train(config)
    model = load_model(tmp_path / "m")
    for precision in ("fp32", "bf16"):
        first = model.generate(50, seed=3, precision=precision)
        assert len(first) == 50 and all(r.valid for r in first)
        assert [r.text for r in model.generate(50, seed=3, precision=precision)] == [r.text for r in first]
        assert all(r.fields[0] in "ABCD" and 18 <= int(r.fields[1]) <= 257 for r in first)


def test_max_invalid_null_scales_with_the_request(text_model):
    """generate.max_invalid null allows as many invalid records as were asked for (at least 1,000):
    at a 40 % invalid rate 3,000 records succeed, where a fixed 1,000 gives up."""
    from synthloom.config import GenerateConfig

    assert GenerateConfig().invalid_budget(20_000) == 20_000 and GenerateConfig().invalid_budget(10) == 1000
    assert GenerateConfig(max_invalid=5).invalid_budget(20_000) == 5
    calls = []

    def two_in_five(text: str) -> bool:  # rejects 40 % of the records, whatever they hold
        calls.append(text)
        return len(calls) % 5 not in (1, 2)

    records = text_model.generate(3000, seed=0, validator=two_in_five)
    assert sum(r.valid for r in records) == 3000 and sum(not r.valid for r in records) > 1000
    calls.clear()
    with pytest.raises(GenerationError, match="max_invalid=1000"):
        text_model.generate(3000, seed=0, validator=two_in_five, max_invalid=1000)
