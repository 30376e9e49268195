"""Each on-disk form of CodeSearchNet in its real layout, and each bad input with the message it gets."""
import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codesearch.errors import DataError, UserError
from codesearch.readers import read_task


def csn_record(i: int, language: str = "python", partition: str = "test") -> dict:
    code = (f'def fetch_{i}(url, retries=3):\n    """Fetch page {i} from the network.\n\n    Args:\n'
            f'        url: where\n    """\n    for _ in range(retries):\n        return get(url)\n')
    return {
        "repo": "org/project", "path": f"project/net_{i}.py", "func_name": f"fetch_{i}",
        "original_string": code, "language": language, "code": code,
        "code_tokens": ["def", f"fetch_{i}", "(", "url", ")"],
        "docstring": f"Fetch page {i} from the network.\n\nArgs:\n    url: where",
        "docstring_tokens": ["Fetch", "page", str(i), "from", "the", "network", "."],
        "sha": "0" * 40, "url": f"https://github.com/org/project/blob/{'0' * 40}/project/net_{i}.py#L1-L8",
        "partition": partition,
    }


def write_jsonl_gz(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def write_jsonl(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))


# ---------------------------------------------------------------- the original release

def test_original_release_layout_shards_in_numeric_order(tmp_path):
    test_dir = tmp_path / "python" / "final" / "jsonl" / "test"
    write_jsonl_gz(test_dir / "python_test_0.jsonl.gz", [csn_record(0), csn_record(1)])
    write_jsonl_gz(test_dir / "python_test_10.jsonl.gz", [csn_record(10)])
    write_jsonl_gz(test_dir / "python_test_2.jsonl.gz", [csn_record(2)])
    write_jsonl_gz(tmp_path / "python" / "final" / "jsonl" / "train" / "python_train_0.jsonl.gz",
                   [csn_record(99, partition="train")])
    task = read_task(tmp_path, language="python", split="test")
    assert task.form == "csn"
    assert [e.func_name for e in task.examples] == ["fetch_0", "fetch_1", "fetch_2", "fetch_10"]
    first = task.examples[0]
    assert first.query == "Fetch page 0 from the network."          # the first paragraph only
    assert first.code == "def fetch_0(url, retries=3):\n    for _ in range(retries):\n        return get(url)\n"
    assert first.id == csn_record(0)["url"]
    assert task.gold == [0, 1, 2, 3] and task.candidates[2] == task.examples[2].code
    # Pointing at the language folder or at the split folder reads the same.
    assert read_task(tmp_path / "python", split="test").query_ids == task.query_ids
    assert read_task(test_dir, split="test").query_ids == task.query_ids


def test_original_release_of_another_language_says_so(tmp_path):
    write_jsonl_gz(tmp_path / "final" / "jsonl" / "test" / "java_test_0.jsonl.gz", [csn_record(0, "java")])
    with pytest.raises(DataError, match="it holds java: set data.language"):
        read_task(tmp_path, language="python", split="test")


# ---------------------------------------------------------------- the Hugging Face copy

def hf_record(i: int, split: str) -> dict:
    r = csn_record(i, partition=split)
    return {
        "repository_name": r["repo"], "func_path_in_repository": r["path"], "func_name": r["func_name"],
        "whole_func_string": r["original_string"], "language": "python", "func_code_string": r["code"],
        "func_code_tokens": r["code_tokens"], "func_documentation_string": r["docstring"],
        "func_documentation_tokens": r["docstring_tokens"], "split_name": split, "func_code_url": r["url"],
    }


def test_hugging_face_parquet_by_split_name(tmp_path):
    rows = [hf_record(0, "train"), hf_record(1, "test"), hf_record(2, "valid"), hf_record(3, "test")]
    folder = tmp_path / "code_search_net" / "python"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "data.parquet")
    task = read_task(tmp_path / "code_search_net", language="python", split="test")
    assert task.form == "hf"
    assert [e.func_name for e in task.examples] == ["fetch_1", "fetch_3"]
    assert task.examples[0].query == "Fetch page 1 from the network."
    assert '"""' not in task.examples[0].code
    assert read_task(tmp_path / "code_search_net", split="valid").examples[0].func_name == "fetch_2"


def test_hugging_face_jsonl_with_split_in_file_names(tmp_path):
    write_jsonl(tmp_path / "hf" / "test.jsonl", [hf_record(5, "test")])
    write_jsonl(tmp_path / "hf" / "train.jsonl", [hf_record(6, "train")])
    task = read_task(tmp_path / "hf", split="test")
    assert [e.func_name for e in task.examples] == ["fetch_5"]


