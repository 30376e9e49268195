"""The program W&B sweeps launch: `python sweeps/ablate.py key=value ...` is `codebert-heads ablate key=value ...`.

Sweep files use `command: [${env}, ${interpreter}, ${program}, ${args_no_hyphens}]`, so the parameters arrive as
dotted key=value pairs, which the config schema reads. Start `wandb agent` from the repository root.
"""
import sys

from experiments.cli import main

if __name__ == "__main__":
    sys.exit(main(["ablate", *sys.argv[1:]]))
