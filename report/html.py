"""A study's report as one self-contained HTML page: the study and how to reproduce it, the baseline, the ablation,
the probes, the attention statistics, head sets, fine-tuning and comparisons (each where the study has it), and what
is missing with the command that makes it. Every number comes from a run folder's files or record."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .examples import HEAD_VIEW_STYLE, Example, head_view  # noqa: E402
from .page import escape, figure, heatmap, image, number, page, paragraph, table  # noqa: E402
from .study import KINDS, Folder, StudyRuns  # noqa: E402


def _signed(value) -> str:
    return number(value, 4, signed=True)


def _p(value) -> str:
    return number(value, 3)


def _plain(value) -> str:
    return number(value, 4)


def render(runs: StudyRuns, command_lines: Callable[[Folder], str], examples: list[Example] | None = None,
           examples_note: str = "") -> str:
    """The page; `command_lines(run)` gives the command line that reproduces a run; `examples`: the most important
    heads' attention on a few pairs (`examples_note` says why there are none)."""
    body = [f"<h1>{escape(runs.name)}</h1>",
            paragraph("A codebert-heads study: which attention heads retrieval needs, what they encode, where they "
                      "attend. Every number below is read from the study's run folders.", "muted")]
    for section in (_study, _baseline, _ablation):
        body += section(runs)
    body += _examples(examples or [], examples_note) if runs.ablation is not None else []
    for section in (_probes, _attention, _patching, _head_sets, _finetune, _comparisons):
        body += section(runs)
    body += _provenance(runs, command_lines) + _missing(runs)
    return page(f"codebert-heads report: {runs.name}", body)


# ---------------------------------------------------------------- the study

def _facts(runs: StudyRuns) -> dict:
    facts = {}
    if runs.evaluation:
        r = runs.evaluation.record
        facts = {"model": r.model, "revision": r.model_revision,
                 "data": ", ".join(f"{k} {v}" for k, v in r.data.items()), "corpus hash": r.corpus_hash,
                 "protocol": r.protocol, "queries": r.n_queries, "candidates": r.n_candidates, "seed": r.seed}
    elif runs.ablation is not None:
        r = runs.ablation.record
        facts = {"model": r.model.name, "revision": r.model.revision, "corpus hash": r.corpus_hash,
                 "protocol": r.protocol.protocol, "queries": r.protocol.n_queries,
                 "seed": r.config.get("seed", "")}
    return facts


def _study(runs: StudyRuns) -> list[str]:
    facts = _facts(runs)
    rows = "".join(f"<tr><th class=\"text\">{escape(k)}</th><td class=\"text\">{escape(v)}</td></tr>"
                   for k, v in facts.items())
    shown = ", ".join(KINDS[kind][0] for kind in runs.kinds())
    return ["<h2 id=\"study\">The study</h2>", f"<table id=\"study-facts\">{rows}</table>",
            paragraph(f"Runs in this study: {escape(shown)}.")]


def _baseline(runs: StudyRuns) -> list[str]:
    if not runs.evaluation:
        return []
    protocols = runs.evaluation.record.protocols
    frame = pd.DataFrame([{"protocol": name, **{k: getattr(p, k) for k in
                                                ("mrr", "recall_at_1", "recall_at_5", "recall_at_10", "n_queries",
                                                 "candidates_per_query")}} for name, p in protocols.items()])
    columns = [("protocol", "protocol", str), ("mrr", "MRR", _plain), ("recall_at_1", "R@1", _plain),
               ("recall_at_5", "R@5", _plain), ("recall_at_10", "R@10", _plain), ("n_queries", "queries", number),
               ("candidates_per_query", "candidates per query", number)]
    return ["<h2 id=\"baseline\">Baseline retrieval</h2>", table(frame, columns, "baseline")]


# ---------------------------------------------------------------- the ablation

def _matrix(frame: pd.DataFrame, column: str, layers: int, heads: int) -> np.ndarray:
    values = np.full((layers, heads), np.nan)
    for row in frame.dropna(subset=["layer", "head"]).itertuples():
        values[int(row.layer), int(row.head)] = getattr(row, column)
    return values


