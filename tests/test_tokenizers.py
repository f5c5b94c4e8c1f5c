"""Char and sentencepiece tokenizers: round trips, special ids, persistence, load errors."""

from __future__ import annotations

import json
import random

import pytest
import sentencepiece as spm
from hypothesis import given, settings
from hypothesis import strategies as st

from synthloom.config import TokenizerConfig
from synthloom.errors import ModelDirError
from synthloom.tokenizers import (
    EOR_ID,
    PAD_ID,
    SENTENCEPIECE_MODEL,
    SPECIALS,
    TOKENIZER_JSON,
    UNK_ID,
    CharTokenizer,
    PairTokenizer,
    SentencePieceTokenizer,
    encode_all,
    load_tokenizer,
    slot_mask,
    train_tokenizer,
)

VARIED = [
    "plain words here",
    "repeated   spaces  inside",
    " leading space",
    "  two leading, trailing  ",
    "café, naïve, Ærøskøbing, 東京, 😀",
    "Boston,MA,ann,42",
    "a newline\ninside the record",
    "tab\tseparated",
    ",,,",
    " ",
    "x",
]


def corpus(n: int = 200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    cities = [("Boston", "MA"), ("Denver", "CO"), ("Austin", "TX"), ("Seattle", "WA")]
    rows = [
        ",".join([rng.choice(["ann", "bob", "cy"]), str(rng.randint(20, 60)), *rng.choice(cities)]) for _ in range(n)
    ]
    return rows + VARIED * 3


def sp_train(texts, seed=0, delimiter=",", **cfg) -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train(
        texts, TokenizerConfig(**{"vocab_size": 120, **cfg}), seed=seed, delimiter=delimiter
    )


def pieces(tok: SentencePieceTokenizer, text: str) -> list[str]:
    sp = spm.SentencePieceProcessor(model_proto=tok.model_proto)
    return [sp.id_to_piece(i) for i in tok.encode(text)]


@pytest.fixture(scope="module")
def sp_tok() -> SentencePieceTokenizer:
    return sp_train(corpus())


@pytest.fixture(scope="module")
def char_tok() -> CharTokenizer:
    return CharTokenizer.train(corpus())


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("text", VARIED + ["Denver,CO  café\n😀", "  ,  "])
@pytest.mark.parametrize("kind", ["char", "sentencepiece"])
def test_decode_inverts_encode(request, kind, text):
    tok = request.getfixturevalue("char_tok" if kind == "char" else "sp_tok")
    ids = tok.encode(text)
    assert ids, text
    assert min(ids) >= len(SPECIALS)  # covered text never encodes to pad/eor/unk
    assert tok.decode(ids) == text


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_bpe_and_unigram_round_trip(model_type):
    tok = sp_train(corpus(), model_type=model_type)
    texts = corpus()
    assert tok.decode_batch(tok.encode_batch(texts)) == texts


@settings(max_examples=150, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40))
def test_char_round_trip_property(text):
    tok = CharTokenizer.train([text])
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab_size == len(SPECIALS) + len(set(text))


def test_encode_all_matches_encode(sp_tok, char_tok):
    texts = corpus(20)
    for tok in (sp_tok, char_tok):
        assert encode_all(tok, texts) == [tok.encode(t) for t in texts]
        assert tok.decode_batch(encode_all(tok, texts)) == texts


# --------------------------------------------------------------------------- special ids


def test_special_ids():
    assert (PAD_ID, EOR_ID, UNK_ID) == (0, 1, 2)
    assert SPECIALS == ["<pad>", "<eor>", "<unk>"]


def test_sentencepiece_special_pieces(sp_tok):
    sp = spm.SentencePieceProcessor(model_proto=sp_tok.model_proto)
    assert [sp.id_to_piece(i) for i in range(3)] == SPECIALS
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (PAD_ID, EOR_ID, UNK_ID, -1)


def test_char_ids_start_after_specials(char_tok):
    assert char_tok.encode(char_tok.chars[0]) == [len(SPECIALS)]
    assert char_tok.vocab_size == len(SPECIALS) + len(char_tok.chars)
    assert char_tok.decode([PAD_ID, EOR_ID]) == ""  # specials decode to nothing


def test_char_unseen_characters_map_to_unk():
    tok = CharTokenizer.train(["abc"])
    assert tok.encode("aZb€") == [tok.encode("a")[0], UNK_ID, tok.encode("b")[0], UNK_ID]


def test_sentencepiece_unseen_character_maps_to_unk(sp_tok):
    assert UNK_ID in sp_tok.encode("Ω")


# --------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("kind", ["char", "sentencepiece"])
def test_save_load_round_trip(tmp_path, kind):
    texts = corpus()
    tok = train_tokenizer(TokenizerConfig(kind=kind, vocab_size=120), texts, seed=0, delimiter=",")
    tok.save(tmp_path)
    assert (tmp_path / TOKENIZER_JSON).is_file()
    assert (tmp_path / SENTENCEPIECE_MODEL).is_file() == (kind == "sentencepiece")
    loaded = load_tokenizer(tmp_path)
    assert type(loaded) is type(tok)
    assert loaded.kind == kind and loaded.vocab_size == tok.vocab_size
    probe = texts + ["unseen Ω chars ✓"]
    assert [loaded.encode(t) for t in probe] == [tok.encode(t) for t in probe]
    assert loaded.decode_batch(encode_all(loaded, texts)) == texts


