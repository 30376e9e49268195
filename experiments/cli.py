"""The `codebert-heads` command line: one subcommand per study step, each reading the structured config."""
from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass

from codesearch.errors import UserError

from .config import COMMAND_SECTIONS, describe_options, load_config


@dataclass(frozen=True)
class Command:
    summary: str
    runner: str  # "module:function", imported only when the command runs (torch is slow to import)


COMMANDS = {
    "corpus": Command("build a CodeSearchNet-format corpus from source files (default: the Python standard "
                      "library)", "experiments.build_corpus:run_corpus"),
    "evaluate": Command("baseline retrieval: MRR under both protocols and recall@1/5/10, per-query ranks kept",
                        "experiments.evaluate:run_evaluate"),
}

USAGE_TAIL = """
Options are key=value pairs (dotted keys), applied over the defaults, experiments/configs/<command>.yaml,
and any --config files in order. Examples:
  codebert-heads evaluate data.max_queries=200 model.batch_size=16
  codebert-heads evaluate --config demo eval.protocol=csn
"""


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
            epilog="options (key=value, with defaults):\n" + describe_options(COMMAND_SECTIONS[name]) + "\n"
                   + USAGE_TAIL,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        child.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                           help="YAML config merged over the defaults: a path or a name in experiments/configs/")
        child.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.command, args.config, args.overrides)
        module_name, function_name = COMMANDS[args.command].runner.split(":")
        runner = getattr(importlib.import_module(module_name), function_name)
        runner(cfg)
    except UserError as exc:
        print(f"codebert-heads {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"codebert-heads {args.command}: interrupted; finished results are kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
