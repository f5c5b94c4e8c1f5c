"""Seq2seq end to end: pairs from a csv (data.source_columns -> data.target_column), trained by train(),
validation BLEU / chrF / exact match per epoch, `generate --source` and `evaluate`."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import sacrebleu
from safetensors.torch import load_file

from synthloom.cli import main
from synthloom.config import validate_config
from synthloom.data import read_records, split_records
from synthloom.errors import ConfigError
from synthloom.train import train
from synthloom.translate import load_seq2seq

LETTERS = "abcdefg"


def write_pairs(path: Path, n: int = 300, seed: int = 0) -> Path:
    """word -> the word reversed, with an id column the model does not read."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "word", "reversed"])
        for i in range(n):
            word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 5)))
            w.writerow([i, word, word[::-1]])
    return path


def seq2seq_config(tmp_path: Path, data: Path, **sections) -> dict:
    cfg = {
        "output_dir": str(tmp_path / "model"),
        "data": {"path": str(data), "source_columns": ["word"], "target_column": "reversed", "validation_split": 0.2},
        "model": {"kind": "seq2seq", "embedding_dim": 16, "hidden_size": 32, "dropout": 0.0},
        "optim": {"lr": 0.02},
        "train": {"epochs": 8, "batch_size": 16, "seed": 0},
        "early_stopping": {"enabled": False},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s2s")
    data = write_pairs(tmp / "pairs.csv")
    cfg = seq2seq_config(tmp, data, checkpoint={"save_best": False})
    result = train(cfg, progress=False)
    return tmp, data, result


def test_pairs_train_with_validation_bleu_chrf_and_exact_match_every_epoch(trained):
    tmp, _, result = trained
    rows = list(csv.DictReader((tmp / "model" / "history.csv").open()))
    assert {"val_bleu", "val_chrf", "val_exact_match"} <= set(rows[0])
    first, last = rows[0], rows[-1]
    assert float(last["val_loss"]) < float(first["val_loss"])
    assert float(last["val_exact_match"]) > 0.5 > float(first["val_exact_match"])
    assert 0 <= float(last["val_bleu"]) <= 100 and float(last["val_chrf"]) > float(first["val_chrf"])
    config = json.loads((tmp / "model" / "config.json").read_text())
    assert config["tokenizer"]["kind"] == "char"  # a pair is two texts
    # steps.jsonl: each epoch's evaluation line, at the epoch's last step, with the scores history.csv has
    lines = [json.loads(line) for line in (tmp / "model" / "steps.jsonl").read_text().splitlines()]
    evaluations = [line for line in lines if "loss" not in line]
    assert [(e["epoch"], e["step"]) for e in evaluations] == [(r["epoch"], r["step"]) for r in result.history]
    for e, row in zip(evaluations, rows):
        for key in ("val_loss", "val_bleu", "val_chrf", "val_exact_match"):
            assert e[key] == pytest.approx(float(row[key])), key
    assert [line["step"] for line in lines if "loss" in line] == list(range(1, result.steps + 1))


def test_val_bleu_is_sacrebleus_corpus_bleu_of_the_greedy_targets(trained):
    tmp, data, _ = trained
    model = load_seq2seq(tmp / "model")
    config = validate_config(seq2seq_config(tmp, data))
    _, val = split_records(read_records(config.data).texts, 0.2, 0)
    pairs = [row.split(",") for row in val]  # id,word,reversed: no quoting in this table
    hyps = [out[0] for out in model.translate([p[1] for p in pairs])]
    refs = [p[2] for p in pairs]
    last = list(csv.DictReader((tmp / "model" / "history.csv").open()))[-1]
    assert float(last["val_bleu"]) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-6)
    assert float(last["val_chrf"]) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=1e-6)
    assert float(last["val_exact_match"]) == pytest.approx(sum(h == r for h, r in zip(hyps, refs)) / len(refs))


