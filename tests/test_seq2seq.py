"""The encoder-decoder (models/seq2seq.py) and its decoding (decoding.py): attention, teacher forcing,
greedy, sampling and beam search, on tiny models."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

from synthloom.config.sections import Seq2SeqConfig
from synthloom.data import collate
from synthloom.decoding import beam_search, greedy, sample
from synthloom.models.seq2seq import Seq2SeqModel, Seq2SeqState, teacher_forcing_at

EOR, PAD = 1, 0
IGNORE = -100


def pairs_batch(pairs: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows <eor> source <eor> target, the source part's targets ignored (as the pair data will give them)."""
    inputs, targets = collate([s + [EOR] + t for s, t in pairs], EOR, PAD)
    for row, (s, _) in enumerate(pairs):
        targets[row, : len(s) + 1] = IGNORE
    return inputs, targets


def reverse_pairs(n: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = [rng.randrange(3, 9) for _ in range(rng.randint(2, 5))]
        out.append((s, s[::-1]))
    return out


def model(attention: str = "luong_general", **kw) -> Seq2SeqModel:
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(embedding_dim=16, hidden_size=24, attention=attention, dropout=0.0, **kw)
    return Seq2SeqModel(cfg, vocab_size=9)


@pytest.mark.parametrize("attention", ["bahdanau", "luong_dot", "luong_general"])
def test_attention_weights_sum_to_one_over_the_real_source_positions(attention):
    net = model(attention)
    src = torch.tensor([[3, 4, 5, 6], [7, 8, PAD, PAD]])
    state = net.encode(src, torch.tensor([4, 2]))
    out, _ = net.decoder(net.embedding(torch.tensor([[EOR, 3, 4], [EOR, 5, 6]])), (state.h, state.c))
    _, weights = net.attend(out, state)
    assert weights.shape == (2, 3, 4)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3), atol=1e-6)
    assert bool((weights[1, :, 2:] == 0).all())  # padding gets none