def _tips(frame: pd.DataFrame, layers: int, heads: int, describe: Callable) -> list[list[str]]:
    tips = [["" for _ in range(heads)] for _ in range(layers)]
    for _, row in frame.dropna(subset=["layer", "head"]).iterrows():
        tips[int(row["layer"])][int(row["head"])] = describe(row)
    return tips


def _ablation(runs: StudyRuns) -> list[str]:
    found = runs.ablation
    if found is None:
        return []
    record, frame = found.record, found.single_heads()
    layers, heads = record.model.layers, record.model.heads
    marked = _matrix(frame.assign(significant=frame["significant"].astype(float)), "significant", layers, heads)

    def tip(row) -> str:
        return (f"{row['condition']}: ΔMRR {row['delta_mrr']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}], "
                f"p_adj {row['p_adjusted']:.3g}, d {row['cohens_d']:.2f}")
    out = ["<h2 id=\"ablation\">Which heads retrieval needs: head ablation</h2>",
           paragraph(f"Each head masked alone (zero mask, both sides) against the baseline MRR "
                     f"{record.baseline_mrr:.4f} on {record.protocol.n_queries} queries; cells are ΔMRR × 100 (red: "
                     f"the head helped), boxed where significant "
                     f"({escape(record.correction)}, alpha {record.alpha}). Hover a cell for its numbers. From "
                     f"<code>{escape(found.folder)}</code>."),
           heatmap(_matrix(frame, "delta_mrr", layers, heads), _tips(frame, layers, heads, tip), "ablation-heatmap",
                   marked=marked == 1.0)]
    significant = frame[frame["significant"]].sort_values("delta_mrr")
    columns = [("condition", "head", str), ("delta_mrr", "ΔMRR", _signed), ("ci_low", "CI low", _signed),
               ("ci_high", "CI high", _signed), ("p_adjusted", "p (adj.)", _p), ("cohens_d", "d", _plain),
               ("grad_score", "grad. score", _plain)]
    out.append(f"<h3>Significant heads ({len(significant)} of {len(frame)})</h3>")
    out.append(table(significant, columns, "significant-heads") if len(significant) else
               paragraph("No head is significant after the correction.", "note"))
    agreement = [a for a in record.gradient_vs_exact if a.get("spearman_rho") is not None]
    if agreement and frame["grad_score"].notna().any():
        fig, ax = plt.subplots(figsize=(4.6, 3.6))
        ax.scatter(frame["grad_score"], -frame["delta_mrr"], s=14, color="tab:blue")
        ax.set_xlabel("gradient estimate (grad_score)")
        ax.set_ylabel("exact importance (−ΔMRR)")
        rho = agreement[0]["spearman_rho"]
        ax.set_title(f"gradient against exact ablation: Spearman ρ = {rho:.2f}", fontsize=9)
        out += ["<h3>The gradient estimate against exact ablation</h3>",
                paragraph(f"Spearman ρ = <span id=\"gradient-rho\">{rho:.3f}</span> over {agreement[0]['n_heads']} "
                          f"heads."), figure(fig, "gradient estimate against exact ablation")]
    others = [run for run in runs.ablations if (run.record.config.get("ablation", {}).get("mode"),
                                                run.record.config.get("ablation", {}).get("side")) != ("zero", "both")]
    if others:
        listing = "".join(f"<li>{escape(run.folder.name)}: {run.record.n_conditions} conditions, "
                          f"{run.record.n_significant} significant</li>" for run in others)
        out += ["<h3>Other mask modes and sides</h3>", f"<ul>{listing}</ul>"]
    return out


def _examples(examples: list[Example], note: str) -> list[str]:
    out = ["<h3>The most important heads at work</h3>"]
    if not examples:
        return out + [paragraph(escape(note or "No examples."), "note")]
    out += [f"<style>{HEAD_VIEW_STYLE}</style>",
            paragraph("Where each query token looks in the code, in the pair as the model reads it: the strongest "
                      "links of each query token (opacity: the attention weight). Hover a query token to see only its "
                      "links, a link for its weight.")]
    views = [f"<div><h4>{escape(e.head.name)}, pair {e.pair + 1}</h4>"
             f"{head_view(e, f'head-view-{e.head.name}-{e.pair}')}</div>" for e in examples]
    return out + ["<div class=\"grid\">" + "".join(views) + "</div>"]


