"""What training, sampling and DP ask of a model: two Protocols, no base class.

    loss, correct = net.loss(tokens, targets, positions)       # train: summed token losses of a padded batch
    logits = net.logits(tokens, positions)                     # DP: (B, T, V), per-record losses from them
    logits, state = net.start(tokens, positions)               # sampling: after prefixes of one length
    plan = net.sampling_plan(precision)                        # weights arranged for stepping, and buffers
    logits, state = net.step(token, state, plan)               # one token per row: (B,) -> (B, V)
    logits, state = net.step_slot(token, fed, slot, state, plan)   # field tokens: (B,) -> (B, slot's size)
    state = state.rows(keep); state.put(rows, other)           # continuous batching: drop, refill in place
    net.prepare_per_record_gradients()                         # DP: layers Opacus (or torch.func) can hook

A model is an nn.Module built by models.build_model(config.model, vocab_size, allowed) from its config
section alone; its weights are its state_dict (saving and loading need nothing else). `positions`, with
field tokens (tables), is (B, T): the slot each step predicts; None for text. `allowed` (S + 1, V) tells
the model each slot's vocabulary: its logits there are masked to it, so every sampled row decodes.

train/, generate.py, continuous.py, lockstep.py and privacy.py use nothing else of a model (tests/test_interface.py
plugs a tiny third model in to hold them to it).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class ModelState(Protocol):
    """What sampling carries from step to step, one row per record in flight."""

    def rows(self, index: torch.Tensor) -> "ModelState":
        """A new state of the rows `index` picks (ids, or a bool mask over the rows), in that order."""

    def put(self, index: torch.Tensor, other: "ModelState") -> None:
        """Rows `index` (ids) replaced in place by `other`'s rows, one for one (refilling freed rows)."""

    @classmethod
    def cat(cls, states: list["ModelState"]) -> "ModelState":
        """The rows of `states`, one after another."""


@runtime_checkable
class RecordModel(Protocol):
    vocab_size: int
    # the longest token sequence the model reads, the start token included (a transformer's context);
    # None: no limit (the LSTM)
    max_length: int | None

    def loss(
        self, tokens: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of the token losses, number of correct predictions) over a padded batch: tokens (B, T),
        targets (B, T) with -100 where there is nothing to predict."""

    def logits(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, V) logits, masked to each slot's vocabulary with field tokens."""

    def start(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> tuple[torch.Tensor, ModelState]:
        """Run prefixes of one length (B, T), all starting with <eor>: the last step's logits (B, V) and
        the state to step on from."""

    def sampling_plan(self, precision: str = "fp32") -> object:
        """Whatever step() wants prepared once per sampling run (rearranged weights, work buffers);
        `precision` "bf16" where the machine runs bf16 natively (models.precision). Build it again
        after the weights change."""

    def step(self, token: torch.Tensor, state: ModelState, plan: object) -> tuple[torch.Tensor, ModelState]:
        """Feed one token per row (B,); the next token's logits (B, V). May update `state` in place and
        return a buffer of the plan as the logits (overwritten by the next step)."""

    def step_slot(
        self, token: torch.Tensor, fed: int | None, slot: int, state: ModelState, plan: object
    ) -> tuple[torch.Tensor, ModelState]:
        """Field tokens, every row at the same point of one column order: feed tokens (B,) of slot `fed`
        (None: <eor>, the start), predict slot `slot`: logits (B, its vocabulary size)."""

    def prepare_per_record_gradients(self) -> None:
        """Make the model's layers ones Opacus' GradSampleModule can give per-record gradients for,
        in place, keeping parameter names and values (so the weights load into a plain model)."""
