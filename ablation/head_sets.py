"""What a head-set study masks, decided before it measures: the pruning orders and their steps, the one-head-per-layer
choices, the top-K pairs and the Shapley permutations, each point naming the head set (a `Condition`) it masks.

A plan is plain data (`as_dict` / `from_dict`, the run's `plan.json`): the statistics (`ablation.set_analysis`) and
`aggregate` read it back, so a table is made from the same plan whichever run measured its sets. Sets are named by
their heads (`heads.naming.name_of_heads`), so a set two analyses share (all heads pruned, in every order) is
measured once.
"""
from __future__ import annotations

import itertools
import math
import zlib
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from codesearch.errors import UserError
from heads.naming import HeadId, name_of_heads, parse_head_name, parse_head_set_name

from .conditions import Condition

ORDERS = ("exact", "gradient", "iterative", "random")   # how tables list the curves
EVERY_HEAD = None   # steps: after every head
BEST = "best"       # the one-head-per-layer row that keeps every layer's best head
NONE_KEPT = "none"  # the row that masks a whole layer


@dataclass(frozen=True)
class CurvePoint:
    order: str                  # exact | gradient | iterative | random
    seed: int | None            # the random order's seed
    n_pruned: int
    condition: str              # the set masked ("" at 0 pruned: the baseline)
    added: tuple[str, ...]      # the heads this step prunes


@dataclass(frozen=True)
class LayerChoice:
    layer: int                  # -1 for the row that keeps every layer's best head
    kept: str                   # the head kept, NONE_KEPT, or BEST
    condition: str


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    condition: str


@dataclass
class SetPlan:
    """Every set one (mode, side) of a study masks. Head names throughout (`L3H7`)."""
    mode: str
    side: str
    n_layers: int
    n_heads: int                                    # per layer
    universe: list[str]                             # the heads pruned among
    orders: dict[str, list[str]] = field(default_factory=dict)   # "exact", "gradient", "random-0": least first
    curve: list[CurvePoint] = field(default_factory=list)
    layers: list[LayerChoice] = field(default_factory=list)
    top: list[str] = field(default_factory=list)    # the top-K heads, most important first
    rank_by: str = ""
    pairs: list[Pair] = field(default_factory=list)
    shapley: list[list[str]] = field(default_factory=list)   # permutations of `top`
    shapley_exact: bool = False                     # all K! permutations

    def heads_of(self, name: str) -> tuple[HeadId, ...]:
        return tuple(parse_head_set_name(name, self.n_layers, self.n_heads))

    def condition(self, name: str) -> Condition:
        return Condition(name, self.heads_of(name), self.mode, self.side)

    def set_name(self, heads) -> str:
        return name_of_heads([parse_head_name(h) if isinstance(h, str) else h for h in heads], self.n_heads)

    def condition_names(self) -> list[str]:
        """Every set the plan masks, each once, in the order the analyses name them."""
        names = [p.condition for p in self.curve] + [c.condition for c in self.layers]
        names += self.top if self.pairs or self.shapley else []
        names += [p.condition for p in self.pairs]
        names += [name for permutation in self.shapley for name in self.prefix_sets(permutation)]
        return list(dict.fromkeys(n for n in names if n))

    def prefix_sets(self, permutation: list[str]) -> list[str]:
        """The sets a Shapley permutation masks: its first 1, 2, ..., K heads."""
        return [self.set_name(permutation[:k]) for k in range(1, len(permutation) + 1)]

    def tidy(self) -> None:
        """The points in one canonical order, whichever run or config listed them: curves by order (exact,
        gradient, iterative, random by seed) and heads pruned; layer rows by layer (the best-head row last); pairs
        by the top heads' ranks."""
        def order_key(order: str, seed: int | None) -> tuple:
            return ORDERS.index(order) if order in ORDERS else len(ORDERS), order, -1 if seed is None else seed

        self.curve.sort(key=lambda p: (*order_key(p.order, p.seed), p.n_pruned))
        self.curve = self._with_added(self.curve)
        self.orders = dict(sorted(self.orders.items(), key=lambda item: order_key(*_order_and_seed(item[0]))))
        self.layers.sort(key=lambda c: (c.layer < 0, c.layer, c.kept == NONE_KEPT,
                                        parse_head_name(c.kept) if c.kept not in (NONE_KEPT, BEST) else None))
        rank = {head: i for i, head in enumerate(self.top)}
        self.pairs.sort(key=lambda p: (rank.get(p.a, len(rank)), rank.get(p.b, len(rank)), p.a, p.b))

    def _with_added(self, curve: list[CurvePoint]) -> list[CurvePoint]:
        """Each point's `added`: the heads of its order between the previous point of the same curve and it (points
        merged from runs of other steps get theirs from the order itself)."""
        out, previous = [], {}
        for point in curve:
            key = point.order if point.seed is None else f"{point.order}-{point.seed}"
            start = previous.get(key, 0)
            order = self.orders.get(key)
            added = tuple(order[start:point.n_pruned]) if order is not None else point.added
            out.append(replace(point, added=added))
            previous[key] = point.n_pruned
        return out

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SetPlan:
        data = dict(data)
        data["curve"] = [CurvePoint(**{**p, "added": tuple(p["added"])}) for p in data.get("curve", [])]
        data["layers"] = [LayerChoice(**c) for c in data.get("layers", [])]
        data["pairs"] = [Pair(**p) for p in data.get("pairs", [])]
        return cls(**data)


