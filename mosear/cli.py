"""``mosear`` command line: one subcommand per stage, each implemented in its own module.

:data:`COMMANDS` is the stage registry's commands (:data:`mosear.orchestrate.registry.STAGES`: name,
help line and CLI module of each stage, in pipeline order) plus ``report`` and ``run``. Each module
exposes ``add_arguments(parser)`` and ``main(args) -> int``; a module is imported only when its
subcommand runs, so ``mosear --help`` stays quick.

Exit codes are the classes of :mod:`mosear.orchestrate.errors` (0 ok, 1 failed shards/units, 2 bad
input, 3 refused resume, 75 transient: retry, 130 interrupted), the same in embedded and cluster mode.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mosear.config import ConfigError
from mosear.orchestrate.registry import STAGES

# command -> (module, help line)
COMMANDS: dict[str, tuple[str, str]] = {
    **{name: (spec.cli, spec.help) for name, spec in STAGES.items()},
    "report": ("mosear.evaluate.report_cli", "rebuild the HTML report from evaluation Parquet results"),
    "run": ("mosear.orchestrate.cli", "run the whole pipeline (shard, mine, train, eval) on a corpus"),
}


def _load(name: str):
    module_name = COMMANDS[name][0]
    return importlib.import_module(module_name)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: global flags and the list of subcommands (for ``--help``)."""
    parser = argparse.ArgumentParser(prog="mosear", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def build_command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of one subcommand, filled by its module's ``add_arguments``."""
    parser = argparse.ArgumentParser(prog=f"mosear {name}", description=COMMANDS[name][1])
    _load(name).add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    idx = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if idx is None or argv[idx] not in COMMANDS:
        top.parse_args(argv)  # --help, or argparse's own error for an unknown command
        top.print_help()
        return 2
    command = argv[idx]
    global_args = top.parse_args(argv[:idx])
    try:
        parser = build_command_parser(command)
    except ModuleNotFoundError as exc:  # a stage whose optional extra is not installed
        print(f"mosear {command}: missing dependency: {exc.name} (pip install 'mosear[all]')", file=sys.stderr)
        return 2
    # intermixed: `key=value` overrides may come before or after flags (`mosear train --check a=1`)
    args = parser.parse_intermixed_args(argv[idx + 1:])
    args.command, args.verbose = command, global_args.verbose
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from mosear.orchestrate.errors import StageFailedError, exit_code

    try:
        return int(_load(command).main(args) or 0)
    except KeyboardInterrupt:
        print(f"mosear {command}: interrupted", file=sys.stderr)
        return 130
    except ConfigError as exc:
        code = exit_code(exc)  # 3 for a refused resume (a ConfigError subclass), else 2
        print(f"mosear {command}: {'refused' if code == 3 else 'bad config'}: {exc}", file=sys.stderr)
        return code
    except Exception as exc:  # noqa: BLE001 - every failure leaves with its class's exit code
        code = exit_code(exc)
        if not isinstance(exc, StageFailedError):
            import traceback

            traceback.print_exc()
        label = {1: "failed", 3: "refused", 75: "transient failure (retry)"}.get(code, "error")
        print(f"mosear {command}: {label}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return code


if __name__ == "__main__":
    raise SystemExit(main())