# ---------------------------------------------------------------- probes and attention

def _probes(runs: StudyRuns) -> list[str]:
    if runs.probes is None:
        return []
    frame = runs.probes.table
    layers = int(frame["layer"].max()) + 1
    heads = int(frame["head"].max()) + 1
    out = ["<h2 id=\"probes\">What the heads encode: probes</h2>",
           paragraph("Linear probes on each head's output; selectivity = accuracy − control-task accuracy. Hover a "
                     f"cell for accuracy, control and random-init accuracy. From <code>{escape(runs.probes.folder)}"
                     f"</code>.")]
    best_rows = []
    for task, rows in frame.groupby("task", sort=False):
        def tip(row) -> str:
            return (f"{row['condition']}: selectivity {row['selectivity']:+.3f}, accuracy {row['accuracy']:.3f}, "
                    f"control {row['control_accuracy']:.3f}, random-init {row['random_init_accuracy']:.3f}")
        out += [f"<h3>{escape(task)}</h3>",
                heatmap(_matrix(rows, "selectivity", layers, heads), _tips(rows, layers, heads, tip),
                        f"probe-{task}")]
        best_rows.append(rows.sort_values("selectivity", ascending=False).head(3))
    best = pd.concat(best_rows, ignore_index=True)
    columns = [("task", "task", str), ("condition", "head", str), ("selectivity", "selectivity", _signed),
               ("accuracy", "accuracy", _plain), ("control_accuracy", "control", _plain),
               ("random_init_accuracy", "random init", _plain), ("majority", "majority", _plain)]
    return out + ["<h3>The best heads per task</h3>", table(best, columns, "best-probes")]


def _attention(runs: StudyRuns) -> list[str]:
    out = []
    for run in runs.attention:
        record, heads = run.record, run.csv("heads.csv")
        layers, n_heads = int(heads["layer"].max()) + 1, int(heads["head"].max()) + 1
        if not out:
            out.append("<h2 id=\"attention\">Where the heads look: attention statistics</h2>")
        out.append(f"<h3>Input: {escape(record.input)} ({record.n_examples} examples)</h3>")
        grid = []
        for statistic in record.statistics:
            if statistic not in heads or heads[statistic].isna().all():
                continue
            def tip(row, statistic=statistic) -> str:
                return f"{row['condition']}: {statistic} {row[statistic]:.4f}"
            grid.append(f"<div><h4>{escape(statistic)}</h4>"
                        + heatmap(_matrix(heads, statistic, layers, n_heads), _tips(heads, layers, n_heads, tip),
                                  f"attention-{record.input}-{statistic}", diverging=False) + "</div>")
        out.append("<div class=\"grid\">" + "".join(grid) + "</div>")
        for name in record.files:
            stem = Path(name).stem
            if name.endswith(".png") and (stem.startswith("enrichment") or stem in ("dendrogram", "head_map_pca")):
                out.append(f"<h4>{escape(stem)}</h4>" + image(run.folder / name, stem))
        joined = [c for c in ("delta_mrr", "selectivity", "cluster", *record.statistics) if c in heads]
        columns = [("condition", "head", str)] + [(c, c, _signed if c == "delta_mrr" else number if c == "cluster"
                                                  else _plain) for c in joined]
        out += ["<h4>Every head: its statistics beside its ΔMRR (click a header to sort)</h4>",
                table(heads, columns, f"heads-{record.input}")]
        correlations = run.csv("correlations.csv")
        if correlations is not None and len(correlations):
            columns = [("statistic", "statistic", str), ("against", "against", str), ("n_heads", "heads", number),
                       ("spearman_rho", "Spearman ρ", _signed), ("p_value", "p (perm.)", _p)]
            out += ["<h4>Attention and probes against ΔMRR, over the heads</h4>",
                    table(correlations, columns, f"correlations-{record.input}")]
    return out


