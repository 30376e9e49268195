"""`codebert-heads evaluate` end to end, the config schema, and the command line's help and errors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CODES, QUERIES
from scipy.stats import rankdata

from experiments.cli import main
from experiments.config import ConfigError, load_config, to_plain


def run_cli(*args) -> int:
    return main(["evaluate", *map(str, args)])


def test_evaluate_writes_metrics_and_per_query_ranks_that_check_out(tmp_path, pairs_file, tiny_bert_dir):
    out = tmp_path / "run"
    assert run_cli(f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"output_dir={out}",
                   "model.batch_size=5", "progress=false") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    per_query = pd.read_csv(out / "per_query.csv")
    assert list(per_query.columns) == ["query_id", "rr", "rank"]
    assert per_query["query_id"].tolist() == [f"q{i}" for i in range(12)]
    for key in ("mrr", "recall_at_1", "recall_at_5", "recall_at_10", "protocol", "n_queries", "model",
                "corpus_hash", "seed", "versions", "wall_time_s"):
        assert key in metrics
    assert metrics["protocol"] == "whole_pool" and metrics["n_queries"] == 12
    assert metrics["mrr"] == pytest.approx(per_query["rr"].mean())
    assert metrics["recall_at_5"] == pytest.approx((per_query["rank"] <= 5).mean())
    assert (out / "per_query_csn.csv").is_file()

    # Independent ranks: the model run directly, one text at a time, mean-pooled and ranked by scipy.
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(tiny_bert_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)

    def embed(text, max_length):
        batch = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            vector = model(**batch).last_hidden_state[0].mean(0)
        return (vector / vector.norm()).numpy()

    q = np.stack([embed(t, 128) for t in QUERIES])
    c = np.stack([embed(t, 256) for t in CODES])
    scores = q @ c.T
    expected = [int(rankdata(-scores[i], method="max")[i]) for i in range(12)]
    assert per_query["rank"].tolist() == expected


def test_same_seed_same_numbers(tmp_path, pairs_file, tiny_roberta_dir):
    for name in ("a", "b"):
        assert run_cli(f"data.path={pairs_file}", f"model.name={tiny_roberta_dir}", f"output_dir={tmp_path / name}",
                       "data.max_queries=8", "seed=3", "progress=false") == 0
    assert (tmp_path / "a" / "per_query.csv").read_text() == (tmp_path / "b" / "per_query.csv").read_text()


def test_an_interrupted_rerun_keeps_the_finished_run_and_leaves_nothing_half_done(tmp_path, pairs_file,
                                                                                  tiny_bert_dir, monkeypatch):
    out = tmp_path / "run"
    args = [f"data.path={pairs_file}", f"model.name={tiny_bert_dir}", f"output_dir={out}", "progress=false"]
    assert run_cli(*args) == 0
    finished = {path.name: path.read_bytes() for path in out.iterdir()}
    assert "metrics.json" in finished

    import heads.evaluation as evaluation

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "atomic_write_csv", interrupted)  # dies while writing the new results
    assert run_cli(*args) == 130
    # The finished run is whole, as it was; no new file is beside it, and no work folder or temporary file is left.
    assert {path.name: path.read_bytes() for path in out.iterdir()} == finished
    assert not [path for path in tmp_path.rglob(".*") if path.name != ".cache"], "a work or temporary file is left"


def test_builtin_model_on_the_builtin_corpus(tmp_path):
    """The defaults end to end, on a sample: a real retriever scores well above chance, and below the
    near-perfect score a docstring left inside the code would give."""
    out = tmp_path / "run"
    assert run_cli("data.max_queries=120", f"output_dir={out}", "progress=false") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert metrics["corpus_hash"].startswith("sha256:")
    assert 0.4 < metrics["mrr"] < 0.95, metrics["mrr"]
    assert metrics["protocols"]["csn"]["candidates_per_query"] == 120


def test_bad_config_fails_before_loading_anything(capsys):
    assert main(["evaluate", "model.nmae=x"]) == 2
    err = capsys.readouterr().err
    assert "Key 'nmae' not in 'ModelConfig'" in err and "full_key: model.nmae" in err
    assert main(["evaluate", "model.batch_size=many"]) == 2
    assert "model.batch_size" in capsys.readouterr().err
    assert main(["evaluate", "eval.protocol=mrr"]) == 2
    assert "expected one of [whole_pool, csn, rerank]" in capsys.readouterr().err


def test_config_precedence_and_none_from_sweeps(tmp_path):
    file = tmp_path / "mine.yaml"
    file.write_text("model:\n  batch_size: 7\n  max_code_length: 99\n")
    cfg = load_config("evaluate", [str(file)], ["model.batch_size=9", "model.normalize=None", "--seed=4"])
    assert cfg.model.batch_size == 9 and cfg.model.max_code_length == 99
    assert cfg.model.normalize is None and cfg.seed == 4
    assert to_plain(cfg)["eval"]["protocol"] == "whole_pool"


def test_config_file_errors_name_the_file(tmp_path):
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("model:\n  layers: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: Key 'layers' not in 'ModelConfig'"):
        load_config("evaluate", [str(bad_key)])
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: cannot be read as YAML"):
        load_config("evaluate", [str(broken)])
    with pytest.raises(ConfigError, match="config file 'nope' not found"):
        load_config("evaluate", ["nope"])
    with pytest.raises(ConfigError, match=r"corpus.split_fractions=\[0.5, 0.6, 0.1\]"):
        load_config("corpus", [], ["corpus.split_fractions=[0.5,0.6,0.1]"])


def test_console_script_help_lists_options_with_defaults():
    exe = Path(sys.executable).parent / "codebert-heads"
    top = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    assert "evaluate" in top and "corpus" in top
    sub = subprocess.run([str(exe), "evaluate", "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("data.path=builtin", "model.name=builtin", "model.max_code_length=256",
                   "eval.protocol=whole_pool", "eval.rank_cutoff=1000", "seed=0"):
        assert option in sub
    bad = subprocess.run([str(exe), "evaluate", "modle.name=x"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Did you mean: 'model'" in bad.stderr
