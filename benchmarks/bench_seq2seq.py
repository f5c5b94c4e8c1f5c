"""Seq2seq against a Hugging Face encoder-decoder: numbers to words (num2words), a fixed CPU time budget.

    bash benchmarks/peers/setup.sh hf                # transformers + num2words in their own venv
    python benchmarks/bench_seq2seq.py --budget 240
    python benchmarks/bench_seq2seq.py --budget 240 --engines synthloom-dp --dp-epsilon 8   # DP-SGD per pair

The task: "<lang> <number>" -> the number in words, in English, French and Spanish (num2words, which
pip ships; numbers 0..99,999 drawn with a seed; the test pairs' numbers never appear in training in
that language). Both models read characters (one vocabulary of the training pairs' characters) and train
for the same wall-clock budget on the same 2 threads:

- synthloom: `model.kind: seq2seq` at its defaults (bidirectional LSTM encoder, attention LSTM
  decoder), `synthloom train` with train.max_time_seconds = budget (its per-epoch validation decoding
  counts in the budget), then greedy targets for the test sources (`synthloom evaluate`);
- Hugging Face: a T5ForConditionalGeneration built from a T5Config (random init, no download) of
  similar size, trained with AdamW by a plain loop in the hf venv for the same seconds, then greedy
  `generate()` for the test sources.

Both sets of targets are scored here by the same code (sacrebleu's corpus BLEU and chrF, exact match).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lstm import machine  # noqa: E402
from bench_quality import child_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SYNTHLOOM = ROOT / ".venv" / "bin" / "synthloom"
HF_PYTHON = ROOT / "benchmarks" / ".venvs" / "hf" / "bin" / "python"

MAKE_DATA = r'''
import csv, random, sys
from num2words import num2words
train_n, test_n, seed, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = random.Random(seed)
langs = ["en", "fr", "es"]
seen = set()
def draw(n):
    rows = []
    while len(rows) < n:
        lang, x = rng.choice(langs), int(10 ** rng.uniform(0, 5))
        if (lang, x) in seen:
            continue
        seen.add((lang, x))
        rows.append((f"{lang} {x}", num2words(x, lang=lang)))
    return rows
for name, n in (("train", train_n), ("test", test_n)):
    with open(f"{out}/{name}.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["source", "target"])
        w.writerows(draw(n))
'''

HF_TRAIN = r'''
import csv, json, sys, time, torch
from transformers import T5Config, T5ForConditionalGeneration
work, budget, threads, lr = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(0)
read = lambda name: list(csv.DictReader(open(f"{work}/{name}.csv", encoding="utf-8")))
train, test = read("train"), read("test")
chars = sorted(set("".join(r["source"] + r["target"] for r in train)))
ids = {c: i + 3 for i, c in enumerate(chars)}  # 0 pad (also the decoder start), 1 end, 2 unknown
enc = lambda s: [ids.get(c, 2) for c in s] + [1]
cfg = T5Config(vocab_size=len(chars) + 3, d_model=112, d_kv=28, d_ff=256, num_layers=2, num_decoder_layers=2,
               num_heads=4, dropout_rate=0.1, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
model = T5ForConditionalGeneration(cfg)
opt = torch.optim.AdamW(model.parameters(), lr=lr)
def pad(seqs, fill):
    width = max(map(len, seqs))
    return torch.tensor([s + [fill] * (width - len(s)) for s in seqs])
start, steps, g = time.perf_counter(), 0, torch.Generator().manual_seed(0)
model.train()
while time.perf_counter() - start < budget:
    batch = [train[i] for i in torch.randint(len(train), (64,), generator=g).tolist()]
    x = pad([enc(r["source"]) for r in batch], 0)
    y = pad([enc(r["target"]) for r in batch], -100)
    loss = model(input_ids=x, attention_mask=(x != 0).long(), labels=y).loss
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    steps += 1
train_s = time.perf_counter() - start
model.eval()
back = {i: c for c, i in ids.items()}
hyps = []
with torch.no_grad():
    for k in range(0, len(test), 128):
        x = pad([enc(r["source"]) for r in test[k : k + 128]], 0)
        out = model.generate(input_ids=x, attention_mask=(x != 0).long(), max_new_tokens=80, do_sample=False)
        hyps += ["".join(back.get(t, "") for t in row.tolist() if t > 2) for row in out]
print(json.dumps({"hyps": hyps, "train_s": round(train_s, 1), "steps": steps,
                  "parameters": sum(p.numel() for p in model.parameters())}))
'''


def scores(hyps: list[str], refs: list[str]) -> dict:
    from synthloom.decoding import pair_metrics

    m = pair_metrics(hyps, refs)
    return {"bleu": round(m["bleu"], 2), "chrf": round(m["chrf"], 2), "exact_match": round(m["exact_match"], 4)}


def run_synthloom(work: Path, args, private: bool = False) -> dict:
    config = {
        "output_dir": str(work / "synthloom"),
        "overwrite": True,
        "data": {"path": str(work / "train.csv"), "source_columns": ["source"], "target_column": "target",
                 "validation_split": 0.1},  # fmt: skip
        "model": {"kind": "seq2seq"},
        "train": {"epochs": 10_000, "batch_size": 64, "max_time_seconds": args.budget, "seed": 0},
        "early_stopping": {"monitor": "val_loss", "patience": 5},
    }
    if private:  # DP-SGD per pair: the epochs the budget is spread over, larger batches (less noise per pair)
        config["privacy"] = {"enabled": True, "target_epsilon": args.dp_epsilon, "max_grad_norm": 1.0}
        config["train"] |= {"epochs": args.dp_epochs, "batch_size": args.dp_batch_size}
        config["optim"] = {"lr": args.dp_lr}
        del config["early_stopping"]  # (off under DP: it would pick weights by an un-noised metric)
    path = work / "synthloom.yaml"
    path.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    subprocess.run([str(SYNTHLOOM), "train", str(path), "--no-progress", "-q"], check=True, env=child_env(args.threads))
    train_s = time.perf_counter() - start
    from synthloom.translate import load_seq2seq

    model = load_seq2seq(work / "synthloom")
    with open(work / "test.csv", encoding="utf-8") as fh:
        test = list(csv.DictReader(fh))
    t0 = time.perf_counter()
    hyps = [o[0] for o in model.translate([r["source"] for r in test])]
    decode_s = time.perf_counter() - t0
    summary = json.loads((work / "synthloom" / "summary.json").read_text())
    name = "synthloom seq2seq"
    if private:
        report = json.loads((work / "synthloom" / "privacy.json").read_text())
        name += f" DP-SGD (epsilon {report['epsilon']:.2f}, delta {report['delta']:.0e}, {args.dp_epochs} epochs)"
    return {"engine": name, "parameters": summary["parameters"], "train_s": round(train_s, 1),
            "steps": summary["steps"], "decode_s": round(decode_s, 1),
            **scores(hyps, [r["target"] for r in test])}  # fmt: skip


def run_hf(work: Path, args) -> dict:
    script = work / "hf_train.py"
    script.write_text(HF_TRAIN)
    start = time.perf_counter()
    cmd = [str(HF_PYTHON), str(script), str(work), str(args.budget), str(args.threads), str(args.hf_lr)]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=child_env(args.threads))
    total = time.perf_counter() - start
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    with open(work / "test.csv", encoding="utf-8") as fh:
        refs = [r["target"] for r in csv.DictReader(fh)]
    decode_s = round(total - out["train_s"], 1)  # (with the start of the venv's python and transformers)
    name = f"HF T5 (random init, AdamW lr {args.hf_lr:g})"
    return {"engine": name, "parameters": out["parameters"], "train_s": out["train_s"],
            "steps": out["steps"], "decode_s": decode_s, **scores(out["hyps"], refs)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=240.0, help="training seconds for each engine")
    ap.add_argument("--train-pairs", type=int, default=6000)
    ap.add_argument("--test-pairs", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engines", default="synthloom,hf")
    ap.add_argument("--hf-lr", type=float, default=1e-3, help="the T5's AdamW learning rate")
    ap.add_argument("--dp-epsilon", type=float, default=8.0, help="synthloom-dp: privacy.target_epsilon")
    ap.add_argument("--dp-epochs", type=int, default=20, help="synthloom-dp: the epochs the epsilon is spread over")
    ap.add_argument("--dp-batch-size", type=int, default=128, help="synthloom-dp: the expected batch (Poisson)")
    ap.add_argument("--dp-lr", type=float, default=3e-3, help="synthloom-dp: the learning rate")
    args = ap.parse_args()
    if not HF_PYTHON.exists():
        sys.exit("no hf venv: bash benchmarks/peers/setup.sh hf")
    print(f"# {machine()}; {args.threads} threads; budget {args.budget:g} s", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench_s2s_") as tmp:
        work = Path(tmp)
        (work / "make.py").write_text(MAKE_DATA)
        subprocess.run([str(HF_PYTHON), str(work / "make.py"), str(args.train_pairs), str(args.test_pairs), "0", tmp],
                       check=True)  # fmt: skip
        for engine in args.engines.split(","):
            if engine.startswith("synthloom"):
                row = run_synthloom(work, args, private=engine == "synthloom-dp")
            else:
                row = run_hf(work, args)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
