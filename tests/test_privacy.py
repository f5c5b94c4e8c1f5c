"""Differential privacy (issue 4): per-record gradients, clipping, noise, accounting, the run end to end."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_user_error, run, tiny_config, write_config
from opacus.accountants import create_accountant  # the test extra installs it: never skipped
from safetensors.torch import load_file

from synthloom import ConfigError, GenerationError, TrainingConfig, load_model, train
from synthloom.config import LSTMConfig
from synthloom.data import IGNORE_INDEX, collate
from synthloom.models.dp_lstm import DPLSTM
from synthloom.models.lstm import LSTMLanguageModel
from synthloom.privacy import PrivacyPlan, PrivateTraining, epsilon_after, make_private

train_module = importlib.import_module("synthloom.train")

VOCAB = 11
RECORDS = [[3, 4, 5], [6, 7], [8, 9, 10, 3, 4, 5, 6], [5], [7, 7, 7, 7]]  # unequal lengths: padding


def _net(layers: int = 2) -> LSTMLanguageModel:
    torch.manual_seed(3)
    return LSTMLanguageModel(
        LSTMConfig(embedding_dim=6, hidden_size=8, num_layers=layers, dropout=0.0, initializer="pytorch"), VOCAB
    )


def _record_loss(net, ids: list[list[int]]) -> torch.Tensor:
    """What DP training minimises: the sum over records of each record's mean token loss."""
    inputs, targets = collate(ids, 1, 0)
    logits, _ = net(inputs)
    mask = targets != IGNORE_INDEX
    token = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none")
    return (token.view_as(targets).sum(1) / mask.sum(1)).sum()


def _reference_grads(ids: list[list[int]], layers: int = 2) -> list[dict[str, torch.Tensor]]:
    """Each record's gradient, from a plain nn.LSTM model that sees only that record."""
    grads = []
    for record in ids:
        net = _net(layers)
        _record_loss(net, [record]).backward()
        grads.append({name: p.grad.clone() for name, p in net.named_parameters()})
    return grads


def _plan(noise: float, clip: float, expected: float, records: int = 5) -> PrivacyPlan:
    return PrivacyPlan(
        records=records,
        sample_rate=expected / records,
        expected_batch_size=expected,
        noise_multiplier=noise,
        delta=1e-3,
        max_grad_norm=clip,
        accountant="rdp",
        planned_steps=10,
        budget_steps=None,
        target_epsilon=None,
        poisson_sampling=True,
        secure_mode=False,
    )


def _private(noise: float, clip: float, expected: float, seed: int = 0):
    net = _net()
    hooks = make_private(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)  # lr 0: the step leaves the weights, p.grad shows the update
    return net, PrivateTraining(_plan(noise, clip, expected), optimizer, hooks, torch.device("cpu"), seed)


def _step(net, private, micro_batches: list[list[list[int]]]):
    batches = [(*collate(ids, 1, 0), None) for ids in micro_batches]
    precision = train_module.Precision.of("fp32", torch.device("cpu"))
    stats = train_module.private_optimizer_step(net, private, batches, torch.device("cpu"), precision)
    return {name: p.grad.clone() for name, p in net.named_parameters()}, stats


# --------------------------------------------------------------------------- per-record gradients


