"""The `codebert-heads` command line: one subcommand per study step, each reading the structured config."""
from __future__ import annotations

import argparse
import errno
import importlib
import sys
from dataclasses import MISSING, dataclass, fields
from enum import StrEnum
from typing import Any

from codesearch.errors import RunsFailed, UserError

from .config import explicit_keys, load_config
from .schema import COMMAND_SECTIONS, TOP_LEVEL, Config

# A disk that is full, read-only or not ours: the user's to fix, said in one line.
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


@dataclass(frozen=True)
class Command:
    summary: str
    runner: str  # "module:function", imported only when the command runs (torch is slow to import)
    # Arguments besides the config: (name, argparse keyword arguments); passed to the runner by name.
    arguments: tuple = ()


COMMANDS = {
    "corpus": Command("build a CodeSearchNet-format corpus from source files (default: the Python standard "
                      "library)", "experiments.corpus:run_corpus"),
    "evaluate": Command("baseline retrieval: MRR under both protocols and recall@1/5/10, per-query ranks kept",
                        "experiments.evaluate:run_evaluate"),
    "ablate": Command("mask heads one at a time (or as sets), measure the drop in MRR query by query, test it "
                      "against the baseline, export the importance table and heatmap",
                      "experiments.ablate:run_ablate"),
    "prune": Command("head sets: pruning curves (exact, gradient, Michel's iterative and random orders), one head "
                     "per layer, interactions of the top heads (redundant or synergistic pairs, Shapley values), "
                     "each set tested against the baseline query by query", "experiments.prune:run_prune"),
    "probe": Command("linear probes on every head's output (syntax and query-code matching), with control tasks "
                     "and a randomly initialised model, joined with the head ablation",
                     "experiments.probe:run_probe"),
    "attention": Command("passive attention statistics per head: query-to-code mass, entropy, attention to code "
                         "constructs, tests, clusters of heads and examples, and whether attention predicts "
                         "importance", "experiments.attention:run_attention"),
    "patch": Command("activation patching in a cross-encoder: per head, the share of the score gap between a "
                     "query's true and mismatched pair that its output restores (and destroys), tested, corrected, "
                     "correlated with the ablation's ΔMRR", "experiments.patch:run_patch"),
    "finetune": Command("fine-tune an encoder as a retriever on the study's train split (a bi-encoder with "
                        "in-batch negatives, or model.kind=cross_encoder with CodeBERT's 1:1 negatives; "
                        "Lightning), validated each epoch, tested as `evaluate` tests, saved as a model "
                        "folder any command loads; resume=true continues an interrupted run",
                        "experiments.finetune:run_finetune"),
    "sweep": Command("run a W&B sweep file with no W&B server: W&B's sweep engine picks each run, the agent's "
                     "command line runs it, logged offline; resumes where it stopped",
                     "experiments.sweep:run_sweep",
                     (("sweep_file", {"metavar": "SWEEP_FILE",
                                      "help": "a sweep YAML, e.g. sweeps/minilm_heads.yaml"}),
                      ("--count", {"type": int, "default": None, "help": "launch at most N runs now"}),
                      ("--retry-failed", {"action": "store_true",
                                          "help": "run again the configurations whose runs failed"}))),
    "aggregate": Command("one importance table from all ablation runs of a study (e.g. a sweep's), corrected over "
                         "all of them; and the head-set tables from all its prune runs (shards, orders)",
                         "experiments.aggregate:run_aggregate",
                         (("study", {"metavar": "STUDY", "help": "the study's folder, its name under runs_dir, "
                                                                  "or (W&B online) its group name"}),)),
    "report": Command("one self-contained HTML page of a study's finished runs (report/index.html), and online a "
                      "W&B Report of its group", "experiments.report:run_report",
                      (("study", {"metavar": "STUDY", "nargs": "?", "default": "",
                                  "help": "the study's folder or its name under runs_dir; none: the study the "
                                          "settings name (e.g. --config demo)"}),)),
    "compare": Command("studies head by head: base against fine-tuned query by query (same queries and candidates), "
                       "or any studies of one head grid by their maps (are the same heads important?)",
                       "experiments.compare:run_compare",
                       (("studies", {"metavar": "STUDY", "nargs": "+",
                                     "help": "two or more study folders or study names under runs_dir (A, B, ...: "
                                             "differences are B − A)"}),)),
}

