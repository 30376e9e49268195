"""Exact head ablation, fast: a head in layer L changes nothing below L, so layers 0..L-1 are never rerun.

The encoder is walked layer by layer over fixed, length-sorted batches (`SideSweep`). At layer L it holds,
for every batch, the layer's input and its heads' outputs (the input of the output projection). Each
condition whose lowest head is in layer L then reruns from there: the output projection with the mask
applied, the feed-forward block, and layers L+1..N. Layer L's attention itself is computed once and shared by
all its heads. Queries and code are walked in lockstep, so a condition's per-query reciprocal ranks are known
(and can be saved) as soon as it is done.

The naive path (`Encoder.encode` with the mask as its hook) runs the whole model on the same batches; the two
give bit-identical embeddings, which the tests check.
"""
from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from tqdm import tqdm
from transformers.pytorch_utils import apply_chunking_to_forward

from codesearch.errors import UserError
from heads.encoder import Encoder
from heads.hooks import HeadMask, encoder_layers, hook_z
from heads.settings import ModelConfig

from .conditions import Condition


class _StopForward(Exception):
    pass


class SideSweep:
    """One side (queries or code) of a task, walked through the encoder one layer at a time."""

    def __init__(self, encoder: Encoder, texts: list[str], max_length: int, batch_size: int):
        self.encoder = encoder
        self.layers = encoder_layers(encoder.model)
        token_ids = encoder.tokenize(texts, max_length)
        self.batches = list(encoder.length_sorted_batches(token_ids, batch_size))
        self.n = len(texts)
        self.layer = 0
        self.hidden: list[torch.Tensor] = []        # per batch: the current layer's input
        self.layer_args: list[tuple] = []           # per batch: what the encoder passes every layer
        self.z: list[torch.Tensor] | None = None     # per batch: the current layer's head outputs
        self.next_hidden: list[torch.Tensor] | None = None

    def cache_bytes(self) -> int:
        """Memory the sweep holds at once: layer input, head outputs and next input, for every batch."""
        tokens = sum(batch.input_ids.numel() for batch in self.batches)
        return 3 * tokens * self.encoder.model.config.hidden_size * 4

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
                try:
                    self.encoder.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
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

    @torch.inference_mode()
    def rerun(self, mask: HeadMask) -> torch.Tensor:
        """Embeddings [n, dim] with the mask applied, rerunning from the current layer up."""
        if mask.layers[0] != self.layer:
            raise RuntimeError(f"a mask starting at layer {mask.layers[0]} cannot rerun from layer {self.layer}")
        self.compute_layer()
        layer = self.layers[self.layer]
        out = torch.empty((self.n, self.encoder.model.config.hidden_size), dtype=torch.float32)
        for b, (positions, _, attention_mask, _) in enumerate(self.batches):
            args, kwargs = self.layer_args[b]
            with hook_z(self.encoder.model, mask, attention_mask, layers=mask.layers):
                # The tail of the layer's forward: projection (the mask hook fires on its input), feed-forward.
                attention_output = layer.attention.output(self.z[b], self.hidden[b])
                hidden = apply_chunking_to_forward(layer.feed_forward_chunk, layer.chunk_size_feed_forward,
                                                   layer.seq_len_dim, attention_output)
                for later in self.layers[self.layer + 1:]:
                    hidden = later(hidden, *args, **kwargs)
            out[torch.as_tensor(positions)] = self.encoder.pool(hidden, attention_mask).float().cpu()
        return out

    def release(self) -> None:
        self.hidden, self.layer_args, self.z, self.next_hidden = [], [], None, None


ResultCallback = Callable[[Condition, "torch.Tensor | None", "torch.Tensor | None"], None]


def run_conditions(encoder: Encoder, queries: list[str], candidates: list[str], conditions: list[Condition],
                   on_result: ResultCallback, model: ModelConfig,
                   means: dict[str, dict[int, torch.Tensor]] | None = None, max_cache_gb: float = 8.0,
                   progress: bool = True) -> None:
    """Ablate each condition exactly; `on_result(condition, query_emb, code_emb)` gets its embeddings (None for
    a side it leaves alone) as soon as it is done, in order of its lowest layer. `model` gives the input
    lengths and the batch size; `means` each side's head means for mean masking."""
    if not conditions:
        return
    inputs = {"query": (queries, model.max_query_length), "code": (candidates, model.max_code_length)}
    touched = [side for side in inputs if any(c.affects(side) for c in conditions)]
    sweeps = {side: SideSweep(encoder, inputs[side][0], inputs[side][1], model.batch_size) for side in touched}
    needed = sum(s.cache_bytes() for s in sweeps.values())
    if needed > max_cache_gb * 2**30:
        size = f"{needed / 2**30:.1f} GiB" if needed >= 2**30 else f"{max(1, round(needed / 2**20))} MiB"
        raise UserError(f"the layer cache needs about {size} (over ablation.max_cache_gb={max_cache_gb}): "
                        f"evaluate fewer queries (data.max_queries) or raise the limit")
    for sweep in sweeps.values():
        sweep.start()
    by_layer: dict[int, list[Condition]] = {}
    for condition in conditions:
        by_layer.setdefault(condition.first_layer, []).append(condition)
    last_layer = max(by_layer)
    bar = tqdm(total=len(conditions), desc="ablating", unit="condition", disable=not progress, file=sys.stderr,
               mininterval=1.0)
    try:
        for layer in range(last_layer + 1):
            for condition in by_layer.get(layer, []):
                embeddings = {}
                for side, sweep in sweeps.items():
                    if condition.affects(side):
                        mask = HeadMask(condition.heads, condition.mode, (means or {}).get(side))
                        embeddings[side] = sweep.rerun(mask)
                on_result(condition, embeddings.get("query"), embeddings.get("code"))
                bar.update(1)
            if layer < last_layer:
                for sweep in sweeps.values():
                    sweep.advance()
    finally:
        bar.close()
        for sweep in sweeps.values():
            sweep.release()
