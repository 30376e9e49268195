"""Hooks on each head's output, the one mechanism that ablation and probing share.

transformers 5 removed `head_mask`. The input of `attention.output.dense` (BERT and RoBERTa) is the
concatenation of the heads' outputs, [batch, seq, heads * head_dim], before the output projection: zeroing
head h's slice there is exactly what `head_mask` did (it zeroed the head's attention probabilities). Masking
after the projection would not remove a head. A pre-hook there leaves SDPA on, so ablation runs at full speed.

Following TransformerLens, the hook point of layer L is named `blocks.{L}.attn.hook_z`; a hook function sees
z as [batch, seq, heads, head_dim] and may return a replacement.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
from torch import nn

from codesearch.errors import UserError

from .naming import HeadId

HookFn = Callable[[int, torch.Tensor], "torch.Tensor | None"]
MODES = ("zero", "mean", "resample")
SIDES = ("query", "code", "both")


def hook_point_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT- or RoBERTa-family model (bare or with a task head)."""
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        raise UserError(f"{type(model).__name__} has no encoder.layer list: only BERT- and RoBERTa-family "
                        f"encoders are supported")
    return layers


def z_module(model: nn.Module, layer: int) -> nn.Linear:
    """The output projection of layer `layer`'s attention, whose input is the hook point."""
    module = getattr(getattr(getattr(encoder_layers(model)[layer], "attention", None), "output", None), "dense",
                     None)
    if not isinstance(module, nn.Linear):
        raise UserError(f"layer {layer} of {type(model).__name__} has no attention.output.dense projection")
    return module


@contextlib.contextmanager
def hook_z(model: nn.Module, fn: HookFn, layers: Iterable[int] | None = None):
    """Call `fn(layer, z)` at every forward of the given layers (default all), z = [batch, seq, heads, head_dim].

    If `fn` returns a tensor, it replaces z; it must not modify z in place (callers may hold the tensor).
    """
    config = model.config
    n_heads = config.num_attention_heads
    head_dim = config.hidden_size // n_heads
    handles = []

    def make_hook(layer: int):
        def pre_hook(_module, args):
            z = args[0]
            heads_view = z.view(*z.shape[:-1], n_heads, head_dim)
            replaced = fn(layer, heads_view)
            if replaced is None:
                return None
            return (replaced.reshape(z.shape), *args[1:])
        return pre_hook

    try:
        for layer in (range(len(encoder_layers(model))) if layers is None else layers):
            handles.append(z_module(model, layer).register_forward_pre_hook(make_hook(layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def heads_by_layer(heads: Iterable[HeadId]) -> dict[int, list[int]]:
    grouped: dict[int, list[int]] = {}
    for head in sorted(heads):
        grouped.setdefault(head.layer, []).append(head.head)
    return grouped


class HeadMask:
    """Replaces the outputs of chosen heads: `zero`, `mean` (their mean over held-out tokens) or `resample`
    (their output on another input of the same batch).

    `means[layer]` is [heads, head_dim] for mean mode. Resample needs the batch's attention mask, set in
    `attention_mask` before each forward: input i takes the head output of input i+1 (cyclically) at the
    same positions, and, where that input is padding, that input's mean over its real tokens.
    """

    def __init__(self, heads: Iterable[HeadId], mode: str = "zero", means: dict[int, torch.Tensor] | None = None):
        if mode not in MODES:
            raise UserError(f"unknown masking mode {mode!r}: choose one of {', '.join(MODES)}")
        self.by_layer = heads_by_layer(heads)
        if not self.by_layer:
            raise UserError("a head mask needs at least one head")
        self.mode = mode
        self.means = means
        if mode == "mean":
            missing = [layer for layer in self.by_layer if means is None or layer not in means]
            if missing:
                raise UserError(f"mean masking needs each head's mean output; none for layers {missing}")
        self.attention_mask: torch.Tensor | None = None

    @property
    def layers(self) -> list[int]:
        return sorted(self.by_layer)

    def __call__(self, layer: int, z: torch.Tensor) -> torch.Tensor | None:
        heads = self.by_layer.get(layer)
        if not heads:
            return None
        out = z.clone()
        index = torch.tensor(heads, device=z.device)
        if self.mode == "zero":
            out[:, :, index] = 0
        elif self.mode == "mean":
            out[:, :, index] = self.means[layer][index].to(z.dtype).to(z.device)
        else:
            out[:, :, index] = self._resampled(z[:, :, index])
        return out

    def _resampled(self, z_heads: torch.Tensor) -> torch.Tensor:
        """z_heads [batch, seq, k, head_dim]: each input's slice from the next input of the batch."""
        if self.attention_mask is None:
            raise RuntimeError("resample masking needs the batch's attention mask set before the forward pass")
        if z_heads.shape[0] < 2:
            raise UserError("resample masking needs batches of at least two inputs (model.batch_size >= 2)")
        mask = self.attention_mask.to(z_heads.device).bool()
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

    def __call__(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        return z * self.mask[layer].to(z.dtype)[None, None, :, None]


class MeanAccumulator:
    """Sums each head's output over real (non-padding) tokens, to mean-mask with.

    Set `attention_mask` before each forward. `means()` gives {layer: [heads, head_dim]}.
    """

    def __init__(self):
        self.sums: dict[int, torch.Tensor] = {}
        self.counts: dict[int, int] = {}
        self.attention_mask: torch.Tensor | None = None

    def __call__(self, layer: int, z: torch.Tensor) -> None:
        weights = self.attention_mask.to(z.device)[:, :, None, None].to(torch.float64)
        total = (z.to(torch.float64) * weights).sum(dim=(0, 1))
        self.sums[layer] = self.sums[layer] + total if layer in self.sums else total
        self.counts[layer] = self.counts.get(layer, 0) + int(self.attention_mask.sum())
        return None

    def means(self) -> dict[int, torch.Tensor]:
        if not self.counts or min(self.counts.values()) == 0:
            raise UserError("the mean-masking set has no tokens: nothing to average over")
        return {layer: (total / self.counts[layer]).to(torch.float32) for layer, total in self.sums.items()}
