"""From config to data: the corpus settings, and the retrieval task a command evaluates."""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from codesearch.builder import CorpusSettings, cached_corpus, read_manifest
from codesearch.readers import read_task
from codesearch.records import RetrievalTask


@dataclass
class LoadedData:
    task: RetrievalTask
    path: str                 # the corpus folder or file that was read
    corpus_hash: str          # the manifest's content hash, or the task's fingerprint for a released set
    manifest: dict | None     # the built corpus's manifest (None for a released set)


def corpus_settings(cfg: DictConfig) -> CorpusSettings:
    c = cfg.corpus
    return CorpusSettings(
        language=str(cfg.data.language), source_dir=c.source_dir, source_name=c.name, exclude=tuple(c.exclude),
        min_code_lines=c.min_code_lines, min_docstring_words=c.min_docstring_words,
        dedup_threshold=c.dedup_threshold, split_fractions=tuple(c.split_fractions),
    )


def load_data(cfg: DictConfig) -> LoadedData:
    """The task of `data.*`: the built-in corpus (built on first use) or a CodeSearchNet copy on disk."""
    if cfg.data.path == "builtin":
        directory, manifest = cached_corpus(corpus_settings(cfg), progress=cfg.progress)
        path, form = directory, "csn"
    else:
        path, form = cfg.data.path, str(cfg.data.form)
        manifest = read_manifest(path)  # a corpus this tool built elsewhere carries one
    task = read_task(path, language=str(cfg.data.language), split=str(cfg.data.split), form=form)
    task = task.sample(cfg.data.max_queries, cfg.seed)
    corpus_hash = manifest["content_hash"] if manifest else task.fingerprint()
    return LoadedData(task=task, path=str(path), corpus_hash=corpus_hash, manifest=manifest)
