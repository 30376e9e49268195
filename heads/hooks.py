"""Hooks on each head's output, the one mechanism that ablation and probing share.

transformers 5 removed `head_mask`. The input of `attention.output.dense` (BERT and RoBERTa) is the
concatenation of the heads' outputs, [batch, seq, heads * head_dim], before the output projection: zeroing
head h's slice there is exactly what `head_mask` did (it zeroed the head's attention probabilities). Masking
after the projection would not remove a head. A pre-hook there leaves SDPA on, so ablation runs at full speed.

This is TransformerLens's hook point `blocks.{L}.attn.hook_z`. A hook function is called as
`fn(layer, z, attention_mask)`, z = [batch, seq, heads, head_dim] and the batch's attention mask [batch, seq],
and may return a replacement for z.
"""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable

import torch
from torch import nn

from codesearch.errors import UserError

from .naming import HeadId
from .settings import MaskMode

HookFn = Callable[[int, torch.Tensor, "torch.Tensor | None"], "torch.Tensor | None"]


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT- or RoBERTa-family model (bare or with a task head)."""
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        raise UserError(f"{type(model).__name__} has no encoder.layer list: only BERT- and RoBERTa-family "
                        f"encoders are supported")
    return layers


def output_projection(model: nn.Module, layer: int) -> nn.Linear:
    """Layer `layer`'s attention output projection, whose input is the hook point."""
    module = getattr(getattr(getattr(encoder_layers(model)[layer], "attention", None), "output", None), "dense",
                     None)
    if not isinstance(module, nn.Linear):
        raise UserError(f"layer {layer} of {type(model).__name__} has no attention.output.dense projection")
    return module


@contextlib.contextmanager
def hook_z(model: nn.Module, fn: HookFn, attention_mask: torch.Tensor | None = None,
           layers: Iterable[int] | None = None):
    """Call `fn(layer, z, attention_mask)` at every forward of the given layers (default all),
    z = [batch, seq, heads, head_dim], the mask being that of the batch the block runs.

    If `fn` returns a tensor, it replaces z; it must not modify z in place (callers may hold the tensor).
    """
    config = model.config
    n_heads = config.num_attention_heads
    head_dim = config.hidden_size // n_heads
    handles = []

    def make_hook(layer: int):
        def pre_hook(_module, args):
            z = args[0]
            replaced = fn(layer, z.view(*z.shape[:-1], n_heads, head_dim), attention_mask)
            if replaced is None:
                return None
            return (replaced.reshape(z.shape), *args[1:])
        return pre_hook

    try:
        for layer in (range(len(encoder_layers(model))) if layers is None else layers):
            handles.append(output_projection(model, layer).register_forward_pre_hook(make_hook(layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def heads_by_layer(heads: Iterable[HeadId]) -> dict[int, list[int]]:
    grouped: dict[int, list[int]] = {}
    for head in sorted(heads):
        grouped.setdefault(head.layer, []).append(head.index)
    return grouped


def _require_mask(attention_mask: torch.Tensor | None, what: str) -> torch.Tensor:
    if attention_mask is None:
        raise RuntimeError(f"{what} needs the batch's attention mask: run it through hook_z(..., attention_mask)")
    return attention_mask


class HeadMask:
    """Replaces the outputs of chosen heads: `zero`, `mean` (their mean over held-out tokens) or `resample`
    (their output on another input of the same batch).

    `means[layer]` is [heads, head_dim] for mean mode. Resample: input i takes the head output of input i+1
    (cyclically) at the same positions, and, where that input is padding, that input's mean over its real tokens.
    """

    def __init__(self, heads: Iterable[HeadId], mode: str = "zero", means: dict[int, torch.Tensor] | None = None,
                 where: torch.Tensor | None = None):
        """`where` [batch, seq] bool: replace the heads' output only at these tokens (a pair's query or code)."""
        self.where = where
        if mode not in tuple(MaskMode):
            raise UserError(f"unknown masking mode {mode!r}: choose one of {', '.join(MaskMode)}")
        self.by_layer = heads_by_layer(heads)
        if not self.by_layer:
            raise UserError("a head mask needs at least one head")
        self.mode = mode
        self.means = means
        if mode == "mean":
            missing = [layer for layer in self.by_layer if means is None or layer not in means]
            if missing:
                raise UserError(f"mean masking needs each head's mean output; none for layers {missing}")

    @property
    def layers(self) -> list[int]:
        return sorted(self.by_layer)

    def only_at(self, where: torch.Tensor) -> HeadMask:
        """The same mask, replacing the heads' output only where `where` [batch, seq] is true."""
        restricted = copy.copy(self)
        restricted.where = where
        return restricted

    def __call__(self, layer: int, z: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        heads = self.by_layer.get(layer)
        if not heads:
            return None
        out = z.clone()
        index = torch.tensor(heads, device=z.device)
        if self.mode == "zero":
            replaced = torch.zeros_like(z[:, :, index])
        elif self.mode == "mean":
            replaced = self.means[layer][index].to(z.dtype).to(z.device).expand_as(z[:, :, index])
        else:
            replaced = self._resampled(z[:, :, index], _require_mask(attention_mask, "resample masking"))
        if self.where is not None:
            replaced = torch.where(self.where.to(z.device)[:, :, None, None], replaced, z[:, :, index])
        out[:, :, index] = replaced
        return out

    @staticmethod
    def _resampled(z_heads: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """z_heads [batch, seq, k, head_dim]: each input's slice from the next input of the batch."""
        if z_heads.shape[0] < 2:
            raise UserError("resample masking needs batches of at least two inputs (model.batch_size >= 2)")
        mask = attention_mask.to(z_heads.device).bool()
        donor = z_heads.roll(-1, dims=0)
        donor_mask = mask.roll(-1, dims=0)
        weights = donor_mask[:, :, None, None].to(z_heads.dtype)
        donor_mean = (donor * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1)
        return torch.where(donor_mask[:, :, None, None], donor, donor_mean.expand_as(donor))


class GradientMask:
    """Multiplies every head's output by its entry of `mask` [layers, heads] (ones, requiring grad): one backward
    pass then gives d loss / d mask for every head (Michel et al., 2019)."""

    def __init__(self, mask: torch.Tensor):
        self.mask = mask

    def __call__(self, layer: int, z: torch.Tensor, _attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return z * self.mask[layer].to(z.dtype)[None, None, :, None]


class MeanAccumulator:
    """Sums each head's output over real (non-padding) tokens, to mean-mask with. `means()` gives
    {layer: [heads, head_dim]}."""

    def __init__(self):
        self.sums: dict[int, torch.Tensor] = {}
        self.counts: dict[int, int] = {}

    def __call__(self, layer: int, z: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        attention_mask = _require_mask(attention_mask, "a mean over real tokens")
        weights = attention_mask.to(z.device)[:, :, None, None].to(torch.float64)
        total = (z.to(torch.float64) * weights).sum(dim=(0, 1))
        self.sums[layer] = self.sums[layer] + total if layer in self.sums else total
        self.counts[layer] = self.counts.get(layer, 0) + int(attention_mask.sum())
        return None

    def means(self) -> dict[int, torch.Tensor]:
        if not self.counts or min(self.counts.values()) == 0:
            raise UserError("the mean-masking set has no tokens: nothing to average over")
        return {layer: (total / self.counts[layer]).to(torch.float32) for layer, total in self.sums.items()}