def test_dplstm_computes_what_nn_lstm_computes():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 7, num_layers=3, batch_first=True)
    dp = DPLSTM.from_lstm(lstm)
    assert list(dp.state_dict()) == list(lstm.state_dict())  # saved weights load into nn.LSTM
    x = torch.randn(4, 9, 5)
    state = (torch.randn(3, 4, 7), torch.randn(3, 4, 7))
    for args in ((x,), (x, state)):
        out, (h, c) = dp(*args)
        ref_out, (ref_h, ref_c) = lstm(*args)
        torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(h, ref_h, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(c, ref_c, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layers", [1, 2])
def test_per_record_gradients_are_each_records_own(layers):
    """Records of unequal length in one padded batch: row n's gradient is record n's alone."""
    net = _net(layers)
    make_private(net)
    _record_loss(net, RECORDS).backward()
    reference = _reference_grads(RECORDS, layers)
    for name, p in net.named_parameters():
        assert p.grad_sample.shape == (len(RECORDS), *p.shape), name
        for n, ref in enumerate(reference):
            torch.testing.assert_close(p.grad_sample[n], ref[name], atol=1e-6, rtol=1e-4, msg=f"{name}, record {n}")


# --------------------------------------------------------------------------- clipping and noise


def test_each_record_is_clipped_to_max_grad_norm_and_the_sum_is_divided_by_the_expected_batch():
    reference = _reference_grads(RECORDS)
    norms = torch.tensor([math.sqrt(sum(float((g**2).sum()) for g in r.values())) for r in reference])
    clip = float(norms.median())  # about half the records are clipped
    net, private = _private(noise=0.0, clip=clip, expected=4.0)
    grads, stats = _step(net, private, [RECORDS])
    assert stats.grad_norm == pytest.approx(float(norms.median()), rel=1e-4)  # logged: median norm before clipping
    factors = (clip / (norms + 1e-6)).clamp(max=1.0)
    assert (factors < 1).sum() >= 2 and (factors == 1).sum() >= 2
    for name, got in grads.items():
        want = sum(ref[name] * factors[n] for n, ref in enumerate(reference)) / 4.0
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4, msg=name)


def test_accumulated_micro_batches_make_one_logical_batch_with_noise_added_once():
    """Two micro-batches give the update of one batch of their records; the noise in it has std
    noise_multiplier x max_grad_norm / expected batch, once (twice would be sqrt(2) x larger)."""
    clip, expected, sigma = 0.05, 5.0, 3.0
    net_a, private_a = _private(noise=0.0, clip=clip, expected=expected)
    one, _ = _step(net_a, private_a, [RECORDS])
    net_b, private_b = _private(noise=0.0, clip=clip, expected=expected)
    two, _ = _step(net_b, private_b, [RECORDS[:2], RECORDS[2:]])
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-7, rtol=1e-5, msg=name)

    net_c, private_c = _private(noise=sigma, clip=clip, expected=expected)
    noisy, _ = _step(net_c, private_c, [RECORDS[:2], RECORDS[2:]])
    noise = torch.cat([(noisy[k] - one[k]).flatten() for k in one])
    assert noise.numel() > 1000  # the std of 1000 draws is within 6% of sigma with 3-sigma confidence
    assert float(noise.mean()) == pytest.approx(0.0, abs=0.1 * sigma * clip / expected)
    assert float(noise.std()) == pytest.approx(sigma * clip / expected, rel=0.06)


def test_a_step_that_draws_no_record_still_adds_the_noise_and_counts():
    net, private = _private(noise=2.0, clip=0.5, expected=4.0)
    grads, stats = _step(net, private, [])
    noise = torch.cat([g.flatten() for g in grads.values()])
    assert float(noise.std()) == pytest.approx(2.0 * 0.5 / 4.0, rel=0.06)
    assert stats.tokens == 0 and private.steps == 1 and private.accountant.history == [(2.0, 0.8, 1)]


def test_poisson_sampling_takes_each_record_with_probability_q():
    _, private = _private(noise=1.0, clip=1.0, expected=2.0)  # q = 2 / 5 of the plan's records
    private.plan = _plan(1.0, 1.0, expected=250.0, records=1000)  # q = 0.25
    draws = [private.sample(1000) for _ in range(300)]
    sizes = torch.tensor([len(d) for d in draws], dtype=torch.float)
    assert float(sizes.mean()) == pytest.approx(250, rel=0.02)
    assert float(sizes.std()) == pytest.approx(math.sqrt(1000 * 0.25 * 0.75), rel=0.2)  # sizes vary: not fixed batches
    counts = torch.zeros(1000)
    for d in draws:
        assert d == sorted(set(d))
        counts[d] += 1
    assert float((counts / 300).mean()) == pytest.approx(0.25, rel=0.02)


# --------------------------------------------------------------------------- whole runs


def _dp_config(csv_path: Path, out: Path, **privacy) -> dict:
    """A private run, its noise seeded (privacy.noise_seed) so runs can be compared bit for bit."""
    settings = {"enabled": True, "noise_multiplier": 1.0, "noise_seed": 0} | privacy
    return tiny_config(
        csv_path,
        out,
        privacy=settings,
        train={"epochs": 3, "batch_size": 16, "seed": 0},
        data={"validation_split": 0.1},
    )


