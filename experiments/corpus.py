"""`codebert-heads corpus`: build a CodeSearchNet-format corpus from source files on this machine."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from codesearch.builder import build_corpus, cached_corpus
from codesearch.loading import corpus_settings

from .config import as_sections


def run_corpus(cfg: DictConfig) -> Path:
    c = as_sections(cfg)
    settings = corpus_settings(c.corpus, c.data.language)
    if c.corpus.output_dir:
        directory = Path(c.corpus.output_dir).expanduser()
        manifest = build_corpus(settings, directory, progress=c.progress)
    else:
        directory, manifest = cached_corpus(settings, progress=c.progress)
    counts = manifest["counts"]
    print(f"corpus: {directory}")
    print(f"  source: {manifest['source']['path']} ({counts['files']} files, "
          f"{counts['documented_functions']} documented functions)")
    print(f"  removed: {counts['removed']}")
    print(f"  splits: {counts['splits']}")
    print(f"  content hash: {manifest['content_hash']}")
    return directory
