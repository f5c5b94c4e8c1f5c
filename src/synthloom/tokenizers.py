"""Tokenizers: char and sentencepiece, trained on the records, saved without pickles; the field
tokenizer of tables lives in fields.py and loads through here too.

    tok = train_tokenizer(config.tokenizer, records, seed=42, delimiter=",")
    tok.save(model_dir)                 # tokenizer.json (+ tokenizer.model for sentencepiece)
    tok = load_tokenizer(model_dir)
    pair = PairTokenizer(source_tok, target_tok)   # seq2seq, tokenizer.share_vocab: false

Both share the special ids: 0 = <pad>, 1 = <eor> (end of record; also the start symbol),
2 = <unk>. Real tokens start at 3.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Protocol

import torch

from .config import TokenizerConfig
from .errors import ModelDirError, TokenizerError

PAD_ID, EOR_ID, UNK_ID = 0, 1, 2
SPECIALS = ["<pad>", "<eor>", "<unk>"]
TOKENIZER_JSON = "tokenizer.json"
SENTENCEPIECE_MODEL = "tokenizer.model"


class Tokenizer(Protocol):
    kind: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def decode_batch(self, batch: list[list[int]]) -> list[str]: ...
    def save(self, directory: Path) -> None: ...


class CharTokenizer:
    """One token per character seen in training; unseen characters encode to <unk>."""

    kind = "char"

    def __init__(self, chars: list[str]):
        self.chars = list(chars)
        self._ids = {c: i + len(SPECIALS) for i, c in enumerate(self.chars)}
        self._table = [""] * len(SPECIALS) + self.chars  # id -> text; specials decode to nothing

    @classmethod
    def train(cls, texts: list[str]) -> "CharTokenizer":
        return cls(sorted(set().union(*map(set, texts))))

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + len(self.chars)

    def encode(self, text: str) -> list[int]:
        ids = self._ids
        return [ids.get(c, UNK_ID) for c in text]

    def decode(self, ids: list[int]) -> str:
        table = self._table
        return "".join(table[i] for i in ids)

    def decode_batch(self, batch: list[list[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]

    def save(self, directory: Path) -> None:
        payload = {"kind": self.kind, "specials": SPECIALS, "chars": self.chars}
        (Path(directory) / TOKENIZER_JSON).write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")


class SentencePieceTokenizer:
    """Subword tokenizer (sentencepiece), trained locally with identity normalisation so that
    decode(encode(text)) == text for every character it covers."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(
        cls, texts: list[str], cfg: TokenizerConfig, seed: int, delimiter: str | None = None
    ) -> "SentencePieceTokenizer":
        import sentencepiece as spm

        sample = texts
        if len(texts) > cfg.max_training_records:  # seeded sampling here, so training is deterministic
            sample = random.Random(seed).sample(texts, cfg.max_training_records)
        # the field delimiter stays one token of its own, never merged with field content
        # (not a space: sentencepiece represents spaces with its own meta symbol); so does a
        # tab, which some sentencepiece releases (0.2.2) otherwise turn into <unk>
        symbols = [delimiter] if delimiter and delimiter != " " else []
        if "\t" not in symbols and any("\t" in t for t in sample):
            symbols.append("\t")
        proto = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sample),
                model_writer=proto,
                vocab_size=cfg.vocab_size,
                model_type=cfg.model_type,
                character_coverage=cfg.character_coverage,
                hard_vocab_limit=False,  # small data: a smaller vocabulary instead of an error (as gretel)
                pad_id=PAD_ID,
                eos_id=EOR_ID,
                unk_id=UNK_ID,
                bos_id=-1,
                pad_piece=SPECIALS[0],
                eos_piece=SPECIALS[1],
                unk_piece=SPECIALS[2],
                normalization_rule_name="identity",
                add_dummy_prefix=False,
                remove_extra_whitespaces=False,
                allow_whitespace_only_pieces=True,
                split_digits=False,
                user_defined_symbols=symbols,
                max_sentence_length=max(4192, max(len(t.encode()) for t in sample) + 1),
                shuffle_input_sentence=False,
                num_threads=1,
                minloglevel=2,
            )
        except RuntimeError as exc:
            raise TokenizerError(f"sentencepiece training failed: {exc}") from None
        return cls(proto.getvalue())

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._sp.encode(texts)

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode(ids)

    def decode_batch(self, batch: list[list[int]]) -> list[str]:
        # row by row: sentencepiece's batch call starts a thread pool each time (~0.2 ms, more
        # beside torch's threads), which costs more than decoding the few rows a step finishes
        decode = self._sp.decode
        return [decode(ids) for ids in batch]

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        (directory / SENTENCEPIECE_MODEL).write_bytes(self.model_proto)  # a protobuf, not a pickle
        payload = {"kind": self.kind, "model_file": SENTENCEPIECE_MODEL, "vocab_size": self.vocab_size}
        (directory / TOKENIZER_JSON).write_text(json.dumps(payload), encoding="utf-8")


