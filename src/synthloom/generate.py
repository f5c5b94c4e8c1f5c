"""Sampling synthetic records from a trained model dir.

    model = load_model("model/")
    records = model.generate(num_records=1000, temperature=0.8, top_p=0.95, seed=1)
    good = [r.text for r in records if r.valid]

Many records are sampled at once (`batch_size` rows); each step feeds only the newest
token and carries the LSTM state, so a prefix is never re-run; a row that finishes hands
its slot to a new record at once (continuous batching), so the batch stays full. Every
record is checked (it ended, it is not empty, a CSV record has the right number of
fields, the user's validator accepts it) and comes back with `valid` and, if not, an
`explanation`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import ValidationError

from .checkpoint import read_digests, read_model_dir
from .config import GenerateConfig, TrainingConfig, format_validation_error
from .errors import ConfigError, GenerationError, ModelDirError
from .models import build_model, resolve_device
from .records import COPY_EXPLANATION, GeneratedRecord, check_record, is_training_copy
from .tokenizers import EOR_ID, PAD_ID, UNK_ID, Tokenizer

log = logging.getLogger("synthloom")

Validator = Callable[[str], Any]


@dataclass
class TrainedModel:
    """A model dir loaded for sampling."""

    config: TrainingConfig
    tokenizer: Tokenizer
    net: torch.nn.Module
    summary: dict[str, Any]
    path: Path
    device: torch.device

    @property
    def columns(self) -> list[str] | None:
        return self.summary.get("columns")

    @property
    def delimiter(self) -> str | None:
        """The CSV field delimiter of a table model; None for text models."""
        data = self.config.data
        return data.field_delimiter if data.format == "csv" else None

    def generate(
        self,
        num_records: int | None = None,
        *,
        validator: Validator | None = None,
        progress: Callable[[int, int], None] | None = None,
        **settings: Any,
    ) -> list[GeneratedRecord]:
        """Sample until `num_records` valid records exist (invalid ones are returned too,
        flagged). `settings` override the model's saved `generate` section: temperature, top_k,
        top_p, max_tokens, stop, prefix, batch_size, seed, max_invalid, privacy_filter. A record the
        privacy filter drops comes back invalid, with its text blanked (it is training data)."""
        opts = resolve_settings(self.config.generate, num_records=num_records, **settings)
        return generate_records(self, opts, validator=validator, progress=progress)


def load_model(path: str | Path, device: str = "auto") -> TrainedModel:
    """Load a model dir written by `train` (config, tokenizer, safetensors weights)."""
    config, tokenizer, weights, summary = read_model_dir(path)
    target = resolve_device(device, "load_model(device=...)")
    net = build_model(config.model, tokenizer.vocab_size)
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:
        # torch lists each mismatch on its own line after a header: keep the first few
        details = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()][:3]
        raise ModelDirError(
            f"{path}: the weights do not match the saved config: {'; '.join(details) or str(exc)}"
        ) from None
    net.to(target).eval()
    return TrainedModel(config, tokenizer, net, summary, Path(path), target)


def generate(model_dir: str | Path, num_records: int | None = None, **kwargs: Any) -> list[GeneratedRecord]:
    """Load a model dir and sample from it (see TrainedModel.generate)."""
    return load_model(model_dir).generate(num_records, **kwargs)


def resolve_settings(base: GenerateConfig, **overrides: Any) -> GenerateConfig:
    """The saved generate section with the given (non-None) overrides, validated."""
    merged = base.model_dump() | {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(merged) - set(GenerateConfig.model_fields))
    if unknown:
        raise ConfigError(
            f"unknown generation setting(s): {', '.join(unknown)}; known: {', '.join(GenerateConfig.model_fields)}"
        )
    try:
        return GenerateConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc).replace("\n  ", "\n  generate.")) from None


def generate_records(
    model: TrainedModel,
    opts: GenerateConfig,
    *,
    validator: Validator | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[GeneratedRecord]:
    tok = model.tokenizer
    prefix_ids = tok.encode(opts.prefix) if opts.prefix else []
    if UNK_ID in prefix_ids:
        raise GenerationError(f"generate.prefix {opts.prefix!r} holds characters the model never saw in training")
    max_tokens = opts.max_tokens or 2 * int(model.summary.get("max_record_tokens", 256))
    seed = opts.seed if opts.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
    generator = torch.Generator(device=model.device).manual_seed(seed)
    delimiter = model.delimiter
    num_fields = model.summary.get("num_fields")

    if opts.privacy_filter and model.config.privacy.enabled:
        raise GenerationError(
            f"{model.path} was trained with differential privacy and keeps no digests of its training records "
            "(they would sit outside the guarantee), so the privacy filter has nothing to compare with; "
            "generate without it (--no-privacy-filter)"
        )
    copies = read_digests(model.path) if opts.privacy_filter else None
    if opts.privacy_filter and copies is None:
        log.warning("%s has no training-record digests (trained by an older synthloom): no privacy filter", model.path)
    records: list[GeneratedRecord] = []
    counts = {"valid": 0, "invalid": 0}

    def finish(token_rows: list[list[int]], ended: list[bool]) -> None:
        for text, done in zip(tok.decode_batch(token_rows), ended):
            text = opts.prefix + text
            for s in opts.stop:  # a stop string ends the record where it first appears
                cut = text.find(s, len(opts.prefix))
                if cut >= 0:
                    text, done = text[:cut], True
            record = check_record(text, done, max_tokens, delimiter, num_fields, validator)
            if record.valid and copies is not None and is_training_copy(record.text, *copies):
                record = GeneratedRecord("", False, COPY_EXPLANATION)  # its text is training data: not returned
            records.append(record)
            counts["valid" if record.valid else "invalid"] += 1
        if progress is not None:
            progress(counts["valid"], counts["invalid"])

    def wanted(in_flight: int) -> int:
        # start no more than could still be needed if every record in flight turns out valid;
        # past max_invalid start none, but let those in flight finish (nothing is thrown away)
        if counts["invalid"] > opts.max_invalid:
            return 0
        return max(0, opts.num_records - counts["valid"] - in_flight)

    settings = (opts.temperature, opts.top_k, opts.top_p)
    try:
        sample_stream(
            model.net,
            prefix_ids,
            max_tokens,
            settings,
            generator,
            opts.batch_size,
            wanted,
            finish,
            stop=opts.stop,
            tokenizer=tok,
        )
    except KeyboardInterrupt:
        err = GenerationError(f"interrupted after {counts['valid']} valid record(s)")
        err.records = records  # what was generated is not lost
        raise err from None
    if counts["invalid"] > opts.max_invalid:
        copies = sum(r.explanation == COPY_EXPLANATION for r in records)
        advice = (
            f"{copies} were exact copies of training records: the model reproduces its training data; raise the "
            "temperature, train for fewer epochs, or turn the privacy filter off (--no-privacy-filter)"
            if copies * 2 > counts["invalid"]
            else "Train longer, lower the temperature, or raise max_invalid"
        )
        err = GenerationError(
            f"{counts['invalid']} invalid records (more than generate.max_invalid={opts.max_invalid}) with only "
            f"{counts['valid']} valid; last reason: {_last_reason(records)}. {advice}."
        )
        err.records = records  # what was generated is not lost
        raise err
    return records


def _last_reason(records: list[GeneratedRecord]) -> str | None:
    return next((r.explanation for r in reversed(records) if not r.valid), None)


@torch.no_grad()
def sample_stream(
    net: torch.nn.Module,
    prefix_ids: list[int],
    max_tokens: int,
    settings: tuple[float, int, float],
    generator: torch.Generator,
    slots: int,
    wanted: Callable[[int], int],
    finish: Callable[[list[list[int]], list[bool]], None],
    stop: list[str] | None = None,
    tokenizer: Tokenizer | None = None,
) -> None:
    """Sample records with continuous batching: up to `slots` records in flight, one token
    each per step; a record that ends hands its slot to a new one at once, so the matrix
    products stay full-width to the last record. `wanted(in_flight)` says how many records
    to start; `finish(token_rows, ended)` receives records as they end: their tokens
    (without the end token) and whether they ended by themselves (False: max_tokens hit).

    Every record starts from the same state (the prefix, run once), and rows never
    interact, so each record's distribution is that of sampling it alone.
    """
    temperature, top_k, top_p = settings
    device = next(net.parameters()).device
    plan = net.sampling_plan()
    logits0, state0 = net(torch.tensor([[EOR_ID] + prefix_ids], device=device))
    logits0 = logits0[:, -1]  # (1, V): where every record starts

    n = min(slots, wanted(0))
    logits = logits0.expand(n, -1)
    state = tuple(s.expand(-1, n, -1).contiguous() for s in state0)  # each (L, n, H)
    buf = torch.full((n, max_tokens), PAD_ID, dtype=torch.int32, device=device)  # tokens so far
    pos = torch.zeros(n, dtype=torch.long, device=device)  # each row's length
    step = 0
    while n > 0:
        token = sample_next(logits, temperature, top_k, top_p, generator)  # (n,)
        buf[torch.arange(n, device=device), pos] = token.int()
        pos += 1
        step += 1
        eor = token == EOR_ID
        ended = eor.clone()
        if stop and tokenizer is not None and step % 4 == 0:  # stop strings: checked every few steps
            width = int(pos.max())
            texts = tokenizer.decode_batch([r[:n] for r, n in zip(buf[:, :width].tolist(), pos.tolist())])
            ended |= torch.tensor([any(s in x for s in stop) for x in texts], device=device)
        finished = ended | (pos >= max_tokens)
        done = finished.nonzero().squeeze(1)  # rows whose record ended this step
        refill = done[:0]
        if done.numel():
            lengths = (pos[done] - eor[done].long()).tolist()  # the end token is not kept
            finish([row[:length] for row, length in zip(buf[done].tolist(), lengths)], ended[done].tolist())
            new = wanted(n - done.numel())
            refill, drop = done[:new], done[new:]  # freed slots start new records, in place
            buf[refill] = PAD_ID
            pos[refill] = 0
            if drop.numel():  # nothing more to start: the batch shrinks
                keep = torch.ones(n, dtype=torch.bool, device=device)
                keep[drop] = False
                token, buf, pos = token[keep], buf[keep], pos[keep]
                state = tuple(s[:, keep] for s in state)
                refill = torch.cumsum(keep, 0)[refill] - 1  # the refilled rows' new positions
                n = int(keep.sum())
        if n == 0:
            break
        logits, state = net.step(token, state, plan)  # (n, V); a refilled row's step is discarded:
        if refill.numel():  # it starts from the prefix state instead
            logits[refill] = logits0
            for s, s0 in zip(state, state0):
                s[:, refill] = s0


def sample_next(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator
) -> torch.Tensor:
    """One token per row from (B, V) logits with temperature, top-k and top-p (nucleus)."""
    logits = logits.float() / temperature
    logits[:, PAD_ID] = float("-inf")  # never trained as a target; never emitted
    logits[:, UNK_ID] = float("-inf")  # '<unk>' would decode to a placeholder, not data
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # drop a token when the tokens before it already hold top_p of the mass (the top one always stays)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return sample_from(probs, generator)


def sample_from(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One index per row of (B, V) non-negative weights, by inverse CDF: exact, and on CPU
    several times cheaper than torch.multinomial (one uniform per row, not one per entry)."""
    cdf = probs.cumsum(-1)  # (B, V), non-decreasing; flat where a weight is 0
    total = cdf[:, -1:]
    u = torch.rand(total.shape, generator=generator, device=probs.device, dtype=probs.dtype) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # u < total even after rounding
    return torch.searchsorted(cdf, u, right=True).squeeze(-1)  # first index whose cdf exceeds u