USAGE_TAIL = """
Options are key=value pairs (dotted keys), applied over the defaults, experiments/configs/<command>.yaml,
and any --config files in order. Examples:
  codebert-heads evaluate data.max_queries=200 model.batch_size=16
  codebert-heads evaluate --config demo eval.protocol=csn
"""


def describe_options(sections: tuple[str, ...]) -> str:
    """Every option of the given sections with its default and meaning, for --help."""
    section_types = {f.name: f.default_factory for f in fields(Config) if f.default_factory is not MISSING}
    groups = [(f"{name}.", section_types[name], None) for name in sections] + [("", Config, TOP_LEVEL)]
    lines = []
    for prefix, owner, only in groups:
        for f in fields(owner):
            if only is not None and f.name not in only:
                continue
            default = f.default if f.default is not MISSING else f.default_factory()
            lines.append(f"  {prefix}{f.name}={_show(default)}")
            if f.metadata.get("help"):
                lines.append(f"      {f.metadata['help']}")
    return "\n".join(lines)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codebert-heads",
        description="Which attention heads of a BERT-family code retriever carry the query-to-code mapping?",
        epilog="Run `codebert-heads <command> --help` for a command's options and their defaults.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, command in COMMANDS.items():
        child = sub.add_parser(
            name, help=command.summary, description=command.summary,
            epilog="options (key=value, with defaults):\n"
                   + describe_options(COMMAND_SECTIONS[name]) + "\n"
                   + USAGE_TAIL,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        child.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                           help="YAML config merged over the defaults: a path or a name in experiments/configs/")
        for argument, options in command.arguments:
            child.add_argument(argument, **options)
        child.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may also follow an option (`sweep FILE --count 3 runs_dir=x`), which argparse leaves over.
    args, leftover = parser.parse_known_args(argv)
    stray = [item for item in leftover if "=" not in item or item.startswith("-") and not item.startswith("--")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    args.overrides = [*args.overrides, *leftover]
    for argument, options in COMMANDS[args.command].arguments:   # a list argument swallows the key=value pairs
        if options.get("nargs") == "+":                            # after it: they are overrides
            values = getattr(args, argument)
            args.overrides = [*(item for item in values if "=" in item), *args.overrides]
            setattr(args, argument, [item for item in values if "=" not in item])
        if options.get("nargs") == "?" and "=" in (getattr(args, argument) or ""):   # an override, not the argument
            args.overrides = [getattr(args, argument), *args.overrides]
            setattr(args, argument, options.get("default"))
    if args.command == "probe":  # `probe task=X` is how people say it
        args.overrides = [f"probe.{item}" if item.startswith("task=") else item for item in args.overrides]
    try:
        cfg = load_config(args.command, args.config, args.overrides)
        module_name, function_name = COMMANDS[args.command].runner.split(":")
        runner = getattr(importlib.import_module(module_name), function_name)
        extra = {name.lstrip("-").replace("-", "_"): getattr(args, name.lstrip("-").replace("-", "_"))
                 for name, _ in COMMANDS[args.command].arguments}
        if args.command == "sweep":  # the sweep checks what it may pass on to its runs
            extra.update(overrides=args.overrides, config_files=args.config)
        if args.command == "aggregate":  # settings not set on purpose come from the runs aggregated
            extra.update(explicit=explicit_keys(args.config, args.overrides))
        runner(cfg, **extra)
    except UserError as exc:
        print(f"codebert-heads {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RunsFailed as exc:
        print(f"codebert-heads {args.command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno not in WRITE_ERRORS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"codebert-heads {args.command}: error: cannot write{where}: {exc.strerror}; nothing finished was "
              f"lost", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"codebert-heads {args.command}: interrupted; finished results are kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