def test_a_pair_tokenizer_keeps_two_vocabularies_apart_and_saves_both(tmp_path):
    """seq2seq, share_vocab false: target ids first, source ids past them, specials shared; saved and
    loaded back as the same two tokenizers."""
    sources = corpus()
    targets = ["Ωμέγα " + t.upper()[::-1] for t in sources[:200]]
    tok = PairTokenizer(sp_train(sources), CharTokenizer.train(targets))
    n_target = tok.target.vocab_size
    assert tok.vocab_size == n_target + tok.source.vocab_size - len(SPECIALS)
    ids = tok.encode_sources(sources)
    assert all(i in (PAD_ID, EOR_ID, UNK_ID) or i >= n_target for row in ids for i in row)
    own = encode_all(tok.source, sources)
    assert [[i if i < 3 else i - tok.offset for i in row] for row in ids] == own  # only shifted
    assert tok.decode_batch([tok.encode(t) for t in targets]) == targets  # encode / decode: the target side
    assert slot_mask(tok).tolist() == [True] * n_target + [False] * (tok.vocab_size - n_target)
    tok.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.kind == "pair" and type(loaded.source) is SentencePieceTokenizer
    assert loaded.encode_sources(sources) == ids
    assert [loaded.encode(t) for t in targets] == [tok.encode(t) for t in targets]


# --------------------------------------------------------------------------- sentencepiece training


def test_sentencepiece_training_is_deterministic():
    texts = corpus()
    assert sp_train(texts, seed=3).model_proto == sp_train(texts, seed=3).model_proto


def test_sentencepiece_sampling_is_seeded():
    texts = corpus(400)
    a = sp_train(texts, seed=3, max_training_records=50)
    b = sp_train(texts, seed=3, max_training_records=50)
    assert a.model_proto == b.model_proto


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
@pytest.mark.parametrize("delimiter", [",", ";", "|", "\t"])
def test_field_delimiter_is_a_token_of_its_own(model_type, delimiter):
    # empty fields and punctuation-only values: without the delimiter as a user symbol,
    # sentencepiece learns pieces such as ',,' and ',1.5,'
    rng = random.Random(0)
    fields = [["ann", "bob", ""], ["", "1.5", "x"], ["MA", "", "CO"], [""]]
    texts = [delimiter.join(rng.choice(f) for f in fields) for _ in range(300)]
    tok = sp_train(texts, delimiter=delimiter, vocab_size=200, model_type=model_type)
    assert tok.decode_batch(tok.encode_batch(texts)) == texts
    for text in texts:
        ps = pieces(tok, text)
        assert ps.count(delimiter) == text.count(delimiter), ps
        assert all(delimiter not in p for p in ps if p != delimiter), ps


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_small_data_gives_a_smaller_vocabulary(model_type):
    texts = ["abc", "abd", "ab c"]
    tok = sp_train(texts, vocab_size=500, model_type=model_type)
    assert len(SPECIALS) < tok.vocab_size < 500
    assert [tok.decode(tok.encode(t)) for t in texts] == texts


# --------------------------------------------------------------------------- load errors


def test_load_missing_tokenizer_json(tmp_path):
    with pytest.raises(ModelDirError, match=f"missing {TOKENIZER_JSON}"):
        load_tokenizer(tmp_path)
    with pytest.raises(ModelDirError, match=f"missing {TOKENIZER_JSON}"):
        load_tokenizer(tmp_path / "no_such_dir")


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"{not json", "corrupted"),
        (b"\xff\xfe\x00garbage", "corrupted"),
        (b"", "corrupted"),
        (b"[1, 2]", "unknown tokenizer kind"),
        (b'{"kind": "bytes"}', "unknown tokenizer kind 'bytes'"),
        (b'{"kind": "char"}', "bad character list"),
        (b'{"kind": "char", "chars": ["ab"]}', "bad character list"),
    ],
)
def test_load_corrupted_tokenizer_json(tmp_path, content, expected):
    (tmp_path / TOKENIZER_JSON).write_bytes(content)
    with pytest.raises(ModelDirError, match=expected):
        load_tokenizer(tmp_path)


def test_load_sentencepiece_without_model_file(tmp_path, sp_tok):
    sp_tok.save(tmp_path)
    (tmp_path / SENTENCEPIECE_MODEL).unlink()
    with pytest.raises(ModelDirError, match=f"missing {SENTENCEPIECE_MODEL}"):
        load_tokenizer(tmp_path)


def test_load_corrupted_sentencepiece_model(tmp_path, sp_tok):
    sp_tok.save(tmp_path)
    (tmp_path / SENTENCEPIECE_MODEL).write_bytes(b"garbage\x00\xff not a protobuf")
    with pytest.raises(ModelDirError, match="corrupted sentencepiece model"):
        load_tokenizer(tmp_path)


def test_load_empty_sentencepiece_model(tmp_path, sp_tok):
    sp_tok.save(tmp_path)
    (tmp_path / SENTENCEPIECE_MODEL).write_bytes(b"")  # a truncated write parses as an empty protobuf
    with pytest.raises(ModelDirError, match="corrupted sentencepiece model"):
        load_tokenizer(tmp_path)


def test_saved_json_is_plain_data(tmp_path, char_tok):
    char_tok.save(tmp_path)
    meta = json.loads((tmp_path / TOKENIZER_JSON).read_text(encoding="utf-8"))
    assert meta == {"kind": "char", "specials": SPECIALS, "chars": char_tok.chars}