def _recomputed_epsilon(report: dict) -> float:
    accountant = create_accountant(report["accountant"])
    accountant.history = [tuple(h) for h in report["accountant_history"]]
    return accountant.get_epsilon(delta=report["delta"])


def test_a_private_run_end_to_end_reports_the_accountants_epsilon(csv_path, tmp_path):
    result = train(_dp_config(csv_path, tmp_path / "model"), progress=False)
    model_dir = tmp_path / "model"
    report = json.loads((model_dir / "privacy.json").read_text())
    for key in (
        "epsilon",
        "delta",
        "noise_multiplier",
        "sample_rate",
        "steps",
        "accountant",
        "max_grad_norm",
        "records",
    ):
        assert report[key] is not None, key
    assert report["records"] == 108 and report["delta"] == pytest.approx(1e-5)  # min(1e-5, 1 / (10 x records))
    assert report["sample_rate"] == pytest.approx(1 / 7)  # ceil(108 / 16) = 7 steps per epoch
    assert report["steps"] == result.steps == 21 and report["accountant_history"] == [[1.0, 1 / 7, 21]]
    assert report["epsilon"] == pytest.approx(_recomputed_epsilon(report), rel=1e-9)
    assert report["epsilon"] == pytest.approx(
        epsilon_after(1.0, 1 / 7, 21, report["delta"], "prv"), rel=1e-9
    )  # (noise, q, steps, delta) alone give it
    # every epoch reports its epsilon, growing, the last one the run's
    epsilons = [row["epsilon"] for row in result.history]
    assert epsilons == sorted(epsilons) and epsilons[0] > 0 and epsilons[-1] == pytest.approx(report["epsilon"])
    assert all(row["delta"] == report["delta"] for row in result.history)
    assert "epsilon" in (model_dir / "history.csv").read_text().splitlines()[0]
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["privacy"]["epsilon"] == pytest.approx(report["epsilon"])
    assert not (model_dir / "train_digests.safetensors").exists()  # nothing outside the guarantee about records


