"""The settings of a probing study: the `probe` section of the config."""
from __future__ import annotations

from dataclasses import dataclass

from codesearch.settings import setting


@dataclass
class ProbeConfig:
    task: str = setting("probing task, a comma list, or all: token_category, in_loop, in_conditional, in_call, "
                        "in_return, has_loop, has_conditional, has_exception_handling, is_recursive, returns_value, "
                        "query_code_match (on the command line `task=` is short for `probe.task=`)", "all")
    seeds: int = setting("seeds per figure (each trains on its own random share of the training set)", 3)
    train_fraction: float = setting("share of the training set each seed trains on", 0.8)
    train_functions: int = setting("functions from the train split (seeded sample; 0 = all)", 800)
    eval_functions: int = setting("functions from each of the valid and test splits (0 = all)", 300)
    max_train_tokens: int = setting("token rows stored for training (seeded sample; 0 = all)", 30000)
    max_eval_tokens: int = setting("token rows stored for each of valid and test (0 = all)", 12000)
    l2: list[float] = setting("L2 strengths tried for every head; the best on valid is kept",
                              factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1])
    steps: int = setting("optimizer steps per probe (counted in steps, so small sets train fully)", 200)
    batch_size: int = setting("probe training batch size", 1024)
    lr: float = setting("Adam learning rate at the start, annealed to zero", 0.05)
    random_init_seed: int = setting("seed of the randomly initialised copy of the model", 0)
    ablation_run: str = setting("ablation or aggregate folder to join with; empty = the study's own", "")

    def functions(self, split: str) -> int:
        """How many functions of `split` to label."""
        return self.train_functions if split == "train" else self.eval_functions

    def tokens(self, split: str) -> int:
        """How many token rows of `split` to store."""
        return self.max_train_tokens if split == "train" else self.max_eval_tokens
