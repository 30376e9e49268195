"""(query, code) pairs as a cross-encoder reads them: the model's own pair encoding (`[CLS] q [SEP] c [SEP]`,
`<s> q </s></s> c </s>`), made by joining each text's tokens, tokenized once, with the special tokens its tokenizer
puts around and between them.

A protocol scores many pairs made of few texts (CodeSearchNet's batches pair each of 1,000 queries with each of 1,000
codes), so each query and each code is tokenized once and a pair's ids are joined when its batch is made: `PairInputs`
holds two integers per pair and makes its length-sorted batches on demand. The join is exactly what the tokenizer
gives for the pair (`tokenizer(query, code, truncation="only_second", max_length=...)` with the query cut first;
the tests check it on BERT and RoBERTa tokenizers).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from codesearch.errors import UserError

from .encoder import Batch, _batch_bounds

SPECIAL, QUERY, CODE = 0, 1, 2     # a token's segment in a pair


@dataclass(frozen=True)
class PairTemplate:
    """The special tokens a tokenizer puts before, between and after the two sequences of a pair, and the token type
    of each of the five parts."""
    before: tuple[int, ...]
    between: tuple[int, ...]
    after: tuple[int, ...]
    types: tuple[int, int, int, int, int]    # before, query, between, code, after

    @property
    def n_special(self) -> int:
        return len(self.before) + len(self.between) + len(self.after)

    @classmethod
    def of(cls, tokenizer) -> PairTemplate:
        """Read off the tokenizer: a pair of two known texts encoded jointly, and each alone."""
        first, second = "alpha one", "beta two"
        a = tokenizer(first, add_special_tokens=False)["input_ids"]
        b = tokenizer(second, add_special_tokens=False)["input_ids"]
        joint = tokenizer(first, second, return_token_type_ids=True)
        ids, types = list(joint["input_ids"]), list(joint["token_type_ids"])
        i = _find(ids, a, 0)
        j = _find(ids, b, i + len(a)) if i >= 0 else -1
        if i < 0 or j < 0:
            raise UserError(f"{type(tokenizer).__name__}: cannot tell where its pair encoding puts the two sequences")
        parts = [(0, i), (i, i + len(a)), (i + len(a), j), (j, j + len(b)), (j + len(b), len(ids))]
        part_types = []
        for start, stop in parts:
            values = set(types[start:stop])
            if len(values) > 1:
                raise UserError(f"{type(tokenizer).__name__}: its pair encoding mixes token types within a part")
            part_types.append(values.pop() if values else 0)
        return cls(tuple(ids[:i]), tuple(ids[i + len(a):j]), tuple(ids[j + len(b):]), tuple(part_types))

    def join(self, query: list[int], code: list[int], max_length: int) -> tuple[list[int], list[int], list[int]]:
        """(ids, token types, segments) of one pair, the code cut to what `max_length` leaves it."""
        code = code[:max(0, max_length - self.n_special - len(query))]
        ids = [*self.before, *query, *self.between, *code, *self.after]
        t = self.types
        types = ([t[0]] * len(self.before) + [t[1]] * len(query) + [t[2]] * len(self.between) + [t[3]] * len(code)
                 + [t[4]] * len(self.after))
        segments = ([SPECIAL] * len(self.before) + [QUERY] * len(query) + [SPECIAL] * len(self.between)
                    + [CODE] * len(code) + [SPECIAL] * len(self.after))
        return ids, types, segments

    def length(self, query_tokens: np.ndarray, code_tokens: np.ndarray, max_length: int) -> np.ndarray:
        """Each pair's length in tokens, without joining it."""
        room = np.maximum(0, max_length - self.n_special - query_tokens)
        return self.n_special + query_tokens + np.minimum(code_tokens, room)


def _find(sequence: list[int], part: list[int], start: int) -> int:
    for i in range(start, len(sequence) - len(part) + 1):
        if sequence[i:i + len(part)] == part:
            return i
    return -1


@dataclass
class PairTexts:
    """Each text of a pair set tokenized once, without special tokens: queries cut to `max_query_length` tokens,
    codes to what a pair of `max_length` can hold."""
    queries: list[list[int]]
    codes: list[list[int]]
    max_length: int


