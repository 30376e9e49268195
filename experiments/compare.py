"""`codebert-heads compare <study A> <study B> [<study C> ...]`: finished studies compared head by head
(`comparison`): query by query when two share their queries and candidates, by their maps otherwise."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from codesearch.hashing import content_hash
from comparison.record import CompareRecord
from comparison.studies import distinct, read_study
from comparison.study import Comparison
from tracking.run_logs import compare_log

from .config import as_sections
from .runs import Run

LABEL_LIMIT = 200   # characters of a folder name made of the studies' names (a file system allows 255)


def comparison_label(names: list[str]) -> str:
    """`<A>--<B>`: the studies' names, or the first one's and a hash when many would make too long a name."""
    label = "--".join(names)
    if len(label) <= LABEL_LIMIT:
        return label
    return f"{names[0][:60]}--and-{len(names) - 1}-more-{content_hash(names, 8)}"


def run_compare(cfg: DictConfig, studies: list[str]) -> Path:
    settings = as_sections(cfg).compare
    runs_dir = Path(cfg.runs_dir).expanduser()
    found = distinct([read_study(text, runs_dir, settings) for text in studies])   # each folder checked first
    comparison = Comparison(found, settings, cfg.seed)                              # and the head grids
    label = comparison_label([study.name for study in found])
    with Run(cfg, "compare", CompareRecord, label, study="compare", home=runs_dir) as run:
        with run.timings.phase("statistics_s"):
            comparison.run()
        run.begin()
        files = comparison.export(run.work)
        record = run.finish(comparison.record(), files)
        print_summary(comparison, record, run.folder)
        run.log(compare_log(run.folder, comparison.heads, comparison.correlations, comparison.overlaps, record))
    return run.folder


def print_summary(comparison: Comparison, record: CompareRecord, folder: Path) -> None:
    for tag, facts in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", record.studies):
        print(f"{tag}: {facts['name']} ({facts['model']}, baseline MRR {facts['baseline_mrr']:.4f}, "
              f"{facts['n_queries']} queries, {facts['protocol']})")
    print(f"{record.layers} layers × {record.heads} heads, {record.n_heads} heads in every map; {record.mode} mask, "
          f"{record.side} side{'s' if record.side == 'both' else ''}")
    print(record.pairing)
    if record.baseline_test:
        b = record.baseline_test
        print(f"baselines: MRR B − A = {b['difference']:+.4f} [{b['ci_low']:+.4f}, {b['ci_high']:+.4f}], paired "
              f"t = {b['t_stat']:.2f}, p = {b['p_value']:.3g} ({b['n_queries']} queries)")
    for row in record.correlations:
        if row["evidence"] == "delta_mrr":
            print(f"ΔMRR maps {row['study_a']} / {row['study_b']}: Spearman ρ = {_show(row['spearman_rho'])} "
                  f"(permutation p = {_show(row['spearman_p_perm'])}), Kendall τ = {_show(row['kendall_tau'])} "
                  f"(p = {_show(row['kendall_p_perm'])}), {row['n_heads']} heads")
    for row in record.overlaps:
        print(f"{row['heads']} heads, {row['study_a']} / {row['study_b']}: {row['n_both']} in both of "
              f"{row['n_a']} and {row['n_b']}, Jaccard {_show(row['jaccard'])} (chance {_show(row['chance_jaccard'])})")
    if record.paired:
        print(f"gained importance in B: {', '.join(record.gained) or 'none'}; lost: {', '.join(record.lost) or 'none'} "
              f"({record.correction}, alpha {record.alpha})")
    print(f"results: {folder}")


def _show(value) -> str:
    return "–" if value is None else f"{value:.3g}"
