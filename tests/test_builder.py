"""The local corpus builder: CodeSearchNet's filters, splits by file, its release layout, determinism, errors."""
import gzip
import json
import textwrap
from pathlib import Path

import pytest

from codesearch.builder import CorpusSettings, build_corpus, cached_corpus, split_of
from codesearch.dedupe import near_duplicate_keep_mask
from codesearch.errors import DataError, UserError
from codesearch.readers import read_task

GOOD = '''
def {name}(values, factor):
    """{doc}"""
    result = []
    for value in values:
        result.append(value * factor + {k})
    return result
'''


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def make_python_tree(root: Path, n_files: int = 12) -> None:
    for i in range(n_files):
        body = GOOD.format(name=f"scale_{i}", doc=f"Scale every value by a factor, variant {i}.", k=i)
        # Each file also holds one of each thing CodeSearchNet removes.
        body += f'''
def short_{i}(x):
    """Return x unchanged, always."""
    return x

def terse_{i}(values):
    """Scale."""
    out = list(values)
    out.sort()
    return out

class Box{i}:
    def __repr__(self):
        """Show the box as text for debugging."""
        parts = [str(self)]
        parts.append("box")
        return "".join(parts)

def test_helper_{i}(values):
    """Helper named like a test function."""
    out = list(values)
    out.reverse()
    return out
'''
        write(root / f"pkg{i % 3}" / f"mod{i}.py", body)
    # A near-duplicate of scale_0 under another name and file: only the first (in path order) is kept.
    write(root / "zzz" / "copy.py", GOOD.format(name="scale_copy", doc="A copy of the scaling function.", k=0))


def read_split(directory: Path, language: str, split: str) -> list[dict]:
    path = directory / language / "final" / "jsonl" / split / f"{language}_{split}_0.jsonl.gz"
    with gzip.open(path, "rt") as handle:
        return [json.loads(line) for line in handle]


def test_filters_splits_layout_and_manifest(tmp_path):
    src = tmp_path / "src"
    make_python_tree(src)
    manifest = build_corpus(CorpusSettings(source_dir=str(src), source_name="demo"), tmp_path / "out",
                            progress=False)
    counts = manifest["counts"]
    assert counts["files"] == 13
    assert counts["removed"] == {"constructor_or_extension_method": 12, "near_duplicate": 1, "short_code": 12,
                                 "short_docstring": 12, "test_in_name": 12}
    records = [r for split in ("train", "valid", "test") for r in read_split(tmp_path / "out", "python", split)]
    assert sorted(r["func_name"] for r in records) == sorted(f"scale_{i}" for i in range(12))
    assert sum(counts["splits"].values()) == len(records) == 12
    assert counts["documented_functions"] == len(records) + sum(counts["removed"].values())
    # Every CodeSearchNet field, with the docstring still inside Python code as the release has it.
    record = records[0]
    assert set(record) == {"repo", "path", "func_name", "original_string", "language", "code", "code_tokens",
                           "docstring", "docstring_tokens", "sha", "url", "partition"}
    assert '"""Scale every value' in record["code"]
    assert record["repo"] == "demo"
    # Splits follow the file: all functions of a file share one, and it is the hash of the path.
    for r in records:
        assert r["partition"] == split_of(r["path"], (0.7, 0.1, 0.2))
    assert manifest["content_hash"].startswith("sha256:")
    assert (tmp_path / "out" / "manifest.json").is_file()
    assert manifest["tool_versions"]["tree-sitter-python"] != "unknown"


def test_rebuild_is_byte_identical(tmp_path):
    src = tmp_path / "src"
    make_python_tree(src)
    first = build_corpus(CorpusSettings(source_dir=str(src)), tmp_path / "a", progress=False)
    second = build_corpus(CorpusSettings(source_dir=str(src)), tmp_path / "b", progress=False)
    assert first["content_hash"] == second["content_hash"]
    for split in ("train", "valid", "test"):
        name = f"python/final/jsonl/{split}/python_{split}_0.jsonl.gz"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_a_folder_that_is_no_corpus_is_never_replaced(tmp_path):
    src = tmp_path / "src"
    make_python_tree(src)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match=r"notes exists and is no corpus \(it has no manifest.json\)"):
        build_corpus(CorpusSettings(source_dir=str(src)), tmp_path / "notes", progress=False)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    build_corpus(CorpusSettings(source_dir=str(src)), tmp_path / "out", progress=False)   # new: built
    build_corpus(CorpusSettings(source_dir=str(src)), tmp_path / "out", progress=False)   # a corpus: replaced


def test_an_edited_source_is_built_again(tmp_path):
    src = tmp_path / "src"
    make_python_tree(src)
    first_dir, first = cached_corpus(CorpusSettings(source_dir=str(src)), progress=False)
    assert cached_corpus(CorpusSettings(source_dir=str(src)), progress=False)[0] == first_dir   # reused
    write(src / "extra.py", GOOD.format(name="extra_scale", doc="Scale the extra values by a factor.", k=99))
    second_dir, second = cached_corpus(CorpusSettings(source_dir=str(src)), progress=False)
    assert second_dir != first_dir and second["counts"]["files"] == first["counts"]["files"] + 1


