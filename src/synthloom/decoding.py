"""Decoding a target for each source with an encoder-decoder (models/seq2seq.py): greedy, sampling, and
beam search, batched over many sources at once.

    outs = greedy(net, sources, max_tokens=64)                            # [[token ids], ...]
    outs = sample(net, sources, generator, temperature=0.8, top_p=0.95)
    hyps = beam_search(net, sources, num_beams=4, length_penalty=1.0)     # per source: [(ids, score), ...]

`net` needs two methods: encode(sources (B, S), lengths (B,)) -> state, and decode_step(token (B,), state)
-> (logits (B, V), state), the state having rows(index). Decoding starts from <eor> and ends at <eor>
(the record's end); <pad> and <unk> are never emitted.

Beam search follows Hugging Face's definitions: a hypothesis's score is the sum of its tokens' log
probabilities divided by length ** length_penalty (its length counts the end token); each step keeps
the num_beams best running hypotheses; a source is done when num_beams hypotheses have ended and
(early_stopping=False) no running one can still beat the worst of them (an exact bound: log
probabilities only fall, and the length is at most max_tokens), or (early_stopping=True) at once.
no_repeat_ngram_size=n bans any token that would repeat an n-gram already in the hypothesis. num_beams=1
is greedy decoding, as in Hugging Face.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .sampling import sample_next

PAD_ID, EOR_ID, UNK_ID = 0, 1, 2  # as tokenizers


def pair_metrics(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu's defaults, 0..100) and the share of exact matches (0..1) of one
    hypothesis per reference."""
    try:
        import sacrebleu
    except ImportError:  # (train and generate check for it before any work; this is the last word)
        raise ImportError("seq2seq metrics need sacrebleu: pip install 'synthloom[seq2seq]'") from None
    return {
        "bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
        "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score,
        "exact_match": sum(h == r for h, r in zip(hypotheses, references)) / max(len(references), 1),
    }


def split_pair(ids: list[int]) -> tuple[list[int], list[int]]:
    """A pair record's ids, source <eor> target -> (source, target)."""
    cut = ids.index(EOR_ID)
    return ids[:cut], ids[cut + 1 :]


