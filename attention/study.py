"""An attention study, from loaded data to its tables and figures.

    study = AttentionStudy(encoder, attention, model, seed, compare_with=None)   # settings checked
    study.prepare(data)          # examples tokenized and every input checked, before the long pass
    study.run()                  # the pass: statistics per example, layer and head (and the mismatched pairs,
                                 # and the second model)
    study.analyse(ablation, probes)   # tests, clusters, and the heads table joined with the other evidence
    files = study.export(folder)

The encoders must be loaded with eager attention (`heads.models.encoder_for(..., attn_implementation="eager")`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ablation.record import FinishedAblation
from codesearch.errors import UserError
from codesearch.files import ResultFiles, atomic_write
from codesearch.loading import LoadedData
from codesearch.records import Example, mismatched_partners
from codesearch.runfolder import Timings
from heads.encoder import Encoder
from heads.heatmap import plot_matrix
from heads.naming import every_head
from heads.settings import ModelConfig
from probing.record import FinishedProbes

from . import clusters, inference, plots
from .capture import AttentionMeasures, measure
from .inputs import CODE, QUERY, TokenizedExamples, tokenize_examples
from .record import AttentionRecord
from .settings import CONSTRUCTS, AttentionConfig, AttentionInput

GROUP_FIELDS = ("domain", "language")


class AttentionStudy:
    """Results as attributes after each step: `measures` (and `mismatched`, `compared`), `heads` (one row per head:
    every statistic's mean, its deviation and n, then the joined evidence), `tables` (name -> DataFrame),
    `head_clusters`, `example_clusters`, `correlations`."""

    def __init__(self, encoder: Encoder, attention: AttentionConfig, model: ModelConfig, seed: int,
                 compare_with: Encoder | None = None, progress: bool = True, timings: Timings | None = None):
        self.encoder, self.attention, self.model, self.seed = encoder, attention, model, seed
        self.compare_with, self.progress = compare_with, progress
        self.timings = Timings() if timings is None else timings
        self.statistics = attention.statistic_names()
        self.kind = AttentionInput(attention.input)
        if attention.group_by and attention.group_by not in GROUP_FIELDS:
            raise UserError(f"attention.group_by={attention.group_by!r}: choose one of {', '.join(GROUP_FIELDS)}")
        if attention.max_clusters < 2 or attention.clusters == 1:
            raise UserError("attention.clusters and attention.max_clusters: clusters are 2 or more")
        if compare_with is not None and (compare_with.n_layers, compare_with.n_heads) != (encoder.n_layers,
                                                                                         encoder.n_heads):
            raise UserError(f"attention.compare_with={compare_with.info.name} has {compare_with.n_layers} x "
                            f"{compare_with.n_heads} heads, {encoder.info.name} {encoder.n_layers} x "
                            f"{encoder.n_heads}: head by head comparison needs the same grid")
        self.tables: dict[str, pd.DataFrame] = {}
        self.mismatched = self.compared = self.head_clusters = self.example_clusters = None
        self.joined: dict = {}

    # -- inputs
    def prepare(self, data: LoadedData) -> None:
        """Tokenize the examples (and their mismatched pairs, and for the second model) and check every input."""
        self.data, self.examples = data, sample(data.task.examples, self.attention.examples, self.seed)
        n, k = len(self.examples), self.attention.clusters
        if n < 3:
            raise UserError(f"an attention study needs at least 3 examples; the data has {n}")
        if k and k >= min(n, self.encoder.total_heads):
            raise UserError(f"attention.clusters={k} needs more than {k} examples and heads; there are {n} "
                            f"examples and {self.encoder.total_heads} heads")
        if self.attention.group_by:
            self.groups = self._groups()
        self.inputs = self._tokenized(self.encoder, self.examples)
        if self.pairs and self.attention.mismatched:
            partners = mismatched_partners(n, self.seed)
            swapped = [Example(e.id, e.query, self.examples[p].code, self.examples[p].language)
                       for e, p in zip(self.examples, partners)]
            self.mismatched_inputs = self._tokenized(self.encoder, swapped)
        if self.compare_with is not None:
            self.compared_inputs = self._tokenized(self.compare_with, self.examples)

    @property
    def pairs(self) -> bool:
        return self.kind == AttentionInput.pair

    def _tokenized(self, encoder: Encoder, examples: list[Example]) -> TokenizedExamples:
        return tokenize_examples(encoder, examples, self.kind, self.attention.max_length, self.model.max_query_length,
                                 self.model.max_code_length)

    def _groups(self) -> list[str]:
        field = self.attention.group_by
        values = [getattr(example, field) for example in self.examples]
        missing = sum(not value for value in values)
        if missing == len(values) or len(set(values) - {""}) < 2:
            raise UserError(f"attention.group_by={field}: the data has no {field} to group by ({missing} of "
                            f"{len(values)} examples have none; a pairs file gives each record a `{field}` field)")
        return values

    # -- the pass
    def run(self) -> None:
        source = QUERY if self.pairs else CODE if self.kind == AttentionInput.code else None
        n = len(self.examples)
        rng = np.random.default_rng(self.seed)
        sample = set(rng.choice(n, size=min(self.attention.js_examples, n), replace=False).tolist())
        batch = self.model.batch_size
        with self.timings.phase("attention_s"):
            self.measures = measure(self.encoder, self.inputs, batch, source, sample, self.progress,
                                    desc="attention")
            if self.pairs and self.attention.mismatched:
                self.mismatched = measure(self.encoder, self.mismatched_inputs, batch, None, set(), self.progress,
                                          desc="attention (mismatched pairs)")
            if self.compare_with is not None:
                self.compared = measure(self.compare_with, self.compared_inputs, batch, None, set(), self.progress,
                                        desc=f"attention ({self.compare_with.info.name})")

    # -- analysis
    def analyse(self, ablation: FinishedAblation | None, probes: FinishedProbes | None) -> None:
        a, m = self.attention, self.measures
        with self.timings.phase("analysis_s"):
            self.heads = head_table(m, self.encoder)
            correction = str(a.correction)
            if self.kind != AttentionInput.query:
                self.tables["construct_enrichment"] = inference.construct_enrichment(
                    m.construct_mass, m.construct_share, correction, a.alpha)
            if self.pairs:
                self.tables["layer_anova"], self.tables["layer_posthoc"] = inference.layer_anova(m.values["q2c_mass"])
            if a.group_by:
                self.tables["group_anova"] = inference.group_anova(m.values["q2c_mass"], self.groups)
            if self.mismatched is not None:
                self.tables["matched_vs_mismatched"] = inference.matched_vs_mismatched(
                    m.values["q2c_mass"], self.mismatched.values["q2c_mass"], correction, a.alpha)
            if self.compared is not None:
                self.tables["model_comparison"] = pd.concat([inference.compare_models(
                    m.values[name], self.compared.values[name], name, correction, a.alpha)
                    for name in self.statistics if not np.isnan(m.values[name]).all()], ignore_index=True)
            self._cluster()
            self._join(ablation, probes)

    def _cluster(self) -> None:
        a, m = self.attention, self.measures
        features = self.heads.set_index("condition")[self.statistics]
        self.head_clusters = clusters.cluster_heads(features, m.js, a.clusters, a.max_clusters, self.seed)
        self.heads = self.heads.merge(self.head_clusters.frame()[["condition", "cluster"]], on="condition")
        vectors = m.values["q2c_mass" if self.pairs else "entropy"]
        meta = pd.DataFrame({"domain": [e.domain for e in self.examples],
                             "language": [e.language for e in self.examples],
                             **{name: m.construct_share[name] for name in CONSTRUCTS}})
        self.example_clusters = clusters.cluster_examples(vectors.reshape(len(vectors), -1),
                                                          [e.query for e in self.examples], meta, a.clusters,
                                                          a.max_clusters, self.seed)

    def _join(self, ablation: FinishedAblation | None, probes: FinishedProbes | None) -> None:
        """The heads table beside the study's ablation and probes, and whether attention predicts importance."""
        if ablation is not None:
            columns = ["condition", "delta_mrr", "ci_low", "ci_high", "p_adjusted", "significant", "grad_score"]
            self.heads = self.heads.merge(ablation.single_heads()[columns], on="condition", how="left")
            self.joined["ablation"] = str(ablation.folder)
        if probes is not None:
            selectivity = probes.table.pivot(index="condition", columns="task", values="selectivity")
            selectivity.columns = [f"selectivity_{task}" for task in selectivity.columns]
            self.heads = self.heads.merge(selectivity.reset_index(), on="condition", how="left")
            self.joined["probes"] = str(probes.folder)
        self.correlations = correlations(self.heads, self.statistics, self.attention.n_permutations, self.seed)

    # -- outputs
    def export(self, folder: Path) -> list[str]:
        folder = Path(folder)
        files = ResultFiles(folder)
        csv = files.csv
        csv("attention_stats.csv", self.heads[stat_columns(self.statistics)])
        csv("heads.csv", self.heads)
        examples = example_frame(self.measures, self.examples, self.encoder)
        atomic_write(folder / "attention_examples.parquet", lambda tmp: examples.to_parquet(tmp, index=False))
        files.append("attention_examples.parquet")
        for name, table in self.tables.items():
            csv(f"{name}.csv", table)
        csv("clusters.csv", self.head_clusters.frame())
        csv("elbow.csv", self.head_clusters.elbow())
        csv("example_clusters.csv", self.example_clusters.clusters())
        csv("correlations.csv", self.correlations)
        files += self._figures(folder)
        return list(files)

    def _figures(self, folder: Path) -> list[str]:
        layers, heads = self.encoder.n_layers, self.encoder.n_heads
        paths = []
        for name in self.statistics:
            matrix = self.heads[name].to_numpy().reshape(layers, heads)
            if np.isfinite(matrix).any():
                title = f"{self.encoder.info.name}: {name} ({self.kind} input), mean over {len(self.examples)} examples"
                paths += plot_matrix(matrix, title + "\ncells: x100", name, folder / f"heatmap_{name}", diverging=False)
        if "construct_enrichment" in self.tables:
            enrichment = self.tables["construct_enrichment"]
            for construct in CONSTRUCTS:
                part = enrichment[enrichment["category"] == construct]
                matrix = np.log2(part["enrichment"].to_numpy(dtype=float)).reshape(layers, heads)
                if np.isfinite(matrix).any():
                    title = (f"{self.encoder.info.name}: attention to {construct} tokens against their share "
                             f"(log2 enrichment)\ncells: x100")
                    paths += plot_matrix(matrix, title, "log2 enrichment", folder / f"enrichment_{construct}")
        delta = self.heads.set_index("condition")["delta_mrr"] if "delta_mrr" in self.heads else None
        paths += plots.plot_head_maps(self.head_clusters, folder / "head_map", delta)
        paths += plots.plot_elbow(self.head_clusters, folder / "elbow")
        if self.measures.js is not None:
            paths += plots.plot_dendrogram(self.head_clusters, folder / "dendrogram")
        paths += plots.plot_example_clusters(self.example_clusters, folder / "example_clusters")
        heads = self.heads.set_index("condition")
        for _, row in self.correlations[self.correlations["against"] == "delta_mrr"].dropna().iterrows():
            pair = heads[[row["statistic"], "delta_mrr"]].dropna()
            paths += plots.plot_correlation(pair.iloc[:, 0], pair.iloc[:, 1], row["statistic"], "ΔMRR",
                                            row["spearman_rho"], row["p_value"],
                                            folder / f"correlation_{row['statistic']}")
        return [Path(p).name for p in paths]

    def record(self) -> AttentionRecord:
        task = self.data.task
        return AttentionRecord(
            model=self.encoder.info.name, model_revision=self.encoder.info.revision, corpus_hash=self.data.corpus_hash,
            task_fingerprint=task.fingerprint(), input=str(self.kind), n_examples=len(self.examples),
            statistics=self.statistics, js_examples=self.measures.js_examples,
            compared_with=self.compare_with.info.name if self.compare_with is not None else "", joined=self.joined,
            head_clusters=int(self.head_clusters.k), example_clusters=int(self.example_clusters.k),
            cluster_domain_test=self.example_clusters.chi_square(),
            findings=findings(self.heads, self.correlations, self.tables))


def sample(examples: list[Example], size: int, seed: int) -> list[Example]:
    """A seeded sample of `size` examples in their order (all of them when `size` is 0 or more than there are)."""
    if not 0 < size < len(examples):
        return list(examples)
    chosen = np.sort(np.random.default_rng(seed).choice(len(examples), size=size, replace=False))
    return [examples[i] for i in chosen]


def stat_columns(statistics: list[str]) -> list[str]:
    return ["condition", "layer", "head", *[c for name in statistics for c in (name, f"{name}_std")], "n"]


def head_table(measures: AttentionMeasures, encoder: Encoder) -> pd.DataFrame:
    """One row per head: each statistic's mean over examples and its standard deviation (ddof 1), and n."""
    rows = []
    for head in every_head(encoder.n_layers, encoder.n_heads):
        row = {"condition": head.name, "layer": head.layer, "head": head.index}
        for name, values in measures.values.items():
            column = values[:, head.layer, head.index]
            finite = column[np.isfinite(column)]
            row[name] = finite.mean() if len(finite) else np.nan
            row[f"{name}_std"] = finite.std(ddof=1) if len(finite) > 1 else np.nan
        row["n"] = len(measures.values["entropy"])
        rows.append(row)
    return pd.DataFrame(rows)


def example_frame(measures: AttentionMeasures, examples: list[Example], encoder: Encoder) -> pd.DataFrame:
    """Every number behind the tables: one row per example and head."""
    n = len(examples)
    heads = every_head(encoder.n_layers, encoder.n_heads)
    frame = pd.DataFrame({
        "example_id": np.repeat([e.id for e in examples], len(heads)),
        "condition": np.tile([h.name for h in heads], n),
        "layer": np.tile([h.layer for h in heads], n),
        "head": np.tile([h.index for h in heads], n),
    })
    for name, values in {**measures.values, **{f"mass_{c}": v for c, v in measures.construct_mass.items()}}.items():
        frame[name] = values.reshape(n, -1).reshape(-1)
    for name, values in measures.construct_share.items():
        frame[f"share_{name}"] = np.repeat(values, len(heads))
    return frame


def correlations(heads: pd.DataFrame, statistics: list[str], n_permutations: int, seed: int) -> pd.DataFrame:
    """Spearman correlation of each statistic with ΔMRR and with |grad_score| over the heads, with a permutation
    p-value (scipy's permutation_test, pairings permuted)."""
    targets = {"delta_mrr": heads.get("delta_mrr"), "abs_grad_score": heads.get("grad_score")}
    rows = []
    for against, target in targets.items():
        if target is None:
            continue
        target = target.abs() if against == "abs_grad_score" else target
        for name in statistics:
            keep = heads[name].notna() & target.notna()
            x, y = heads.loc[keep, name].to_numpy(), target[keep].to_numpy()
            row = {"statistic": name, "against": against, "n_heads": int(keep.sum()), "spearman_rho": np.nan,
                   "p_value": np.nan}
            if keep.sum() >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
                test = stats.permutation_test((x, y), spearman_rho, permutation_type="pairings", vectorized=True,
                                              n_resamples=n_permutations, rng=np.random.default_rng([seed, len(rows)]))
                row.update(spearman_rho=float(test.statistic), p_value=float(test.pvalue))
            rows.append(row)
    return pd.DataFrame(rows, columns=["statistic", "against", "n_heads", "spearman_rho", "p_value"])


def spearman_rho(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along `axis` (Pearson's r of the average ranks, as scipy's spearmanr), vectorised for the
    permutation test's resamples."""
    rx, ry = stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis)
    rx = rx - rx.mean(axis=axis, keepdims=True)
    ry = ry - ry.mean(axis=axis, keepdims=True)
    return (rx * ry).sum(axis) / np.sqrt((rx ** 2).sum(axis) * (ry ** 2).sum(axis))


def findings(heads: pd.DataFrame, correlation_table: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> dict:
    """What a reader looks for first: the heads that attend most from query to code, how many heads single out
    each construct, and the strongest correlation with importance."""
    out = {}
    if heads["q2c_mass"].notna().any():
        top = heads.sort_values("q2c_mass", ascending=False).head(3)
        out["top_q2c_mass"] = {row.condition: round(float(row.q2c_mass), 4) for row in top.itertuples()}
    if "construct_enrichment" in tables:
        table = tables["construct_enrichment"]
        out["heads_enriched"] = {c: int(table[(table.category == c) & table.significant].shape[0]) for c in CONSTRUCTS}
    usable = correlation_table.dropna(subset=["spearman_rho"])
    if len(usable):
        best = usable.loc[usable["spearman_rho"].abs().idxmax()]
        out["strongest_correlation"] = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in best.items()}
    return out