def tokenize_pair_texts(encoder, queries: list[str], codes: list[str], max_length: int,
                        max_query_length: int) -> PairTexts:
    """Queries and codes of a pair set tokenized as the pair encoding cuts them."""
    template = encoder.pair_template
    if max_length - template.n_special < 2:
        raise UserError(f"model.max_pair_length={max_length} leaves no room for a query and a code")
    query_room = min(max_query_length, max_length - template.n_special - 1)

    def tokens(texts: list[str], limit: int) -> list[list[int]]:
        cut = [encoder.head(text, limit) for text in texts]
        if not cut:
            return []
        return encoder.tokenizer(cut, add_special_tokens=False, truncation=True, max_length=limit,
                                 verbose=False)["input_ids"]
    return PairTexts(tokens(queries, query_room), tokens(codes, max_length - template.n_special), max_length)


class PairBatches(Sequence):
    """The length-sorted batches of a pair set, each made when it is asked for (a slice is a view, made of nothing).
    Longest pairs first, ties in pair order, a lone pair left over joining the batch before it: as
    `Encoder.length_sorted_batches` batches."""

    def __init__(self, inputs: PairInputs, bounds: list[int], first: int = 0, stop: int | None = None):
        self.inputs, self.bounds = inputs, bounds
        self.first, self.stop = first, len(bounds) - 1 if stop is None else stop

    def __len__(self) -> int:
        return self.stop - self.first

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("pair batches slice with step 1 only")
            return PairBatches(self.inputs, self.bounds, self.first + start, self.first + max(start, stop))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        b = self.first + index
        return self.inputs.make_batch(self.inputs.order[self.bounds[b]:self.bounds[b + 1]])

    def shapes(self) -> list[tuple[int, int]]:
        """(rows, padded width) of each batch, without making it: its longest pair comes first."""
        inputs = self.inputs
        return [(int(self.bounds[b + 1] - self.bounds[b]), int(inputs.lengths[inputs.order[self.bounds[b]]]))
                for b in range(self.first, self.stop)]


class PairInputs:
    """The pairs a cross-encoder scores (`pairs[i] = (query, code)`, indices into `texts`), in length-sorted batches of
    `batch_size` pairs made on demand: the engine's side of a cross-encoder (`batches`, `n`, `batch_tokens`)."""

    def __init__(self, encoder, texts: PairTexts, pairs: np.ndarray, batch_size: int):
        self.encoder, self.texts = encoder, texts
        self.pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        self.n = len(self.pairs)
        query_tokens = np.array([len(t) for t in texts.queries], dtype=np.int64)
        code_tokens = np.array([len(t) for t in texts.codes], dtype=np.int64)
        self.lengths = encoder.pair_template.length(query_tokens[self.pairs[:, 0]], code_tokens[self.pairs[:, 1]],
                                                    texts.max_length) if self.n else np.zeros(0, dtype=np.int64)
        self.order = np.argsort(-self.lengths, kind="stable")
        self.batches = PairBatches(self, _batch_bounds(self.n, batch_size) if self.n else [0])

    def batch_tokens(self) -> list[int]:
        return [rows * width for rows, width in self.batches.shapes()]

    def batch_shapes(self) -> list[tuple[int, int]]:
        return self.batches.shapes()

    def make_batch(self, rows: np.ndarray) -> Batch:
        template, texts = self.encoder.pair_template, self.texts
        joined = [template.join(texts.queries[q], texts.codes[c], texts.max_length) for q, c in self.pairs[rows]]
        width = max(len(ids) for ids, _, _ in joined)
        pad = self.encoder.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        types = torch.zeros((len(rows), width), dtype=torch.long)
        segments = torch.zeros((len(rows), width), dtype=torch.long)
        for row, (pair_ids, pair_types, pair_segments) in enumerate(joined):
            ids[row, :len(pair_ids)] = torch.tensor(pair_ids)
            mask[row, :len(pair_ids)] = 1
            types[row, :len(pair_ids)] = torch.tensor(pair_types)
            segments[row, :len(pair_ids)] = torch.tensor(pair_segments)
        device = self.encoder.device
        return Batch(rows.tolist(), ids.to(device), mask.to(device), types.to(device), segments.to(device))


def pair_inputs(encoder, queries: list[str], codes: list[str], pairs: np.ndarray, max_length: int,
                max_query_length: int, batch_size: int) -> PairInputs:
    """The pairs `pairs[i] = (query index, code index)` of these texts, ready to be batched."""
    texts = tokenize_pair_texts(encoder, queries, codes, max_length, max_query_length)
    return PairInputs(encoder, texts, pairs, batch_size)
