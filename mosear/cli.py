"""``mosear`` command line: one subcommand per stage, each implemented in its own module.

Each module named in :data:`COMMANDS` exposes ``add_arguments(parser)`` and ``main(args) -> int``;
modules are imported only when their subcommand runs, so ``mosear --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mosear.config import ConfigError

COMMANDS: dict[str, tuple[str, str]] = {
    "shard": ("mosear.shards.cli", "decode a video corpus into WebDataset shards (Ray Data)"),
    "mine": ("mosear.mine.cli", "mine audio/visual emotion conflicts and build CA-MER-style benchmarks"),
    "train": ("mosear.train.cli", "fine-tune MoSE experts (or the LoRA baseline) with Ray Train"),
    "eval": ("mosear.evaluate.cli", "evaluate checkpoints x benchmarks x inference settings"),
    "report": ("mosear.evaluate.report_cli", "rebuild the HTML report from evaluation Parquet results"),
    "run": ("mosear.pipeline", "run the whole pipeline (shard, mine, train, eval) on a corpus"),
}


def _load(name: str):
    module_name = COMMANDS[name][0]
    return importlib.import_module(module_name)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mosear", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only == name:
            _load(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(command if command in COMMANDS else None)
    except ModuleNotFoundError as exc:  # a stage whose optional extra is not installed
        print(f"mosear {command}: missing dependency: {exc.name} (pip install 'mosear[all]')", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(_load(args.command).main(args) or 0)
    except ConfigError as exc:
        print(f"mosear {args.command}: bad config: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mosear {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
