"""`codebert-heads finetune`: the loss by hand, a planted task learnt end to end, resume, and bad input."""
import json
import random

import numpy as np
import pytest
import torch
from pytorch_lightning.callbacks import Callback
from tiny_models import make_tiny_bert

from experiments.cli import main
from experiments.config import load_config
from experiments.finetune import run_finetune
from heads.models import load_encoder
from training.loss import in_batch_loss
from training.record import FinetuneRecord

KEYS = [f"key{i}" for i in range(48)]
QUERY_WORDS = [f"ask{i}" for i in range(20)]
CODE_WORDS = [f"var{i}" for i in range(20)]
# A tiny model at a rate for random init (the default 2e-5 is for pre-trained encoders); one thread is the fastest
# for a model this small, on a machine others share.
TRAIN = ["finetune.batch_size=16", "finetune.lr=5e-3", "finetune.temperature=0.1", "threads=1", "model.batch_size=16",
         "model.max_query_length=16", "model.max_code_length=32", "progress=false"]


@pytest.fixture(autouse=True)
def torch_threads():
    """`threads=1` sets the process's torch threads: put them back for the tests that follow."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def pair(key: str, rng: random.Random) -> dict:
    """A query and its code share one rare word; the rest is noise drawn from vocabularies of their own."""
    query = rng.sample(QUERY_WORDS, 5)
    query.insert(rng.randrange(6), key)
    code = rng.sample(CODE_WORDS, 6)
    code.insert(rng.randrange(7), key)
    return {"query": " ".join(query), "code": "def f ( ) : return " + " ".join(code)}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A tiny random-init BERT knowing the task's words as tokens, and pairs folders train/, valid/, test/."""
    root = tmp_path_factory.mktemp("planted")
    model = make_tiny_bert(root / "model", words=tuple(KEYS + QUERY_WORDS + CODE_WORDS))
    rng = random.Random(0)
    splits = {"train": [pair(k, rng) for k in KEYS for _ in range(8)],
              "valid": [pair(k, rng) for k in KEYS[::2]], "test": [pair(k, rng) for k in KEYS]}
    for split, pairs in splits.items():
        (root / "data" / split).mkdir(parents=True)
        (root / "data" / split / "pairs.jsonl").write_text(
            "".join(json.dumps({**p, "id": f"{split}{i}"}) + "\n" for i, p in enumerate(pairs)))
    return model, root / "data"


def test_loss_by_hand_with_a_duplicate_code_left_out_of_the_negatives():
    queries = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 2.0]])
    codes = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    keys = torch.tensor([7, 3, 7])   # pairs 0 and 2 have the same code text
    scale = 2.0
    s = scale * queries.numpy() @ codes.numpy().T
    # Query 0 against codes 0 and 1 (code 2 is its own code again), query 1 against all, query 2 against 1 and 2.
    by_hand = np.mean([np.log(np.exp(s[0, 0]) + np.exp(s[0, 1])) - s[0, 0],
                       np.log(np.exp(s[1]).sum()) - s[1, 1],
                       np.log(np.exp(s[2, 1]) + np.exp(s[2, 2])) - s[2, 2]])
    assert float(in_batch_loss(queries, codes, keys, scale)) == pytest.approx(by_hand, rel=1e-6)
    # Code to query: code 0 against queries 0 and 1, code 2 against 1 and 2; the symmetric loss is the mean.
    reverse = np.mean([np.log(np.exp(s[0, 0]) + np.exp(s[1, 0])) - s[0, 0],
                       np.log(np.exp(s[:, 1]).sum()) - s[1, 1],
                       np.log(np.exp(s[1, 2]) + np.exp(s[2, 2])) - s[2, 2]])
    symmetric = float(in_batch_loss(queries, codes, keys, scale, symmetric=True))
    assert symmetric == pytest.approx((by_hand + reverse) / 2, rel=1e-6)
    # Without the duplicate, every other code is a negative: plain cross-entropy.
    plain = torch.nn.functional.cross_entropy(scale * queries @ codes.T, torch.arange(3))
    assert float(in_batch_loss(queries, codes, torch.arange(3), scale)) == pytest.approx(float(plain))