def test_generate_with_sources_and_evaluate(trained, tmp_path, capsys):
    tmp, _, _ = trained
    sources = tmp_path / "sources.csv"
    sources.write_text("word,note\nabc,x\ngfed,y\n")
    out = tmp_path / "out.csv"
    assert main(["generate", str(tmp / "model"), "--source", str(sources), "--num-beams", "3", "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["note"] for r in rows] == ["x", "y"] and all("reversed" in r for r in rows)
    assert main(["generate", str(tmp / "model"), "--source", str(sources), "--num-beams", "3",
                 "--num-return-sequences", "2", "-o", str(out)]) == 0  # fmt: skip
    assert [r["word"] for r in csv.DictReader(out.open())] == ["abc", "abc", "gfed", "gfed"]

    pairs = write_pairs(tmp_path / "test_pairs.csv", n=40, seed=5)
    capsys.readouterr()
    assert main(["evaluate", str(tmp / "model"), str(pairs), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    model = load_seq2seq(tmp / "model")
    table = list(csv.DictReader(pairs.open()))
    hyps = [o[0] for o in model.translate([r["word"] for r in table])]
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [[r["reversed"] for r in table]]).score)
    assert scores["pairs"] == 40 and scores["exact_match"] > 0.5


def test_a_seq2seq_model_without_sources_or_with_the_wrong_columns_says_what_to_do(trained, tmp_path, capsys):
    tmp, _, _ = trained
    assert main(["generate", str(tmp / "model")]) != 0
    assert "--source" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("text\nabc\n")
    assert main(["generate", str(tmp / "model"), "--source", str(bad)]) != 0
    err = capsys.readouterr().err
    assert "'word'" in err and "Traceback" not in err


def test_early_stopping_on_bleu_keeps_the_best_bleu_epoch(tmp_path):
    data = write_pairs(tmp_path / "pairs.csv", n=200)
    cfg = seq2seq_config(tmp_path, data, early_stopping={"enabled": True, "monitor": "val_bleu", "patience": 2})
    cfg["train"]["epochs"] = 6
    result = train(cfg, progress=False)
    bleus = [row["val_bleu"] for row in result.history]
    best = max(range(len(bleus)), key=lambda i: (bleus[i], -i)) + 1  # the first epoch of the highest BLEU
    summary = json.loads((tmp_path / "model" / "summary.json").read_text())
    assert summary["best"] == {"monitor": "val_bleu", "epoch": best, "value": bleus[best - 1]}
    assert summary["weights_from_epoch"] == best


def test_teacher_forcing_is_set_by_the_loop(tmp_path):
    data = write_pairs(tmp_path / "pairs.csv", n=80)
    weights = []
    for name, ratio in (("forced", 1.0), ("free", 0.0)):
        cfg = seq2seq_config(tmp_path, data, train={"epochs": 1, "teacher_forcing_ratio": ratio})
        cfg["output_dir"] = str(tmp_path / name)
        train(cfg, progress=False)
        weights.append(load_file(tmp_path / name / "model.safetensors"))
    assert any(not (weights[0][k] == weights[1][k]).all() for k in weights[0])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"data": {"target_column": None}}, "set data.source_columns"),
        ({"data": {"target_column": "word"}}, "also a source column"),
        ({"tokenizer": {"kind": "fields"}}, "two texts"),
        ({"model": {"kind": "lstm"}}, "data.source_columns: only an encoder-decoder"),
    ],
)
def test_seq2seq_config_errors(tmp_path, change, message):
    cfg = seq2seq_config(tmp_path, write_pairs(tmp_path / "pairs.csv", n=10))
    for section, values in change.items():
        if section == "model" and values.get("kind") == "lstm":
            cfg["model"] = values
        else:
            cfg[section].update(values) if section in cfg else cfg.update({section: values})
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_bleu_as_a_monitor_needs_a_seq2seq_model(tmp_path):
    cfg = {"output_dir": str(tmp_path / "m"), "data": {"path": str(tmp_path / "x.txt")},
           "early_stopping": {"monitor": "val_bleu"}}  # fmt: skip
    with pytest.raises(ConfigError, match="early_stopping.monitor: only an encoder-decoder"):
        validate_config(cfg)


