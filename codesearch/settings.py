"""The data layer's settings: the `data` and `corpus` sections of the config, and the closed choices they take.

Every layer keeps its settings in a light module like this one (no torch, no pandas), so that the command line
can build and check the whole config before anything heavy is imported. The config's sections are these objects,
and commands hand them on whole.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, replace
from enum import StrEnum

from .languages import LANGUAGES


def setting(help_text: str, default=MISSING, factory=MISSING):
    """A dataclass field with its help text (shown by `codebert-heads <command> --help`)."""
    if factory is not MISSING:
        return field(default_factory=factory, metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})


# The six CodeSearchNet languages.
Language = StrEnum("Language", {name: name for name in LANGUAGES})


class Split(StrEnum):
    train = "train"
    valid = "valid"
    test = "test"


class DataForm(StrEnum):
    auto = "auto"
    csn = "csn"
    hf = "hf"
    codexglue = "codexglue"
    pairs = "pairs"


class Correction(StrEnum):
    holm = "holm"
    bh = "bh"           # Benjamini-Hochberg


class Protocol(StrEnum):
    whole_pool = "whole_pool"   # GraphCodeBERT, UniXcoder: the whole candidate pool
    csn = "csn"                 # CodeSearchNet: batches of 1000
    rerank = "rerank"           # a cross-encoder re-scoring a first-stage bi-encoder's top k of the whole pool


SPLITS = tuple(split.value for split in Split)


@dataclass
class DataConfig:
    path: str = setting("where the corpus is: `builtin` (built from corpus.* settings, by default the Python "
                        "standard library, and cached) or a CodeSearchNet folder or file", "builtin")
    form: DataForm = setting("on-disk form: auto, csn (original release), hf (Hugging Face code_search_net), "
                             "codexglue (cleaned GraphCodeBERT set), pairs (jsonl/csv of query, code)", DataForm.auto)
    language: Language = setting("programming language to read (and to build the corpus in)", Language.python)
    split: Split = setting("split to evaluate", Split.test)
    max_queries: int = setting("evaluate a seeded random sample of this many queries; 0 = all", 0)

    def of_split(self, split: str, max_queries: int) -> DataConfig:
        """The same data, another split (a held-out set, a probe's training functions)."""
        return replace(self, split=Split(split), max_queries=max_queries)


@dataclass
class CorpusConfig:
    source_dir: str = setting("folder of source files to build the corpus from; empty = the Python standard "
                              "library", "")
    name: str = setting("the corpus's `repo` name in its records; empty = derived from the source", "")
    exclude: list[str] = setting("glob patterns of paths (relative to source_dir) to leave out; empty = for the "
                                 "standard library its tests and site-packages", factory=list)
    min_code_lines: int = setting("drop functions with fewer non-blank code lines (CodeSearchNet: 3)", 3)
    min_docstring_words: int = setting("drop functions whose summary has fewer words (CodeSearchNet: 3)", 3)
    dedup_threshold: float = setting("Jaccard similarity of code token sets at which a function is a "
                                     "near-duplicate", 0.8)
    split_fractions: list[float] = setting("train, valid, test fractions, drawn by file",
                                           factory=lambda: [0.7, 0.1, 0.2])
    output_dir: str = setting("`corpus` command: where to write the corpus; empty = the cache", "")
