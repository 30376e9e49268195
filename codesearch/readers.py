"""Readers for CodeSearchNet as it exists on disk, and for plain query-code pairs.

Forms:
- `csn`: the original release, `{lang}/final/jsonl/{split}/{lang}_{split}_{k}.jsonl.gz`.
- `hf`: the Hugging Face `code_search_net` copy (parquet or jsonl, its own field names).
- `codexglue`: the cleaned GraphCodeBERT/CodeXGLUE set: queries in `{split}.jsonl`, candidates in `codebase.jsonl`.
- `pairs`: a jsonl or csv of `query`, `code`, with optional `id`, `language`, `domain`.

A released set is read as released: no filter is applied. The query is the docstring's first paragraph and
the code has its own docstring removed (the original release and the Hugging Face copy keep it inside the
code); the CodeXGLUE set is used exactly as GraphCodeBERT does, its tokens joined by spaces.
"""
from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from .docstrings import strip_docstring, summarize
from .errors import DataError
from .languages import LANGUAGES, language_spec
from .records import Example, RetrievalTask
from .settings import SPLITS, DataForm

FORMS = tuple(DataForm)

# The fields each form needs; their names as each form spells them.
SCHEMAS = {
    "csn": {"query": "docstring", "code": "code", "language": "language", "path": "path",
            "func_name": "func_name", "url": "url", "repo": "repo", "split": "partition"},
    "hf": {"query": "func_documentation_string", "code": "func_code_string", "language": "language",
           "path": "func_path_in_repository", "func_name": "func_name", "url": "func_code_url",
           "repo": "repository_name", "split": "split_name"},
    "codexglue": {"query": "docstring_tokens", "code": "code_tokens", "url": "url"},
    "pairs": {"query": "query", "code": "code", "language": "language", "domain": "domain", "id": "id"},
}
SCHEMA_NAMES = {
    "csn": "CodeSearchNet original release",
    "hf": "Hugging Face code_search_net",
    "codexglue": "CodeXGLUE/GraphCodeBERT cleaned",
    "pairs": "plain query-code pairs",
}


def _required(form: str) -> tuple[str, str]:
    return SCHEMAS[form]["query"], SCHEMAS[form]["code"]


def _schemas_tried() -> str:
    return "; ".join(f"{SCHEMA_NAMES[f]} (needs {', '.join(_required(f))})" for f in SCHEMAS)


# ---------------------------------------------------------------- records on disk

def iter_records(path: Path) -> Iterator[tuple[str, dict]]:
    """(location, record) for every record of a jsonl, jsonl.gz, csv or parquet file.

    Locations read `file:line` (or `file:row N` for parquet) so every error can name its place.
    """
    name = path.name.lower()
    if name.endswith(".parquet"):
        yield from _iter_parquet(path)
    elif name.endswith(".csv"):
        yield from _iter_csv(path)
    elif name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
        yield from _iter_jsonl(path)
    else:
        raise DataError(f"{path}: unsupported file type (expected .jsonl, .jsonl.gz, .csv or .parquet)")


def _decoded(data: bytes, path: Path, first_line: int = 1) -> str:
    """UTF-8 text (a leading byte-order mark dropped); else an error naming the line and the byte in it."""
    try:
        return data.decode("utf-8-sig" if first_line == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + data.count(b"\n", 0, exc.start)
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}, the line's byte {column}: "
                        f"{exc.reason})") from None


def _iter_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:  # lines decoded one by one, so that an error names its line
            for number, raw in enumerate(handle, start=1):
                line = _decoded(raw, path, number)
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: malformed JSON ({exc.msg}: column {exc.colno})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{number}: expected a JSON object, found {type(record).__name__}")
                yield f"{path}:{number}", record
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None