def _order_and_seed(key: str) -> tuple[str, int | None]:
    """An `orders` key (`exact`, `random-3`) as (order, seed)."""
    order, _, seed = key.partition("-")
    return order, int(seed) if seed else None


def step_counts(n: int, steps: list[float] | None) -> list[int]:
    """How many heads are pruned at each measured point, 0 first: every count, or each fraction of `n` rounded
    (fractions that round to the same count give one point)."""
    if steps is EVERY_HEAD:
        return list(range(n + 1))
    return sorted({0, *(int(round(f * n)) for f in steps)})


def least_important_first(universe: list[HeadId], importance: dict[HeadId, float]) -> list[HeadId]:
    """The heads by ascending importance (ties in layer/head order)."""
    return sorted(universe, key=lambda h: (importance[h], h))


def exact_importance(single_heads, universe: list[HeadId], source: str) -> dict[HeadId, float]:
    """Each head's importance from a single-head table (rows layer, head, delta_mrr): the drop, -ΔMRR."""
    importance = {HeadId(int(r.layer), int(r.head)): -float(r.delta_mrr) for r in single_heads.itertuples()}
    missing = [h.name for h in universe if h not in importance]
    if missing:
        raise UserError(f"{source} has no single-head ΔMRR for {len(missing)} of the heads pruned among "
                        f"({', '.join(missing[:6])}{', ...' if len(missing) > 6 else ''}): ablate every head first "
                        f"(`codebert-heads ablate` with the same mode and side), or prune among fewer "
                        f"(ablation.heads)")
    return importance


def gradient_importance(scores: np.ndarray, universe: list[HeadId]) -> dict[HeadId, float]:
    return {h: float(scores[h.layer, h.index]) for h in universe}


def random_order(universe: list[HeadId], seed: int) -> list[HeadId]:
    rng = np.random.default_rng([seed, zlib.crc32(b"prune-random-order")])
    return [universe[i] for i in rng.permutation(len(universe))]


def curve_points(plan: SetPlan, order_name: str, seed: int | None, order: list[HeadId],
                 counts: list[int]) -> list[CurvePoint]:
    """The points of one order: the first n heads masked together, for each n of `counts`."""
    points, previous = [], 0
    for n in counts:
        points.append(CurvePoint(order_name, seed, n, plan.set_name(order[:n]) if n else "",
                                 tuple(h.name for h in order[previous:n])))
        previous = n
    return points


def layer_choices(plan: SetPlan) -> list[LayerChoice]:
    """Per layer of the universe: each head kept alone (the others of its layer masked), and none kept."""
    by_layer: dict[int, list[HeadId]] = {}
    for name in plan.universe:
        head = parse_head_name(name)
        by_layer.setdefault(head.layer, []).append(head)
    choices = []
    for layer, heads in sorted(by_layer.items()):
        every = [HeadId(layer, i) for i in range(plan.n_heads)]
        for kept in heads:
            choices.append(LayerChoice(layer, kept.name, plan.set_name([h for h in every if h != kept])))
        choices.append(LayerChoice(layer, NONE_KEPT, plan.set_name(every)))
    return choices


def best_choice(plan: SetPlan, kept: dict[int, str]) -> LayerChoice:
    """The row that keeps, in every layer, its best head (`kept`: layer -> head name) and masks the others."""
    masked = [HeadId(layer, i) for layer in sorted(kept) for i in range(plan.n_heads)
              if HeadId(layer, i).name != kept[layer]]
    return LayerChoice(-1, BEST, plan.set_name(masked))


def top_heads(universe: list[HeadId], importance: dict[HeadId, float], k: int) -> list[HeadId]:
    """The k most important heads, most important first (ties in layer/head order)."""
    return sorted(universe, key=lambda h: (-importance[h], h))[:k]


def pairs_of(plan: SetPlan) -> list[Pair]:
    top = plan.top
    return [Pair(a, b, plan.set_name([a, b])) for i, a in enumerate(top) for b in top[i + 1:]]


def shapley_permutations(top: list[str], samples: int, seed: int) -> tuple[list[list[str]], bool]:
    """(permutations, exact): all K! when that is not more than `samples`, else `samples` drawn at random."""
    if math.factorial(len(top)) <= samples:
        return [list(p) for p in itertools.permutations(top)], True
    rng = np.random.default_rng([seed, zlib.crc32(b"prune-shapley")])
    return [[top[i] for i in rng.permutation(len(top))] for _ in range(samples)], False
