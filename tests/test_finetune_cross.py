"""`codebert-heads finetune model.kind=cross_encoder`: a planted task learnt by a fresh head, beating its untrained
start; the model folder scored by transformers alone in CodeBERT's protocol; negatives; resume; bad input."""
import json
import random

import numpy as np
import pandas as pd
import pytest
import torch
from test_finetune import TRAIN, Interrupt, planted, torch_threads  # noqa: F401 (fixtures)

from codesearch.loading import load_data
from experiments.cli import main
from experiments.config import load_config
from experiments.finetune import run_finetune
from heads.models import load_encoder
from training.cross_data import code_keys, random_negatives
from training.record import FinetuneRecord

CROSS = ["model.kind=cross_encoder", "eval.protocol=csn", "eval.csn_batch_size=12", "model.max_pair_length=48",
         *TRAIN]


def test_random_negatives_are_another_code_and_seeded():
    gold = np.array([0, 1, 2, 2, 3])
    keys = code_keys(["a", "b", "c", "a"])           # code 3 is code 0's text
    negatives = random_negatives(gold, keys, np.random.default_rng(0))
    assert (keys[negatives] != keys[gold]).all() and set(negatives) <= set(gold)
    assert negatives.tolist() == random_negatives(gold, keys, np.random.default_rng(0)).tolist()


def csn_ranks_by_transformers(folder, queries, codes, batch_size, max_length):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    ranks = []
    for start in range(0, len(queries) - len(queries) % batch_size, batch_size):
        batch_codes = codes[start:start + batch_size]
        for i in range(batch_size):
            encoded = tokenizer([queries[start + i]] * batch_size, batch_codes, truncation="only_second",
                                max_length=max_length, padding=True, return_tensors="pt")
            with torch.no_grad():
                scores = model(**encoded).logits[:, 1].numpy()
            ranks.append(int(np.sum(scores >= scores[i])))
    return np.array(ranks)


KEYS = ("apple river cloud stone paper window garden engine silver forest ocean button candle pencil rocket bridge "
        "castle dragon mirror planet").split()
NOISE = "value list item data result number string buffer index count".split()


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    """Pairs folders whose query and code share one English word: learnt in a few steps by a pre-trained encoder
    (a tiny random one learns no comparison across the pair in a test's time)."""
    root, rng = tmp_path_factory.mktemp("named"), random.Random(0)

    def pair(key):
        return {"query": f"return the {key} of the {rng.choice(NOISE)}",
                "code": f"def get_{key}(obj):\n    {rng.choice(NOISE)} = obj.{key}\n    return {rng.choice(NOISE)}"}
    for split, repeats in (("train", 4), ("valid", 1), ("test", 1)):
        (root / split).mkdir()
        (root / split / "pairs.jsonl").write_text("".join(json.dumps({**pair(k), "id": f"{split}{i}"}) + "\n"
                                                          for i, k in enumerate(KEYS * repeats)))
    return root


def test_a_fresh_head_learns_a_planted_task_and_the_folder_scores_the_same_in_transformers(tmp_path, named):
    out = tmp_path / "tuned"
    assert main(["finetune", f"data.path={named}", "model.name=builtin", f"output_dir={out}", "finetune.epochs=3",
                 "finetune.lr=1e-4", "finetune.batch_size=16", "model.kind=cross_encoder", "eval.protocol=csn",
                 "eval.csn_batch_size=10", "model.max_pair_length=48", "eval.retriever=builtin", "threads=2",
                 "progress=false"]) == 0
    record = FinetuneRecord.read(out)
    assert record.kind == "cross_encoder" and record.n_train_pairs == 80 and record.n_train_examples == 160
    assert record.steps == 3 * (160 // 16) and "random other code" in record.negatives
    assert record.test_mrr > 0.9 and record.best_val_mrr > record.start_val_mrr + 0.2   # chance is about 0.29
    assert record.retriever["summary"]["protocol"] == "csn" and record.retriever["summary"]["n_queries"] == 20
    card = (out / "model" / "README.md").read_text()
    assert "A cross-encoder fine-tuned" in card and "untrained start" in card and "Beside it, the retriever" in card
    # The model folder, by transformers alone, in CodeBERT's protocol: the run's per-query ranks and MRR.
    test = load_data(load_config("evaluate", None, [f"data.path={named}"]).data, None, 0, False).task
    ranks = csn_ranks_by_transformers(out / "model", test.queries, [test.candidates[g] for g in test.gold], 10, 48)
    assert pd.read_csv(out / "per_query.csv")["rank"].tolist() == ranks.tolist()
    assert record.test_mrr == pytest.approx(np.mean(1 / ranks), abs=1e-12)
    assert load_encoder(str(out / "model")).kind == "cross_encoder"


def test_hard_negatives_and_resume(tmp_path, planted):
    model, data = planted
    settings = [f"data.path={data}", f"model.name={model}", "finetune.epochs=1", "finetune.checkpoint_every_n_steps=5",
                f"finetune.negatives_from={model}", "finetune.hard_negatives_k=3", *CROSS]

    def config(name, *more):
        return load_config("finetune", None, [*settings, f"output_dir={tmp_path / name}", *more])

    with pytest.raises(KeyboardInterrupt):
        run_finetune(config("resumed"), callbacks=(Interrupt(7),))
    run_finetune(config("resumed", "resume=true"))
    run_finetune(config("straight"))
    resumed, straight = FinetuneRecord.read(tmp_path / "resumed"), FinetuneRecord.read(tmp_path / "straight")
    assert resumed.resumed_from_step == 5 and "top 3 of" in straight.negatives
    a, b = (load_encoder(str(tmp_path / name / "model")).model.state_dict() for name in ("resumed", "straight"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert resumed.test_mrr == pytest.approx(straight.test_mrr, abs=1e-6)


@pytest.mark.parametrize("overrides, expected", [
    (["eval.csn_batch_size=30"], "the valid sample has 24 queries"),
    (["model.kind=bi_encoder", "finetune.negatives_from=builtin"], "hard negatives are a cross-encoder's"),
    (["finetune.hard_negatives_k=0"], "finetune.hard_negatives_k=0"),
])
def test_bad_cross_settings_fail_before_training(overrides, expected, tmp_path, planted, capsys):
    model, data = planted
    assert main(["finetune", f"data.path={data}", f"model.name={model}", f"output_dir={tmp_path / 'run'}", *CROSS,
                 *overrides]) == 2
    assert expected in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.ckpt"))
