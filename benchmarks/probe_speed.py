"""The batched probe against one scikit-learn LogisticRegression per head, on the same features, in one process.

    python benchmarks/probe_speed.py [--task token_category] [--l2 1e-3] [--model builtin] [--data builtin]

Both fit the same objective for every head of the default model: mean cross-entropy + l2/2 * ||W||^2 on
standardised features (scikit-learn's C = 1 / (l2 * n)). Prints both wall times, their ratio, and how far
the per-head test accuracies agree.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codesearch.settings import CorpusConfig, DataConfig  # noqa: E402
from heads.models import encoder_for  # noqa: E402
from heads.settings import ModelConfig  # noqa: E402
from probing.probe import accuracy_from, train_probe  # noqa: E402
from probing.settings import ProbeConfig  # noqa: E402
from probing.study import ProbingStudy, task_data  # noqa: E402
from probing.tasks import TASKS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="token_category", choices=sorted(TASKS))
    parser.add_argument("--l2", type=float, default=1e-3)
    parser.add_argument("--model", default="builtin", help="builtin, a local folder or a hub name")
    parser.add_argument("--data", default="builtin", help="builtin, or a CodeSearchNet folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features", default="runs/benchmarks", help="where the feature stores are kept")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    task, model, probe = TASKS[args.task], ModelConfig(name=args.model), ProbeConfig(l2=[args.l2])
    encoder = encoder_for(model)
    study = ProbingStudy(encoder, probe, model, args.seed, Path(args.features), progress=False)
    study.prepare([task], DataConfig(path=args.data), CorpusConfig())
    data = task_data(task, study.splits, study.stores["pretrained"], args.seed)
    train, test = data["train"], data["test"]
    n_classes = len(task.classes)
    x_train = train.features(np.arange(len(train)))         # [n, heads, dim]
    x_test = test.features(np.arange(len(test)))
    heads = x_train.shape[1]
    print(f"{encoder.info.name}: task {task.name}, {heads} heads x {x_train.shape[2]} dims, {len(train)} train / "
          f"{len(test)} test examples, l2 {args.l2}", flush=True)

    started = time.perf_counter()
    module = train_probe(train, n_classes, args.seed, probe)
    batched = accuracy_from(module.confusion(test, n_classes))[0].numpy()
    batched_seconds = time.perf_counter() - started
    print(f"batched (pytorch-lightning, all heads at once): {batched_seconds:7.1f} s", flush=True)

    started = time.perf_counter()
    separate = np.empty(heads)
    for head in range(heads):
        scaler = StandardScaler().fit(x_train[:, head])
        model = LogisticRegression(C=1.0 / (args.l2 * len(train)), max_iter=2000)
        model.fit(scaler.transform(x_train[:, head]), train.labels)
        separate[head] = model.score(scaler.transform(x_test[:, head]), test.labels)
    sklearn_seconds = time.perf_counter() - started
    difference = np.abs(batched - separate)
    rho = spearmanr(batched, separate).statistic
    print(f"scikit-learn, one LogisticRegression per head:  {sklearn_seconds:7.1f} s")
    print(f"time batched / scikit-learn = {batched_seconds / sklearn_seconds:.3f}")
    print(f"test accuracy: batched mean {batched.mean():.4f}, scikit-learn mean {separate.mean():.4f}; "
          f"|difference| mean {difference.mean():.4f}, max {difference.max():.4f}; Spearman over heads {rho:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "task": task.name, "heads": heads, "n_train": len(train), "n_test": len(test), "l2": args.l2,
            "batched_seconds": batched_seconds, "sklearn_seconds": sklearn_seconds,
            "ratio": batched_seconds / sklearn_seconds, "mean_abs_accuracy_difference": float(difference.mean()),
            "max_abs_accuracy_difference": float(difference.max()), "spearman_over_heads": float(rho),
            "batched_accuracy": batched.tolist(), "sklearn_accuracy": separate.tolist()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
