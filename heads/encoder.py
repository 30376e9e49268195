"""An encoder: a BERT- or RoBERTa-family transformer with its tokenizer and its code-search recipe, and the one
loop every part of the tool encodes with (tokenize, length-sorted batches, progress bar, forward with optional
hooks, pool). Loading one is `heads.models`' job.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from tqdm import tqdm

from codesearch.errors import UserError

from .hooks import HookFn, hook_z

WORD_BREAKS = " \t\n\r"   # whitespace that separates words for every supported tokenizer


@dataclass(frozen=True)
class Recipe:
    """How a model's own code-search recipe turns token states into an embedding."""
    name: str
    pooling: str              # cls | mean | pooler
    normalize: bool           # L2-normalise (cosine) or not (dot product)
    prefix_tokens: tuple[str, ...] = ()  # inserted after the first special token (UniXcoder's mode token and sep)
    kind: str = "bi_encoder"             # or cross_encoder: a classification head scores a (query, code) pair
    score: str = ""                      # cross-encoder: positive_logit or log_odds (see heads.cross_encoder)


@dataclass
class ModelInfo:
    name: str                 # as the user gave it
    path: str                 # where it was loaded from
    model_type: str
    revision: str             # hub commit, or a hash of the weights for a local folder
    recipe: dict = field(default_factory=dict)
    n_layers: int = 0
    n_heads: int = 0           # per layer
    head_dim: int = 0
    hidden_size: int = 0


class Batch(NamedTuple):
    positions: list[int]           # where each row's input stands in the list that was encoded
    input_ids: torch.Tensor        # [batch, seq]
    attention_mask: torch.Tensor   # [batch, seq], 1 on real tokens
    token_type_ids: torch.Tensor | None = None   # [batch, seq], for pair inputs
    segments: torch.Tensor | None = None         # [batch, seq], pair inputs: 0 special or padding, 1 query, 2 code


@dataclass
class PairTokens:
    """One (query, code) pair in the model's own pair encoding (`[CLS] q [SEP] c [SEP]`, `<s> q </s></s> c </s>`)."""
    ids: list[int]
    type_ids: list[int]
    segments: list[int]                  # per token: 0 special, 1 query, 2 code
    offsets: list[tuple[int, int]]       # character span in its own text (the query or `code`); (0, 0) for specials
    code: str                            # the code as it was tokenized (its head, for a long one)


