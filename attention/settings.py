"""The settings of an attention study: the `attention` section of the config (light: no torch)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from codesearch.settings import Correction, setting


class AttentionInput(StrEnum):
    pair = "pair"       # the model's own pair encoding, `[CLS] query [SEP] code [SEP]`, as the original study
    code = "code"       # each code alone, as a bi-encoder sees it
    query = "query"     # each query alone


# Per head and example, on real tokens only (see attention/statistics.py for the definitions).
STATISTICS = ("q2c_mass", "c2q_mass", "q2q_mass", "c2c_mass", "q2c_max", "entropy", "sparsity", "cls_mass",
              "sep_mass", "q2c_value_mass")
# The code tokens attention is measured to: syntax categories and the constructs a token lies in.
CONSTRUCTS = ("keyword", "identifier", "literal", "operator", "delimiter", "loop", "conditional", "call", "return")


@dataclass
class AttentionConfig:
    input: AttentionInput = setting("pair (the model's pair encoding of query and code, code truncated first), code "
                                    "or query (each sequence alone, as a bi-encoder sees it)", AttentionInput.pair)
    examples: int = setting("a seeded sample of this many of the study's queries (and their code); 0 = all of them",
                            0)
    max_length: int = setting("pair input: tokens of a pair, special tokens included (the code is cut first)", 320)
    statistics: str = setting("statistics to map and to correlate with importance: all, or a comma list of "
                              + ", ".join(STATISTICS), "all")
    group_by: str = setting("test each head's q2c_mass across groups of examples: domain or language (fields of "
                            "pairs data); empty = no group test", "")
    compare_with: str = setting("a second model of the same architecture (e.g. the fine-tuned one): per head, a "
                                "paired test of every statistic over the same examples; empty = none", "")
    mismatched: bool = setting("pair input: also pair each query with a seeded random other code and test matched "
                               "against mismatched", True)
    correction: Correction = setting("multiple-comparison correction over heads: holm or bh", Correction.holm)
    alpha: float = setting("significance level after correction", 0.05)
    clusters: int = setting("k-means clusters of heads and of examples; 0 = chosen by silhouette in "
                            "2..attention.max_clusters", 0)
    max_clusters: int = setting("the largest number of clusters tried when attention.clusters=0", 8)
    js_examples: int = setting("examples over which the Jensen-Shannon distances between heads are averaged (64 "
                               "rows of each)", 32)
    n_permutations: int = setting("permutations for the p-values of the correlations with importance", 10000)
    ablation_run: str = setting("ablation or aggregate folder to join with; empty = the study's own", "")
    probe_run: str = setting("probe folder to join with; empty = the study's newest", "")

    def statistic_names(self) -> list[str]:
        """The statistics `statistics` names; an unknown one is an error."""
        from codesearch.errors import UserError

        names = list(STATISTICS) if self.statistics.strip() == "all" else [
            name.strip() for name in self.statistics.split(",") if name.strip()]
        unknown = [name for name in names if name not in STATISTICS]
        if unknown or not names:
            raise UserError(f"attention.statistics: unknown statistic {', '.join(unknown) or repr(self.statistics)}; "
                            f"choose all or some of {', '.join(STATISTICS)}")
        return names
