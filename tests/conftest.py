import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import make_tiny_bert, make_tiny_cross_encoder, make_tiny_roberta  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Corpora built by the tests go to a cache of their own, never the user's; no hub access."""
    cache = tmp_path_factory.mktemp("cache")
    os.environ["CODEBERT_HEADS_CACHE"] = str(cache)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["WANDB_MODE"] = "disabled"  # tests of W&B logging ask for offline themselves
    yield cache


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path, monkeypatch):
    """Each test runs in a folder of its own: default run folders (runs/...) never land in the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory) -> Path:
    return make_tiny_roberta(tmp_path_factory.mktemp("models") / "tiny-roberta")


@pytest.fixture(scope="session")
def tiny_cross_dir(tmp_path_factory) -> Path:
    """A tiny BERT cross-encoder (two labels, random weights)."""
    return make_tiny_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-cross")


@pytest.fixture(scope="session")
def builtin_encoder():
    from heads.models import load_encoder

    return load_encoder("builtin")


QUERIES = ["sum the values of a list", "reverse the characters of a string", "read a file into lines",
           "sort records by date", "count words in a text", "parse an integer from text",
           "join paths together", "compute the mean of numbers", "remove duplicates from a list",
           "check whether a number is prime", "convert celsius to fahrenheit", "merge two dictionaries"]
CODES = ["def f(xs): return sum(xs)", "def f(s): return s[::-1]", "def f(p): return open(p).read().split()",
         "def f(r): return sorted(r, key=lambda x: x.date)", "def f(t): return len(t.split())",
         "def f(t): return int(t)", "def f(a, b): return a + '/' + b", "def f(xs): return sum(xs) / len(xs)",
         "def f(xs): return list(dict.fromkeys(xs))", "def f(n): return all(n % d for d in range(2, n))",
         "def f(c): return c * 9 / 5 + 32", "def f(a, b): return {**a, **b}"]


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    import json

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"query": q, "code": c, "id": f"q{i}"}) + "\n"
                            for i, (q, c) in enumerate(zip(QUERIES, CODES))))
    return path


@pytest.fixture
def csn_dir(tmp_path) -> Path:
    """A small corpus in the original release's layout, with a test split and a held-out valid split."""
    import gzip
    import json

    root = tmp_path / "csn"
    for split, pairs in (("test", list(zip(QUERIES, CODES))), ("valid", list(zip(QUERIES[::-1], CODES[::-1]))[:6])):
        folder = root / "python" / "final" / "jsonl" / split
        folder.mkdir(parents=True)
        with gzip.open(folder / f"python_{split}_0.jsonl.gz", "wt") as handle:
            for i, (query, code) in enumerate(pairs):
                body = code.replace("def f(", f"def f{i}(").replace("): return", "):\n    return")
                head, rest = body.split("\n", 1)
                full = f'{head}\n    """{query.capitalize()}."""\n{rest}\n'
                handle.write(json.dumps({
                    "repo": "r", "path": f"m{i}.py", "func_name": f"f{i}", "original_string": full,
                    "language": "python", "code": full, "code_tokens": [], "docstring": query.capitalize() + ".",
                    "docstring_tokens": [], "sha": "", "url": f"{split}/{i}", "partition": split}) + "\n")
    return root