def test_the_loss_counts_only_the_target_part():
    net = model()
    pairs = [([3, 4, 5], [5, 4, 3]), ([6, 7], [7, 6])]
    inputs, targets = pairs_batch(pairs)
    loss, _ = net.loss(inputs, targets)
    # by hand: the decoder fed <eor> target, predicting target <eor>, over the encoded source
    expected = 0.0
    for s, t in pairs:
        state = net.encode(torch.tensor([s]), torch.tensor([len(s)]))
        out, _ = net.decoder(net.embedding(torch.tensor([[EOR] + t])), (state.h, state.c))
        logits, _ = net.attend(out, state)
        expected += nn.functional.cross_entropy(logits[0], torch.tensor(t + [EOR]), reduction="sum").item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # logits() lines the decoder's logits up with the row, for per-record losses (DP)
    full = net.logits(inputs)
    mask = targets != IGNORE
    token = nn.functional.cross_entropy(full.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none")
    assert token.sum().item() == pytest.approx(expected, rel=1e-5) and int(mask.sum()) == (3 + 1) + (2 + 1)


def test_teacher_forcing_one_feeds_the_truth_and_zero_the_models_own_tokens():
    net = model()
    net.train()
    inputs, targets = pairs_batch([([3, 4, 5], [5, 4, 3]), ([6, 7], [7, 6])])
    _, _, decoder_in, _, _ = Seq2SeqModel.split(inputs, targets)
    net.teacher_forcing_ratio = 1.0
    net.loss(inputs, targets)
    assert torch.equal(net.last_decoder_inputs, decoder_in)
    net.teacher_forcing_ratio = 0.0
    net.loss(inputs, targets)
    fed = net.last_decoder_inputs
    assert torch.equal(fed[:, 0], decoder_in[:, 0])  # <eor> starts either way
    # free running: each fed token is the model's likeliest of the step before (until the row's end)
    state = net.encode(*Seq2SeqModel.split(inputs)[:2])
    token = fed[:, 0]
    for t in range(1, fed.shape[1]):
        logits, state = net.decode_step(token, state)
        real = decoder_in[:, t] != PAD
        assert torch.equal(fed[real, t], logits.argmax(-1)[real])
        token = fed[:, t]
    assert not torch.equal(fed, decoder_in)  # an untrained model's guesses differ from the truth
    net.eval()  # validation always feeds the truth
    net.loss(inputs, targets)
    assert torch.equal(net.last_decoder_inputs, decoder_in)


def test_teacher_forcing_schedules():
    assert [teacher_forcing_at(s, 11, 0.5, "constant") for s in (0, 5, 10)] == [0.5, 0.5, 0.5]
    assert [teacher_forcing_at(s, 11, 0.2, "linear") for s in (0, 5, 10)] == pytest.approx([1.0, 0.6, 0.2])
    decay = [teacher_forcing_at(s, 1000, 0.0, "inverse_sigmoid") for s in range(0, 1000, 100)]
    assert decay[0] > 0.9 and decay[-1] < 0.1 and all(a > b for a, b in zip(decay, decay[1:]))
    assert teacher_forcing_at(500, 1000, 0.0, "inverse_sigmoid") == pytest.approx(0.5, abs=0.01)
    assert teacher_forcing_at(999, 1000, 0.3, "inverse_sigmoid") == 0.3  # never below the ratio


def test_a_tiny_model_learns_to_reverse_and_decodes_it():
    net = model()
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    data = reverse_pairs(256)
    for step in range(250):
        batch = random.Random(step).sample(data, 32)
        inputs, targets = pairs_batch(batch)
        loss, _ = net.loss(inputs, targets)
        tokens = int((targets != IGNORE).sum())
        opt.zero_grad()
        (loss / tokens).backward()
        opt.step()
    net.eval()
    tests = reverse_pairs(40, seed=1)
    outs = greedy(net, [s for s, _ in tests], max_tokens=8)
    exact = sum(o == t for o, (_, t) in zip(outs, tests)) / len(tests)
    assert exact >= 0.8, exact
    beams = beam_search(net, [s for s, _ in tests], num_beams=3, max_tokens=8)
    assert sum(h[0][0] == t for h, (_, t) in zip(beams, tests)) / len(tests) >= exact - 0.05
    drawn = sample(net, [s for s, _ in tests], torch.Generator().manual_seed(0), max_tokens=8, temperature=1e-9)
    assert drawn == outs  # temperature -> 0 is greedy


class Table(nn.Module):
    """A hand-set 'decoder': the next token's log probabilities depend only on the last token fed.
    From the start (<eor>): A 0.6, B 0.4. After A: C 0.5, D 0.5 (then <eor>). After B: <eor> 0.9.
    Greedy takes A (0.6) then C or D: 0.6 x 0.5 x 1 = 0.30; the best sequence is B <eor>: 0.4 x 0.9 = 0.36."""

    A, B, C, D = 3, 4, 5, 6

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        p = torch.full((7, 7), 1e-9)
        p[EOR, self.A], p[EOR, self.B] = 0.6, 0.4
        p[self.A, self.C], p[self.A, self.D] = 0.5, 0.5
        p[self.B, EOR], p[self.B, self.C] = 0.9, 0.1
        p[self.C, EOR] = p[self.D, EOR] = 1.0
        self.logp = (p / p.sum(1, keepdim=True)).log()

    def encode(self, sources, lengths):
        n = sources.shape[0]
        zeros = torch.zeros(1, n, 1)
        return Seq2SeqState(zeros, zeros, torch.zeros(n, 1, 1), torch.ones(n, 1, dtype=torch.bool))

    def decode_step(self, token, state):
        return self.logp[token].clone(), state


def test_beam_search_finds_the_best_sequence_greedy_misses():
    net = Table()
    assert greedy(net, [[3]], max_tokens=5) == [[Table.A, Table.C]]
    (best, score), = beam_search(net, [[3]], num_beams=2, max_tokens=5, length_penalty=0.0)[0][:1]
    assert best == [Table.B] and score == pytest.approx(math.log(0.36), rel=1e-6)
    hyps = beam_search(net, [[3]], num_beams=2, max_tokens=5, length_penalty=0.0, num_return_sequences=2)[0]
    assert [h[0] for h in hyps] in ([[Table.B], [Table.A, Table.C]], [[Table.B], [Table.A, Table.D]])
    assert hyps[0][1] >= hyps[1][1]


def test_beam_width_one_equals_greedy():
    net = model()
    sources = [s for s, _ in reverse_pairs(20, seed=2)]
    want = greedy(net, sources, max_tokens=6)
    assert [h[0][0] for h in beam_search(net, sources, num_beams=1, max_tokens=6)] == want
    # and the beam algorithm itself at width 1, scoring raw sums, stopping at the first ending
    from synthloom.decoding import _beam_chunk

    hyps = _beam_chunk(net, sources, 1, 6, 0.0, True, 0, torch.device("cpu"))
    assert [h[0][1] for h in hyps] == want


def test_no_repeat_ngram_size_bans_repeats():
    net = model()
    sources = [s for s, _ in reverse_pairs(10, seed=3)]
    for hyps in beam_search(net, sources, num_beams=3, max_tokens=12, no_repeat_ngram_size=2):
        ids = hyps[0][0]
        grams = [tuple(ids[j : j + 2]) for j in range(len(ids) - 1)]
        assert len(grams) == len(set(grams)), ids


def test_a_state_keeps_rows_of_sources_of_other_lengths():
    net = model()
    a = net.encode(torch.tensor([[3, 4, 5]]), torch.tensor([3]))
    b = net.encode(torch.tensor([[6]]), torch.tensor([1]))
    both = Seq2SeqState.cat([a, b])
    assert both.memory.shape == (2, 3, 24) and both.mask.tolist() == [[True] * 3, [True, False, False]]
    token = torch.tensor([EOR, EOR])
    together, _ = net.decode_step(token, both)
    alone, _ = net.decode_step(token[:1], b)
    assert torch.allclose(together[1], alone[0], atol=1e-6)  # the padding changes nothing
    assert torch.equal(both.rows(torch.tensor([1])).mask, torch.tensor([[True, False, False]]))


# --------------------------------------------------------------------------- DP-SGD: per-pair gradients


def test_dplstm_reads_each_row_as_a_packed_bidirectional_lstm_does():
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from synthloom.models.dp_lstm import DPLSTM

    torch.manual_seed(0)
    lstm = nn.LSTM(5, 7, num_layers=2, batch_first=True, bidirectional=True)
    dp = DPLSTM.from_lstm(lstm)
    assert list(dp.state_dict()) == list(lstm.state_dict())  # saved weights load into the plain encoder
    x, lengths = torch.randn(4, 9, 5), torch.tensor([9, 3, 6, 1])
    out, (h, c) = dp(x, lengths=lengths)
    ref, (ref_h, ref_c) = lstm(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    ref, _ = pad_packed_sequence(ref, batch_first=True, total_length=9)
    for got, want in ((out, ref), (h, ref_h), (c, ref_c)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    out, (h, c) = dp(x)  # no lengths: every row the full length, as nn.LSTM on a padded batch
    ref, (ref_h, ref_c) = lstm(x)
    for got, want in ((out, ref), (h, ref_h), (c, ref_c)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def _pair_losses(net, inputs, targets):
    """Each pair's summed token loss, from logits() as DP-SGD takes it."""
    logits = net.logits(inputs)
    token = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none")
    return token.view_as(targets).sum(1)


@pytest.mark.parametrize("attention, ratio", [("bahdanau", 1.0), ("luong_general", 1.0), ("luong_dot", 0.0)])
def test_per_pair_gradients_are_each_pairs_own(attention, ratio):
    """Pairs of unequal source and target lengths in one padded batch (ratio 0: the decoder run step by step
    on its own tokens): row n's gradient under DP-SGD is what pair n alone gives."""
    pytest.importorskip("opacus")
    from synthloom.privacy import make_private

    pairs = [([3, 4, 5, 6, 7], [7, 6]), ([8], [4, 4, 4, 5]), ([5, 3], [3, 5, 8])]
    net = model(attention, encoder_layers=2)
    net.train()
    net.teacher_forcing_ratio = ratio
    reference = []
    for pair in pairs:
        net.zero_grad()
        _pair_losses(net, *pairs_batch([pair])).sum().backward()
        reference.append({k: p.grad.clone() for k, p in net.named_parameters()})
    net.zero_grad()
    make_private(net)
    assert type(net.encoder).__name__ == "DPLSTM" and net.encoder.bidirectional
    _pair_losses(net, *pairs_batch(pairs)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad_sample.shape == (len(pairs), *p.shape), name
        for n in range(len(pairs)):
            torch.testing.assert_close(p.grad_sample[n], reference[n][name], atol=1e-5, rtol=1e-4, msg=f"{name} {n}")