def _patching(runs: StudyRuns) -> list[str]:
    out = []
    for run in runs.patches:
        table_frame, record = run.csv("patching.csv"), run.record
        layers, n_heads = int(table_frame["layer"].max()) + 1, int(table_frame["head"].max()) + 1
        f = record.findings
        if not out:
            out.append("<h2 id=\"patching\">Which heads carry the match: activation patching</h2>")
        out.append(paragraph(
            f"{record.n_examples} queries, each with its own code (clean, mean score {f['mean_clean_score']:.3f}) "
            f"and another (corrupt, {f['mean_corrupt_score']:.3f}). Restored: the share of the clean−corrupt gap "
            f"one head's clean output brings back into the corrupt run; destroyed: the share lost when the clean "
            f"run gets the head's corrupt output. Starred: significant after correction over the heads."))
        grid = []
        for what in ("restored", "destroyed"):
            def tip(row, what=what) -> str:
                return (f"{row['condition']}: {what} {row[what]:+.3f} [{row[what + '_ci_low']:+.3f}, "
                        f"{row[what + '_ci_high']:+.3f}], p adj. {row[what + '_p_adjusted']:.2g}")
            marked = _matrix(table_frame.assign(m=table_frame[f"{what}_significant"].astype(float)), "m", layers,
                             n_heads)
            grid.append(f"<div><h4>{what}</h4>" + heatmap(_matrix(table_frame, what, layers, n_heads),
                                                          _tips(table_frame, layers, n_heads, tip),
                                                          f"patching-{what}-{run.folder.name}", marked=marked > 0)
                        + "</div>")
        out.append("<div class=\"grid\">" + "".join(grid) + "</div>")
        correlations = run.csv("ablation_correlation.csv")
        if correlations is not None and len(correlations):
            columns = [("measure", "measure", str), ("against", "against", str), ("n_heads", "heads", number),
                       ("spearman_rho", "Spearman ρ", _signed), ("p_value", "p (perm.)", _p)]
            out += ["<h4>Patching against the ablation's ΔMRR, over the heads</h4>",
                    table(correlations, columns, f"patching-correlation-{run.folder.name}")]
        columns = [("condition", "head", str), ("restored", "restored", _signed),
                   ("restored_p_adjusted", "p adj.", _p), ("destroyed", "destroyed", _signed),
                   ("destroyed_p_adjusted", "p adj.", _p)]
        out += ["<h4>Every head (click a header to sort)</h4>",
                table(table_frame, columns, f"patching-{run.folder.name}")]
    return out


# ---------------------------------------------------------------- head sets, fine-tuning, comparisons

def _head_sets(runs: StudyRuns) -> list[str]:
    run = runs.head_sets
    if run is None:
        return []
    out = ["<h2 id=\"head-sets\">Head sets: pruning curves and interactions</h2>",
           paragraph(f"From <code>{escape(run.folder)}</code>.")]
    if (run.folder / "curve.png").is_file():
        out.append(image(run.folder / "curve.png", "pruning curves"))
    retention = run.csv("retention.csv")
    if retention is not None:
        keeps = retention[retention["criterion"] != "no significant drop"]
        columns = [("order", "order", str), ("seed", "seed", str), ("criterion", "keeps", str),
                   ("fraction_pruned", "fraction pruned", _plain), ("n_pruned", "heads pruned", number),
                   ("mrr", "MRR there", _plain)]
        keeps = keeps.assign(seed=keeps["seed"].fillna("").astype(str))
        out += ["<h3>How much can be pruned</h3>", table(keeps, columns, "retention")]
    if (run.folder / "layer_heads.png").is_file():
        out += ["<h3>One head per layer</h3>", image(run.folder / "layer_heads.png", "one head per layer")]
    pairs = run.csv("interactions.csv")
    if pairs is not None:
        out.append("<h3>Interactions of the top heads</h3>")
        if (run.folder / "interactions.png").is_file():
            out.append(image(run.folder / "interactions.png", "interactions"))
        flagged = pairs[pairs["significant"]]
        columns = [("a", "a", str), ("b", "b", str), ("interaction", "interaction", _signed),
                   ("ci_low", "CI low", _signed), ("ci_high", "CI high", _signed), ("p_adjusted", "p (adj.)", _p),
                   ("kind", "kind", str)]
        out.append(table(flagged, columns, "interactions") if len(flagged) else
                   paragraph(f"No pair of the top heads is significantly redundant or synergistic "
                             f"({len(pairs)} pairs).", "note"))
    return out


