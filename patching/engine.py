"""Activation patching, per head, with the layers below the patched head computed once.

The clean and the corrupt inputs are walked through the encoder in lockstep, one layer at a time
(`ablation.engine.SideSweep`, batch b of each holding the same examples at the same positions). At layer L, for each
head h of L: the corrupt run is rerun from L with h's output replaced by its clean output (denoising: what h alone
restores of the clean score), and the clean run with h's output replaced by its corrupt output (noising: what
losing h's clean output destroys). Heads below L and the residual stream are those of the run being rerun.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from tqdm import tqdm

from ablation.engine import SideSweep
from heads.cross_encoder import CrossEncoder
from heads.naming import HeadId, every_head

from .inputs import PatchInputs


@dataclass
class PatchScores:
    clean: torch.Tensor                 # [n] unpatched scores
    corrupt: torch.Tensor               # [n]
    denoised: dict[str, torch.Tensor]   # head name -> [n]: corrupt run, the head's output from the clean run
    noised: dict[str, torch.Tensor]     # head name -> [n]: clean run, the head's output from the corrupt run


class PatchHead:
    """A hook that puts `source` [batch, seq, heads * head_dim] (the other run's head outputs) in place of one head's
    output."""

    def __init__(self, head: HeadId, source: torch.Tensor):
        self.head, self.source = head, source

    def __call__(self, layer: int, z: torch.Tensor, _attention_mask) -> torch.Tensor | None:
        if layer != self.head.layer:
            return None
        out = z.clone()
        out[:, :, self.head.index] = self.source.reshape(z.shape)[:, :, self.head.index]
        return out


def patch_scores(encoder: CrossEncoder, inputs: PatchInputs, heads: list[HeadId] | None = None,
                 progress: bool = True) -> PatchScores:
    heads = sorted(heads or every_head(encoder.n_layers, encoder.n_heads))
    n, device = inputs.n, encoder.device
    clean, corrupt = SideSweep(encoder, inputs.clean.batches), SideSweep(encoder, inputs.corrupt.batches)
    result = PatchScores(torch.empty(n), torch.empty(n), {}, {})
    bar = tqdm(total=len(heads), desc="patching", unit="head", disable=not progress, file=sys.stderr,
               mininterval=1.0)
    try:
        clean.start()
        corrupt.start()
        for layer in range(max(h.layer for h in heads) + 1):
            clean.compute_layer()
            corrupt.compute_layer()
            if layer == 0:
                _unpatched(encoder, clean, corrupt, result, n)
            for head in (h for h in heads if h.layer == layer):
                out = torch.empty((n, 1), dtype=torch.float32, device=device)
                corrupt.rerun_hooked(lambda b, _batch: PatchHead(head, clean.z[b]), [layer], out)
                result.denoised[head.name] = out[:, 0].cpu()
                out = torch.empty((n, 1), dtype=torch.float32, device=device)
                clean.rerun_hooked(lambda b, _batch: PatchHead(head, corrupt.z[b]), [layer], out)
                result.noised[head.name] = out[:, 0].cpu()
                bar.update(1)
            clean.advance()
            corrupt.advance()
    finally:
        bar.close()
        clean.release()
        corrupt.release()
    return result


def _unpatched(encoder, clean: SideSweep, corrupt: SideSweep, result: PatchScores, n: int) -> None:
    """Both runs' own scores, from layer 0 with no hook (the same operations as every patched rerun)."""
    for sweep, target in ((clean, result.clean), (corrupt, result.corrupt)):
        out = torch.empty((n, 1), dtype=torch.float32, device=encoder.device)
        sweep.rerun_hooked(lambda _b, _batch: (lambda *_: None), [0], out)
        target.copy_(out[:, 0].cpu())