def test_the_reader_reads_what_the_builder_wrote(tmp_path):
    src = tmp_path / "src"
    make_python_tree(src)
    build_corpus(CorpusSettings(source_dir=str(src), split_fractions=(0.0, 0.0, 1.0)), tmp_path / "out",
                 progress=False)
    task = read_task(tmp_path / "out", language="python", split="test")
    assert len(task) == 12
    for example in task.examples:
        assert "Scale every value" not in example.code  # the docstring was removed from the code
        assert example.query.startswith("Scale every value by a factor")
        assert example.code.startswith("def scale_")


MULTI = {
    "go": ("lib.go", '''package lib

// Scale every value by the factor given.
func Scale(values []int, factor int) []int {
\tout := make([]int, 0)
\tfor _, v := range values {
\t\tout = append(out, v*factor)
\t}
\treturn out
}
'''),
    "java": ("Lib.java", '''public class Lib {
    /**
     * Scale every value by the factor given.
     */
    public int[] scale(int[] values, int factor) {
        int[] out = new int[values.length];
        for (int i = 0; i < values.length; i++) out[i] = values[i] * factor;
        return out;
    }
}
'''),
    "javascript": ("lib.js", '''/**
 * Scale every value by the factor given.
 */
function scale(values, factor) {
  const out = [];
  for (const v of values) out.push(v * factor);
  return out;
}
'''),
    "php": ("lib.php", '''<?php
/**
 * Scale every value by the factor given.
 */
function scale($values, $factor) {
    $out = [];
    foreach ($values as $v) { $out[] = $v * $factor; }
    return $out;
}
'''),
    "ruby": ("lib.rb", '''# Scale every value by the factor given.
def scale(values, factor)
  values.map do |v|
    v * factor
  end
end
'''),
}


@pytest.mark.parametrize("language", sorted(MULTI))
def test_every_language_builds_and_reads_back(tmp_path, language):
    filename, text = MULTI[language]
    write(tmp_path / "src" / filename, text)
    manifest = build_corpus(CorpusSettings(language=language, source_dir=str(tmp_path / "src"),
                                           split_fractions=(0.0, 0.0, 1.0)), tmp_path / "out", progress=False)
    assert manifest["counts"]["splits"]["test"] == 1
    task = read_task(tmp_path / "out", language=language, split="test")
    assert task.examples[0].query == "Scale every value by the factor given."
    assert "Scale every value" not in task.examples[0].code


def test_near_duplicates_by_token_set_jaccard():
    a = ["def", "f", "(", "x", ")", "return", "x", "+", "1"]
    b = ["def", "g", "(", "x", ")", "return", "x", "+", "1"]   # 5 of 6 word tokens shared: 5/7 < 0.8
    c = ["def", "f", "(", "x", ")", "return", "x", "+", "1", ";"]  # the same word set as a
    keep = near_duplicate_keep_mask([a, b, c], threshold=0.8)
    assert keep.tolist() == [True, True, False]
    assert near_duplicate_keep_mask([a, b], threshold=0.7).tolist() == [True, True]   # 4/6 = 0.67
    assert near_duplicate_keep_mask([a, b], threshold=0.6).tolist() == [True, False]


def test_empty_corpus_after_filtering_is_an_error(tmp_path):
    write(tmp_path / "src" / "tiny.py", 'def f(x):\n    """Too short to keep here."""\n    return x\n')
    with pytest.raises(DataError, match=r"no functions left after filtering in .*src.*short_code"):
        build_corpus(CorpusSettings(source_dir=str(tmp_path / "src")), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing half-built is left behind


def test_directory_without_source_files_is_an_error(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"no ruby source files \(\.rb\) under .*src"):
        build_corpus(CorpusSettings(language="ruby", source_dir=str(tmp_path / "src")), tmp_path / "out",
                     progress=False)


def test_missing_source_directory_and_unknown_language(tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        build_corpus(CorpusSettings(source_dir=str(tmp_path / "nope")), tmp_path / "out", progress=False)
    with pytest.raises(UserError, match="unknown language 'kotlin'"):
        build_corpus(CorpusSettings(language="kotlin", source_dir=str(tmp_path)), tmp_path / "out",
                     progress=False)


def test_builtin_corpus_is_the_standard_library_and_is_cached():
    directory, manifest = cached_corpus(CorpusSettings(), progress=False)
    assert manifest["source"]["name"].startswith("python-stdlib-")
    assert min(manifest["counts"]["splits"].values()) > 100
    again, manifest_again = cached_corpus(CorpusSettings(), progress=False)
    assert again == directory and manifest_again == manifest
    # Splits are disjoint by file.
    paths = {split: {r["path"] for r in read_split(directory, "python", split)} for split in ("train", "test")}
    assert not paths["train"] & paths["test"]