def test_a_private_model_saves_loads_and_samples_like_any_other(csv_path, tmp_path):
    train(_dp_config(csv_path, tmp_path / "dp"), progress=False)
    plain = tiny_config(csv_path, tmp_path / "plain", train={"epochs": 1, "batch_size": 16})
    train(plain, progress=False)
    dp_weights, plain_weights = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("dp", "plain"))
    assert set(dp_weights) == set(plain_weights)  # no Opacus wrappers, no DPLSTM names
    model = load_model(tmp_path / "dp")
    assert isinstance(model.net.lstm, torch.nn.LSTM)
    assert model.config.generate.privacy_filter is False
    records = model.generate(num_records=10, seed=1, max_invalid=10_000, check_types=False)  # a tiny noisy model
    with pytest.raises(GenerationError, match="near_copy_fields: .* differential privacy"):
        model.generate(num_records=1, near_copy_fields=1)
    with pytest.raises(GenerationError, match="unseen_categories: false needs the training categories"):
        model.generate(num_records=1, unseen_categories=False)
    assert sum(r.valid for r in records) == 10
    # the loaded nn.LSTM model computes what the DPLSTM model trained
    tokens = torch.randint(3, model.tokenizer.vocab_size, (3, 12))
    twin = LSTMLanguageModel(model.config.model, model.tokenizer.vocab_size)
    twin.load_state_dict(dp_weights)
    twin.lstm = DPLSTM.from_lstm(twin.lstm)
    torch.testing.assert_close(twin.eval()(tokens)[0], model.net(tokens)[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_a_target_epsilon_run_ends_at_or_just_below_the_target(csv_path, tmp_path, accountant):
    config = _dp_config(csv_path, tmp_path / "model", noise_multiplier=None, target_epsilon=2.0, accountant=accountant)
    train(config, progress=False)
    report = json.loads((tmp_path / "model" / "privacy.json").read_text())
    assert report["steps"] == 21
    assert 0.97 * 2.0 <= report["epsilon"] <= 2.0
    assert report["epsilon"] == pytest.approx(_recomputed_epsilon(report), rel=1e-9)


def test_resume_keeps_the_accountant_and_matches_the_uninterrupted_run(csv_path, tmp_path):
    whole = train(_dp_config(csv_path, tmp_path / "whole"), progress=False)
    first = _dp_config(csv_path, tmp_path / "parts")
    first["train"]["epochs"] = 1
    train(first, progress=False)
    first["train"]["epochs"] = 3
    resumed = train(first, progress=False, resume=True)
    assert resumed.steps == whole.steps == 21
    reports = [json.loads((tmp_path / d / "privacy.json").read_text()) for d in ("whole", "parts")]
    assert reports[1]["accountant_history"] == reports[0]["accountant_history"] == [[1.0, 1 / 7, 21]]
    assert reports[1]["epsilon"] == reports[0]["epsilon"]
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("whole", "parts"))
    for name in a:  # same draws, same noise: the same weights, bit for bit
        assert torch.equal(a[name], b[name]), name


def test_a_target_epsilon_run_resumed_for_more_epochs_stops_at_the_budget(csv_path, tmp_path):
    config = _dp_config(csv_path, tmp_path / "model", noise_multiplier=None, target_epsilon=2.0)
    train(config, progress=False)
    config["train"]["epochs"] = 6
    resumed = train(config, progress=False, resume=True)
    report = json.loads((tmp_path / "model" / "privacy.json").read_text())
    assert resumed.stopped_by == "privacy_budget"
    assert 21 <= report["steps"] < 42 and report["epsilon"] <= 2.0


def test_shuffled_batches_say_their_epsilon_is_not_a_proven_bound(csv_path, tmp_path):
    config = _dp_config(csv_path, tmp_path / "model", poisson_sampling=False)
    config["train"]["grad_accumulation_steps"] = 2
    config["train"]["batch_size"] = 8
    train(config, progress=False)
    report = json.loads((tmp_path / "model" / "privacy.json").read_text())
    assert report["poisson_sampling"] is False and "not a proven bound" in report["guarantee"]


def test_by_default_the_noise_seed_comes_from_the_os_and_no_model_dir_keeps_it(csv_path, tmp_path):
    """Anyone who knew the noise could take it out of the weights: a published config must not give it."""
    runs = []
    for name in ("a", "b"):
        config = _dp_config(csv_path, tmp_path / name, noise_seed=None)
        config["train"]["epochs"] = 1
        train(config, progress=False)
        runs.append(load_file(str(tmp_path / name / "model.safetensors")))
        assert not (tmp_path / name / "checkpoints").exists()  # they hold the noise generator's state
        report = json.loads((tmp_path / name / "privacy.json").read_text())
        assert report["noise_seed"] == "drawn from the OS, kept nowhere"
    assert any(not torch.equal(runs[0][k], runs[1][k]) for k in runs[0])  # same config and seed, other noise
    with_seed = json.loads((tmp_path / "a" / "config.json").read_text())["privacy"]
    assert with_seed["noise_seed"] is None


def test_secure_mode_trains(csv_path, tmp_path):
    config = _dp_config(csv_path, tmp_path / "model", secure_mode=True, noise_seed=None)
    config["train"]["epochs"] = 1
    train(config, progress=False)
    assert json.loads((tmp_path / "model" / "privacy.json").read_text())["secure_mode"] is True


# --------------------------------------------------------------------------- what is refused


@pytest.mark.parametrize(
    "sections, fragment",
    [
        ({"privacy": {"enabled": True}}, "exactly one of privacy.noise_multiplier and privacy.target_epsilon"),
        ({"privacy": {"enabled": True, "noise_multiplier": 1.0, "target_epsilon": 3}}, "(both are set)"),
        ({"privacy": {"noise_multiplier": 1.0}}, "privacy.enabled is false: the run would not be private"),
        ({"train": {"max_grad_norm": 1.0}}, "train.max_grad_norm: under privacy.enabled"),
        ({"train": {"clip_grad_value": 0.5}}, "train.clip_grad_value"),
        ({"train": {"precision": "fp16", "device": "auto"}}, "fp16's grad scaler"),
        ({"early_stopping": {"enabled": True}}, "early_stopping.enabled: under privacy.enabled"),
        ({"checkpoint": {"save_best": True}}, "checkpoint.save_best: under privacy.enabled"),
        ({"schedule": {"name": "reduce_on_plateau"}}, "reduce_on_plateau sets the LR from un-noised losses"),
        ({"generate": {"privacy_filter": True}}, "generate.privacy_filter: under privacy.enabled"),
        ({"privacy": {"enabled": True, "noise_multiplier": 0}}, "privacy.noise_multiplier"),
        ({"privacy": {"enabled": True, "target_epsilon": 1000}}, "privacy.target_epsilon"),
        ({"privacy": {"enabled": True, "noise_multiplier": 1, "secure_mode": True, "noise_seed": 1}}, "noise_seed"),
    ],
)
def test_settings_that_break_the_guarantee_are_refused(csv_path, tmp_path, sections, fragment):
    raw = tiny_config(csv_path, tmp_path / "model", privacy={"enabled": True, "noise_multiplier": 1.0})
    for name, values in sections.items():  # a privacy section here replaces the whole section
        raw[name] = values if name == "privacy" else raw.get(name, {}) | values
    with pytest.raises(ConfigError) as exc:
        TrainingConfig.model_validate(raw)
    assert fragment in str(exc.value)


def test_privacy_defaults_turn_off_what_would_sit_outside_the_guarantee(csv_path, tmp_path):
    config = TrainingConfig(**_dp_config(csv_path, tmp_path / "m"))
    assert not config.early_stopping.enabled and not config.checkpoint.save_best
    assert config.train.max_grad_norm == 0 and config.generate.privacy_filter is False


def test_a_delta_not_below_one_over_records_is_refused(csv_path, tmp_path):
    with pytest.raises(ConfigError, match=r"privacy.delta: 0.01 is not below 1 / training records \(1/108"):
        train(_dp_config(csv_path, tmp_path / "model", delta=0.01), progress=False)
    assert not (tmp_path / "model").exists()


def test_an_unreachable_target_epsilon_is_refused_before_training(csv_path, tmp_path):
    with pytest.raises(ConfigError, match="privacy.target_epsilon: 1e-06 cannot be reached"):
        train(_dp_config(csv_path, tmp_path / "m", noise_multiplier=None, target_epsilon=1e-6), progress=False)


def test_without_opacus_the_message_names_the_extra(csv_path, tmp_path, monkeypatch):
    privacy = importlib.import_module("synthloom.privacy")
    real = privacy.importlib.util.find_spec
    monkeypatch.setattr(privacy.importlib.util, "find_spec", lambda name: None if name == "opacus" else real(name))
    with pytest.raises(ConfigError, match=r"pip install 'synthloom\[dp\]'"):
        train(_dp_config(csv_path, tmp_path / "model"), progress=False)


def test_the_cli_trains_privately_and_refuses_the_privacy_filter_on_a_dp_model(capsys, csv_path, tmp_path):
    cfg = write_config(
        tmp_path / "c.yaml",
        csv_path,
        tmp_path / "model",
        privacy={"enabled": True, "target_epsilon": 4.0},
        train={"epochs": 2, "batch_size": 16},
    )
    rc, out, err = run(capsys, "train", cfg)
    assert rc == 0, err
    assert "differentially private: epsilon 3.9" in err
    rc, out, err = run(capsys, "generate", tmp_path / "model", "--num-records", "3", "--privacy-filter")
    assert_user_error(rc, out, err, 7, "trained with differential privacy", "--no-privacy-filter")


def test_config_show_prints_the_privacy_plan_and_the_epsilon_the_run_ends_at(capsys, csv_path, tmp_path):
    cfg = write_config(
        tmp_path / "c.yaml",
        csv_path,
        tmp_path / "model",
        privacy={"enabled": True, "noise_multiplier": 1.0},
        train={"epochs": 3, "batch_size": 16},
    )
    rc, out, err = run(capsys, "config", "show", cfg)
    assert rc == 0, err
    want = epsilon_after(1.0, 1 / 6, 18, 1e-5, "prv")  # 96 training records, 6 steps per epoch
    assert "privacy: DP-SGD: noise multiplier 1; each record clipped to 1; sample rate 0.1667" in err
    assert f"the planned 18 steps end at epsilon {want:.3g}" in err
    assert not (tmp_path / "model").exists()
