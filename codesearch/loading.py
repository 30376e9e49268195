"""From the `data` and `corpus` settings to the retrieval task they name."""
from __future__ import annotations

import sys
from dataclasses import dataclass

from .builder import CorpusSettings, cached_corpus, read_manifest
from .readers import read_task
from .records import RetrievalTask
from .settings import CorpusConfig, DataConfig


@dataclass
class LoadedData:
    task: RetrievalTask
    path: str                 # the corpus folder or file that was read
    corpus_hash: str          # the manifest's content hash, or the task's fingerprint for a released set
    manifest: dict | None     # the built corpus's manifest (None for a released set)


def corpus_settings(corpus: CorpusConfig, language: str) -> CorpusSettings:
    """What decides the corpus's content (its cache key): the `corpus` section but where it is written."""
    return CorpusSettings(
        language=str(language), source_dir=corpus.source_dir, source_name=corpus.name, exclude=tuple(corpus.exclude),
        min_code_lines=corpus.min_code_lines, min_docstring_words=corpus.min_docstring_words,
        dedup_threshold=corpus.dedup_threshold, split_fractions=tuple(corpus.split_fractions),
    )


def load_data(data: DataConfig, corpus: CorpusConfig, seed: int, progress: bool = True) -> LoadedData:
    """The task `data` names: the built-in corpus (built on first use) or a CodeSearchNet copy on disk;
    `data.max_queries` of its queries drawn with `seed`."""
    if data.path == "builtin":
        directory, manifest = cached_corpus(corpus_settings(corpus, data.language), progress=progress)
        path, form = directory, "csn"
    else:
        path, form = data.path, str(data.form)
        manifest = read_manifest(path)  # a corpus this tool built elsewhere carries one
    task = read_task(path, language=str(data.language), split=str(data.split), form=form)
    if data.max_queries > len(task):
        print(f"note: data.max_queries={data.max_queries}, but the data read ({path}) has {len(task)} queries: "
              f"all of them are used", file=sys.stderr)
    task = task.sample(data.max_queries, seed)
    corpus_hash = manifest["content_hash"] if manifest else task.fingerprint()
    return LoadedData(task=task, path=str(path), corpus_hash=corpus_hash, manifest=manifest)
