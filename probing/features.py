"""Per-head features for probes: each head's output before the output projection (the same hook point as
ablation), per token and mean-pooled per sequence, streamed to disk in float16 shards.

A store is a folder: `tokens-NNNNN.npy` shards [tokens, layers*heads, head_dim], `tokens_meta.npy` [tokens, 2]
(sequence index, position), `pooled.npy` [sequences, layers*heads, head_dim], and `store.json` (shapes and the
signature of what was encoded). It is written under a temporary name and renamed when complete (an older store
is replaced only then), so a store that exists is whole; reading memory-maps the shards, so a corpus larger than
memory works.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from codesearch.files import atomic_directory
from heads.encoder import Encoder

STORE_FILE = "store.json"


class FeatureStore:
    """Read side: token features by index (memory-mapped shards) and pooled features."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.info = json.loads((self.folder / STORE_FILE).read_text())
        self.shards = [np.load(self.folder / name, mmap_mode="r") for name in self.info["token_shards"]]
        self.bounds = np.cumsum([0] + [len(s) for s in self.shards])
        self.meta = np.load(self.folder / "tokens_meta.npy")
        self.pooled = np.load(self.folder / "pooled.npy", mmap_mode="r")

    @property
    def n_tokens(self) -> int:
        return int(self.bounds[-1])

    def tokens(self, index: np.ndarray) -> np.ndarray:
        """float32 [len(index), layers*heads, head_dim] for token rows `index` (any order)."""
        index = np.asarray(index)
        out = np.empty((len(index), *self.info["feature_shape"]), dtype=np.float32)
        shard_of = np.searchsorted(self.bounds, index, side="right") - 1
        for shard in np.unique(shard_of):
            rows = np.nonzero(shard_of == shard)[0]
            out[rows] = self.shards[shard][index[rows] - self.bounds[shard]]
        return out


def store_matches(folder: Path, signature: dict) -> bool:
    path = Path(folder) / STORE_FILE
    return path.is_file() and json.loads(path.read_text()).get("signature") == signature


def extract_features(encoder: Encoder, token_ids: list[list[int]], keep: list[np.ndarray], folder: Path,
                     signature: dict, batch_size: int, shard_rows: int = 16384, progress: bool = True,
                     desc: str = "head features") -> FeatureStore:
    """Encode `token_ids`, writing every head's output at the kept positions (`keep[i]`: positions of sequence
    i) and its mean over each sequence's real tokens. Heads are numbered flat (`HeadId.flat`)."""
    layers, total_heads, dim = encoder.n_layers, encoder.total_heads, encoder.head_dim
    captured: dict[int, torch.Tensor] = {}

    def capture(layer, z, _attention_mask):
        captured[layer] = z

    pooled = np.zeros((len(token_ids), total_heads, dim), dtype=np.float16)
    with atomic_directory(folder) as tmp:
        buffer, meta, shards, written = [], [], [], 0

        def flush():
            nonlocal buffer, written
            if buffer:
                block = np.concatenate(buffer)
                name = f"tokens-{len(shards):05d}.npy"
                np.save(tmp / name, block)
                shards.append(name)
                written += len(block)
                buffer = []

        for batch, _ in encoder.forward_batches(token_ids, batch_size, hook=capture, progress=progress, desc=desc):
            # [batch, seq, layers*heads, head_dim]
            z = torch.stack([captured[layer] for layer in range(layers)], dim=2).flatten(2, 3).float()
            weights = batch.attention_mask[:, :, None, None].to(z.dtype)
            mean = (z * weights).sum(1) / weights.sum(1).clamp(min=1)
            pooled[np.asarray(batch.positions)] = mean.cpu().numpy().astype(np.float16)
            for row, sequence in enumerate(batch.positions):
                kept = keep[sequence]
                if len(kept):
                    buffer.append(z[row, torch.as_tensor(kept)].cpu().numpy().astype(np.float16))
                    meta.append(np.stack([np.full(len(kept), sequence), kept], axis=1))
            if sum(len(b) for b in buffer) >= shard_rows:
                flush()
        flush()
        np.save(tmp / "tokens_meta.npy", np.concatenate(meta) if meta else np.zeros((0, 2), dtype=np.int64))
        np.save(tmp / "pooled.npy", pooled)
        info = {"signature": signature, "token_shards": shards, "n_tokens": written, "n_sequences": len(token_ids),
                "feature_shape": [total_heads, dim], "layers": layers, "heads": encoder.n_heads}
        (tmp / STORE_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return FeatureStore(folder)
