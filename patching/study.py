"""An activation-patching study of a cross-encoder (causal tracing, Meng et al. 2022; per head as in path patching,
Wang et al. 2022), from loaded data to its table.

    study = PatchStudy(encoder, c.patch, c.model, c.seed, progress)
    study.prepare(data)           # the clean and corrupt pairs (`patching.inputs`)
    study.run()                   # every head patched both ways (`patching.engine`)
    study.analyse(ablation)       # fractions, intervals, tests, correction; Spearman with the ablation's ΔMRR
    files = study.export(folder)

Per head h, over the examples i (clean score c_i, corrupt x_i, gap g_i = c_i - x_i):
- restored = mean(denoised_i - x_i) / mean(g_i): the share of the clean-corrupt gap that h's clean output alone
  brings back into the corrupt run (1: all of it, 0: none);
- destroyed = mean(c_i - noised_i) / mean(g_i): the share of the gap lost when h's output in the clean run is
  the corrupt run's.
A ratio of means, not a mean of ratios: an example whose gap is near 0 would dominate the latter. Each has a paired
bootstrap percentile interval (examples resampled, numerator and denominator together, scipy) and a paired t-test of
the patched scores against the unpatched ones (denoised vs corrupt, noised vs clean), corrected over the heads
(statsmodels, Holm by default).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from ablation.record import FinishedAblation
from attention.study import spearman_rho
from codesearch.errors import UserError
from codesearch.files import atomic_write_csv, atomic_write_text
from codesearch.loading import LoadedData
from codesearch.runfolder import Timings
from heads.cross_encoder import CrossEncoder
from heads.heatmap import layer_head_matrix, plot_matrix
from heads.naming import every_head
from heads.settings import ModelConfig

from .engine import PatchScores, patch_scores
from .inputs import PatchInputs, patch_inputs
from .record import PatchRecord
from .settings import PatchConfig

DIRECTIONS = {"restored": "denoised", "destroyed": "noised"}
COLUMNS = ["condition", "layer", "head"] + [f"{what}{suffix}" for what in DIRECTIONS
                                           for suffix in ("", "_ci_low", "_ci_high", "_t_stat", "_p_value",
                                                          "_p_adjusted", "_significant")] + ["n_examples"]


class PatchStudy:
    def __init__(self, encoder: CrossEncoder, settings: PatchConfig, model: ModelConfig, seed: int,
                 progress: bool = True, timings: Timings | None = None):
        if not isinstance(encoder, CrossEncoder):
            raise UserError(f"activation patching swaps a head's output between a query's true and mismatched "
                            f"pair, one input holding both: {encoder.info.name} is a bi-encoder; give a "
                            f"cross-encoder's folder as model.name (e.g. one `finetune model.kind=cross_encoder` "
                            f"wrote)")
        settings.check()
        self.encoder, self.settings, self.model, self.seed, self.progress = encoder, settings, model, seed, progress
        self.timings = Timings() if timings is None else timings
        self.data = self.inputs = self.scores = self.table = self.correlations = None
        self.ablation_folder = ""

    def prepare(self, data: LoadedData) -> None:
        self.data = data
        with self.timings.phase("setup_s"):
            self.inputs: PatchInputs = patch_inputs(self.encoder, data.task, self.settings.examples, self.seed,
                                                    self.model)

    def run(self) -> None:
        with self.timings.phase("patching_s"):
            self.scores: PatchScores = patch_scores(self.encoder, self.inputs, progress=self.progress)
        gap = float((self.scores.clean - self.scores.corrupt).double().mean())
        if gap == 0:
            raise UserError(f"the clean and corrupt pairs score the same on average over {self.inputs.n} examples: "
                            f"there is no gap whose share a head could restore")
        if gap < 0:
            print(f"warning: the clean pairs score lower than the corrupt ones on average (mean gap {gap:.4g}): "
                  f"{self.encoder.info.name} does not tell a query's code from another's, and the fractions are "
                  f"shares of a gap in the wrong direction", file=sys.stderr)

    def analyse(self, ablation: FinishedAblation | None = None) -> None:
        with self.timings.phase("statistics_s"):
            self.table = patch_table(self.scores, self.encoder.n_layers, self.encoder.n_heads, self.settings,
                                     self.seed)
            self.correlations = None
            if ablation is not None:
                self.ablation_folder = str(ablation.folder)
                self.correlations = ablation_correlations(self.table, ablation.single_heads(),
                                                          self.settings.n_permutations, self.seed)

    def examples_frame(self) -> pd.DataFrame:
        task, s = self.data.task, self.scores
        return pd.DataFrame({"query_id": [task.query_ids[q] for q in self.inputs.query_index],
                             "clean_code": self.inputs.clean_code, "corrupt_code": self.inputs.corrupt_code,
                             "clean_score": s.clean.double().numpy(), "corrupt_score": s.corrupt.double().numpy()})

    def per_example_frame(self) -> pd.DataFrame:
        """Every example's patched scores, per head: what each number of the table is computed from."""
        ids = [self.data.task.query_ids[q] for q in self.inputs.query_index]
        return pd.concat([pd.DataFrame({"query_id": ids, "condition": h.name,
                                        "denoised": self.scores.denoised[h.name].double().numpy(),
                                        "noised": self.scores.noised[h.name].double().numpy()}) for h in self.heads()],
                         ignore_index=True)

    def export(self, folder: Path) -> list[str]:
        """patching.csv (per head), examples.csv (per example: its codes and unpatched scores), per_example.csv (its
        patched scores per head), patching.md, the correlation with the ablation, and the two heatmaps."""
        folder = Path(folder)
        atomic_write_csv(folder / "patching.csv", self.table)
        atomic_write_csv(folder / "examples.csv", self.examples_frame())
        atomic_write_csv(folder / "per_example.csv", self.per_example_frame())
        files = ["patching.csv", "examples.csv", "per_example.csv"]
        atomic_write_text(folder / "patching.md", self.markdown())
        files.append("patching.md")
        if self.correlations is not None:
            atomic_write_csv(folder / "ablation_correlation.csv", self.correlations)
            files.append("ablation_correlation.csv")
        for what in DIRECTIONS:
            matrix = layer_head_matrix(self.table, what, self.encoder.n_layers, self.encoder.n_heads)
            marked = layer_head_matrix(self.table, f"{what}_significant", self.encoder.n_layers,
                                       self.encoder.n_heads) == 1
            title = (f"{self.encoder.info.name}: share of the clean-corrupt score gap {what} by patching one head\n"
                     f"{self.inputs.n} examples; cells x 100; boxed * = significant "
                     f"({self.settings.correction}, alpha {self.settings.alpha})")
            paths = plot_matrix(matrix, title, f"{what} fraction", folder / f"heatmap_{what}", marked=marked)
            files += [p.name for p in paths]
        return files

    def heads(self):
        return every_head(self.encoder.n_layers, self.encoder.n_heads)

    def markdown(self) -> str:
        top = self.table.sort_values("restored", ascending=False).head(10)
        lines = [f"# Activation patching of {self.encoder.info.name}", "",
                 f"{self.inputs.n} examples: each query with its own code (clean, mean score "
                 f"{float(self.scores.clean.mean()):.4f}) and another (corrupt, mean score "
                 f"{float(self.scores.corrupt.mean()):.4f}). restored: share of the gap one head's clean output "
                 f"brings back into the corrupt run; destroyed: share lost when the clean run gets its corrupt "
                 f"output. 95% CI: paired bootstrap over examples; p: paired t-test, "
                 f"{self.settings.correction}-corrected over heads.", "",
                 "| head | restored | 95% CI | p (adj.) | destroyed | 95% CI | p (adj.) |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]
        for row in top.itertuples():
            lines.append(f"| {row.condition} | {row.restored:+.3f}{'*' * bool(row.restored_significant)} | "
                         f"[{row.restored_ci_low:+.3f}, {row.restored_ci_high:+.3f}] | {row.restored_p_adjusted:.2g} | "
                         f"{row.destroyed:+.3f}{'*' * bool(row.destroyed_significant)} | "
                         f"[{row.destroyed_ci_low:+.3f}, {row.destroyed_ci_high:+.3f}] | "
                         f"{row.destroyed_p_adjusted:.2g} |")
        if self.correlations is not None:
            lines += ["", f"Against the ablation's ΔMRR ({self.ablation_folder}):", ""]
            for row in self.correlations.itertuples():
                lines.append(f"- {row.measure} vs ΔMRR: Spearman rho {row.spearman_rho:+.3f} "
                             f"(permutation p {row.p_value:.3g}, {row.n_heads} heads)")
        return "\n".join(lines) + "\n"

    def record(self) -> PatchRecord:
        info, task = self.encoder.info, self.data.task
        best = self.table.loc[self.table["restored"].idxmax()]
        findings = {"mean_clean_score": float(self.scores.clean.mean()),
                    "mean_corrupt_score": float(self.scores.corrupt.mean()),
                    "top_restored": {r.condition: round(float(r.restored), 4)
                                     for r in self.table.sort_values("restored", ascending=False).head(3).itertuples()},
                    "top_destroyed": {r.condition: round(float(r.destroyed), 4) for r in
                                      self.table.sort_values("destroyed", ascending=False).head(3).itertuples()},
                    "n_significant_restored": int(self.table["restored_significant"].sum()),
                    "n_significant_destroyed": int(self.table["destroyed_significant"].sum())}
        if self.correlations is not None:
            findings["ablation_correlation"] = self.correlations.to_dict(orient="records")
        return PatchRecord(model=info.name, model_revision=info.revision, corpus_hash=self.data.corpus_hash,
                           task_fingerprint=task.fingerprint(), n_examples=self.inputs.n,
                           best_head=str(best["condition"]), ablation_run=self.ablation_folder, findings=findings)


def _ratio_of_means(numerator, denominator, axis=-1):
    return np.mean(numerator, axis=axis) / np.mean(denominator, axis=axis)


def direction_stats(moved: np.ndarray, gap: np.ndarray, patched: np.ndarray, unpatched: np.ndarray,
                    settings: PatchConfig, rng: np.random.Generator) -> dict:
    """The fraction mean(moved) / mean(gap), its paired bootstrap interval, and the paired t-test of the patched
    scores against the unpatched ones."""
    fraction = float(moved.mean() / gap.mean())
    low = high = np.nan
    t_stat, p_value = 0.0, 1.0
    if np.ptp(moved) > 0:
        boot = stats.bootstrap((moved, gap), _ratio_of_means, paired=True, vectorized=True, method="percentile",
                               n_resamples=settings.n_bootstrap, rng=rng)
        low, high = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
        test = stats.ttest_rel(patched, unpatched)
        t_stat, p_value = float(test.statistic), float(test.pvalue)
    return {"": fraction, "_ci_low": low, "_ci_high": high, "_t_stat": t_stat, "_p_value": p_value}


def patch_table(scores: PatchScores, n_layers: int, n_heads: int, settings: PatchConfig, seed: int) -> pd.DataFrame:
    clean, corrupt = scores.clean.double().numpy(), scores.corrupt.double().numpy()
    gap = clean - corrupt
    rows = []
    for head in every_head(n_layers, n_heads):
        rng = np.random.default_rng([seed, head.layer, head.index])
        denoised, noised = scores.denoised[head.name].double().numpy(), scores.noised[head.name].double().numpy()
        row = {"condition": head.name, "layer": head.layer, "head": head.index, "n_examples": len(gap)}
        for what, values in (("restored", direction_stats(denoised - corrupt, gap, denoised, corrupt, settings, rng)),
                             ("destroyed", direction_stats(clean - noised, gap, noised, clean, settings, rng))):
            row |= {f"{what}{suffix}": value for suffix, value in values.items()}
        rows.append(row)
    table = pd.DataFrame(rows)
    for what in DIRECTIONS:
        reject, adjusted, _, _ = multipletests(table[f"{what}_p_value"], alpha=settings.alpha,
                                               method="holm" if str(settings.correction) == "holm" else "fdr_bh")
        table[f"{what}_p_adjusted"], table[f"{what}_significant"] = adjusted, reject
    return table[COLUMNS]


def ablation_correlations(table: pd.DataFrame, singles: pd.DataFrame, n_permutations: int,
                          seed: int) -> pd.DataFrame:
    """Spearman's rho of each patching fraction with the ablation's -ΔMRR (how much retrieval loses without the
    head), with a permutation p-value, over the heads both have."""
    joined = table.merge(singles[["condition", "delta_mrr"]], on="condition")
    if len(joined) < len(table):
        print(f"note: the ablation has {len(joined)} of the {len(table)} heads; the correlation uses those",
              file=sys.stderr)
    rows = []
    for number, what in enumerate(DIRECTIONS):
        x, y = joined[what].to_numpy(), -joined["delta_mrr"].to_numpy()
        row = {"measure": what, "against": "-delta_mrr", "n_heads": len(joined), "spearman_rho": np.nan,
               "p_value": np.nan}
        if len(joined) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            test = stats.permutation_test((x, y), spearman_rho, permutation_type="pairings", vectorized=True,
                                          n_resamples=n_permutations, rng=np.random.default_rng([seed, number]))
            row.update(spearman_rho=float(test.statistic), p_value=float(test.pvalue))
        rows.append(row)
    return pd.DataFrame(rows)
