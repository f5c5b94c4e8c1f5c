"""Sampling synthetic records from a trained model dir.

    model = load_model("model/")
    records = model.generate(num_records=1000, temperature=0.8, top_p=0.95, seed=1)
    good = [r.text for r in records if r.valid]

Many records are sampled at once (`batch_size` rows); each step feeds only the newest
token and carries the LSTM state, so a prefix is never re-run; rows that finish leave the
batch, so long records do not make short ones pay. Every record is checked (it ended, it is
not empty, a CSV record has the right number of fields, the user's validator accepts it)
and comes back with `valid` and, if not, an `explanation`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import read_model_dir
from .config import GenerateConfig, TrainingConfig
from .errors import ConfigError, GenerationError
from .models import build_model
from .records import GeneratedRecord, check_record
from .tokenizers import EOR_ID, PAD_ID, UNK_ID, Tokenizer

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
        top_p, max_tokens, stop, prefix, batch_size, seed, max_invalid."""
        opts = resolve_settings(self.config.generate, num_records=num_records, **settings)
        return generate_records(self, opts, validator=validator, progress=progress)


def load_model(path: str | Path, device: str = "auto") -> TrainedModel:
    """Load a model dir written by `train` (config, tokenizer, safetensors weights)."""
    config, tokenizer, weights, summary = read_model_dir(path)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    net = build_model(config.model, tokenizer.vocab_size)
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:
        from .errors import ModelDirError

        raise ModelDirError(f"{path}: the weights do not match the saved config ({str(exc).splitlines()[0]})") from None
    net.to(device).eval()
    return TrainedModel(config, tokenizer, net, summary, Path(path), torch.device(device))


def generate(model_dir: str | Path, num_records: int | None = None, **kwargs: Any) -> list[GeneratedRecord]:
    """Load a model dir and sample from it (see TrainedModel.generate)."""
    return load_model(model_dir).generate(num_records, **kwargs)


def resolve_settings(base: GenerateConfig, **overrides: Any) -> GenerateConfig:
    """The saved generate section with the given (non-None) overrides, validated."""
    merged = base.model_dump() | {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(merged) - set(GenerateConfig.model_fields))
    if unknown:
        raise ConfigError(f"unknown generation setting(s): {', '.join(unknown)}; known: {', '.join(GenerateConfig.model_fields)}")
    from pydantic import ValidationError

    from .config import format_validation_error

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
    delimiter = model.config.data.field_delimiter if model.config.data.format == "csv" else None
    columns = model.columns

    records: list[GeneratedRecord] = []
    n_valid = n_invalid = 0
    while n_valid < opts.num_records:
        n = min(opts.batch_size, opts.num_records - n_valid)
        token_rows, ended = sample_tokens(
            model.net, n, prefix_ids, max_tokens, opts.temperature, opts.top_k, opts.top_p, generator,
            model.device, stop=opts.stop, tokenizer=tok,
        )
        for text, done in zip(tok.decode_batch(token_rows), ended):
            text = opts.prefix + text
            for s in opts.stop:  # a stop string ends the record where it first appears
                cut = text.find(s, len(opts.prefix))
                if cut >= 0:
                    text, done = text[:cut], True
            record = check_record(text, done, max_tokens, delimiter, columns, validator)
            records.append(record)
            if record.valid:
                n_valid += 1
            else:
                n_invalid += 1
        if progress is not None:
            progress(n_valid, n_invalid)
        if n_invalid > opts.max_invalid:
            err = GenerationError(
                f"{n_invalid} invalid records (more than generate.max_invalid={opts.max_invalid}) with only "
                f"{n_valid} valid; last reason: {_last_reason(records)}. "
                "Train longer, lower the temperature, or raise max_invalid."
            )
            err.records = records  # what was generated is not lost
            raise err
    return records


def _last_reason(records: list[GeneratedRecord]) -> str | None:
    return next((r.explanation for r in reversed(records) if not r.valid), None)


@torch.no_grad()
def sample_tokens(
    net: torch.nn.Module,
    n: int,
    prefix_ids: list[int],
    max_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator,
    device: torch.device,
    stop: list[str] | None = None,
    tokenizer: Tokenizer | None = None,
) -> tuple[list[list[int]], list[bool]]:
    """Sample n records in parallel. Returns each record's tokens (without the end token)
    and whether it ended by itself (False: it ran into max_tokens)."""
    plan = net.sampling_plan()
    start = torch.tensor([EOR_ID] + prefix_ids, device=device).expand(n, -1)  # (n, P+1)
    logits, state = net(start)
    logits = logits[:, -1]  # (n, V)
    out = torch.full((n, max_tokens), PAD_ID, dtype=torch.long, device=device)
    lengths = torch.full((n,), max_tokens, dtype=torch.long)
    ended = torch.zeros(n, dtype=torch.bool)
    active = torch.arange(n, device=device)  # batch rows still sampling -> their record index
    for t in range(max_tokens):
        token = sample_next(logits, temperature, top_k, top_p, generator)  # (a,)
        out[active, t] = token
        finished = token == EOR_ID
        if stop and tokenizer is not None and t % 4 == 3:  # stop strings: check every few steps
            texts = tokenizer.decode_batch(out[active, : t + 1].tolist())
            finished |= torch.tensor([any(s in x for s in stop) for x in texts], device=device)
        if bool(finished.any()):
            rows = active[finished].cpu()
            lengths[rows] = torch.where(token[finished].cpu() == EOR_ID, t, t + 1)
            ended[rows] = True
            keep = ~finished
            active, token = active[keep], token[keep]
            state = tuple(s[:, keep] for s in state)
            if active.numel() == 0:
                break
        if t + 1 < max_tokens:
            logits, state = net.step(token, state, plan)
    out = out.cpu()
    rows = [out[i, : lengths[i]].tolist() for i in range(n)]
    return rows, ended.tolist()


def sample_next(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator) -> torch.Tensor:
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
