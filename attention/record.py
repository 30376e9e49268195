"""The record of a finished attention run (`attention`'s run.json)."""
from __future__ import annotations

from dataclasses import dataclass, field

from codesearch.runfolder import RunRecord


@dataclass(kw_only=True)
class AttentionRecord(RunRecord):
    model: str
    model_revision: str
    corpus_hash: str
    task_fingerprint: str
    input: str                                      # pair, code or query
    n_examples: int
    statistics: list[str] = field(default_factory=list)
    js_examples: int = 0
    compared_with: str = ""                         # the second model's name, when there is one
    joined: dict = field(default_factory=dict)      # the ablation and probe runs the heads table joined
    head_clusters: int = 0
    example_clusters: int = 0
    cluster_domain_test: dict = field(default_factory=dict)   # chi-square of example cluster against domain
    findings: dict = field(default_factory=dict)    # the few numbers a reader looks for first