def _finetune(runs: StudyRuns) -> list[str]:
    out = []
    for run in runs.finetunes:
        history = run.csv("metrics.csv")
        if not out:
            out.append("<h2 id=\"finetune\">Fine-tuning</h2>")
        r = run.record
        kind = "a cross-encoder" if r.kind == "cross_encoder" else "a bi-encoder"
        start = f" (untrained start {r.start_val_mrr:.4f})" if r.start_val_mrr is not None else ""
        beside = (f" Beside it, the retriever {escape(r.retriever['model'])} on the same test queries and "
                  f"candidates: MRR {r.retriever['summary']['mrr']:.4f}." if r.retriever else "")
        out.append(paragraph(f"{escape(r.base_model)} fine-tuned as {kind} for {r.epochs_run} epochs ({r.steps} "
                             f"steps); best validation MRR {r.best_val_mrr:.4f} at epoch {r.best_epoch}{start}, test "
                             f"MRR {r.test_mrr:.4f}.{beside} Model folder "
                             f"<code>{escape(run.folder / r.model_folder)}</code>."))
        if history is not None and len(history):
            fig, loss = plt.subplots(figsize=(5.5, 3.4))
            loss.plot(history["epoch"], history["train_loss"], marker="o", color="tab:orange")
            loss.set_ylabel("train loss", color="tab:orange")
            loss.set_xlabel("epoch")
            mrr = loss.twinx()
            mrr.plot(history["epoch"], history["val_mrr"], marker="o", color="tab:blue")
            mrr.set_ylabel("validation MRR", color="tab:blue")
            out.append(figure(fig, "training curve"))
            out.append(table(history, [("epoch", "epoch", number), ("step", "step", number),
                                       ("train_loss", "train loss", _plain), ("val_mrr", "val MRR", _plain)],
                             f"finetune-{run.folder.name}"))
    return out


def _comparisons(runs: StudyRuns) -> list[str]:
    out = []
    for run in runs.comparisons:
        if not out:
            out.append("<h2 id=\"compare\">Compared with other studies</h2>")
        names = " against ".join(escape(s.get("name", "")) for s in run.record.studies)
        out.append(f"<h3>{names}</h3>" + paragraph(escape(run.record.pairing)))
        for stem in ("heatmap_a", "heatmap_b", "heatmap_difference", "correlation_matrix"):
            if (run.folder / f"{stem}.png").is_file():
                out.append(image(run.folder / f"{stem}.png", stem))
    return out


# ---------------------------------------------------------------- provenance and what is missing

def _provenance(runs: StudyRuns, command_lines: Callable[[Folder], str]) -> list[str]:
    records = runs.records()
    versions = next((run.record.versions for run in records if run.record.versions), {})
    lines = "\n".join(f"# {run.folder}\n{command_lines(run)}" for run in records)
    listed = ", ".join(f"{escape(k)} {escape(v)}" for k, v in versions.items())
    return ["<h2 id=\"reproduce\">How it was made</h2>",
            paragraph("The command lines that reproduce each run (settings that differ from the defaults):"),
            f"<pre id=\"commands\">{escape(lines)}</pre>", paragraph(f"Package versions: {listed}.", "muted")]


def _missing(runs: StudyRuns) -> list[str]:
    missing = runs.missing()
    if not missing:
        return []
    items = "".join(f"<li id=\"missing-{kind}\">{escape(KINDS[kind][0])}: <code>{escape(KINDS[kind][1])}</code>"
                    f"</li>" for kind in missing)
    return ["<h2 id=\"missing\">Not in this study yet</h2>",
            paragraph("Each of these parts appears once the study has its run; the command makes it (with the "
                      "study's own settings, e.g. the same --config):"), f"<ul>{items}</ul>"]
