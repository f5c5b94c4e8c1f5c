"""The quality report of a text model: its synthetic records against the real ones, by measures
that need no language model (nothing is downloaded) and that a reader can check by hand.

    report = build_text_report(train_texts, synthetic_texts, holdout=held_out_texts)
    write_report(report, "report.html", render=render_text_html)   # or report.json

Measures (docs/text.md, "The quality report"):

- shapes: the similarity of the two tables of records in five distributions, each 1 for equal
  distributions: characters per record and words per record (1 - the Kolmogorov-Smirnov
  statistic), and the frequencies of characters, words and word bigrams (1 - total variation
  distance over the real records' 50 most frequent items and one bucket for the rest: over every
  item, two samples of a population of rare words would differ by chance). The score is their
  mean x 100.
- novelty: the share of synthetic records that are not training records (exact copies are what
  a text model is most often caught at), beside the yardstick of the real data itself, the share
  of training records whose text occurs more than once (a fresh draw of names from the same
  population repeats as often); synthetic duplicates; words and bigrams never seen in training,
  beside the holdout's share (what new real text has).
- DCR: each synthetic record's normalised Levenshtein distance (edits / the longer length, 0..1,
  rapidfuzz) to its closest training record and to its closest holdout record (a seeded training
  sample as large as the holdout); closer-to-train rate, a tie counting half: about 50 % when
  the model does not memorise. The split holds identical records on one side, so a table of
  many repeated records has none of them in its holdout: the rate then reads high without a
  model doing anything wrong; the copy yardstick says how much that matters.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from typing import Any

import numpy as np

from .errors import DataError
from .report import CSS, ks_complement

WORD = re.compile(r"\w+|[^\w\s]")  # a word, or one punctuation character
DCR_ROWS = 2000  # synthetic records and reference records compared at most (seeded samples)
HEAD = 50  # the frequency similarities compare the real records' 50 most frequent items, and the rest as one
TOP = 15  # words shown in the report's frequency table
EXAMPLES = 10  # synthetic records shown with their closest training record

SCORE_DEFINITION = (
    "score = 100 x the mean of five similarities of the synthetic records to the training records: "
    "characters per record and words per record (1 - Kolmogorov-Smirnov statistic), and the frequencies of "
    "characters, words and word bigrams (1 - total variation distance over the real records' 50 most frequent "
    "items and one bucket for the rest); words are runs of letters, digits and _, and each other non-space "
    "character"
)
DCR_DEFINITION = (
    "normalised Levenshtein distance (edits / the longer record's length, rapidfuzz), each synthetic record to "
    "its closest record of a seeded training sample and of the holdout, at equal sizes; closer-to-train rate = "
    "the share of synthetic records closer to a training record than to every holdout record, a tie counting "
    "half (about 50 % without memorisation)"
)


def _tv_complement(real: Counter, synthetic: Counter) -> float | None:
    """1 - total variation distance of two frequency tables over the real table's HEAD most frequent
    items and one bucket for all others (unseen ones too): over every item, two samples of one
    population of rare items (numbers, surnames) would differ by chance alone."""
    n_r, n_s = sum(real.values()), sum(synthetic.values())
    if not n_r or not n_s:
        return None
    keys = [k for k, _ in real.most_common(HEAD)]
    p = np.array([real[k] for k in keys] + [n_r - sum(real[k] for k in keys)], float) / n_r
    q = np.array([synthetic[k] for k in keys] + [n_s - sum(synthetic[k] for k in keys)], float) / n_s
    return 1.0 - 0.5 * float(np.abs(p - q).sum())


def _bigrams(words: list[list[str]]) -> Counter:
    return Counter(pair for w in words for pair in zip(w, w[1:]))


def _unseen_share(items: Counter, known: set) -> float | None:
    total = sum(items.values())
    return None if not total else sum(n for k, n in items.items() if k not in known) / total


def _closest(a: list[str], b: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """For each record of a, its normalised Levenshtein distance to the closest record of b, and that record's index."""
    from rapidfuzz.distance import Levenshtein
    from rapidfuzz.process import cdist

    dist = cdist(a, b, scorer=Levenshtein.normalized_distance, dtype=np.float32, workers=-1)
    where = dist.argmin(axis=1)
    return dist[np.arange(len(a)), where], where