def _batch(sources: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([max(len(s), 1) for s in sources])
    out = torch.full((len(sources), int(lengths.max())), PAD_ID, dtype=torch.long)
    for i, s in enumerate(sources):
        out[i, : len(s)] = torch.tensor(s or [EOR_ID], dtype=torch.long)
    return out.to(device), lengths


def _chunks(n: int, size: int):
    return (range(i, min(i + size, n)) for i in range(0, n, size))


def _mask_specials(logits: torch.Tensor) -> torch.Tensor:
    logits[:, PAD_ID] = float("-inf")
    logits[:, UNK_ID] = float("-inf")
    return logits


@torch.no_grad()
def greedy(net, sources: list[list[int]], *, max_tokens: int, batch_size: int = 256) -> list[list[int]]:
    """The likeliest token at every step, until <eor> or max_tokens."""
    return _step_decode(net, sources, max_tokens, batch_size, lambda logits: _mask_specials(logits).argmax(-1))


@torch.no_grad()
def sample(
    net,
    sources: list[list[int]],
    generator: torch.Generator,
    *,
    max_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    batch_size: int = 256,
) -> list[list[int]]:
    """A target drawn for each source, token by token, with temperature, top-k and top-p."""

    def draw(logits):
        return sample_next(logits, temperature, top_k, top_p, generator, overwrite=True)

    return _step_decode(net, sources, max_tokens, batch_size, draw)


def _step_decode(net, sources, max_tokens: int, batch_size: int, pick) -> list[list[int]]:
    device = next(net.parameters()).device
    out: list[list[int]] = [[] for _ in sources]
    for chunk in _chunks(len(sources), batch_size):
        src, lengths = _batch([sources[i] for i in chunk], device)
        state = net.encode(src, lengths)
        token = torch.full((len(chunk),), EOR_ID, dtype=torch.long, device=device)
        alive = torch.ones(len(chunk), dtype=torch.bool, device=device)
        steps = []
        for _ in range(max_tokens):
            logits, state = net.decode_step(token, state)
            token = pick(logits.float().clone())
            token = torch.where(alive, token, torch.full_like(token, EOR_ID))
            steps.append(token)
            alive &= token != EOR_ID
            if not bool(alive.any()):
                break
        ids = torch.stack(steps, 1).tolist() if steps else [[] for _ in chunk]
        for row, i in enumerate(chunk):
            seq = ids[row]
            out[i] = seq[: seq.index(EOR_ID)] if EOR_ID in seq else seq
    return out


@dataclass
class _Finished:
    """The ended hypotheses of one source, the best num_beams kept."""

    size: int
    hyps: list  # (score, ids)

    def add(self, score: float, ids: list[int]) -> None:
        self.hyps.append((score, ids))
        self.hyps.sort(key=lambda h: -h[0])
        del self.hyps[self.size :]

    @property
    def worst(self) -> float:
        return self.hyps[-1][0] if len(self.hyps) >= self.size else float("-inf")


@torch.no_grad()
def beam_search(
    net,
    sources: list[list[int]],
    *,
    num_beams: int,
    max_tokens: int,
    length_penalty: float = 1.0,
    early_stopping: bool = False,
    num_return_sequences: int = 1,
    no_repeat_ngram_size: int = 0,
    batch_size: int = 64,
) -> list[list[tuple[list[int], float]]]:
    """Per source, the num_return_sequences best (target ids, score), best first (see the module doc)."""
    if not 1 <= num_return_sequences <= num_beams:
        raise ValueError(f"num_return_sequences must be 1..num_beams ({num_beams}), not {num_return_sequences}")
    if num_beams == 1:
        return [[(ids, float("nan"))] for ids in greedy(net, sources, max_tokens=max_tokens)]
    device = next(net.parameters()).device
    results: list[list[tuple[list[int], float]]] = [[] for _ in sources]
    for chunk in _chunks(len(sources), batch_size):
        for i, hyps in zip(chunk, _beam_chunk(
            net, [sources[i] for i in chunk], num_beams, max_tokens, length_penalty, early_stopping,
            no_repeat_ngram_size, device,
        )):  # fmt: skip
            results[i] = [(ids, score) for score, ids in hyps[:num_return_sequences]]
    return results


def _beam_chunk(net, sources, k: int, max_tokens: int, lp: float, early: bool, ngram: int, device) -> list[list]:
    b = len(sources)
    src, lengths = _batch(sources, device)
    state = net.encode(src, lengths).rows(torch.arange(b, device=device).repeat_interleave(k))  # (B K) rows
    scores = torch.full((b, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # the first step expands one beam, not k copies of it
    seqs: list[list[list[int]]] = [[[] for _ in range(k)] for _ in range(b)]
    finished = [_Finished(k, []) for _ in range(b)]
    done = [False] * b
    token = torch.full((b * k,), EOR_ID, dtype=torch.long, device=device)
    for length in range(1, max_tokens + 1):
        logits, state = net.decode_step(token, state)
        logp = torch.log_softmax(_mask_specials(logits.float().clone()), dim=-1)  # (B K, V)
        if ngram:
            _ban_repeats(logp, [seq for row in seqs for seq in row], ngram)
        vocab = logp.shape[1]
        total = (scores.reshape(-1, 1) + logp).view(b, k * vocab)
        top_scores, top_index = total.topk(min(2 * k, k * vocab), dim=1)  # enough to fill k beams past endings
        top_scores, top_index = top_scores.tolist(), top_index.tolist()
        keep_rows, keep_tokens, new_scores = [], [], []
        for i in range(b):
            row_scores, row_tokens, row_from = [], [], []
            if not done[i]:
                for score, flat in zip(top_scores[i], top_index[i]):
                    beam, tok = divmod(flat, vocab)
                    if score == float("-inf"):
                        break
                    if tok == EOR_ID:
                        finished[i].add(score / length**lp, seqs[i][beam])
                        continue
                    row_scores.append(score)
                    row_tokens.append(tok)
                    row_from.append(beam)
                    if len(row_scores) == k:
                        break
            while len(row_scores) < k:  # a done source (or too few candidates): dead beams
                row_scores.append(float("-inf"))
                row_tokens.append(EOR_ID)
                row_from.append(0)
            seqs[i] = [seqs[i][beam] + [tok] for beam, tok in zip(row_from, row_tokens)]
            keep_rows.extend(i * k + beam for beam in row_from)
            keep_tokens.extend(row_tokens)
            new_scores.append(row_scores)
            if not done[i]:
                done[i] = _is_done(finished[i], max(row_scores), length, max_tokens, lp, early)
        if all(done):
            break
        state = state.rows(torch.tensor(keep_rows, device=device))
        token = torch.tensor(keep_tokens, device=device)
        scores = torch.tensor(new_scores, device=device)
    for i in range(b):  # past max_tokens: the running hypotheses compete with the ended ones
        if not done[i]:
            for beam in range(k):
                if scores[i, beam] > float("-inf"):
                    finished[i].add(float(scores[i, beam]) / max_tokens**lp, seqs[i][beam])
    return [f.hyps for f in finished]


def _is_done(finished: _Finished, best_running: float, length: int, max_tokens: int, lp: float, early: bool) -> bool:
    if len(finished.hyps) < finished.size:
        return False
    if early or best_running == float("-inf"):
        return True
    # the best a running hypothesis can still reach: its sum only falls; its length is length + 1 .. max_tokens
    best_length = max_tokens if lp > 0 else length + 1
    return finished.worst >= best_running / best_length**lp


def _ban_repeats(logp: torch.Tensor, seqs: list[list[int]], n: int) -> None:
    """-inf for every token that would complete an n-gram the hypothesis already holds."""
    for row, seq in enumerate(seqs):
        if len(seq) + 1 < n:
            continue
        prefix = tuple(seq[len(seq) - n + 1 :]) if n > 1 else ()
        banned = [seq[j + n - 1] for j in range(len(seq) - n + 1) if tuple(seq[j : j + n - 1]) == prefix]
        if banned:
            logp[row, banned] = float("-inf")
