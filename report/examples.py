"""A few query–code pairs with one head's attention drawn over the tokens: for the most important heads, where each
query token looks in the code (bertviz's head view, as a static SVG whose links light up on hover, no script).

The pair is encoded as the model reads a pair (`[CLS] query [SEP] code [SEP]`, the tokenizer's own pair encoding),
with eager attention, which returns the weights; a link's weight is the attention from a query token to a code token,
as the softmax gave it (not renormalised over the code)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from heads.encoder import Encoder
from heads.naming import HeadId

from .page import escape

LINKS_PER_TOKEN = 3     # the strongest code tokens each query token links to
MAX_CODE_TOKENS = 48    # code tokens shown (the pair is truncated to fit)


@dataclass
class Example:
    head: HeadId
    pair: int               # which of the pairs, from 0
    query_tokens: list[str]
    code_tokens: list[str]
    weights: np.ndarray     # [query tokens, code tokens]: attention from each query token to each code token


@torch.inference_mode()
def attention_examples(encoder: Encoder, pairs: list[tuple[str, str]], heads: list[HeadId],
                       max_query_tokens: int = 24) -> list[Example]:
    """For each pair, one forward with attention weights; one Example per (head, pair)."""
    tokenizer, model = encoder.tokenizer, encoder.model
    examples = []
    for pair, (query, code) in enumerate(pairs):
        encoded = tokenizer(query, code, truncation="longest_first", max_length=max_query_tokens + MAX_CODE_TOKENS,
                            return_tensors="pt").to(encoder.device)
        attentions = model(**encoded, output_attentions=True).attentions
        if attentions is None or attentions[0] is None:
            raise RuntimeError("the encoder returns no attention weights: load it with attn_implementation='eager'")
        tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
        sequence = encoded.sequence_ids(0)
        query_at = [i for i, s in enumerate(sequence) if s == 0]
        code_at = [i for i, s in enumerate(sequence) if s == 1]
        for head in heads:
            weights = attentions[head.layer][0, head.index].float().cpu().numpy()
            examples.append(Example(head, pair, [tokens[i] for i in query_at], [tokens[i] for i in code_at],
                                    weights[np.ix_(query_at, code_at)]))
    return sorted(examples, key=lambda e: (heads.index(e.head), e.pair))


def head_view(example: Example, view_id: str) -> str:
    """The query tokens in a column on the left, the code tokens on the right, each query token linked to its
    strongest code tokens (line opacity = weight); hovering a query token shows only its links."""
    n_query, n_code = len(example.query_tokens), len(example.code_tokens)
    row = 17
    height = 20 + row * max(n_query, n_code)
    left, right = 150, 420
    parts = [f"<svg class=\"head-view\" id=\"{escape(view_id)}\" width=\"560\" height=\"{height}\" "
             f"xmlns=\"http://www.w3.org/2000/svg\" font-size=\"12\" font-family=\"ui-monospace, monospace\">"]
    strongest = example.weights.max() if example.weights.size else 1.0
    for i, token in enumerate(example.query_tokens):
        y = 15 + row * i
        links = []
        for j in np.argsort(-example.weights[i])[:LINKS_PER_TOKEN]:
            weight = float(example.weights[i, j])
            opacity = weight / strongest if strongest > 0 else 0.0
            links.append(f"<line x1=\"{left + 5}\" y1=\"{y - 4}\" x2=\"{right - 5}\" y2=\"{15 + row * j - 4}\" "
                         f"stroke=\"#c0392b\" stroke-width=\"2\" stroke-opacity=\"{opacity:.3f}\" "
                         f"data-code=\"{j}\" data-weight=\"{weight!r}\"><title>{escape(token)} → "
                         f"{escape(example.code_tokens[j])}: {weight:.3f}</title></line>")
        parts.append(f"<g class=\"query-token\" data-query=\"{i}\">" + "".join(links)
                     + f"<text x=\"{left}\" y=\"{y}\" text-anchor=\"end\">{escape(token)}</text></g>")
    for j, token in enumerate(example.code_tokens):
        parts.append(f"<text x=\"{right}\" y=\"{15 + row * j}\">{escape(token)}</text>")
    return "".join(parts) + "</svg>"


HEAD_VIEW_STYLE = """
svg.head-view g.query-token { cursor: default; }
svg.head-view:hover g.query-token line { stroke-opacity: 0.05; }
svg.head-view g.query-token:hover line { stroke-opacity: 1; }
svg.head-view g.query-token:hover text { font-weight: bold; fill: #c0392b; }
"""
