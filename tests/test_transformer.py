"""model.kind: transformer (models/transformer.py): causal, a KV-cache step equals the full forward
pass (rows of different lengths, refilled in place), each activation is the one configured, field
tokens stay in their slot, the context fits the records, and it trains, samples and trains privately."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

from synthloom import ConfigError, DataError, load_model, train
from synthloom.config import TrainingConfig, TransformerConfig
from synthloom.models import build_model
from synthloom.models.transformer import ACTIVATIONS, Block, KVCache
from synthloom.privacy import make_private

V = 12
ALL_ACTIVATIONS = ["relu", "gelu", "silu", "swiglu", "tanh", "sigmoid"]


def tiny(allowed=None, **cfg) -> torch.nn.Module:
    """A small transformer with weights large enough that every position and layer moves the logits."""
    settings = dict(num_layers=2, num_heads=2, hidden_size=16, ffn_size=24, context_length=64, dropout=0.0) | cfg
    net = build_model(TransformerConfig(**settings), V, allowed).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    return net


def field_mask() -> torch.Tensor:
    """3 slots over ids 2..4, 5..7, 8..11, then the end slot (<eor>, id 1)."""
    allowed = torch.zeros(4, V, dtype=torch.bool)
    for s, (lo, hi) in enumerate([(2, 5), (5, 8), (8, 12), (1, 2)]):
        allowed[s, lo:hi] = True
    return allowed


@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
@pytest.mark.parametrize("positional,norm", [("learned", "layernorm"), ("rope", "rmsnorm")])
def test_a_future_token_never_changes_an_earlier_logit(activation, positional, norm):
    net = tiny(activation=activation, positional=positional, norm=norm)
    tokens = torch.randint(1, V, (3, 10))
    changed = tokens.clone()
    changed[:, 6] = (tokens[:, 6] % (V - 1)) + 1  # another token at position 6
    a, b = net.logits(tokens), net.logits(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=0)
    assert (a[:, 6:] - b[:, 6:]).abs().amax() > 1e-3  # ... and it does change its own and later ones


@pytest.mark.parametrize("positional", ["learned", "rope"])
def test_kv_cache_steps_equal_the_full_forward_pass_with_rows_refilled_in_place(positional):
    net = tiny(positional=positional, activation="swiglu")
    seqs = torch.randint(2, V, (4, 12))
    seqs[:, 0] = 1  # <eor> starts every record
    full = net.logits(seqs)  # (4, 12, V)
    logits, cache = net.start(seqs[:, :3])
    torch.testing.assert_close(logits, full[:, 2], atol=1e-5, rtol=1e-5)
    plan = net.sampling_plan()
    for t in range(3, 7):
        logits, cache = net.step(seqs[:, t], cache, plan)
        torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-5)
    # row 1 starts a new record (another prefix, shorter) while the others go on: rows of unequal lengths
    other = torch.randint(2, V, (1, 9))
    other[:, 0] = 1
    other_full = net.logits(other)
    _, fresh = net.start(other[:, :2])
    cache.put(torch.tensor([1]), fresh)
    assert cache.length.tolist() == [7, 2, 7, 7]
    for t in range(7, 12):
        feed = seqs[:, t].clone()
        feed[1] = other[0, t - 5]
        logits, cache = net.step(feed, cache, plan)
        torch.testing.assert_close(logits[[0, 2, 3]], full[[0, 2, 3], t], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(logits[1], other_full[0, t - 5], atol=1e-5, rtol=1e-5)
    kept = cache.rows(torch.tensor([True, False, True, False]))  # dropping rows keeps the others' state
    logits, _ = net.step(torch.tensor([3, 4]), kept, plan)
    reference = net.logits(torch.cat([seqs[[0, 2]], torch.tensor([[3], [4]])], dim=1))[:, -1]
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=1e-5)


def test_the_cache_grows_past_the_prefix_and_concatenates_rows_of_different_widths():
    net = tiny()
    a = net.start(torch.tensor([[1, 3, 4]]))[1]
    b = net.start(torch.tensor([[1, 5]]))[1]
    both = KVCache.cat([a, b])
    assert both.length.tolist() == [3, 2] and both.common is None  # (rows of unequal lengths: masked)
    width = both.k.shape[3]
    for _ in range(width):
        net.step(torch.tensor([6, 7]), both, net.sampling_plan())
    assert both.length.tolist() == [3 + width, 2 + width] and both.k.shape[3] > width  # it grew


@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
def test_each_activation_is_the_one_configured(activation):
    block = Block(TransformerConfig(num_layers=1, num_heads=2, hidden_size=8, ffn_size=6, activation=activation))
    x = torch.randn(3, 8)
    h = x @ block.ffn_in.weight.T + block.ffn_in.bias
    if activation == "swiglu":
        assert block.ffn_in.out_features == 12  # gate and value
        h = F.silu(h[:, :6]) * h[:, 6:]
    else:
        h = {"relu": torch.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[
            activation
        ](h)
        assert block.act is ACTIVATIONS[activation]
    torch.testing.assert_close(block.ffn(x), h @ block.ffn_out.weight.T + block.ffn_out.bias)


def test_field_tokens_stay_in_their_slot_and_the_loss_is_the_masked_one():
    allowed = field_mask()
    net = tiny(allowed)
    tokens = torch.tensor([[1, 3, 6, 9], [1, 2, 7, 11]])  # <eor>, then one token of each slot
    targets = torch.tensor([[3, 6, 9, 1], [2, 7, 11, 1]])
    positions = torch.tensor([[0, 1, 2, 3]] * 2)  # the slot each step predicts
    logits = net.logits(tokens, positions)
    assert torch.isinf(logits[0, 0, 5:]).all() and torch.isfinite(logits[0, 0, 2:5]).all()
    loss, correct = net.loss(tokens, targets, positions)
    reference = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
    torch.testing.assert_close(loss, reference)
    assert int(correct) == int((logits.argmax(-1) == targets).sum())
    # sampling slot by slot gives the same logits, over the slot's own tokens only
    first, cache = net.start(tokens[:, :1], positions[:, :1])
    torch.testing.assert_close(first[:, 2:5], logits[:, 0, 2:5], atol=1e-5, rtol=1e-5)
    plan = net.sampling_plan()
    for t in range(1, 4):
        step, cache = net.step_slot(tokens[:, t], t - 1, t, cache, plan)
        lo, hi = net.slot_ranges[t]
        assert step.shape == (2, hi - lo)
        torch.testing.assert_close(step, logits[:, t, lo:hi], atol=1e-5, rtol=1e-5)


def test_bf16_sampling_stays_close_to_fp32():
    net = tiny()
    seqs = torch.randint(2, V, (2, 6))
    seqs[:, 0] = 1
    full = net.logits(seqs)
    _, cache = net.start(seqs[:, :2])
    plan = net.sampling_plan("bf16")
    for t in range(2, 6):
        logits, cache = net.step(seqs[:, t], cache, plan)
        assert logits.dtype == torch.float32
        torch.testing.assert_close(logits, full[:, t], atol=0.15, rtol=0.05)


# --------------------------------------------------------------------------- config and context


def test_config_defaults_and_checks(csv_path, tmp_path):
    cfg = TrainingConfig(
        **config(
            csv_path,
            tmp_path / "m",
            {"hidden_size": None, "num_layers": None, "num_heads": 4},
            tokenizer={"kind": "fields"},
        )
    )
    model = cfg.model
    assert (model.num_layers, model.hidden_size, model.ffn_size, model.context_length) == (2, 128, 512, None)
    text = {"hidden_size": None, "num_layers": None, "num_heads": 4, "activation": "swiglu"}
    model = TrainingConfig(**config(csv_path, tmp_path / "m", text)).model  # char tokens: the text defaults
    assert (model.hidden_size, model.num_layers, model.ffn_size) == (128, 2, 344)  # 8/3 x 128, up to 8k
    with pytest.raises(ConfigError, match="model.hidden_size: 30 is not a multiple of model.num_heads=4"):
        TrainingConfig(**config(csv_path, tmp_path / "m", {"hidden_size": 30, "num_heads": 4}))
    with pytest.raises(ConfigError, match="model.embedding_dim: unknown key for model 'transformer'"):
        TrainingConfig(**config(csv_path, tmp_path / "m", {"embedding_dim": 8}))


def config(data_path, out, model: dict | None = None, **sections) -> dict:
    """tiny_config with a small transformer as its model section (replacing the LSTM's keys)."""
    cfg = tiny_config(data_path, out, **sections)
    cfg["model"] = {"kind": "transformer", "num_layers": 1, "num_heads": 2, "hidden_size": 16, "dropout": 0.0}
    cfg["model"].update(model or {})
    return cfg


def test_context_length_null_is_the_longest_record_and_a_set_one_skips_longer_records(text_path, tmp_path):
    lengths = [len(line) for line in text_path.read_text().splitlines()]
    train(config(text_path, tmp_path / "a"), progress=False)
    saved = json.loads((tmp_path / "a" / "config.json").read_text())["model"]
    assert saved["context_length"] == max(lengths) + 1  # char tokens: one per character, plus <eor>
    limit = sorted(lengths)[len(lengths) // 2] + 1  # about half the records fit
    train(config(text_path, tmp_path / "b", {"context_length": limit}), progress=False)
    model = load_model(tmp_path / "b", device="cpu")
    fit = sum(n + 1 <= limit for n in lengths)
    counts = model.summary["records"]
    assert counts["train"] + counts["validation"] == fit < len(lengths)
    assert counts["skipped_long"] == len(lengths) - fit
    records = model.generate(num_records=20, seed=0, max_tokens=500, max_invalid=1000)  # capped at the context:
    assert all(len(r.text) < limit for r in records if r.valid)  # <eor> within it
    assert all(len(r.text) <= limit for r in records)
    with pytest.raises(DataError, match=r"longer than model.context_length=\d+ tokens .*data.long_records: skip"):
        cfg = config(text_path, tmp_path / "c", {"context_length": limit}, data={"long_records": "error"})
        train(cfg, progress=False)


def test_a_table_row_must_fit_the_context(csv_path, tmp_path):
    cfg = config(csv_path, tmp_path / "m", {"context_length": 3}, tokenizer={"kind": "fields"})
    with pytest.raises(ConfigError, match="model.context_length: a row of this table is .* tokens"):
        train(cfg, progress=False)


# --------------------------------------------------------------------------- whole runs


def test_a_transformer_trains_and_samples_a_table_and_its_seeded_rows(csv_path, tmp_path):
    out = tmp_path / "model"
    cfg = config(
        csv_path,
        out,
        {"positional": "rope", "norm": "rmsnorm", "activation": "swiglu"},
        tokenizer={"kind": "fields"},
        data={"leading_columns": ["city"]},
        train={"epochs": 4, "seed": 0},
    )
    train(cfg, progress=False)
    model = load_model(out, device="cpu")
    records = model.generate(num_records=30, seed=1, temperature=0.9, top_k=20, top_p=0.95)
    assert sum(r.valid for r in records) == 30
    seeded = model.generate(num_records=10, seed=2, seed_fields={"city": "Denver"})
    assert sum(r.valid for r in seeded) == 10 and {r.fields[2] for r in seeded if r.valid} == {"Denver"}
    again = load_model(out, device="cpu").generate(num_records=30, seed=1, temperature=0.9, top_k=20, top_p=0.95)
    assert [r.text for r in again] == [r.text for r in records]  # a seed gives the same rows


def test_a_transformer_samples_text_with_prefix_and_stop_strings(text_path, tmp_path):
    out = tmp_path / "model"
    train(config(text_path, out, train={"epochs": 3, "seed": 0}), progress=False)
    model = load_model(out, device="cpu")
    records = model.generate(num_records=20, seed=1, prefix="red ", batch_size=6)
    assert all(r.text.startswith("red ") for r in records)
    stopped = model.generate(num_records=10, seed=1, stop=["e"], max_invalid=1000)
    assert all(r.text.count("e") <= 1 for r in stopped)


def _record_grads(net, tokens, targets, positions):
    logits = net.logits(tokens, positions)
    losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="none")
    return losses.view_as(targets).sum(1)


@pytest.mark.parametrize(
    "tie, positional, norm",
    [(True, "learned", "layernorm"), (False, "learned", "layernorm"), (True, "rope", "rmsnorm")],
)
def test_per_record_gradients_under_dp_are_each_records_own(tie, positional, norm):
    allowed = field_mask()
    net = tiny(allowed, tie_embeddings=tie, positional=positional, norm=norm).train()  # (Opacus hooks: training mode)
    tokens = torch.tensor([[1, 3, 6, 9], [1, 2, 7, 11], [1, 4, 5, 8]])
    targets = torch.cat([tokens[:, 1:], torch.ones(3, 1, dtype=torch.long)], dim=1)
    positions = torch.tensor([[0, 1, 2, 3]] * 3)
    reference = []
    for n in range(3):
        net.zero_grad()
        _record_grads(net, tokens[n : n + 1], targets[n : n + 1], positions[n : n + 1]).sum().backward()
        reference.append({k: p.grad.clone() for k, p in net.named_parameters()})
    net.zero_grad()
    make_private(net)
    _record_grads(net, tokens, targets, positions).sum().backward()
    for name, p in net.named_parameters():
        for n in range(3):
            torch.testing.assert_close(p.grad_sample[n], reference[n][name], atol=1e-5, rtol=1e-4, msg=f"{name} {n}")


def test_a_private_transformer_run_counts_its_epsilon_and_samples(text_path, tmp_path):
    out = tmp_path / "model"
    privacy = {"enabled": True, "noise_multiplier": 1.0, "noise_seed": 0}
    train(config(text_path, out, privacy=privacy), progress=False)
    report = json.loads((out / "privacy.json").read_text())
    assert math.isfinite(report["epsilon"]) and report["epsilon"] > 0
    assert sum(r.valid for r in load_model(out, device="cpu").generate(num_records=5, seed=0)) == 5


def test_a_transformer_run_resumes_to_the_same_weights(csv_path, tmp_path):
    """Tied embeddings (saved twice, tied again on load), dropout, field tokens: a stop and a resume give
    the weights of one whole run, bit for bit."""
    from synthloom.checkpoint import WEIGHTS_FILE

    def cfg(out):
        return config(
            csv_path,
            out,
            {"dropout": 0.2, "attention_dropout": 0.1},
            tokenizer={"kind": "fields"},
            train={"epochs": 3, "batch_size": 8, "num_threads": 1, "seed": 5, "device": "cpu"},
            early_stopping={"enabled": False},
        )

    reference = train(cfg(tmp_path / "ref"), progress=False)

    def stop_after_epoch_1(state):
        state.stop = state.stop or state.epoch == 1

    out = tmp_path / "model"
    assert train(cfg(out), callback=stop_after_epoch_1, progress=False).epochs == 1
    resumed = train(cfg(out), resume=True, progress=False)
    assert resumed.steps == reference.steps
    assert (out / WEIGHTS_FILE).read_bytes() == (reference.output_dir / WEIGHTS_FILE).read_bytes()
    net = load_model(out, device="cpu").net
    assert net.head.weight is net.embedding.weight  # tied again after loading
