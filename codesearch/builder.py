"""Build a CodeSearchNet-format corpus from source files on this machine.

Functions and their documentation are parsed with tree-sitter (six languages), CodeSearchNet's filters are
applied, splits are drawn by file, and the result is written in the original release's layout
(`{lang}/final/jsonl/{split}/{lang}_{split}_0.jsonl.gz`) with a `manifest.json`, so the same reader reads it
and a real CodeSearchNet download.
"""
from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import json
import os
import platform
import sys
import sysconfig
from collections import Counter
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from tqdm import tqdm

from .dedupe import near_duplicate_keep_mask
from .docstrings import opens_with_tag, summarize, word_tokens
from .errors import DataError
from .extract import ExtractedFunction, FileExtraction, extract_file
from .files import atomic_directory
from .hashing import content_hash
from .languages import LanguageSpec, language_spec, short_name
from .settings import SPLITS

MANIFEST = "manifest.json"
# The version of what the extractor and the filters put in a corpus. The package's version does not change
# with them, so a corpus cached by an older extractor would be reused: raise this whenever they change.
CORPUS_FORMAT = 2
# Test suites and installed third-party packages are not the library itself.
STDLIB_EXCLUDES = ("site-packages/*", "dist-packages/*", "test/*", "*/test/*", "tests/*", "*/tests/*",
                   "*/idle_test/*", "__pycache__/*", "*/__pycache__/*")


@dataclass(frozen=True)
class CorpusSettings:
    """Everything that decides a corpus's content; its hash names the cache entry."""
    language: str = "python"
    source_dir: str = ""                  # empty: this interpreter's standard library
    source_name: str = ""                 # the `repo` field; empty: derived from the source
    exclude: tuple[str, ...] = ()         # glob patterns over paths relative to source_dir
    min_code_lines: int = 3               # CodeSearchNet drops code of <= 2 lines
    min_docstring_words: int = 3          # ... and docstrings of <= 2 words
    dedup_threshold: float = 0.8          # Jaccard of token sets at or above which code is a near-duplicate
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)


@dataclass
class FilterCounts:
    files: int = 0
    unreadable_files: int = 0
    skipped_files: Counter = field(default_factory=Counter)   # test, bundled and generated files, by reason
    documented_functions: int = 0   # with a docstring or a comment above; each is kept or removed
    removed: Counter = field(default_factory=Counter)


def standard_library_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def resolve_settings(settings: CorpusSettings) -> CorpusSettings:
    """Fill the defaults that depend on this machine: the standard library and its exclusions."""
    language_spec(settings.language)
    if settings.source_dir:
        source = Path(settings.source_dir).expanduser().resolve()
        name = settings.source_name or source.name
        exclude = settings.exclude
    else:
        if settings.language != "python":
            raise DataError(
                f"the built-in corpus is made from the Python standard library; for language "
                f"{settings.language!r} give a directory of {settings.language} sources (corpus.source_dir=...)")
        source = standard_library_dir()
        name = settings.source_name or f"python-stdlib-{platform.python_version()}"
        exclude = settings.exclude or STDLIB_EXCLUDES
    fractions = tuple(float(f) for f in settings.split_fractions)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise DataError(f"corpus.split_fractions must be three non-negative numbers summing to 1, got {fractions}")
    return CorpusSettings(
        language=settings.language, source_dir=str(source), source_name=name, exclude=tuple(exclude),
        min_code_lines=settings.min_code_lines, min_docstring_words=settings.min_docstring_words,
        dedup_threshold=settings.dedup_threshold, split_fractions=fractions,
    )


def settings_key(settings: CorpusSettings) -> str:
    """A short hash of the resolved settings and the tool versions that shape the output."""
    return content_hash({"settings": asdict(settings), "tools": tool_versions(settings.language),
                         "format": CORPUS_FORMAT}, 12)