# ---------------------------------------------------------------- the cleaned CodeXGLUE / GraphCodeBERT set

def test_codexglue_queries_and_codebase(tmp_path):
    folder = tmp_path / "dataset" / "python"
    codebase = [{"url": f"u{i}", "idx": i, "code_tokens": ["def", f"f{i}", "(", ")", ":", "return", str(i)],
                 "docstring_tokens": ["doc", str(i)]} for i in range(5)]
    queries = [{"url": "u3", "idx": 0, "code_tokens": ["x"], "docstring_tokens": ["return", "three"]},
               {"url": "u1", "idx": 1, "code_tokens": ["x"], "docstring_tokens": ["return", "one"]}]
    write_jsonl(folder / "codebase.jsonl", codebase)
    write_jsonl(folder / "test.jsonl", queries)
    task = read_task(tmp_path / "dataset", language="python", split="test")
    assert task.form == "codexglue" and not task.paired
    assert task.queries == ["return three", "return one"]        # tokens joined, as GraphCodeBERT does
    assert len(task.candidates) == 5 and task.candidates[3] == "def f3 ( ) : return 3"
    assert task.gold == [3, 1]
    # Sampling queries keeps the whole codebase.
    assert len(task.sample(1, seed=0).candidates) == 5


def test_codexglue_given_by_its_query_file(tmp_path):
    # Cleaned records often keep CodeSearchNet's fields too: only the codebase beside them tells the form.
    codebase = [{"url": f"u{i}", "code_tokens": ["def", f"f{i}"], "docstring_tokens": ["d"], "docstring": "d",
                 "code": f"def f{i}(): pass"} for i in range(3)] + [
                {"url": "u1", "code_tokens": ["copy"], "docstring_tokens": ["d"]}]   # a url's second copy
    write_jsonl(tmp_path / "codebase.jsonl", codebase)
    write_jsonl(tmp_path / "test.jsonl", [{"url": "u1", "code_tokens": ["x"], "docstring_tokens": ["get", "one"],
                                           "docstring": "Get one.", "code": "def f1(): pass"}])
    task = read_task(tmp_path / "test.jsonl", split="test")
    assert task.form == "codexglue" and task.queries == ["get one"] and task.gold == [1]
    assert len(task.candidates) == 3 and task.notes == {"repeated_codebase_urls_dropped": 1}
    with pytest.raises(DataError, match=r"holds the test queries but data.split=valid"):
        read_task(tmp_path / "test.jsonl", split="valid")


def test_codexglue_query_without_candidate(tmp_path):
    write_jsonl(tmp_path / "codebase.jsonl", [{"url": "a", "code_tokens": ["x"], "docstring_tokens": ["d"]}])
    write_jsonl(tmp_path / "test.jsonl", [{"url": "zzz", "code_tokens": ["x"], "docstring_tokens": ["d"]}])
    with pytest.raises(DataError, match=r"test.jsonl:1: url 'zzz' has no candidate"):
        read_task(tmp_path, split="test")


# ---------------------------------------------------------------- plain pairs

@pytest.mark.parametrize("form", ["hf", "pairs"])
def test_a_split_folder_layout_is_read_by_its_records_schema(tmp_path, form):
    for split in ("train", "test"):
        rows = ([hf_record(i, split) for i in range(3)] if form == "hf" else
                [{"query": f"{split} query {i}", "code": f"def {split}_{i}(): pass"} for i in range(3)])
        write_jsonl(tmp_path / split / "part.jsonl", rows)
    task = read_task(tmp_path, split="test")
    assert task.form == form and len(task) == 3
    assert all(e.split in ("test", "") for e in task.examples)
    if form == "pairs":
        assert task.queries[0] == "test query 0"


def test_a_csn_file_is_read_for_the_split_asked(tmp_path):
    shard = tmp_path / "mixed.jsonl.gz"
    write_jsonl_gz(shard, [csn_record(0, partition="test"), csn_record(1, partition="valid")])
    assert [e.func_name for e in read_task(shard, split="valid").examples] == ["fetch_1"]
    with pytest.raises(DataError, match="no train records"):
        read_task(shard, split="train")


