"""The clean and corrupt inputs of activation patching, aligned token for token.

Example i is a query with its own code (clean) and with a seeded other code of the task (corrupt). Both codes are
cut to the shorter one's length, so the two pair inputs have the same length and the query, the separators and
every code position sit at the same places: a head's output at position t of one run can stand in for the other's
(Meng et al. 2022 corrupt by noising the input embeddings instead; a real mismatched code is the contrast retrieval
makes). The two input sets are batched in the same order, so batch b of each holds the same examples.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codesearch.errors import UserError
from codesearch.records import RetrievalTask
from heads.cross_encoder import CrossEncoder
from heads.pairs import PairInputs, PairTexts, tokenize_pair_texts
from heads.settings import ModelConfig


@dataclass
class PatchInputs:
    clean: PairInputs
    corrupt: PairInputs
    query_index: np.ndarray      # [n] each example's query in the task
    clean_code: np.ndarray       # [n] its gold candidate
    corrupt_code: np.ndarray     # [n] the candidate it is corrupted with

    @property
    def n(self) -> int:
        return self.clean.n


def corrupt_codes(gold: np.ndarray, candidates: list[str], rng: np.random.Generator) -> np.ndarray:
    """For each example a code of the other examples whose text differs from its gold's (a shuffled cycle, redrawn
    where two golds share a text)."""
    n = len(gold)
    order = rng.permutation(n)
    other = np.empty(n, dtype=np.int64)
    other[order] = gold[np.roll(order, -1)]
    for i in np.flatnonzero([candidates[o] == candidates[g] for o, g in zip(other, gold)]):
        choices = [g for g in gold if candidates[g] != candidates[gold[i]]]
        if not choices:
            raise UserError("activation patching needs at least two different codes among the examples")
        other[i] = choices[rng.integers(len(choices))]
    return other


def patch_inputs(encoder: CrossEncoder, task: RetrievalTask, examples: int, seed: int,
                 model: ModelConfig) -> PatchInputs:
    """A seeded sample of `examples` queries (0: all), each with its clean and its corrupt pair."""
    rng = np.random.default_rng([seed % 2**32, 7])
    n = len(task) if examples == 0 else min(examples, len(task))
    if n < 2:
        raise UserError(f"activation patching needs at least 2 queries; the task has {len(task)}")
    query_index = np.sort(rng.permutation(len(task))[:n])
    gold = np.asarray(task.gold, dtype=np.int64)[query_index]
    corrupt = corrupt_codes(gold, task.candidates, rng)
    texts = tokenize_pair_texts(encoder, [task.queries[q] for q in query_index],
                                [task.candidates[c] for c in np.concatenate([gold, corrupt])],
                                model.max_pair_length, model.max_query_length)
    codes = []
    for i in range(n):   # both codes cut to the length the shorter one has in its pair
        room = max(0, model.max_pair_length - encoder.pair_template.n_special - len(texts.queries[i]))
        length = min(len(texts.codes[i]), len(texts.codes[n + i]), room)
        codes.append((texts.codes[i][:length], texts.codes[n + i][:length]))
    aligned = PairTexts(texts.queries, [c for c, _ in codes] + [x for _, x in codes], texts.max_length)
    rows = np.arange(n)
    clean = PairInputs(encoder, aligned, np.stack([rows, rows], 1), model.batch_size)
    dirty = PairInputs(encoder, aligned, np.stack([rows, n + rows], 1), model.batch_size)
    if not np.array_equal(clean.order, dirty.order):   # equal lengths give the same batches
        raise RuntimeError("the clean and corrupt pairs are not batched alike")
    return PatchInputs(clean, dirty, query_index, gold, corrupt)