def source_fingerprint(settings: CorpusSettings) -> str:
    """A short hash of which source files there are, with their sizes and modification times."""
    root = Path(settings.source_dir)
    digest = hashlib.sha256()
    for path in source_files(settings):
        stat = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def tool_versions(language: str) -> dict[str, str]:
    """Versions of the code that decides what a corpus contains."""
    return {dist: _version(dist) for dist in ("codebert-heads", "tree-sitter", f"tree-sitter-{language}")}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def split_of(relative_path: str, fractions: tuple[float, float, float]) -> str:
    """The split of a file, from a hash of its path: deterministic, and disjoint by file."""
    digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "valid"
    return "test"


def source_files(settings: CorpusSettings) -> list[Path]:
    spec = language_spec(settings.language)
    root = Path(settings.source_dir)
    if not root.is_dir():
        raise DataError(f"corpus source {root} is not a directory")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in sorted(filenames):
            if not filename.endswith(spec.extensions):
                continue
            path = Path(dirpath) / filename
            rel = path.relative_to(root).as_posix()
            if any(fnmatch.fnmatch(rel, pattern) for pattern in settings.exclude):
                continue
            files.append(path)
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise DataError(
            f"no {settings.language} source files ({', '.join(spec.extensions)}) under {root}"
            + (f" (after excluding {list(settings.exclude)})" if settings.exclude else ""))
    return files


def extract_records(settings: CorpusSettings, progress: bool = True) -> tuple[list[dict], FilterCounts]:
    """CodeSearchNet records for every function that passes the filters, in path order."""
    spec = language_spec(settings.language)
    root = Path(settings.source_dir)
    counts = FilterCounts()
    candidates: list[dict] = []
    tokens: list[list[str]] = []
    file_sizes: list[int] = []
    for path in tqdm(source_files(settings), desc=f"parsing {settings.language} files", unit="file",
                     disable=not progress, mininterval=1.0):
        rel = path.relative_to(root).as_posix()
        try:
            source = path.read_bytes()
        except OSError:
            counts.unreadable_files += 1
            continue
        counts.files += 1
        extraction = _extract(path, source, settings.language)
        counts.documented_functions += extraction.documented
        file_reason = _file_reason(rel, extraction, spec)
        if file_reason:
            counts.skipped_files[file_reason] += 1
            counts.removed[file_reason] += extraction.documented
            continue
        counts.removed.update(extraction.dropped)
        file_sha = hashlib.sha1(source).hexdigest()
        for fn in extraction.functions:
            summary = summarize(fn.docstring)
            reason = _function_reason(fn, summary, spec, settings)
            if reason:
                counts.removed[reason] += 1
                continue
            candidates.append(_record(fn, summary, rel, file_sha, settings))
            tokens.append(fn.code_tokens)
            file_sizes.append(len(source))
    # Of near-duplicates the one in the smaller file is kept: a source module, not the bundle built from it.
    preference = sorted(range(len(candidates)), key=lambda i: (file_sizes[i], i))
    keep = near_duplicate_keep_mask(tokens, settings.dedup_threshold, order=preference)
    counts.removed["near_duplicate"] += int((~keep).sum())
    records = [r for r, k in zip(candidates, keep) if k]
    return records, counts


def _extract(path: Path, source: bytes, language: str) -> FileExtraction:
    try:
        return extract_file(source, language)
    except Exception as error:  # a parser failure on one file must name the file
        raise DataError(f"{path}: could not extract {language} functions: {error}") from error


def _file_reason(relative_path: str, extraction: FileExtraction, spec: LanguageSpec) -> str | None:
    """Why a whole file is left out: test code, a bundled or vendored copy, or generated code."""
    if spec.test_files.matches(relative_path):
        return "test_file"
    if spec.bundled_files.matches(relative_path):
        return "bundled_file"
    if extraction.generated:
        return "generated_file"
    return None


def _function_reason(fn: ExtractedFunction, summary: str, spec: LanguageSpec,
                     settings: CorpusSettings) -> str | None:
    """CodeSearchNet's filters on one function, in order; None when it is kept."""
    if opens_with_tag(fn.docstring, spec):
        return "docstring_opens_with_tag"
    if len(summary.split()) < settings.min_docstring_words:
        return "short_docstring"
    if fn.code_lines < settings.min_code_lines:
        return "short_code"
    if spec.is_excluded_name(fn.name):
        return "constructor_or_extension_method"
    if "test" in short_name(fn.name).lower():
        return "test_in_name"
    return None


