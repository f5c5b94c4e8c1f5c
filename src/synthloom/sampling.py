"""Drawing one token per row from logits: temperature, top-k, top-p (nucleus) and an inverse-CDF
draw, exact and several times cheaper on CPU than torch.multinomial.

    token = sample_next(logits, temperature, top_k, top_p, generator)            # (B, V) -> (B,)
    index = sample_next(slot_logits, 1.0, 0, 1.0, generator, specials=False)     # a field slot's own range
"""

from __future__ import annotations

import math

import torch

PAD_ID, UNK_ID = 0, 2  # as tokenizers.PAD_ID, UNK_ID: never drawn from a whole vocabulary

LOG2E = math.log2(math.e)


def sample_next(
    logits: torch.Tensor,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator,
    *,
    overwrite: bool = False,
    specials: bool = True,
) -> torch.Tensor:
    """One token per row from (B, V) logits with temperature, top-k and top-p (nucleus).
    overwrite=True uses `logits` as scratch space (it is left changed) instead of copying it.
    specials=False: the columns are a slice of the vocabulary (a field slot's), not token ids, so
    <pad> and <unk> are not masked."""
    logits = logits.to(torch.float32, copy=not overwrite)
    if specials:
        logits[:, PAD_ID] = float("-inf")  # never trained as a target; never emitted
        logits[:, UNK_ID] = float("-inf")  # '<unk>' would decode to a placeholder, not data
    if temperature < 1e-30:  # 0: greedy, the likeliest token (top-k and top-p keep it anyway); and the
        return logits.argmax(-1)  # limit of temperatures too small for fp32 (1e-300 is 0 there, 0/0 NaN)
    if temperature != 1.0:  # (the max subtracted first: a tiny temperature gives -inf, never inf - inf)
        logits.sub_(logits.amax(-1, keepdim=True)).div_(temperature)
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits.masked_fill_(logits < kth, float("-inf"))
    if top_p < 1.0:
        probs = torch.softmax(logits, dim=-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # drop a token when the tokens before it already hold top_p of the mass (the top one always stays)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        return sample_from(torch.zeros_like(probs).scatter_(-1, order, sorted_probs), generator, overwrite=True)
    # exp(logits - max) as 2^((logits - max) log2 e), half the cost of exp on CPU: the softmax without
    # its division (sample_from does not need weights that sum to 1)
    weights = logits.sub_(logits.amax(-1, keepdim=True)).mul_(LOG2E).exp2_()
    return sample_from(weights, generator, overwrite=True)


LANES = 32  # sample_from: a wide row is searched as this many interleaved lanes


def sample_from(weights: torch.Tensor, generator: torch.Generator, *, overwrite: bool = False) -> torch.Tensor:
    """One index per row of (B, V) non-negative weights, by inverse CDF: exact, and on CPU
    several times cheaper than torch.multinomial (one uniform per row, not one per entry).

    A wide row is searched in two levels: first the lane holding the draw (lane j: entries
    j, j + LANES, j + 2 LANES, ...) by the lanes' sums, then the entry within that lane. This
    replaces a running sum over all V entries (the costliest pass here) with a plain sum.
    overwrite=True lets a narrow row's running sum be taken in place."""
    rows, width = weights.shape
    u = torch.rand((rows, 1), generator=generator, device=weights.device, dtype=weights.dtype)
    if width < 4 * LANES:
        cdf = weights.cumsum_(-1) if overwrite else weights.cumsum(-1)  # non-decreasing; flat where a weight is 0
        return _search(cdf, u * cdf[:, -1:])[0]
    whole = width - width % LANES
    sums = weights[:, :whole].reshape(rows, -1, LANES).sum(1)  # (B, LANES)
    if whole < width:
        sums[:, : width - whole] += weights[:, whole:]
    cdf = sums.cumsum_(-1)
    lane, rest = _search(cdf, u * cdf[:, -1:])
    index = lane[:, None] + LANES * torch.arange(-(-width // LANES), device=weights.device)  # (B, V / LANES)
    inside = index < width  # the lanes past the last whole row are one shorter
    cdf = (weights.gather(1, index.clamp_(max=width - 1)) * inside).cumsum_(-1)
    return lane + LANES * _search(cdf, rest)[0]


def _search(cdf: torch.Tensor, at: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) the first index whose running sum (cdf, (B, N)) exceeds `at` (B, 1), taken below the
    row's total so that rounding cannot run past the end, so the index found has a weight > 0;
    and (B, 1) how far `at` lies past the running sum before that index."""
    total = cdf[:, -1:]
    at = torch.minimum(at, torch.nextafter(total, torch.zeros_like(total)))
    index = torch.searchsorted(cdf, at, right=True)  # (B, 1)
    before = cdf.gather(1, (index - 1).clamp_(min=0)) * (index > 0)
    return index.squeeze(1), at - before