def test_a_byte_order_mark_is_no_error(tmp_path):
    rows = [{"query": f"q {i}", "code": f"def f{i}(): pass"} for i in range(2)]
    (tmp_path / "bom.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8-sig")
    assert read_task(tmp_path / "bom.jsonl").queries == ["q 0", "q 1"]
    with open(tmp_path / "bom.csv", "w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.DictWriter(handle, fieldnames=["query", "code"])
        writer.writeheader()
        writer.writerows(rows)
    assert read_task(tmp_path / "bom.csv").queries == ["q 0", "q 1"]


def test_pairs_jsonl_and_csv_share_duplicate_code(tmp_path):
    rows = [{"query": "sum a list", "code": "def s(x): return sum(x)", "language": "python", "domain": "math"},
            {"query": "add the numbers", "code": "def s(x): return sum(x)", "language": "python"},
            {"query": "reverse a string", "code": "def r(s): return s[::-1]", "language": "python"}]
    write_jsonl(tmp_path / "pairs.jsonl", rows)
    with open(tmp_path / "pairs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["query", "code", "language", "domain"])
        writer.writeheader()
        writer.writerows(rows)
    for name in ("pairs.jsonl", "pairs.csv"):
        task = read_task(tmp_path / name)
        assert task.form == "pairs"
        assert task.candidates == ["def s(x): return sum(x)", "def r(s): return s[::-1]"]
        assert task.gold == [0, 0, 1]
        assert task.examples[0].domain == "math"


def test_sampling_a_paired_task_shrinks_the_pool_to_the_chosen_codes(tmp_path):
    write_jsonl(tmp_path / "p.jsonl", [{"query": f"query {i}", "code": f"code {i}"} for i in range(20)])
    task = read_task(tmp_path / "p.jsonl")
    sample = task.sample(5, seed=1)
    assert len(sample) == 5 and len(sample.candidates) == 5
    for example, gold in zip(sample.examples, sample.gold):
        assert sample.candidates[gold] == example.code
    assert sample.query_ids == task.sample(5, seed=1).query_ids
    assert sample.query_ids != task.sample(5, seed=2).query_ids


# ---------------------------------------------------------------- bad input

def test_malformed_json_names_file_and_line(tmp_path):
    write_jsonl(tmp_path / "p.jsonl", [{"query": "a b c", "code": "x"}, {"query": "d e f", "code": "y"},
                                       '{"query": "broken", "code": '])
    with pytest.raises(DataError, match=r"p\.jsonl:3: malformed JSON"):
        read_task(tmp_path / "p.jsonl")


def test_missing_field_names_file_line_field_and_form(tmp_path):
    test_dir = tmp_path / "python" / "final" / "jsonl" / "test"
    bad = csn_record(1)
    del bad["code"]
    write_jsonl_gz(test_dir / "python_test_0.jsonl.gz", [csn_record(0), bad])
    with pytest.raises(DataError, match=r"python_test_0\.jsonl\.gz:2: missing field 'code' "
                                        r"\(CodeSearchNet original release form\)"):
        read_task(tmp_path, split="test")


def test_record_of_no_known_schema_lists_the_schemas_tried(tmp_path):
    write_jsonl(tmp_path / "x.jsonl", [{"title": "a", "body": "b"}])
    with pytest.raises(DataError) as info:
        read_task(tmp_path / "x.jsonl")
    message = str(info.value)
    assert "x.jsonl:1: record matches none of the known schemas" in message
    for needed in ("docstring, code", "func_documentation_string, func_code_string",
                   "docstring_tokens, code_tokens", "query, code", "['body', 'title']"):
        assert needed in message


def test_unknown_language_in_a_pairs_file(tmp_path):
    write_jsonl(tmp_path / "p.jsonl", [{"query": "a b c", "code": "x", "language": "cobol"}])
    with pytest.raises(DataError, match=r"p\.jsonl:1: unknown language 'cobol'"):
        read_task(tmp_path / "p.jsonl")
    with pytest.raises(UserError, match="unknown language 'cobol'"):
        read_task(tmp_path / "p.jsonl", language="cobol")


def test_empty_query_and_other_bad_paths(tmp_path):
    write_jsonl(tmp_path / "p.jsonl", [{"query": "   ", "code": "x"}])
    with pytest.raises(DataError, match=r"p\.jsonl:1: empty query"):
        read_task(tmp_path / "p.jsonl")
    with pytest.raises(DataError, match="no such file or directory"):
        read_task(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        read_task(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no corpus files found"):
        read_task(tmp_path / "empty")
    with pytest.raises(DataError, match="unknown split 'dev'"):
        read_task(tmp_path / "p.jsonl", split="dev")
