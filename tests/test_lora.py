"""LoRA (models/lora.py, the lora section, train.init_from): only the adapters train, the base weights
stay, the merged weight is W + B A alpha / rank and gives the adapted model's logits, DP clips only the
adapters' per-record gradients, and fine-tuning a trained model dir works end to end, resume included."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from safetensors.torch import load_file

from synthloom import ConfigError, load_model, train
from synthloom.checkpoint import WEIGHTS_FILE
from synthloom.config import OptimConfig, TransformerConfig
from synthloom.models import build_model
from synthloom.models.lora import ADAPTER_FILE, LoRALinear, add_lora, merged_state, split_state
from synthloom.optim import build_optimizer
from synthloom.privacy import make_private

V = 12


def tiny_transformer(**cfg):
    settings = dict(num_layers=2, num_heads=2, hidden_size=16, ffn_size=24, context_length=16, dropout=0.0) | cfg
    return build_model(TransformerConfig(**settings), V)


def batch(n: int = 4, t: int = 8):
    tokens = torch.randint(2, V, (n, t))
    tokens[:, 0] = 1
    return tokens, torch.cat([tokens[:, 1:], torch.ones(n, 1, dtype=torch.long)], dim=1)


def test_only_the_adapters_train_and_the_base_weights_stay():
    net = tiny_transformer()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    names = add_lora(net, rank=4, alpha=8.0, dropout=0.0, targets=None)
    assert names == [f"blocks.{i}.{m}" for i in range(2) for m in ("qkv", "proj", "ffn_in", "ffn_out")]
    adapters = [p for n, p in net.named_parameters() if ".lora_" in n]
    optimizer = build_optimizer(OptimConfig(name="adamw", lr=0.05), net)
    in_optimizer = [p for group in optimizer.param_groups for p in group["params"]]
    assert {id(p) for p in in_optimizer} == {id(p) for p in adapters}  # only the adapters
    tokens, targets = batch()
    for _ in range(3):
        optimizer.zero_grad()
        net.loss(tokens, targets)[0].backward()
        optimizer.step()
    base, adapter = split_state(net.state_dict())
    for key, value in before.items():  # every base weight exactly as it was
        assert torch.equal(base[key], value), key
    assert all(v.abs().sum() > 0 for k, v in adapter.items() if ".lora_b." in k)  # B left zero: it trained


def test_the_merged_weight_is_w_plus_b_a_alpha_over_rank_and_gives_the_same_logits():
    net = tiny_transformer()
    add_lora(net, rank=3, alpha=6.0, dropout=0.0, targets=["qkv", "ffn_out"])
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".lora_" in name:
                p.normal_(0, 0.5)
    layer = net.blocks[0].qkv
    assert isinstance(layer, LoRALinear)
    merged = merged_state(net.state_dict(), 6.0 / 3)
    expected = layer.base.weight + layer.lora_b.weight @ layer.lora_a.weight * 2.0
    torch.testing.assert_close(merged["blocks.0.qkv.weight"], expected)
    plain = tiny_transformer()
    plain.load_state_dict(merged)  # the plain model's names: strict load
    tokens, _ = batch()
    torch.testing.assert_close(plain.eval().logits(tokens), net.eval().logits(tokens), atol=1e-5, rtol=1e-5)


def test_dp_with_lora_gives_per_record_gradients_of_the_adapters_only():
    net = tiny_transformer().train()
    add_lora(net, rank=2, alpha=4.0, dropout=0.0, targets=None)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".lora_b." in name:
                p.normal_(0, 0.3)  # (B = 0 would leave A's gradient zero)
    tokens, targets = batch(3)

    def record_losses(model, tok, tgt):
        logits = model.logits(tok)
        return F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), reduction="none").view_as(tgt).sum(1)

    reference = []
    for n in range(3):
        net.zero_grad()
        record_losses(net, tokens[n : n + 1], targets[n : n + 1]).sum().backward()
        reference.append({k: p.grad.clone() for k, p in net.named_parameters() if p.requires_grad})
    net.zero_grad()
    make_private(net)
    record_losses(net, tokens, targets).sum().backward()
    trained = {k: p for k, p in net.named_parameters() if p.requires_grad}
    assert trained and all(".lora_" in k for k in trained)
    for name, p in trained.items():
        for n in range(3):
            torch.testing.assert_close(p.grad_sample[n], reference[n][name], atol=1e-6, rtol=1e-4, msg=f"{name} {n}")
    assert all(getattr(p, "grad_sample", None) is None for p in net.parameters() if not p.requires_grad)


# --------------------------------------------------------------------------- fine-tuning runs


def transformer_config(data_path, out, **sections) -> dict:
    cfg = tiny_config(data_path, out, **sections)
    cfg["model"] = {"kind": "transformer", "num_layers": 1, "num_heads": 2, "hidden_size": 16, "dropout": 0.0}
    return cfg


@pytest.fixture
def pretrained(csv_path, tmp_path):
    out = tmp_path / "base"
    train(
        transformer_config(csv_path, out, tokenizer={"kind": "fields"}, train={"epochs": 2, "seed": 0}), progress=False
    )
    return out


def test_fine_tuning_a_model_dir_with_lora_merged_and_separate(csv_path, tmp_path, pretrained):
    base = load_file(pretrained / WEIGHTS_FILE)
    lora = {"enabled": True, "rank": 4, "alpha": 8}
    for save in ("merged", "separate"):
        out = tmp_path / save
        cfg = tiny_config(
            csv_path, out, tokenizer={"kind": "fields"}, train={"epochs": 2, "seed": 1, "init_from": str(pretrained)}
        )
        cfg["model"] = {}  # left to init_from: its model section is taken
        result = train(cfg | {"lora": lora | {"save": save}}, progress=False)
        assert result.summary["trained_parameters"] < result.summary["parameters"] / 4
        weights = load_file(out / WEIGHTS_FILE)
        assert set(weights) == set(base)  # the plain model's names
        if save == "separate":  # the base weights untouched, the adapters beside them
            assert all(torch.equal(weights[k], base[k]) for k in base)
            assert {k.split(".lora_")[1] for k in load_file(out / ADAPTER_FILE)} == {"a.weight", "b.weight"}
        else:
            assert not (out / ADAPTER_FILE).exists()
            assert any(not torch.equal(weights[k], base[k]) for k in base)
        model = load_model(out, device="cpu")
        assert model.config.model.kind == "transformer"
        assert sum(r.valid for r in model.generate(num_records=20, seed=0)) == 20


def test_a_separate_adapter_loads_as_the_merged_model(csv_path, tmp_path, pretrained):
    runs = {}
    for save in ("merged", "separate"):
        cfg = tiny_config(
            csv_path,
            tmp_path / save,
            tokenizer={"kind": "fields"},
            train={"epochs": 1, "seed": 3, "init_from": str(pretrained)},
        )
        cfg["model"] = {}
        train(cfg | {"lora": {"enabled": True, "save": save}}, progress=False)
        runs[save] = load_model(tmp_path / save, device="cpu").net.state_dict()
    for key, value in runs["merged"].items():  # one run, two ways to store it
        torch.testing.assert_close(runs["separate"][key], value, atol=1e-6, rtol=1e-6)


def test_a_lora_run_resumes_to_the_same_weights(csv_path, tmp_path, pretrained):
    def cfg(out):
        c = tiny_config(csv_path, out, tokenizer={"kind": "fields"})
        c["model"] = {}
        c["train"] = {"epochs": 3, "batch_size": 8, "seed": 2, "num_threads": 1, "init_from": str(pretrained)}
        c["lora"] = {"enabled": True, "rank": 2, "dropout": 0.1}
        c["early_stopping"] = {"enabled": False}
        return c

    reference = train(cfg(tmp_path / "ref"), progress=False)

    def stop(state):
        state.stop = state.stop or state.epoch == 1

    out = tmp_path / "model"
    train(cfg(out), callback=stop, progress=False)
    resumed = train(cfg(out), resume=True, progress=False)
    assert resumed.steps == reference.steps
    assert (out / WEIGHTS_FILE).read_bytes() == (reference.output_dir / WEIGHTS_FILE).read_bytes()


def test_a_private_lora_fine_tune_spends_nothing_on_the_vocabularies(csv_path, tmp_path, pretrained):
    out = tmp_path / "private"
    cfg = tiny_config(
        csv_path, out, tokenizer={"kind": "fields"}, train={"epochs": 2, "seed": 0, "init_from": str(pretrained)}
    )
    cfg["model"] = {}
    cfg["privacy"] = {"enabled": True, "noise_multiplier": 1.0, "noise_seed": 0}
    cfg["lora"] = {"enabled": True}
    train(cfg, progress=False)
    report = json.loads((out / "privacy.json").read_text())
    assert report["epsilon"] > 0 and report.get("encoding_epsilon", 0.0) == 0.0
    assert sum(r.valid for r in load_model(out, device="cpu").generate(num_records=10, seed=0)) == 10


def test_lora_on_an_lstm_adapts_its_head(text_path, tmp_path):
    base = tmp_path / "base"
    train(tiny_config(text_path, base), progress=False)
    out = tmp_path / "tuned"
    cfg = tiny_config(text_path, out, train={"epochs": 1, "init_from": str(base)})
    cfg["model"] = {}
    result = train(cfg | {"lora": {"enabled": True, "rank": 2}}, progress=False)
    head = load_file(base / WEIGHTS_FILE)["head.weight"]
    assert result.summary["trained_parameters"] == 2 * (head.shape[0] + head.shape[1])  # A (2, H) and B (V, 2)
    assert not torch.equal(load_file(out / WEIGHTS_FILE)["head.weight"], head)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"lora": {"enabled": True, "target_modules": ["attn"]}},
            r"lora.target_modules: \['attn'\] names no linear layer .* qkv",
        ),
        ({"train": {"init_from": "nowhere"}}, "train.init_from: model dir not found"),
        ({"tokenizer": {"kind": "char"}}, "train.init_from: .* was trained on fields tokens"),
        ({"lora": {"enabled": True, "target_modules": ["head"]}}, "'head' shares its weights with the embedding"),
    ],
)
def test_lora_and_init_from_mistakes_are_config_errors(csv_path, tmp_path, pretrained, change, message):
    cfg = tiny_config(csv_path, tmp_path / "m", tokenizer={"kind": "fields"}, train={"init_from": str(pretrained)})
    cfg["model"] = {}
    for section, values in change.items():
        cfg.setdefault(section, {}).update(values)
    with pytest.raises(ConfigError, match=message):
        train(cfg, progress=False)


def test_the_tied_head_cannot_be_adapted(csv_path, tmp_path):
    cfg = transformer_config(csv_path, tmp_path / "m")
    cfg["lora"] = {"enabled": True, "target_modules": ["head"]}
    with pytest.raises(ConfigError, match="lora.target_modules: 'head' shares its weights with the embedding"):
        train(cfg, progress=False)


def test_a_private_lora_fine_tune_of_an_lstm_keeps_its_frozen_recurrence_fused(csv_path, tmp_path):
    base = tmp_path / "base"
    train(tiny_config(csv_path, base, tokenizer={"kind": "fields"}, train={"epochs": 2, "seed": 0}), progress=False)
    out = tmp_path / "private"
    cfg = tiny_config(
        csv_path, out, tokenizer={"kind": "fields"}, train={"epochs": 1, "seed": 0, "init_from": str(base)}
    )
    cfg["model"] = {}
    cfg["privacy"] = {"enabled": True, "noise_multiplier": 1.0, "noise_seed": 0}
    cfg["lora"] = {"enabled": True, "rank": 2}
    train(cfg, progress=False)
    assert json.loads((out / "privacy.json").read_text())["epsilon"] > 0
    weights, start = load_file(out / WEIGHTS_FILE), load_file(base / WEIGHTS_FILE)
    assert torch.equal(weights["lstm.weight_hh_l0"], start["lstm.weight_hh_l0"])  # frozen: untouched
    assert not torch.equal(weights["head.weight"], start["head.weight"])  # the adapted head moved


def test_rows_outside_init_froms_vocabularies_are_skipped_and_the_steps_recounted(csv_path, tmp_path):
    lines = csv_path.read_text().splitlines()
    public = tmp_path / "public.csv"
    public.write_text("\n".join([lines[0]] + [x for x in lines[1:] if ",Seattle," not in x]) + "\n")
    base = tmp_path / "base"
    train(tiny_config(public, base, tokenizer={"kind": "fields"}, train={"epochs": 1, "seed": 0}), progress=False)
    cfg = tiny_config(
        csv_path, tmp_path / "tuned", tokenizer={"kind": "fields"}, train={"epochs": 1, "init_from": str(base)}
    )
    cfg["model"] = {}
    summary = train(cfg, progress=False).summary
    full = tiny_config(csv_path, tmp_path / "full", tokenizer={"kind": "fields"}, train={"epochs": 1})
    every = train(full, progress=False).summary["records"]
    kept = summary["records"]["train"]
    assert 0 < kept < every["train"]  # Seattle's rows (unknown to the tokenizer) were dropped
    assert summary["steps_per_epoch"] == -(-kept // 16)  # the plan counts the rows kept, not the rows read