def mrr(folder) -> float:
    return json.loads((folder / "metrics.json").read_text())["mrr"]


def test_finetune_learns_a_planted_task_and_its_model_folder_evaluates_the_same(tmp_path, planted, capsys):
    model, data = planted
    common = [f"data.path={data}", *TRAIN[-5:]]
    assert main(["evaluate", f"model.name={model}", f"output_dir={tmp_path / 'before'}", *common]) == 0
    out = tmp_path / "tuned"
    assert main(["finetune", f"data.path={data}", f"model.name={model}", f"output_dir={out}", "finetune.epochs=12",
                 *TRAIN]) == 0
    assert f"model.name={out / 'model'}" in capsys.readouterr().out
    record = FinetuneRecord.read(out)
    before = mrr(tmp_path / "before")
    assert before < 0.3 and record.test_mrr > 0.8          # chance is about 0.09 for 48 candidates
    assert record.steps == 12 * (384 // 16) and record.epochs_run == 12 and record.n_train_pairs == 384
    assert record.recipe["pooling"] == "mean" and record.recipe["normalize"] is True
    assert record.hyperparameters["scale"] == pytest.approx(10.0)
    epochs = (out / "metrics.csv").read_text().splitlines()
    assert epochs[0] == "epoch,step,train_loss,val_mrr,lr" and len(epochs) == 13
    assert record.best_val_mrr == max(float(line.split(",")[3]) for line in epochs[1:])
    assert {"run.json", "config.yaml", "metrics.csv", "per_query.csv", "model"} <= {p.name for p in out.iterdir()}
    assert not (out / "checkpoints").exists()
    card = (out / "model" / "README.md").read_text()
    assert f"best epoch {record.best_epoch}" in card and f"{record.test_mrr:.4f}" in card and str(model) in card

    # The folder loads as any model, pools as it was trained, and `evaluate` gives the test MRR of the run.
    tuned = load_encoder(str(out / "model"))
    assert (tuned.recipe.pooling, tuned.recipe.normalize) == ("mean", True)
    assert tuned.info.revision == record.model_revision != "unknown"
    assert load_encoder(str(out / "model"), pooling="cls").recipe.pooling == "cls"   # an explicit setting wins
    assert main(["evaluate", f"model.name={out / 'model'}", f"output_dir={tmp_path / 'after'}", *common]) == 0
    assert mrr(tmp_path / "after") == pytest.approx(record.test_mrr, abs=1e-12)


class Interrupt(Callback):
    """Ctrl-C once the run has taken `step` optimizer steps."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *_args):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, planted, capsys):
    model, data = planted
    settings = [f"data.path={data}", f"model.name={model}", "finetune.epochs=2", "finetune.checkpoint_every_n_steps=3",
                *TRAIN]

    def config(name, *more):
        return load_config("finetune", None, [*settings, f"output_dir={tmp_path / name}", *more])

    # 24 steps an epoch: stopped two steps after the end of epoch 0 (its checkpoint written after its validation),
    # resumed and stopped again two steps after the checkpoint of step 27 (mid-epoch), resumed to the end.
    with pytest.raises(KeyboardInterrupt):
        run_finetune(config("resumed"), callbacks=(Interrupt(26),))
    work = tmp_path / ".resumed.partial"
    assert (work / "checkpoints" / "last.ckpt").is_file() and not (tmp_path / "resumed").exists()
    with pytest.raises(KeyboardInterrupt):
        run_finetune(config("resumed", "resume=true"), callbacks=(Interrupt(29),))
    run_finetune(config("resumed", "resume=true"))
    run_finetune(config("straight"))
    resumed, straight = FinetuneRecord.read(tmp_path / "resumed"), FinetuneRecord.read(tmp_path / "straight")
    assert (resumed.resumed_from_step, straight.resumed_from_step) == (27, 0)
    assert resumed.steps == straight.steps == 48 and resumed.test_mrr == pytest.approx(straight.test_mrr, abs=1e-6)
    a, b = (load_encoder(str(tmp_path / name / "model")).model.state_dict() for name in ("resumed", "straight"))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert (tmp_path / "resumed" / "metrics.csv").read_text() == (tmp_path / "straight" / "metrics.csv").read_text()

    # Resuming with other settings is refused, naming them.
    with pytest.raises(KeyboardInterrupt):
        run_finetune(config("other"), callbacks=(Interrupt(5),))
    capsys.readouterr()
    assert main(["finetune", *settings, f"output_dir={tmp_path / 'other'}", "resume=true", "finetune.lr=2e-3"]) == 2
    assert "(differing: finetune.lr)" in capsys.readouterr().err


@pytest.fixture(scope="module")
def no_pooler(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("models") / "no-pooler", pooler=False)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    from transformers import GPT2Config

    folder = tmp_path_factory.mktemp("models") / "gpt2"
    GPT2Config(n_layer=1, n_head=2, n_embd=8).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case, expected", [
    ("no train split", "needs a train split in data.path="),
    ("pairs file", "valid pairs are also train pairs"),
    ("no valid split", "valid pairs are also train pairs"),
    ("train as test", "data.split=train"),
    ("batch larger than the split", "fewer than one batch (finetune.batch_size=400)"),
    ("batch of one", "finetune.batch_size=1:"),
    ("accumulation longer than an epoch", "finetune.accumulate_grad_batches=30"),
    ("pooler that is not there", "model.pooling=pooler"),
    ("unsupported architecture", "'gpt2' model"),
    ("precision", "finetune.precision='64'"),
    ("folder of something else", "is no finished `finetune` run"),
])
def test_bad_input_fails_before_training_naming_the_setting(case, expected, tmp_path, planted, csn_dir, pairs_file,
                                                            no_pooler, gpt2, capsys):
    model, data = planted
    if case == "no valid split":
        data = tmp_path / "partial"
        for split in ("train", "test"):
            (data / split).mkdir(parents=True)
            (data / split / "pairs.jsonl").write_text((planted[1] / split / "pairs.jsonl").read_text())
    args = {"no train split": [f"data.path={csn_dir}"], "pairs file": [f"data.path={pairs_file}"],
            "train as test": ["data.split=train"], "batch larger than the split": ["finetune.batch_size=400"],
            "batch of one": ["finetune.batch_size=1"], "accumulation longer than an epoch":
            ["finetune.accumulate_grad_batches=30"], "pooler that is not there":
            [f"model.name={no_pooler}", "model.pooling=pooler"], "unsupported architecture": [f"model.name={gpt2}"],
            "precision": ["finetune.precision=64"]}.get(case, [])
    out = tmp_path / "run"
    if case == "folder of something else":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    assert main(["finetune", f"data.path={data}", f"model.name={model}", f"output_dir={out}", *TRAIN, *args]) == 2
    assert expected in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.ckpt")) and not (tmp_path / ".run.partial").exists()


def test_one_wandb_run_holds_the_curves_and_the_results(tmp_path, planted):
    model, data = planted
    runs = tmp_path / "runs"
    assert main(["finetune", f"data.path={data}", f"model.name={model}", f"runs_dir={runs}", "wandb.mode=offline",
                 "finetune.epochs=1", *TRAIN]) == 0
    (study,) = runs.iterdir()
    from test_tracking_sweeps import inspect, offline_runs

    (logged,) = offline_runs(study)   # Lightning's logger and the end of the run share one W&B run
    record, summary = inspect(logged)
    (folder,) = (study / "finetune").iterdir()
    assert (record["job_type"], record["run_group"], record["display_name"]) == ("finetune", study.name,
                                                                               f"finetune-{folder.name}")
    finished = FinetuneRecord.read(folder)
    assert summary["summary"]["test/mrr"] == pytest.approx(finished.test_mrr)
    assert summary["summary"]["val/mrr"] == pytest.approx(finished.best_val_mrr)   # logged while training
    assert "train/loss" in summary["summary"] and summary["summary"]["epochs"]["nrows"] == 1