def _iter_csv(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:   # streamed: a large file is never held whole
            reader = csv.DictReader(handle)
            reader.fieldnames  # reads the header
            start = reader.line_num + 1
            for record in reader:
                if None in record:
                    raise DataError(f"{path}:{start}: more values than the header has columns")
                yield f"{path}:{start}", record   # a record's first line: a quoted field may span several
                start = reader.line_num + 1
    except UnicodeDecodeError:
        _decoded(path.read_bytes(), path)   # raises the error naming the line and the byte
        raise
    except (OSError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read as csv ({exc})") from None


def _iter_parquet(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        row = 0
        for batch in table.iter_batches():
            for record in batch.to_pylist():
                row += 1
                yield f"{path}:row {row}", record
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot be read as parquet ({exc})") from None


def _first_record(path: Path) -> tuple[str, dict]:
    for location, record in iter_records(path):
        return location, record
    raise DataError(f"{path}: the file holds no records")


def sniff_form(location: str, record: dict) -> str:
    """Which schema a record follows, from its field names."""
    keys = set(record)
    for form in ("hf", "csn", "codexglue", "pairs"):
        if set(_required(form)) <= keys:
            return form
    raise DataError(
        f"{location}: record matches none of the known schemas: {_schemas_tried()}; "
        f"its fields are {sorted(keys)}")


# ---------------------------------------------------------------- locating files

def _csn_files(root: Path, language: str, split: str) -> list[Path]:
    patterns = [f"{language}/final/jsonl/{split}/*.jsonl*", f"final/jsonl/{split}/*.jsonl*",
                f"jsonl/{split}/*.jsonl*", f"{split}/*.jsonl*"]
    if root.name == split:  # the split folder itself
        patterns.append("*.jsonl*")
    for pattern in patterns:
        files = sorted(p for p in root.glob(pattern) if p.is_file())
        if files:
            return _natural_order(files)
    return []


def _natural_order(files: list[Path]) -> list[Path]:
    # python_test_0, python_test_1, ..., python_test_10: by the shard number, not the string.
    def key(path: Path):
        stem = path.name.split(".")[0]
        tail = stem.rsplit("_", 1)[-1]
        return (stem.rsplit("_", 1)[0], int(tail) if tail.isdigit() else -1, path.name)
    return sorted(files, key=key)


def _codexglue_dir(root: Path, language: str) -> Path | None:
    for candidate in (root, root / language):
        if (candidate / "codebase.jsonl").is_file():
            return candidate
    return None


def _data_files(root: Path) -> list[Path]:
    suffixes = (".parquet", ".jsonl", ".jsonl.gz", ".csv")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(suffixes))


def _codexglue_file(path: Path) -> bool:
    """A query or codebase file of the CodeXGLUE cleaned form: its records also carry CodeSearchNet's fields, so
    only its place (beside codebase.jsonl) tells it apart."""
    stem = path.name.lower().removesuffix(".jsonl")
    return stem in ("train", "valid", "test", "codebase") and (path.parent / "codebase.jsonl").is_file()


def detect_form(path: Path, language: str, split: str) -> str:
    if path.is_file():
        return "codexglue" if _codexglue_file(path) else sniff_form(*_first_record(path))
    if _codexglue_dir(path, language) is not None:
        return "codexglue"
    split_files = _csn_files(path, language, split)
    if split_files:  # a split-folder layout: the records say which schema they follow
        return sniff_form(*_first_record(split_files[0]))
    files = _data_files(path)
    if not files:
        raise DataError(f"{path}: no corpus files found (looked for {language}/final/jsonl/{split}/*.jsonl.gz, "
                        f"codebase.jsonl, *.parquet, *.jsonl, *.csv)")
    return sniff_form(*_first_record(files[0]))


# ---------------------------------------------------------------- reading a task

def read_task(path: str | Path, language: str = "python", split: str = "test", form: str = "auto") -> RetrievalTask:
    """Read a retrieval task from any supported form (detected from the files when `form` is auto)."""
    path = Path(path).expanduser()
    language_spec(language)
    if form not in FORMS:
        raise DataError(f"unknown data form {form!r}: choose one of {', '.join(FORMS)}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if form == "auto":
        form = detect_form(path, language, split)
    if form == "codexglue":
        task = _read_codexglue(path, language, split)
    elif form == "csn":
        files = [path] if path.is_file() else _csn_files(path, language, split)
        if not files:
            raise DataError(f"{path}: no CodeSearchNet files for {language}/{split} "
                            f"(expected {language}/final/jsonl/{split}/{language}_{split}_*.jsonl.gz)")
        task = _read_paired(files, "csn", language, split_filter=split)
    else:  # hf, pairs
        files = [path] if path.is_file() else (_csn_files(path, language, split) or _data_files(path))
        if form == "hf" and path.is_dir():
            named = [f for f in files if _split_in_name(f.name) == split]
            files = named or files
        task = _read_paired(files, form, language, split_filter=split if form == "hf" else None)
    if not task.examples:
        hint = ""
        if task.notes.get("other_languages"):
            hint = f" (it holds {', '.join(task.notes['other_languages'])}: set data.language)"
        raise DataError(f"{path}: no {split} records for language {language} in {SCHEMA_NAMES[form]} form{hint}")
    return task


def _split_in_name(name: str) -> str | None:
    lowered = name.lower()
    for token, split in (("train", "train"), ("validation", "valid"), ("valid", "valid"), ("test", "test")):
        if token in lowered:
            return split
    return None


def _field(record: dict, form: str, key: str, location: str, required: bool = False):
    name = SCHEMAS[form].get(key)
    if name is None:
        return None
    if name not in record or record[name] is None:
        if required:
            raise DataError(f"{location}: missing field {name!r} ({SCHEMA_NAMES[form]} form); "
                            f"the record's fields are {sorted(record)}")
        return None
    return record[name]


def _unique_id(base: str, seen: dict[str, int]) -> str:
    count = seen.get(base, 0)
    seen[base] = count + 1
    return base if count == 0 else f"{base}#{count}"


def _read_paired(files: list[Path], form: str, language: str, split_filter: str | None) -> RetrievalTask:
    examples: list[Example] = []
    seen: dict[str, int] = {}
    other_languages: set[str] = set()
    for path in files:
        for location, record in iter_records(path):
            rec_split = _field(record, form, "split", location)
            if split_filter is not None and rec_split is not None:
                if _normalise_split(str(rec_split)) != split_filter:
                    continue
            rec_language = str(_field(record, form, "language", location) or language).lower()
            if form != "pairs" and rec_language != language:
                other_languages.add(rec_language)
                continue
            if rec_language not in LANGUAGES:
                raise DataError(f"{location}: unknown language {rec_language!r}: "
                                f"choose one of {', '.join(sorted(LANGUAGES))}")
            raw_query = str(_field(record, form, "query", location, required=True))
            raw_code = str(_field(record, form, "code", location, required=True))
            if form == "pairs":
                query, code = " ".join(raw_query.split()), raw_code
            else:
                query, code = summarize(raw_query), strip_docstring(raw_code, rec_language)
            if not query.strip():
                raise DataError(f"{location}: empty query (the docstring's first paragraph is empty)")
            if not code.strip():
                raise DataError(f"{location}: empty code")
            url = str(_field(record, form, "url", location) or "")
            base_id = str(_field(record, form, "id", location) or url or location.rsplit("/", 1)[-1])
            examples.append(Example(
                id=_unique_id(base_id, seen), query=query, code=code, language=rec_language,
                path=str(_field(record, form, "path", location) or ""),
                func_name=str(_field(record, form, "func_name", location) or ""), url=url,
                repo=str(_field(record, form, "repo", location) or ""),
                domain=str(_field(record, form, "domain", location) or ""),
                split=_normalise_split(str(rec_split)) if rec_split else "",
            ))
    if form == "pairs":
        # Identical code strings are one candidate: a duplicate would tie with the gold and count against it.
        index: dict[str, int] = {}
        candidate_ids = []
        for e in examples:
            if e.code not in index:
                index[e.code] = len(index)
                candidate_ids.append(e.id)
        gold = [index[e.code] for e in examples]
        candidates = list(index)
    else:
        gold = list(range(len(examples)))
        candidates = [e.code for e in examples]
        candidate_ids = [e.id for e in examples]
    source = str(files[0].parent if len(files) > 1 else files[0]) if files else ""
    notes = {"other_languages": sorted(other_languages)} if other_languages else {}
    return RetrievalTask(source=source, form=form, examples=examples, candidate_ids=candidate_ids,
                         candidates=candidates, gold=gold, paired=True, notes=notes)


def _normalise_split(split: str) -> str:
    return {"validation": "valid", "dev": "valid"}.get(split.lower(), split.lower())


def _read_codexglue(path: Path, language: str, split: str) -> RetrievalTask:
    root = path if path.is_dir() else path.parent
    root = _codexglue_dir(root, language) or root
    query_file, codebase_file = root / f"{split}.jsonl", root / "codebase.jsonl"
    named = path.name.lower().removesuffix(".jsonl") if path.is_file() else None
    if named not in (None, "codebase", split):
        raise DataError(f"{path} holds the {named} queries but data.split={split}: set data.split={named}, "
                        f"or give the folder")
    for needed in (query_file, codebase_file):
        if not needed.is_file():
            raise DataError(f"{needed}: missing (the CodeXGLUE cleaned form has queries in {split}.jsonl and "
                            f"candidates in codebase.jsonl)")
    candidate_ids, candidates, by_url, repeated = [], [], {}, 0
    for location, record in iter_records(codebase_file):
        url = str(_field(record, "codexglue", "url", location, required=True))
        code = _join_tokens(_field(record, "codexglue", "code", location, required=True), location, "code_tokens")
        # GraphCodeBERT's evaluation stops at the best-ranked candidate with the query's url, so a url's other
        # copies are never counted against it: one candidate per url (its first copy) does the same.
        if url in by_url:
            repeated += 1
            continue
        by_url[url] = len(candidates)
        candidates.append(code)
        candidate_ids.append(url)
    examples, gold = [], []
    seen: dict[str, int] = {}
    for location, record in iter_records(query_file):
        url = str(_field(record, "codexglue", "url", location, required=True))
        query = _join_tokens(_field(record, "codexglue", "query", location, required=True), location,
                             "docstring_tokens")
        if url not in by_url:
            raise DataError(f"{location}: url {url!r} has no candidate in {codebase_file}")
        examples.append(Example(id=_unique_id(url, seen), query=query, code=candidates[by_url[url]],
                                language=language, url=url, split=split))
        gold.append(by_url[url])
    return RetrievalTask(source=str(root), form="codexglue", examples=examples, candidate_ids=candidate_ids,
                         candidates=candidates, gold=gold, paired=False,
                         notes={"repeated_codebase_urls_dropped": repeated} if repeated else {})


def _join_tokens(tokens, location: str, name: str) -> str:
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise DataError(f"{location}: field {name!r} must be a list of strings")
    text = " ".join(tokens)
    if not text.strip():
        raise DataError(f"{location}: field {name!r} is empty")
    return text