def test_the_scores_reach_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = seq2seq_config(tmp_path, write_pairs(tmp_path / "pairs.csv", n=80), train={"epochs": 2, "tensorboard": True})
    result = train(cfg, progress=False)
    events = EventAccumulator(str(result.output_dir / "tensorboard"))
    events.Reload()
    for key in ("val_bleu", "val_chrf", "val_exact_match", "val_loss"):
        logged = events.Scalars(f"epoch/{key}")
        assert [e.value for e in logged] == pytest.approx([row[key] for row in result.history], rel=1e-6)


def test_sampled_targets_repeat_with_a_seed_and_leave_the_global_generator_alone(trained):
    import torch

    model = load_seq2seq(trained[0] / "model")
    sources = ["abc", "gfed", "aab"] * 5
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = model.translate(sources, temperature=1.5, seed=3)
    assert model.translate(sources, temperature=1.5, seed=3) == first
    model.translate(sources, temperature=1.5)  # unseeded: from the OS
    assert torch.equal(torch.get_rng_state(), before)


def test_a_private_seq2seq_run_clips_per_pair_and_saves_a_plain_model(tmp_path):
    """DP-SGD on pairs: the accountant's epsilon in privacy.json, weights under nn.LSTM's names, and the
    loaded model translates (under the step-by-step decoder too: teacher forcing 0.5)."""
    pytest.importorskip("opacus")
    data = write_pairs(tmp_path / "pairs.csv", n=120)
    privacy = {"enabled": True, "noise_multiplier": 1.0, "noise_seed": 0, "max_grad_norm": 1.0}
    cfg = seq2seq_config(tmp_path, data, privacy=privacy, train={"epochs": 2, "teacher_forcing_ratio": 0.5})
    result = train(cfg, progress=False)
    report = json.loads((tmp_path / "model" / "privacy.json").read_text())
    assert report["records"] == 96 and 0 < report["epsilon"] < float("inf")  # 120 pairs less the validation 24
    assert report["steps"] == result.steps > 0
    assert all(0 <= row["val_bleu"] <= 100 for row in result.history)
    plain = seq2seq_config(tmp_path, data, train={"epochs": 1})
    plain["output_dir"] = str(tmp_path / "plain")
    train(plain, progress=False)
    dp_weights, plain_weights = (load_file(tmp_path / d / "model.safetensors") for d in ("model", "plain"))
    assert set(dp_weights) == set(plain_weights)  # no Opacus wrappers, nn.LSTM's names
    model = load_seq2seq(tmp_path / "model")
    assert type(model.net.encoder).__name__ == "LSTM" and type(model.net.decoder).__name__ == "LSTM"
    assert len(model.translate(["abc", "de"], num_beams=2)) == 2


def write_aligned(directory: Path, n: int = 300, seed: int = 0) -> tuple[Path, Path]:
    """The reversal task as two aligned text files, a blank line on both sides among them."""
    rng = random.Random(seed)
    words = ["".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 5))) for _ in range(n)]
    sources, targets = directory / "src.txt", directory / "tgt.txt"
    sources.write_text("\n".join(words[:10] + [""] + words[10:]) + "\n", encoding="utf-8")
    targets.write_text("\n".join([w[::-1] for w in words[:10]] + [""] + [w[::-1] for w in words[10:]]) + "\n")
    return sources, targets


def test_pairs_from_two_aligned_text_files_train_generate_line_by_line_and_evaluate(tmp_path, capsys):
    sources, targets = write_aligned(tmp_path)
    cfg = seq2seq_config(tmp_path, sources)
    cfg["data"] = {"path": str(sources), "target_path": str(targets), "validation_split": 0.2}
    result = train(cfg, progress=False)
    records = result.summary["records"]
    assert records["train"] + records["validation"] == 300  # the blank pair left out
    assert result.history[-1]["val_exact_match"] > 0.5

    (tmp_path / "test").mkdir()
    test_sources, test_targets = write_aligned(tmp_path / "test", n=30, seed=7)
    out = tmp_path / "out.txt"
    assert main(["generate", str(tmp_path / "model"), "--source", str(test_sources), "-o", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 31  # a target per source line, the blank one included: the files stay aligned
    model = load_seq2seq(tmp_path / "model")
    assert lines == [outs[0] for outs in model.translate(test_sources.read_text().splitlines())]
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "model"), str(test_sources), "--targets", str(test_targets), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    refs = test_targets.read_text().splitlines()
    assert scores["pairs"] == 31 and scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(lines, [refs]).score)
    # a csv of sources works too, with the column the pairs were read into
    table = tmp_path / "sources.csv"
    table.write_text("source\nabc\ngfed\n")
    assert main(["generate", str(tmp_path / "model"), "--source", str(table), "-o", str(tmp_path / "out.csv")]) == 0
    assert [r["source"] for r in csv.DictReader((tmp_path / "out.csv").open())] == ["abc", "gfed"]