class PairTokenizer:
    """seq2seq with tokenizer.share_vocab false: sources and targets each by a tokenizer of their own (char
    or sentencepiece, trained on that side's texts), in one id space the model reads: the target
    tokenizer's ids first, as it numbers them (specials included), then the source tokenizer's real
    tokens shifted past them. So the embedding holds each side's rows apart, and the decoder's head covers
    the target ids alone (target_mask). encode / decode are the target side's (what the decoder reads
    and writes); encode_sources gives sources' ids.

    Saved as tokenizer.json {"kind": "pair"} with each side's own files in source_tokenizer/ and
    target_tokenizer/."""

    kind = "pair"
    SIDES = ("source_tokenizer", "target_tokenizer")

    def __init__(self, source: Tokenizer, target: Tokenizer):
        self.source, self.target = source, target
        self.offset = target.vocab_size - len(SPECIALS)  # source id i >= 3 is i + offset here

    @property
    def vocab_size(self) -> int:
        return self.target.vocab_size + self.source.vocab_size - len(SPECIALS)

    def target_mask(self) -> torch.Tensor:
        """(V,) bool: the ids a decoder step may produce (the target vocabulary, the first ids)."""
        mask = torch.zeros(self.vocab_size, dtype=torch.bool)
        mask[: self.target.vocab_size] = True
        return mask

    def encode(self, text: str) -> list[int]:
        return self.target.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.target.decode([i for i in ids if i < self.target.vocab_size])

    def decode_batch(self, batch: list[list[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]

    def encode_sources(self, texts: list[str]) -> list[list[int]]:
        shift, n = self.offset, len(SPECIALS)
        return [[i if i < n else i + shift for i in ids] for ids in encode_all(self.source, texts)]

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        for name, side in zip(self.SIDES, (self.source, self.target)):
            (directory / name).mkdir(exist_ok=True)
            side.save(directory / name)
        payload = {"kind": self.kind, "source": self.SIDES[0], "target": self.SIDES[1]}
        (directory / TOKENIZER_JSON).write_text(json.dumps(payload), encoding="utf-8")


def train_tokenizer(cfg: TokenizerConfig, texts: list[str], *, seed: int, delimiter: str | None) -> Tokenizer:
    if cfg.kind == "char":
        return CharTokenizer.train(texts)
    return SentencePieceTokenizer.train(texts, cfg, seed=seed, delimiter=delimiter)


def slot_mask(tokenizer) -> torch.Tensor | None:
    """What build_model needs to know of the ids each output may take: a field model's mask by slot
    (slots + 1, V), a seq2seq pair tokenizer's target ids (V,); None for a text tokenizer (any id)."""
    if tokenizer.kind == "fields":
        return tokenizer.allowed_mask()
    return tokenizer.target_mask() if tokenizer.kind == "pair" else None


def encode_sources(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """seq2seq: the ids of sources (a pair tokenizer's source side; else as any text)."""
    return tokenizer.encode_sources(texts) if tokenizer.kind == "pair" else encode_all(tokenizer, texts)


def encode_all(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    if isinstance(tokenizer, SentencePieceTokenizer):
        return tokenizer.encode_batch(texts)  # one C++ call for all records
    return [tokenizer.encode(t) for t in texts]


def load_tokenizer(directory: Path) -> Tokenizer:
    """Load the tokenizer saved in a model dir; file names are fixed, never read from the dir."""
    directory = Path(directory)
    meta_path = directory / TOKENIZER_JSON
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelDirError(f"{directory}: missing {TOKENIZER_JSON}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{meta_path}: corrupted ({exc})") from None
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if kind == "pair":  # (fixed subdirectory names, never read from the file)
        return PairTokenizer(*(load_tokenizer(directory / name) for name in PairTokenizer.SIDES))
    if kind == "fields":
        from .fields import FieldTokenizer

        return FieldTokenizer.from_dict(meta, str(meta_path))
    if kind == "char":
        chars = meta.get("chars")
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise ModelDirError(f"{meta_path}: corrupted (bad character list)")
        return CharTokenizer(chars)
    if kind == "sentencepiece":
        model_path = directory / SENTENCEPIECE_MODEL
        if not model_path.is_file():
            raise ModelDirError(f"{directory}: missing {SENTENCEPIECE_MODEL}")
        try:
            tokenizer = SentencePieceTokenizer(model_path.read_bytes())
        except (RuntimeError, OSError) as exc:
            raise ModelDirError(f"{model_path}: corrupted sentencepiece model ({exc})") from None
        if tokenizer.vocab_size <= len(SPECIALS):  # an empty file parses as an empty model
            raise ModelDirError(f"{model_path}: corrupted sentencepiece model (empty vocabulary)")
        return tokenizer
    raise ModelDirError(f"{meta_path}: unknown tokenizer kind {kind!r}")
