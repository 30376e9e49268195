"""Exact head ablation, fast: a head in layer L changes nothing below L, so layers 0..L-1 are never rerun.

The encoder is walked layer by layer over fixed, length-sorted batches (`SideSweep`). At layer L it holds,
for every batch of its chunk, the layer's input and its heads' outputs (the input of the output projection). Each
condition whose lowest head is in layer L then reruns from there: the output projection with the mask
applied, the feed-forward block, and layers L+1..N. Layer L's attention itself is computed once and shared by
all its heads.

Memory is bounded by the `Layout` (chosen by `ablation.plan` from `ablation.max_memory_gb`):
- one chunk per side (the whole pool): every batch is cached at once; queries and code are walked in lockstep and
  each condition's embeddings are handed over as soon as its layer is done;
- several chunks: the conditions are taken in groups of at most `group_size`, in layer order; for each group the
  chunks are walked one after another, each up to the group's highest layer, and the group's embeddings of the
  whole pool are filled in chunk by chunk and handed over when its last chunk is done.
The batches are the same in every layout and each row is computed by the same operations, so the embeddings, and
the ranks, are bit-identical whatever the chunks (the tests check every chunk size against the naive path).

The naive path (`Encoder.encode` with the mask as its hook) runs the whole model on the same batches.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm import tqdm
from transformers.pytorch_utils import apply_chunking_to_forward

from heads.encoder import Batch, Encoder
from heads.hooks import HeadMask, HookFn, encoder_layers, hook_z

from .conditions import Condition

SIDES = ("query", "code")    # a bi-encoder's sides
PAIR = "pair"                # a cross-encoder's one side: the (query, code) pairs


class _StopForward(Exception):
    pass


@dataclass
class SideInputs:
    """One side of a task, tokenized into the length-sorted batches every pass over it uses."""
    batches: list[Batch]
    n: int   # inputs

    def batch_tokens(self) -> list[int]:
        """Padded tokens of each batch (what its cache holds)."""
        return [batch.input_ids.numel() for batch in self.batches]

    def batch_shapes(self) -> list[tuple[int, int]]:
        """(rows, padded width) of each batch."""
        return [tuple(batch.input_ids.shape) for batch in self.batches]


def side_inputs(encoder: Encoder, texts: list[str], max_length: int, batch_size: int) -> SideInputs:
    return SideInputs(list(encoder.length_sorted_batches(encoder.tokenize(texts, max_length), batch_size)), len(texts))


@dataclass(frozen=True)
class Layout:
    """How the work is cut to fit in memory: each side's batches in chunks of at most `chunk_tokens` padded tokens
    (0: one chunk, the whole side; a chunk always holds at least one batch), and, when a side has several chunks, the
    conditions in groups of at most `group_size` (0: all in one)."""
    chunk_tokens: dict[str, int] = field(default_factory=dict)
    group_size: int = 0

    def chunks(self, side: str, inputs: SideInputs) -> list[Sequence[Batch]]:
        """The side's batches cut into chunks (slices of `inputs.batches`: a cross-encoder's pair batches are made
        only when a chunk is walked)."""
        limit = self.chunk_tokens.get(side, 0)
        if limit <= 0:
            return [inputs.batches]
        bounds, tokens = [0], 0
        for index, size in enumerate(inputs.batch_tokens()):
            if index > bounds[-1] and tokens + size > limit:
                bounds.append(index)
                tokens = 0
            tokens += size
        bounds.append(len(inputs.batches))
        return [inputs.batches[start:stop] for start, stop in zip(bounds[:-1], bounds[1:]) if stop > start]


WHOLE = Layout()


class SideSweep:
    """Some batches of one side (queries or code), walked through the encoder one layer at a time."""

    def __init__(self, encoder: Encoder, batches: Sequence[Batch]):
        self.encoder = encoder
        self.layers = encoder_layers(encoder.model)
        self.batches = list(batches)          # made now (pair batches are made on demand), held while walked
        self.layer = 0
        self.hidden: list[torch.Tensor] = []        # per batch: the current layer's input
        self.layer_args: list[tuple] = []           # per batch: what the encoder passes every layer
        self.z: list[torch.Tensor] | None = None     # per batch: the current layer's head outputs
        self.next_hidden: list[torch.Tensor] | None = None

    @torch.inference_mode()
    def start(self) -> None:
        """Embed every batch and record the arguments the encoder hands to its layers."""
        captured = {}

        def capture(_module, args, kwargs):
            captured["args"], captured["kwargs"] = args, kwargs
            raise _StopForward

        handle = self.layers[0].register_forward_pre_hook(capture, with_kwargs=True)
        try:
            for batch in self.batches:
                types = {} if batch.token_type_ids is None else {"token_type_ids": batch.token_type_ids}
                try:
                    self.encoder.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **types)
                except _StopForward:
                    pass
                self.hidden.append(captured["args"][0])
                self.layer_args.append((captured["args"][1:], captured["kwargs"]))
        finally:
            handle.remove()

    @torch.inference_mode()
    def compute_layer(self) -> None:
        """Run the current layer unmasked on every batch, keeping its head outputs and its output."""
        if self.z is not None:
            return
        z_store: list[torch.Tensor] = []

        def keep(_layer, z, _attention_mask):
            z_store.append(z.reshape(*z.shape[:-2], -1))

        layer = self.layers[self.layer]
        self.next_hidden = []
        with hook_z(self.encoder.model, keep, layers=[self.layer]):
            for hidden, (args, kwargs) in zip(self.hidden, self.layer_args):
                self.next_hidden.append(layer(hidden, *args, **kwargs))
        self.z = z_store

    def advance(self) -> None:
        self.compute_layer()
        self.hidden, self.z, self.next_hidden = self.next_hidden, None, None
        self.layer += 1

    def rerun(self, mask: HeadMask, out: torch.Tensor, on_batch: Callable[[], None] = lambda: None,
              segment: int | None = None) -> None:
        """The outputs (embeddings, or a cross-encoder's scores) of this sweep's rows with the mask applied,
        rerunning from the current layer up, written into `out` [n, output_dim] at each row's position. `segment`:
        pair inputs, the mask replaces the heads' output only at that segment's tokens (query or code)."""
        if mask.layers[0] != self.layer:
            raise RuntimeError(f"a mask starting at layer {mask.layers[0]} cannot rerun from layer {self.layer}")
        self.rerun_hooked(lambda _b, batch: mask if segment is None else mask.only_at(batch.segments == segment),
                          mask.layers, out, on_batch)

    @torch.inference_mode()
    def rerun_hooked(self, hook_of: Callable[[int, Batch], HookFn], layers: list[int], out: torch.Tensor,
                     on_batch: Callable[[], None] = lambda: None) -> None:
        """The outputs with `hook_of(b, batch)` as batch b's hook on the head outputs of `layers` (the current
        layer and later ones), rerunning from the current layer up (activation patching hands each batch its own
        source)."""
        self.compute_layer()
        layer = self.layers[self.layer]
        for b, batch in enumerate(self.batches):
            args, kwargs = self.layer_args[b]
            with hook_z(self.encoder.model, hook_of(b, batch), batch.attention_mask, layers=layers):
                # The tail of the layer's forward: projection (the hook fires on its input), feed-forward.
                attention_output = layer.attention.output(self.z[b], self.hidden[b])
                hidden = apply_chunking_to_forward(layer.feed_forward_chunk, layer.chunk_size_feed_forward,
                                                   layer.seq_len_dim, attention_output)
                for later in self.layers[self.layer + 1:]:
                    hidden = later(hidden, *args, **kwargs)
            out[torch.as_tensor(batch.positions, device=out.device)] = \
                self.encoder.pool(hidden, batch.attention_mask).float()
            on_batch()

    def release(self) -> None:
        self.hidden, self.layer_args, self.z, self.next_hidden = [], [], None, None


ResultCallback = Callable[[Condition, "torch.Tensor | None", "torch.Tensor | None"], None]


def condition_groups(conditions: list[Condition], layout: Layout, chunked: bool) -> list[list[Condition]]:
    """Conditions in order of their lowest layer: in one group when nothing is chunked, else in consecutive groups
    of at most `layout.group_size` (0: no limit). Each group walks the chunks up to its highest first layer."""
    ordered = sorted(conditions, key=lambda c: c.first_layer)
    if not chunked or not layout.group_size:
        return [ordered]
    return [ordered[start:start + layout.group_size] for start in range(0, len(ordered), layout.group_size)]


def run_conditions(encoder: Encoder, query_inputs: SideInputs, code_inputs: SideInputs, conditions: list[Condition],
                   on_result: ResultCallback, means: dict[str, dict[int, torch.Tensor]] | None = None,
                   layout: Layout = WHOLE, progress: bool = True) -> None:
    """Ablate each condition exactly; `on_result(condition, query_emb, code_emb)` gets its float32 embeddings on
    the encoder's device (None for a side it leaves alone) as soon as it is done, in order of its lowest layer.
    `means` are each side's head means for mean masking; `layout` bounds the memory (see the module's note)."""
    run_sides(encoder, {"query": query_inputs, "code": code_inputs}, conditions,
              lambda c, out: on_result(c, out.get("query"), out.get("code")), means, layout, progress)


def run_pair_conditions(encoder: Encoder, inputs: SideInputs, conditions: list[Condition],
                        on_result: Callable[[Condition, torch.Tensor], None],
                        means: dict[str, dict[int, torch.Tensor]] | None = None, layout: Layout = WHOLE,
                        progress: bool = True) -> None:
    """A cross-encoder's conditions on its pairs (`heads.pairs.PairInputs`): `on_result(condition, scores)` gets each
    condition's float32 scores [n_pairs] on the encoder's device. A condition's side (query, code) masks the heads'
    output only at that segment's tokens; both masks it everywhere."""
    run_sides(encoder, {PAIR: inputs}, conditions, lambda c, out: on_result(c, out[PAIR][:, 0]), means, layout,
              progress)


