"""A trained seq2seq model (model.kind: seq2seq) turning sources into targets, and scored on pairs.

    model = load_seq2seq("runs/numbers")
    targets = model.translate(["42", "1999"], num_beams=4)            # greedy at num_beams 1 (default)
    scores = model.evaluate(pairs_csv)                                   # {"bleu", "chrf", "exact_match", "pairs"}
    synthloom generate MODEL --source sources.csv --num-beams 4 --output out.csv
    synthloom evaluate MODEL pairs.csv [--json]

A source file is a csv with (at least) the model's data.source_columns; the output keeps every column of
it and adds (or replaces) data.target_column. A model trained on two aligned text files (data.target_path)
also reads a text file of sources, one per line, and then writes its targets one per line (with
num_return_sequences k, k lines per source); scored with `evaluate MODEL sources.txt --targets
targets.txt`. Settings not given come from the model's generate section:
temperature (0 = greedy, the default here for a source: the likeliest target), top_k, top_p,
max_tokens (null: twice the longest target seen in training, plus 2), num_beams and the beam settings.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import read_model_dir
from .config import TrainingConfig
from .data import encode_row, pair_columns, read_lines, read_text
from .decoding import beam_search, greedy, pair_metrics, sample
from .errors import DataError, GenerationError, ModelDirError
from .models import build_model
from .tokenizers import encode_sources, slot_mask


@dataclass
class TrainedSeq2Seq:
    config: TrainingConfig
    tokenizer: Any
    net: torch.nn.Module
    summary: dict

    @property
    def source_columns(self) -> list[str]:
        return pair_columns(self.config.data)[0]

    @property
    def target_column(self) -> str:
        return pair_columns(self.config.data)[1]

    @property
    def delimiter(self) -> str:
        """The field delimiter of the csv files it reads and writes."""
        return pair_columns(self.config.data)[2]

    def reads_lines(self, path: Path) -> bool:
        """A text file of sources, one per line: for a model trained on aligned text files, any file but a
        .csv / .tsv one."""
        return self.config.data.target_path is not None and Path(path).suffix.lower() not in (".csv", ".tsv")

    def default_max_tokens(self) -> int:
        return 2 * int(self.summary.get("max_record_tokens") or 64) + 2

    @torch.no_grad()
    def translate(
        self,
        sources: list[str],
        *,
        num_beams: int | None = None,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        length_penalty: float | None = None,
        early_stopping: bool | None = None,
        num_return_sequences: int | None = None,
        no_repeat_ngram_size: int | None = None,
    ) -> list[list[str]]:
        """Per source, num_return_sequences targets (best first; beam search) or one (greedy, sampling).
        A setting left None is the model's generate section's."""
        g = self.config.generate
        beams = num_beams or g.num_beams
        length_penalty = g.length_penalty if length_penalty is None else length_penalty
        early_stopping = g.beam_early_stopping if early_stopping is None else early_stopping
        num_return_sequences = num_return_sequences or g.num_return_sequences
        no_repeat_ngram_size = g.no_repeat_ngram_size if no_repeat_ngram_size is None else no_repeat_ngram_size
        if beams > 1 and temperature > 0:
            raise GenerationError("--num-beams > 1 is beam search: it takes no temperature (leave it 0)")
        if num_return_sequences > beams:
            raise GenerationError(f"--num-return-sequences {num_return_sequences} needs --num-beams of at least that")
        limit = max_tokens or g.max_tokens or self.default_max_tokens()
        ids = encode_sources(self.tokenizer, sources)
        decode = self.tokenizer.decode
        if beams > 1:
            hyps = beam_search(
                self.net, ids, num_beams=beams, max_tokens=limit, length_penalty=length_penalty,
                early_stopping=early_stopping, num_return_sequences=num_return_sequences,
                no_repeat_ngram_size=no_repeat_ngram_size,
            )  # fmt: skip
            return [[decode(h) for h, _ in row] for row in hyps]
        if temperature <= 0:
            return [[decode(o)] for o in greedy(self.net, ids, max_tokens=limit)]
        if seed is None:  # (drawn from the OS: torch.seed() would reseed the caller's global generator)
            seed = int.from_bytes(os.urandom(8), "little") >> 1
        generator = torch.Generator().manual_seed(seed)
        outs = sample(
            self.net, ids, generator, max_tokens=limit, temperature=temperature,
            top_k=g.top_k if top_k is None else top_k, top_p=g.top_p if top_p is None else top_p,
        )  # fmt: skip
        return [[decode(o)] for o in outs]

    def read_sources(self, path: Path) -> tuple[list[str], list[list[str]], list[str]]:
        """(header, rows, source texts) of a csv holding the model's source columns, or of a text file of
        sources (reads_lines: header [source], a row per line)."""
        if self.reads_lines(path):
            lines = read_lines(Path(path), "sources")
            return self.source_columns, [[line] for line in lines], lines
        header, rows = _read_csv(path, self.delimiter)
        missing = [c for c in self.source_columns if c not in header]
        if missing:
            raise DataError(
                f"{path}: no column {', '.join(map(repr, missing))}; the model reads {', '.join(self.source_columns)} "
                f"(its columns: {', '.join(header)})"
            )
        at = [header.index(c) for c in self.source_columns]
        texts = [row[at[0]] if len(at) == 1 else encode_row([row[i] for i in at], self.delimiter) for row in rows]
        return header, rows, texts

    def evaluate(self, path: Path, targets: Path | None = None, **settings) -> dict[str, float]:
        """BLEU, chrF (sacrebleu) and exact match of the model's targets for a csv of pairs, or for a text
        file of sources and `targets`, the text file aligned with it."""
        header, rows, sources = self.read_sources(path)
        if targets is not None:
            if not self.reads_lines(path):
                raise DataError(f"--targets: {path} is a csv; its {self.target_column!r} column holds the targets")
            references = read_lines(Path(targets), "targets")
            if len(references) != len(sources):
                raise DataError(
                    f"{path} has {len(sources):,} line(s) and {targets} {len(references):,}: aligned files hold one "
                    "target line for each source line"
                )
        elif self.reads_lines(path):
            raise DataError(f"{path}: a text file of sources; give its aligned targets: --targets FILE")
        elif self.target_column not in header:
            raise DataError(f"{path}: no column {self.target_column!r} (the target) to score against")
        else:
            references = [row[header.index(self.target_column)] for row in rows]
        hypotheses = [outs[0] for outs in self.translate(sources, **settings)]
        return pair_metrics(hypotheses, references) | {"pairs": len(rows)}


def load_seq2seq(path: str | Path) -> TrainedSeq2Seq:
    config, tokenizer, weights, summary = read_model_dir(path)
    if config.model.kind != "seq2seq":
        raise ModelDirError(f"{path}: a {config.model.kind} model, not seq2seq; --source is for seq2seq models")
    net = build_model(config.model, tokenizer.vocab_size, slot_mask(tokenizer))
    net.load_state_dict(weights)
    return TrainedSeq2Seq(config, tokenizer, net.eval(), summary)


def write_targets(
    header: list[str], rows: list[list[str]], targets: list[list[str]], column: str, delimiter: str
) -> str:
    """The source csv with the target column added (or replaced); several targets a source: one row each."""
    out = io.StringIO()
    w = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    at = header.index(column) if column in header else None
    w.writerow(header if at is not None else [*header, column])
    for row, outs in zip(rows, targets):
        for target in outs:
            new = list(row)
            if at is None:
                new.append(target)
            else:
                new[at] = target
            w.writerow(new)
    return out.getvalue()


def write_lines(targets: list[list[str]]) -> str:
    """Targets one per line (several a source: consecutive lines), for sources read from a text file. A
    target holding a line break would break the alignment: it is written with the break as a space."""
    return "".join(" ".join(t.splitlines()) + "\n" for outs in targets for t in outs)


def _read_csv(path: Path, delimiter: str) -> tuple[list[str], list[list[str]]]:
    text = read_text(Path(path), "sources")
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    if not rows:
        raise DataError(f"{path}: empty; a csv with a header holding the source columns")
    header, body = rows[0], [r for r in rows[1:] if r]
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise DataError(f"{path}: line {bad[0]} has another number of fields than the header ({len(header)})")
    return header, body