def test_misaligned_text_files_and_misplaced_target_path_say_what_to_do(tmp_path, capsys):
    sources, targets = write_aligned(tmp_path, n=20)
    targets.write_text("\n".join(targets.read_text().splitlines()[:-1]) + "\n")
    cfg = seq2seq_config(tmp_path, sources)
    cfg["data"] = {"path": str(sources), "target_path": str(targets)}
    config = tmp_path / "pairs.yaml"
    config.write_text(json.dumps(cfg))
    assert main(["train", str(config), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "21 line(s)" in err and "20" in err and "one target line for each source line" in err
    assert "Traceback" not in err
    for data, message in (
        ({"path": str(tmp_path / "p.csv"), "target_path": str(targets)}, "data.path is the sources' text file"),
        ({"path": str(sources), "target_path": str(targets), "target_column": "x"}, "data.target_column: the pairs"),
        ({"path": str(sources)}, "two aligned text files"),
    ):
        with pytest.raises(ConfigError, match=message):
            validate_config(cfg | {"data": data})
    with pytest.raises(ConfigError, match="data.target_path: only an encoder-decoder"):
        validate_config({"output_dir": str(tmp_path / "m"), "data": {"path": str(sources), "target_path": "t.txt"}})


def test_two_vocabularies_keep_each_side_to_its_own_tokens(tmp_path):
    """tokenizer.share_vocab false: Latin sources, Greek targets (each word reversed and transliterated);
    each side's tokenizer knows its own script, the head covers the target ids alone, and it learns."""
    greek = dict(zip(LETTERS, "αβγδεζη"))
    rng = random.Random(0)
    path = tmp_path / "pairs.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["word", "greek"])
        for _ in range(300):
            word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 5)))
            w.writerow([word, "".join(greek[c] for c in reversed(word))])
    cfg = seq2seq_config(tmp_path, path, tokenizer={"share_vocab": False})
    cfg["data"]["target_column"] = "greek"
    result = train(cfg, progress=False)
    assert result.history[-1]["val_exact_match"] > 0.5
    model = load_seq2seq(tmp_path / "model")
    tok = model.tokenizer
    assert tok.kind == "pair" and set(tok.source.chars) == set(LETTERS) and set(tok.target.chars) == set(greek.values())
    assert model.net.head.out_features == tok.target.vocab_size == 3 + 7  # (the specials and the 7 Greek letters)
    assert model.net.embedding.num_embeddings == tok.vocab_size == 3 + 7 + 7
    source_ids = [i for ids in tok.encode_sources(["abc", "gfe"]) for i in ids]
    assert min(source_ids) >= tok.target.vocab_size  # apart from every target id
    outputs = [o[0] for o in model.translate(["abc", "gfed", "bad"], num_beams=2)]
    assert all(set(o) <= set(greek.values()) for o in outputs) and "γβα" in outputs
    again = seq2seq_config(tmp_path, path, train={"init_from": str(tmp_path / "model"), "epochs": 1})
    again["output_dir"], again["data"]["target_column"] = str(tmp_path / "again"), "greek"
    with pytest.raises(ConfigError, match="share_vocab: false .its tokenizer comes with it"):
        train(again, progress=False)
    with pytest.raises(ConfigError, match="tokenizer.share_vocab: only an encoder-decoder"):
        validate_config({"output_dir": str(tmp_path / "m"), "data": {"path": str(path)},
                         "tokenizer": {"share_vocab": False}})  # fmt: skip
