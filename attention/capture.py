"""One pass of the examples through an eager-attention model, the statistics taken layer by layer as each layer's
attention is computed: no batch ever holds every layer's attention at once (but the few examples kept for the
distances between heads). Each example is measured on its own real tokens (see attention/statistics.py)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from codesearch.errors import UserError
from heads.encoder import Batch, Encoder
from heads.hooks import encoder_layers, output_projection

from .inputs import CODE, QUERY, TokenizedExamples
from .settings import CONSTRUCTS, STATISTICS
from .statistics import ExampleTokens, construct_share, example_statistics, js_distances

JS_ROWS = 64        # rows per example over which two heads' Jensen-Shannon distance is averaged


@dataclass
class AttentionMeasures:
    """Per example (in the order given), layer and head: every statistic and the attention to each construct."""
    values: dict[str, np.ndarray]            # statistic -> [n, layers, heads]
    construct_mass: dict[str, np.ndarray]    # construct -> [n, layers, heads]
    construct_share: dict[str, np.ndarray]   # construct -> [n]
    js: np.ndarray | None                    # [layers*heads, layers*heads], mean over the sampled examples
    js_examples: int


def measure(encoder: Encoder, examples: TokenizedExamples, batch_size: int, construct_source: int | None,
            js_sample: set[int] = frozenset(), progress: bool = True, desc: str = "attention") -> AttentionMeasures:
    """Run every example through `encoder` (loaded with eager attention) and measure its heads.

    `construct_source` is the segment whose rows the construct attention is taken from (QUERY for pairs, CODE for
    code alone; None: none); `js_sample` are the examples whose heads' Jensen-Shannon distances are averaged."""
    n, layers, heads = len(examples), encoder.n_layers, encoder.n_heads
    store = _Store(values=np.full((n, layers, len(STATISTICS), heads), np.nan),
                   construct_mass=np.full((n, layers, heads, len(CONSTRUCTS)), np.nan),
                   construct_share=np.full((n, len(CONSTRUCTS)), np.nan),
                   js=np.zeros((layers * heads, layers * heads)) if js_sample else None)
    factors = _value_factors(encoder)

    def attach(batch: Batch):
        return _BatchCapture(encoder, batch, examples, store, factors, construct_source, js_sample)

    for _ in encoder.forward_batches(examples.ids, batch_size, type_ids=examples.type_ids, attach=attach,
                                     progress=progress, desc=desc):
        pass
    return AttentionMeasures(
        values={name: store.values[:, :, i] for i, name in enumerate(STATISTICS)},
        construct_mass={name: store.construct_mass[..., k] for k, name in enumerate(CONSTRUCTS)},
        construct_share={name: store.construct_share[:, k] for k, name in enumerate(CONSTRUCTS)},
        js=store.js / len(js_sample) if js_sample else None, js_examples=len(js_sample))


@dataclass
class _Store:
    """What the pass fills: [n, layers, statistics, heads], [n, layers, heads, constructs], [n, constructs], and
    the sum of the sampled examples' distances between heads."""
    values: np.ndarray
    construct_mass: np.ndarray
    construct_share: np.ndarray
    js: np.ndarray | None


def _value_factors(encoder: Encoder) -> list[torch.Tensor]:
    """Per layer, [heads, d, d]: R_h of the QR factorisation of the head's share of the output projection W_O^h
    [hidden, d]; |W_O^h v| = |R_h v|, a d x d product per token instead of hidden x d."""
    factors = []
    for layer in range(encoder.n_layers):
        weight = output_projection(encoder.model, layer).weight.detach().to(torch.float64)   # [hidden, H * d]
        per_head = weight.view(weight.shape[0], encoder.n_heads, encoder.head_dim).permute(1, 0, 2)  # [H, out, d]
        factors.append(torch.linalg.qr(per_head, mode="r").R.to(torch.float32))
    return factors


class _BatchCapture(contextlib.AbstractContextManager):
    """Hooks for one batch: each layer's value vectors and attention weights, measured as soon as they exist."""

    def __init__(self, encoder, batch, examples, store, factors, construct_source, js_sample):
        self.encoder, self.store, self.factors = encoder, store, factors
        self.positions = list(batch.positions)
        self.tokens = [_example_tokens(examples, position) for position in self.positions]
        self.lengths = [len(tokens.query) for tokens in self.tokens]
        self.sources = [None if construct_source is None else
                        tokens.query if construct_source == QUERY else tokens.code for tokens in self.tokens]
        self.js_rows = [row for row, position in enumerate(self.positions) if position in js_sample]
        self.kept: dict[int, torch.Tensor] = {}   # layer -> [js rows, H, S, S]
        self.values: dict[int, torch.Tensor] = {}
        self.handles = []

    def __enter__(self):
        for layer, module in enumerate(encoder_layers(self.encoder.model)):
            attention = module.attention.self
            self.handles.append(attention.value.register_forward_hook(self._keep_values(layer)))
            self.handles.append(attention.register_forward_hook(self._measure(layer)))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        if exc[0] is None and self.js_rows:
            self._add_js()
        return False

    def _keep_values(self, layer: int):
        def hook(_module, _args, output):
            self.values[layer] = output
        return hook

    def _measure(self, layer: int):
        def hook(_module, _args, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise UserError(f"{self.encoder.info.name} returns no attention weights: load it with "
                                f"attn_implementation='eager' (SDPA and flash attention return none)")
            self._store(layer, weights.detach().cpu(), self._value_norms(layer, weights.shape).cpu())
            if self.js_rows:
                self.kept[layer] = weights.detach()[self.js_rows].float().cpu()
        return hook

    def _value_norms(self, layer: int, shape) -> torch.Tensor:
        """[B, H, S]: |f(v)| of every token's value vector through each head's share of the output projection."""
        batch, heads, seq, _ = shape
        values = self.values.pop(layer).detach().float().view(batch * seq, heads, -1).transpose(0, 1)  # [H, B*S, d]
        norms = torch.linalg.vector_norm(values @ self.factors[layer].to(values.device).transpose(1, 2), dim=-1)
        return norms.view(heads, batch, seq).transpose(0, 1)

    def _store(self, layer: int, weights: torch.Tensor, norms: torch.Tensor) -> None:
        store = self.store
        for row, (position, tokens, length) in enumerate(zip(self.positions, self.tokens, self.lengths)):
            statistics, constructs = example_statistics(weights[row, :, :length, :length], tokens,
                                                        norms[row, :, :length], self.sources[row])
            store.values[position, layer] = statistics.numpy()
            if constructs is not None:
                store.construct_mass[position, layer] = constructs.numpy()
            if layer == 0:
                store.construct_share[position] = construct_share(tokens).numpy()

    def _add_js(self) -> None:
        stacked = torch.stack([self.kept[layer] for layer in sorted(self.kept)], dim=1)   # [rows, L, H, S, S]
        for row_in_kept, row in enumerate(self.js_rows):
            length = self.lengths[row]
            per_head = stacked[row_in_kept, :, :, :length, :length].flatten(0, 1)          # [L*H, S, S]
            self.store.js += js_distances(per_head, torch.ones(length, dtype=torch.bool), JS_ROWS,
                                          seed=self.positions[row]).numpy()


def _example_tokens(examples: TokenizedExamples, position: int) -> ExampleTokens:
    """An example's token masks over its own tokens (the batch's padding comes after them)."""
    segments = torch.from_numpy(examples.segments[position])
    return ExampleTokens(query=segments == QUERY, code=segments == CODE,
                         separators=torch.from_numpy(examples.separators[position]),
                         constructs=torch.from_numpy(examples.constructs[position]))