def _record(fn: ExtractedFunction, summary: str, rel: str, file_sha: str, settings: CorpusSettings) -> dict:
    """The function as a CodeSearchNet record, with all the release's fields."""
    return {
        "repo": settings.source_name,
        "path": rel,
        "func_name": fn.name,
        "original_string": fn.code,
        "language": settings.language,
        "code": fn.code,
        "code_tokens": fn.code_tokens,
        "docstring": fn.docstring,
        "docstring_tokens": word_tokens(summary),
        "sha": file_sha,
        "url": f"file://{settings.source_name}/{rel}#L{fn.start_line}-L{fn.end_line}",
        "partition": split_of(rel, settings.split_fractions),
    }


def build_corpus(settings: CorpusSettings, output_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Build the corpus into `output_dir` (replaced atomically) and return its manifest.

    Only an earlier corpus (a folder with a manifest) or an empty folder is replaced, never anything else."""
    target = Path(output_dir)
    if target.exists() and not (target / MANIFEST).is_file() and (not target.is_dir() or any(target.iterdir())):
        raise DataError(f"{target} exists and is no corpus (it has no {MANIFEST}): building there would replace "
                        f"it; choose a new or empty folder")
    settings = resolve_settings(settings)
    records, counts = extract_records(settings, progress=progress)
    if not records:
        raise DataError(
            f"no functions left after filtering in {settings.source_dir}: {counts.files} files parsed, "
            f"{counts.documented_functions} documented functions, removed {dict(counts.removed)}")
    by_split = {split: [r for r in records if r["partition"] == split] for split in SPLITS}
    content = hashlib.sha256()
    with atomic_directory(output_dir) as tmp:
        for split in SPLITS:
            lines = [json.dumps(r, ensure_ascii=False, sort_keys=True) for r in by_split[split]]
            blob = ("\n".join(lines) + "\n" if lines else "").encode("utf-8")
            content.update(split.encode() + b"\0" + blob)
            target = tmp / settings.language / "final" / "jsonl" / split / f"{settings.language}_{split}_0.jsonl.gz"
            target.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz:  # mtime=0: identical bytes on rebuild
                gz.write(blob)
            target.write_bytes(buffer.getvalue())
        manifest = {
            "format": "codesearchnet-original",
            "language": settings.language,
            "source": {"path": settings.source_dir, "name": settings.source_name},
            "settings": asdict(settings),
            "counts": {
                "files": counts.files,
                "unreadable_files": counts.unreadable_files,
                "skipped_files": dict(sorted(counts.skipped_files.items())),
                "documented_functions": counts.documented_functions,
                "removed": dict(sorted((+counts.removed).items())),  # + drops reasons that removed nothing
                "splits": {split: len(by_split[split]) for split in SPLITS},
            },
            "content_hash": "sha256:" + content.hexdigest(),
            "tool": "codebert-heads",
            "corpus_format": CORPUS_FORMAT,
            "tool_versions": tool_versions(settings.language),
            "python_version": platform.python_version(),
        }
        text = json.dumps(manifest, indent=2) + "\n"
        (tmp / MANIFEST).write_text(text)
    return json.loads(text)  # exactly what a later read of manifest.json gives


def read_manifest(corpus_dir: str | os.PathLike) -> dict | None:
    path = Path(corpus_dir) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def cache_root() -> Path:
    return Path(os.environ.get("CODEBERT_HEADS_CACHE", Path.home() / ".cache" / "codebert-heads"))


def cached_corpus(settings: CorpusSettings, progress: bool = True) -> tuple[Path, dict]:
    """The corpus for these settings, built on first use and reused after (keyed by the settings' hash and the
    source files' fingerprint: an edited source is built again)."""
    resolved = resolve_settings(settings)
    key = settings_key(resolved) + "-" + source_fingerprint(resolved)
    directory = cache_root() / "corpora" / f"{resolved.source_name}-{key}"
    manifest = read_manifest(directory)
    if manifest is None:
        print(f"building the corpus from {resolved.source_dir} into {directory}", file=sys.stderr)
        manifest = build_corpus(resolved, directory, progress=progress)
    return directory, manifest
