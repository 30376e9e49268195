"""The fine-tuned model as a folder every command loads (`model.name=<folder>`): weights and tokenizer as
`save_pretrained` writes them, the pooling recipe it was trained with (read by `heads.models.choose_recipe`), and a
model card."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

from codesearch.files import atomic_write_text
from codesearch.runfolder import package_versions
from heads.encoder import Encoder
from heads.models import save_recipe

from .record import FinetuneRecord


def save_model_folder(encoder: Encoder, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    encoder.model.save_pretrained(folder)
    encoder.tokenizer.save_pretrained(folder)
    save_recipe(encoder.recipe, folder)


def write_card(folder: Path, record: FinetuneRecord) -> None:
    """README.md: where the model comes from, how it was trained, and how well it retrieves."""
    data = record.data
    test = "\n".join(f"| {protocol} | {s.mrr:.4f} | {s.recall_at_1:.3f} | {s.recall_at_10:.3f} | {s.n_queries} | "
                     f"{s.candidates_per_query} |" for protocol, s in record.test.items())
    versions = ", ".join(f"{name} {version}" for name, version in package_versions().items())
    if record.kind == "cross_encoder":
        what = (f"A cross-encoder fine-tuned by `codebert-heads finetune` (a sequence classifier on the joined "
                f"(query, code) pair, trained on true pairs and as many negatives: {record.negatives}). Load it "
                f"with `model.name=<this folder>` in any codebert-heads command, or with transformers' "
                f"`AutoModelForSequenceClassification`; it scores as it was trained (`codebert_heads_recipe.json`).")
    else:
        what = ("A bi-encoder retriever fine-tuned by `codebert-heads finetune` (in-batch negatives, one encoder "
                "for queries and code). Load it with `model.name=<this folder>` in any codebert-heads command; it "
                "pools as it was trained (`codebert_heads_recipe.json`).")
    start = f" (untrained start {record.start_val_mrr:.4f})" if record.start_val_mrr is not None else ""
    beside = ""
    if record.retriever:
        r = record.retriever["summary"]
        beside = (f"\nBeside it, the retriever {record.retriever['model']} on the same queries and candidates: MRR "
                  f"{r['mrr']:.4f}, R@1 {r['recall_at_1']:.3f}, R@10 {r['recall_at_10']:.3f}.\n")
    card = f"""# {record.base_model}, fine-tuned for code search

{textwrap.fill(what, 118)}

- base model: {record.base_model} (revision {record.base_revision})
- weights: revision {record.model_revision} (a hash of the weights file)
- data: {data['path']} ({data['form']}, {data['language']}), corpus hash {record.corpus_hash};
  {record.n_train_pairs} train pairs, validated on {record.n_valid_queries} valid queries, tested on the
  {data['split']} split (task {record.test_task_fingerprint})
- recipe: `{json.dumps(record.recipe)}`
- hyper-parameters: `{json.dumps(record.hyperparameters)}`
- training: {record.steps} optimizer steps over {record.epochs_run} epochs; best epoch {record.best_epoch}
  (0-based), val MRR {record.best_val_mrr:.4f}{start}; seed {record.seed}

| protocol | test MRR | R@1 | R@10 | queries | candidates per query |
| --- | --- | --- | --- | --- | --- |
{test}
{beside}
Versions: {versions}.
"""
    atomic_write_text(Path(folder) / "README.md", card)
