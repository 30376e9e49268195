"""The program W&B sweeps launch: `python sweeps/prune.py key=value ...` is `codebert-heads prune key=value ...`.

Sweep files use `command: [${env}, ${interpreter}, ${program}, ${args_no_hyphens}]`, so the parameters arrive as
dotted key=value pairs, which the config schema reads. Start `wandb agent` from the repository root.
"""
import sys
from pathlib import Path

# Run as a script, Python puts sweeps/ first on the path; the repository root makes the project importable even
# by an interpreter it is not installed in.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from experiments.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["prune", *sys.argv[1:]]))