class Encoder:
    """A transformer with its tokenizer and pooling: a bi-encoder, which embeds a query or a code alone.

    `n_layers` layers of `n_heads` heads each (`total_heads` in all), each head `head_dim` wide.
    `encode(texts)` returns a float32 tensor [len(texts), hidden_size]; `output_dim` is what the encode loop yields
    per input (the embedding's size; a cross-encoder, `heads.cross_encoder.CrossEncoder`, yields one score).
    """

    kind = "bi_encoder"

    def __init__(self, model, tokenizer, recipe: Recipe, info: ModelInfo, device: torch.device):
        self.model = model
        self.tokenizer = tokenizer
        self.recipe = recipe
        self.info = info
        self.device = device
        self.precision = "fp32"   # or tf32, bf16: see heads.models.set_precision
        config = model.config
        self.n_layers = config.num_hidden_layers
        self.n_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self._prefix_ids = [tokenizer.convert_tokens_to_ids(t) for t in recipe.prefix_tokens]

    @property
    def total_heads(self) -> int:
        return self.n_layers * self.n_heads

    @property
    def output_dim(self) -> int:
        """What `pool` gives per input: the embedding's size."""
        return self.model.config.hidden_size

    @property
    def backbone(self):
        """The transformer whose last hidden states `pool` reads (the model itself, or a task model's base)."""
        return self.model

    # -- tokenization
    def tokenize(self, texts: list[str], max_length: int) -> list[list[int]]:
        """Token ids with special tokens (and the recipe's prefix), truncated to `max_length`."""
        return self._tokenize(texts, max_length, offsets=False)[0]

    def tokenize_with_offsets(self, texts: list[str], max_length: int):
        """(token ids, character spans) exactly as `tokenize` makes them; special tokens span (0, 0)."""
        return self._tokenize(texts, max_length, offsets=True)

    def _tokenize(self, texts: list[str], max_length: int, offsets: bool):
        budget = max_length - len(self._prefix_ids)
        specials = self.tokenizer.num_special_tokens_to_add(pair=False)
        if budget < specials + 1:
            raise UserError(f"max length {max_length} leaves no room for text")
        texts = [self.head(text, budget - specials) for text in texts]
        encoded = self.tokenizer(texts, truncation=True, max_length=budget, return_attention_mask=False,
                                 return_offsets_mapping=offsets)
        ids = encoded["input_ids"]
        spans = [[tuple(span) for span in row] for row in encoded["offset_mapping"]] if offsets else None
        if self._prefix_ids:
            ids = [row[:1] + self._prefix_ids + row[1:] for row in ids]
            if offsets:
                spans = [row[:1] + [(0, 0)] * len(self._prefix_ids) + row[1:] for row in spans]
        return ids, spans

    def head(self, text: str, n_tokens: int) -> str:
        """The shortest cut of `text`, at the start of a whitespace run, whose first `n_tokens` tokens are the
        whole text's: a 100 MB record costs what its first few kilobytes cost. Every supported tokenizer splits
        words at ' ', tab, newline and carriage return (not at every Unicode space: BERT deletes control
        characters such as form feed, joining the words around them), so the words before such a cut tokenize as
        in the whole text. Where there is no whitespace before the limit, a prefix is taken when doubling it
        leaves its first `n_tokens` tokens unchanged."""
        limit = max(1024, 16 * n_tokens)  # characters; doubled while the cut holds too few tokens
        while limit < len(text):
            space = max(text.rfind(c, 0, limit + 1) for c in WORD_BREAKS)   # the last break at or before limit
            cut = len(text[:space].rstrip(WORD_BREAKS)) if space > 0 else 0  # the start of its run
            if cut:
                head = text[:cut]
                if len(self._token_ids(head)) >= n_tokens:
                    return head
            else:
                first, longer = self._token_ids(text[:limit])[:n_tokens], text[:2 * limit]
                if len(first) == n_tokens and self._token_ids(longer)[:n_tokens] == first:
                    return longer
            limit *= 2
        return text

    def _token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    def tokenize_pair(self, query: str, code: str, max_length: int, max_query_tokens: int) -> PairTokens:
        """A pair as the model encodes pairs: the query cut to `max_query_tokens` tokens first, then the code cut to
        what is left of `max_length` (the code is truncated first)."""
        query_spans = self.tokenizer(self.head(query, max_query_tokens), add_special_tokens=False, truncation=True,
                                     max_length=max_query_tokens, return_offsets_mapping=True)["offset_mapping"]
        if query_spans:
            query = query[:query_spans[-1][1]]
        code = self.head(code, max_length)
        encoded = self.tokenizer(query, code, truncation="only_second", max_length=max_length,
                                 return_offsets_mapping=True, return_token_type_ids=True)
        segments = [0 if sequence is None else sequence + 1 for sequence in encoded.sequence_ids()]
        return PairTokens(encoded["input_ids"], encoded["token_type_ids"], segments,
                          [tuple(span) for span in encoded["offset_mapping"]], code)

    def length_sorted_batches(self, token_ids: list[list[int]], batch_size: int,
                              type_ids: list[list[int]] | None = None) -> Iterator[Batch]:
        """Batches, longest inputs first, to cut padding (with their token types, for pairs).

        The order is stable (ties keep input order), so the same inputs always make the same batches. A lone
        input left over at the end joins the batch before it: every batch has another input to resample from.
        """
        order = sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i]))
        bounds = _batch_bounds(len(order), batch_size)
        pad = self.tokenizer.pad_token_id
        for start, stop in zip(bounds[:-1], bounds[1:]):
            positions = order[start:stop]
            width = max(len(token_ids[i]) for i in positions)
            ids = torch.full((len(positions), width), pad, dtype=torch.long)
            mask = torch.zeros((len(positions), width), dtype=torch.long)
            types = torch.zeros((len(positions), width), dtype=torch.long) if type_ids is not None else None
            for row, i in enumerate(positions):
                seq = token_ids[i]
                ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
                mask[row, :len(seq)] = 1
                if types is not None:
                    types[row, :len(seq)] = torch.tensor(type_ids[i], dtype=torch.long)
            yield Batch(positions, ids.to(self.device), mask.to(self.device),
                        None if types is None else types.to(self.device))

    # -- pooling
    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, seq, hidden] token states -> [batch, hidden] embeddings, by the recipe."""
        if self.recipe.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.recipe.pooling == "pooler":
            if getattr(self.model, "pooler", None) is None:
                raise UserError(f"model {self.info.name} has no pooler layer; use model.pooling=cls or mean")
            pooled = self.model.pooler(hidden)
        else:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        if self.recipe.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled

    # -- the encode loop
    def forward_batches(self, token_ids: list[list[int]] | None, batch_size: int, hook: HookFn | None = None,
                        grad: bool = False, progress: bool = False, desc: str = "encoding",
                        type_ids: list[list[int]] | None = None,
                        attach: Callable[[Batch], contextlib.AbstractContextManager] | None = None,
                        batches: list[Batch] | None = None) -> Iterator[tuple[Batch, torch.Tensor]]:
        """Every input through the model, in length-sorted batches: yields each batch with its pooled embeddings
        [batch, hidden] (in the model's dtype, on its device; without `grad`, inference tensors: read them, do not
        modify them in place).

        `hook(layer, z, attention_mask)` sees every layer's head outputs with the batch's own attention mask
        (see `heads.hooks`); `attach(batch)`, a context entered around each batch's forward, may hook anything
        else with the batch at hand. Without `grad` the forward runs in inference mode; with it, the graph is kept
        so that the caller can backpropagate from each batch's embeddings. `type_ids` are the inputs' token types
        (pairs). `batches`, instead of `token_ids`, are batches already made (some of a side's length-sorted
        batches, e.g. to encode it part by part).
        """
        if batches is None:
            total = len(_batch_bounds(len(token_ids), batch_size)) - 1
            batches = self.length_sorted_batches(token_ids, batch_size, type_ids)
        else:
            total = len(batches)
        for batch in tqdm(batches, total=total, desc=desc, unit="batch", disable=not progress, file=sys.stderr,
                          mininterval=1.0):
            with torch.enable_grad() if grad else torch.inference_mode():
                hooked = contextlib.nullcontext() if hook is None else hook_z(self.model, hook, batch.attention_mask)
                attached = contextlib.nullcontext() if attach is None else attach(batch)
                types = {} if batch.token_type_ids is None else {"token_type_ids": batch.token_type_ids}
                with hooked, attached:
                    hidden = self.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                           **types).last_hidden_state
                pooled = self.pool(hidden, batch.attention_mask)
            yield batch, pooled

    def encode(self, texts: list[str], max_length: int, batch_size: int = 32, hook: HookFn | None = None,
               progress: bool = True, desc: str = "encoding") -> torch.Tensor:
        """float32 embeddings [len(texts), hidden_size] on the CPU, in the order of `texts`."""
        out = torch.empty((len(texts), self.output_dim), dtype=torch.float32)
        for batch, pooled in self.forward_batches(self.tokenize(texts, max_length), batch_size, hook,
                                                  progress=progress, desc=desc):
            out[torch.as_tensor(batch.positions)] = pooled.float().cpu()
        return out


def _batch_bounds(n: int, batch_size: int) -> list[int]:
    """Where each batch of `n` sorted inputs starts, and the end; a lone input left over joins the batch before."""
    bounds = list(range(0, n, batch_size)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    return bounds