def _dcr(train: list[str], holdout: list[str], synthetic: list[str], rng: np.random.Generator) -> dict[str, Any]:
    n = min(len(holdout), DCR_ROWS)
    hold = [holdout[i] for i in rng.choice(len(holdout), n, replace=False)] if len(holdout) > n else list(holdout)
    sample = [train[i] for i in rng.choice(len(train), min(n, len(train)), replace=False)]
    synth = [synthetic[i] for i in rng.choice(len(synthetic), min(DCR_ROWS, len(synthetic)), replace=False)]
    to_train, _ = _closest(synth, sample)
    to_holdout, _ = _closest(synth, hold)
    closer = float(np.mean((to_train < to_holdout) + 0.5 * (to_train == to_holdout)))
    return {
        "definition": DCR_DEFINITION,
        "synthetic_compared": len(synth),
        "reference_rows": len(hold),
        "train_median": float(np.median(to_train)),
        "holdout_median": float(np.median(to_holdout)),
        "closer_to_train_rate": closer,
    }


def build_text_report(
    train: list[str],
    synthetic: list[str],
    *,
    holdout: list[str] | None = None,
    holdout_note: str | None = None,
    epsilon: float | None = None,
    delta: float | None = None,
    sources: dict[str, str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The report as a JSON-able dict (module docstring). train: the records the model trained on;
    holdout: real records it never trained on (None: no DCR, holdout_note says why)."""
    if not train:
        raise DataError("the real records are empty")
    if not synthetic:
        raise DataError("the synthetic file holds no records; nothing to compare")
    if holdout is not None and not holdout:
        raise DataError("the holdout holds no records")
    rng = np.random.default_rng(seed)
    words_r, words_s = [WORD.findall(t) for t in train], [WORD.findall(t) for t in synthetic]
    chars_r, chars_s = Counter("".join(train)), Counter("".join(synthetic))
    vocab_r, vocab_s = Counter(w for ws in words_r for w in ws), Counter(w for ws in words_s for w in ws)
    bi_r, bi_s = _bigrams(words_r), _bigrams(words_s)
    shapes = {
        "characters_per_record": ks_complement(
            np.array([len(t) for t in train], float), np.array([len(t) for t in synthetic], float)
        ),
        "words_per_record": ks_complement(
            np.array([len(w) for w in words_r], float), np.array([len(w) for w in words_s], float)
        ),
        "characters": _tv_complement(chars_r, chars_s),
        "words": _tv_complement(vocab_r, vocab_s),
        "word_bigrams": _tv_complement(bi_r, bi_s),
    }
    scored = [v for v in shapes.values() if v is not None]
    counts = Counter(train)
    train_set = set(counts)
    copies = sum(t in train_set for t in synthetic)
    novelty: dict[str, Any] = {
        "exact_copy_rate": copies / len(synthetic),
        "real_repeat_rate": sum(n for n in counts.values() if n > 1) / len(train),
        "synthetic_duplicate_rate": 1 - len(set(synthetic)) / len(synthetic),
        "unseen_words_rate": _unseen_share(vocab_s, set(vocab_r)),
        "unseen_bigrams_rate": _unseen_share(bi_s, set(bi_r)),
    }
    if holdout is not None:
        words_h = [WORD.findall(t) for t in holdout]
        novelty["holdout_unseen_words_rate"] = _unseen_share(Counter(w for ws in words_h for w in ws), set(vocab_r))
        novelty["holdout_unseen_bigrams_rate"] = _unseen_share(_bigrams(words_h), set(bi_r))
        dcr: dict[str, Any] = _dcr(train, holdout, synthetic, rng)
    else:
        dcr = {"skipped": holdout_note or "no holdout: DCR needs real records the model never trained on"}
    shown = [synthetic[i] for i in rng.choice(len(synthetic), min(EXAMPLES, len(synthetic)), replace=False)]
    distance, where = _closest(shown, train)
    top_r, top_s = vocab_r.most_common(TOP), vocab_s.most_common(TOP)
    n_r, n_s = sum(vocab_r.values()), sum(vocab_s.values())
    return {
        "version": 1,
        "kind": "text",
        "score": 100 * float(np.mean(scored)) if scored else None,
        "score_definition": SCORE_DEFINITION,
        "shapes": shapes,
        "rows": {"real": len(train), "synthetic": len(synthetic), "holdout": None if holdout is None else len(holdout)},
        "lengths": {
            "real_mean_characters": float(np.mean([len(t) for t in train])),
            "synthetic_mean_characters": float(np.mean([len(t) for t in synthetic])),
            "real_mean_words": float(np.mean([len(w) for w in words_r])),
            "synthetic_mean_words": float(np.mean([len(w) for w in words_s])),
        },
        "novelty": novelty,
        "dcr": dcr,
        "top_words": {
            "real": [[w, n / n_r] for w, n in top_r],
            "synthetic": [[w, n / n_s] for w, n in top_s],
        },
        "examples": [
            {"synthetic": s, "closest_training_record": train[int(j)], "distance": float(d)}
            for s, j, d in zip(shown, where, distance)
        ],
        "privacy": {
            "differentially_private": epsilon is not None,
            "epsilon": epsilon,
            "delta": delta,
        },
        "sources": dict(sources or {}),
    }


# --------------------------------------------------------------------------- HTML


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.1f} %" if pct else f"{x:.3f}"


def render_text_html(report: dict[str, Any]) -> str:
    """One self-contained HTML page from a text report dict."""
    e = html.escape
    shapes, nov, dcr, rows = report["shapes"], report["novelty"], report["dcr"], report["rows"]
    score = "–" if report["score"] is None else f"{report['score']:.1f}"
    shape_rows = "".join(
        f"<tr><td>{e(k.replace('_', ' '))}</td><td class=num>{_fmt(v)}</td></tr>" for k, v in shapes.items()
    )

    def beside(key: str) -> str:
        held = f"holdout_{key}"
        return f" (holdout: {_fmt(nov[held], True)})" if held in nov else ""

    novelty_rows = [
        ("synthetic records that are training records", _fmt(nov["exact_copy_rate"], True)),
        (
            "training records whose text occurs more than once (the real data's own repeats)",
            _fmt(nov["real_repeat_rate"], True),
        ),
        ("synthetic records that repeat another synthetic record", _fmt(nov["synthetic_duplicate_rate"], True)),
        ("synthetic words never in training", _fmt(nov["unseen_words_rate"], True) + beside("unseen_words_rate")),
        (
            "synthetic word bigrams never in training",
            _fmt(nov["unseen_bigrams_rate"], True) + beside("unseen_bigrams_rate"),
        ),
    ]
    if "skipped" in dcr:
        dcr_rows = [("DCR", f"skipped: {dcr['skipped']}")]
    else:
        dcr_rows = [
            ("closer to a training record than to any holdout record", _fmt(dcr["closer_to_train_rate"], True)),
            ("median distance to the closest training record", _fmt(dcr["train_median"])),
            ("median distance to the closest holdout record", _fmt(dcr["holdout_median"])),
        ]
    table = "".join(f"<tr><td>{e(a)}</td><td class=num>{e(b)}</td></tr>" for a, b in novelty_rows + dcr_rows)
    top = "".join(
        f"<tr><td>{e(r[0])}</td><td class=num>{_fmt(r[1], True)}</td><td>{e(s[0])}</td>"
        f"<td class=num>{_fmt(s[1], True)}</td></tr>"
        for r, s in zip(report["top_words"]["real"], report["top_words"]["synthetic"])
    )
    examples = "".join(
        f"<tr><td>{e(x['synthetic'])}</td><td>{e(x['closest_training_record'])}</td>"
        f"<td class=num>{_fmt(x['distance'])}</td></tr>"
        for x in report["examples"]
    )
    privacy = report["privacy"]
    eps = f"ε = {privacy['epsilon']:g}" if privacy["differentially_private"] else "not differentially private"
    sources = "".join(f"<li>{e(k)}: {e(v)}</li>" for k, v in report["sources"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>synthloom text report</title><style>{CSS}</style></head>
<body>
<h1>Synthetic text report</h1>
<p class=note>{rows["synthetic"]:,} synthetic records against {rows["real"]:,} training records
{"" if rows["holdout"] is None else f"and {rows['holdout']:,} held out"}; {e(eps)}.</p>
<ul class=note>{sources}</ul>
<div class=score>{score}</div>
<p class=definition>{e(report["score_definition"])}</p>
<h2>Distributions</h2><table><tr><th>similarity</th><th>0..1</th></tr>{shape_rows}</table>
<h2>Novelty and privacy</h2><table>{table}</table>
<p class=note>{e(dcr.get("definition", ""))}</p>
<h2>Most frequent words</h2>
<table><tr><th>real</th><th>share</th><th>synthetic</th><th>share</th></tr>{top}</table>
<h2>Examples: synthetic records and their closest training record</h2>
<table><tr><th>synthetic</th><th>closest training record</th><th>distance</th></tr>{examples}</table>
</body></html>
"""
