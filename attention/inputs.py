"""What an attention study runs through the model: each example tokenized as the study's input (the model's pair
encoding of query and code, or either alone), with each token's segment and, for code tokens, the syntax
categories and constructs it belongs to (the probes' tree-sitter labels)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codesearch.errors import UserError
from codesearch.records import Example
from codesearch.syntax import CATEGORIES, IGNORE, TOKEN_TASKS, syntax_leaves, token_labels
from heads.encoder import Encoder

from .settings import CONSTRUCTS, AttentionInput

SPECIAL, QUERY, CODE = 0, 1, 2


@dataclass
class TokenizedExamples:
    """Examples as the model sees them. Per example: token ids, token types, the segment of each token (0 special,
    1 query, 2 code), separator positions, and [tokens, len(CONSTRUCTS)] booleans marking the code tokens of each
    syntax category and construct."""
    ids: list[list[int]]
    type_ids: list[list[int]] | None
    segments: list[np.ndarray]
    separators: list[np.ndarray]
    constructs: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)


def tokenize_examples(encoder: Encoder, examples: list[Example], kind: AttentionInput, max_length: int,
                      max_query_length: int, max_code_length: int) -> TokenizedExamples:
    """The examples as pairs (the query cut to `max_query_length` tokens, then the code to what is left of
    `max_length`: the code is truncated first), or each code or query alone (cut to `max_code_length` /
    `max_query_length`, as a bi-encoder sees it)."""
    if kind == AttentionInput.pair:
        return _pairs(encoder, examples, max_length, max_query_length)
    texts = [e.code if kind == AttentionInput.code else e.query for e in examples]
    length = max_code_length if kind == AttentionInput.code else max_query_length
    ids, offsets = encoder.tokenize_with_offsets(texts, length)
    special = set(encoder.tokenizer.all_special_ids)
    segment = CODE if kind == AttentionInput.code else QUERY
    out = TokenizedExamples([], None, [], [], [])
    for example, row, spans in zip(examples, ids, offsets):
        segments = np.array([SPECIAL if token in special else segment for token in row], dtype=np.int8)
        constructs = (_construct_flags(example, example.code, spans, segments == CODE)
                      if kind == AttentionInput.code else np.zeros((len(row), len(CONSTRUCTS)), dtype=bool))
        _append(out, encoder, row, segments, constructs)
    return out


def _pairs(encoder: Encoder, examples: list[Example], max_length: int, max_query_length: int) -> TokenizedExamples:
    out = TokenizedExamples([], [], [], [], [])
    specials = encoder.tokenizer.num_special_tokens_to_add(pair=True)
    for example in examples:
        query_tokens = len(encoder.tokenizer(encoder.head(example.query, max_query_length), add_special_tokens=False,
                                             truncation=True, max_length=max_query_length)["input_ids"])
        if query_tokens + specials >= max_length:
            raise UserError(f"pair {example.id}: its code is empty after truncation to attention.max_length="
                            f"{max_length} (the query takes {query_tokens} tokens, the special tokens {specials}); "
                            f"raise attention.max_length or lower model.max_query_length")
        pair = encoder.tokenize_pair(example.query, example.code, max_length, max_query_length)
        segments = np.asarray(pair.segments, dtype=np.int8)
        if not (segments == CODE).any():
            raise UserError(f"pair {example.id}: its code has no tokens")
        out.type_ids.append(pair.type_ids)
        constructs = _construct_flags(example, pair.code, pair.offsets, segments == CODE)
        _append(out, encoder, pair.ids, segments, constructs)
    return out


def _append(out: TokenizedExamples, encoder: Encoder, ids: list[int], segments: np.ndarray,
            constructs: np.ndarray) -> None:
    out.ids.append(list(ids))
    out.segments.append(segments)
    out.separators.append(np.asarray(ids) == encoder.tokenizer.sep_token_id)
    out.constructs.append(constructs)


def _construct_flags(example: Example, code: str, spans: list[tuple[int, int]], is_code: np.ndarray) -> np.ndarray:
    """[tokens, len(CONSTRUCTS)]: each code token's syntax category (one of five) and the constructs it lies in,
    from the code's tree-sitter parse; nothing for tokens with no syntax leaf (comments, parse errors)."""
    code_spans = [span if flag else (0, 0) for span, flag in zip(spans, is_code)]
    seen = max((end for (_, end), flag in zip(spans, is_code) if flag), default=0)
    leaves, _ = syntax_leaves(code, example.language, visible_chars=seen)
    labels = token_labels(leaves, code_spans, code)                       # [tokens, len(TOKEN_TASKS)]
    flags = np.zeros((len(spans), len(CONSTRUCTS)), dtype=bool)
    labelled = labels[:, 0] != IGNORE
    for index in range(len(CATEGORIES)):
        flags[:, index] = labelled & (labels[:, 0] == index)
    for offset in range(len(TOKEN_TASKS) - 1):                              # in_loop, in_conditional, ...
        flags[:, len(CATEGORIES) + offset] = labelled & (labels[:, 1 + offset] == 1)
    return flags