def run_sides(encoder: Encoder, inputs: dict[str, SideInputs], conditions: list[Condition],
              on_result: Callable[[Condition, dict[str, torch.Tensor]], None],
              means: dict[str, dict[int, torch.Tensor]] | None = None, layout: Layout = WHOLE,
              progress: bool = True) -> None:
    """The engine over any sides: `on_result(condition, {side: outputs})` for the sides the condition touches."""
    if not conditions:
        return
    touched = [side for side in inputs if any(c.affects(side) for c in conditions)]
    chunks = {side: layout.chunks(side, inputs[side]) for side in touched}
    groups = condition_groups(conditions, layout, chunked=any(len(c) > 1 for c in chunks.values()))
    dim = encoder.output_dim
    bar = tqdm(total=len(conditions), desc="ablating", unit="condition", disable=not progress, file=sys.stderr,
               mininterval=1.0, bar_format="{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}]")
    try:
        for group in groups:
            _run_group(encoder, inputs, group, chunks, on_result, means or {}, dim, bar)
    finally:
        bar.close()


def _run_group(encoder: Encoder, inputs: dict[str, SideInputs], group: list[Condition],
               chunks: dict[str, list[Sequence[Batch]]], on_result, means: dict, dim: int, bar: tqdm) -> None:
    """One group: the sides' chunks walked in lockstep (chunk k of each side together), each up to the group's last
    first layer; a condition is handed over once its last chunk of every side it touches is done."""
    last_layer = max(c.first_layer for c in group)
    n_chunks = max(len(side_chunks) for side_chunks in chunks.values())
    embeddings: dict[str, dict[str, torch.Tensor]] = {}
    batches_of = {c.name: sum(len(inputs[s].batches) for s in chunks if c.affects(s)) for c in group}
    final_chunk = {c.name: max(len(chunks[s]) - 1 for s in chunks if c.affects(s)) for c in group}
    for k in range(n_chunks):
        sweeps = {side: SideSweep(encoder, side_chunks[k]) for side, side_chunks in chunks.items()
                  if k < len(side_chunks)}
        try:
            for sweep in sweeps.values():
                sweep.start()
            for layer in range(last_layer + 1):
                for condition in (c for c in group if c.first_layer == layer):
                    for side, sweep in sweeps.items():
                        if condition.affects(side):
                            out = embeddings.setdefault(condition.name, {}).get(side)
                            if out is None:
                                out = torch.empty((inputs[side].n, dim), dtype=torch.float32, device=encoder.device)
                                embeddings[condition.name][side] = out
                            mask = HeadMask(condition.heads, condition.mode, means.get(side))
                            sweep.rerun(mask, out, lambda: bar.update(1 / batches_of[condition.name]),
                                        condition.segment if side == PAIR else None)
                    if k == final_chunk[condition.name]:
                        on_result(condition, embeddings.pop(condition.name))
                if layer < last_layer:
                    for sweep in sweeps.values():
                        sweep.advance()
        finally:
            for sweep in sweeps.values():
                sweep.release()
