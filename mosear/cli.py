"""``mosear`` command line: one subcommand per stage, each implemented in its own module.

:data:`COMMANDS` is the stage registry's commands (:data:`mosear.orchestrate.registry.STAGES`: name,
help line and CLI module of each stage, in pipeline order) plus ``report`` and ``run``. Each module
exposes ``add_arguments(parser)`` and ``main(args) -> int``; a module is imported only when its
subcommand runs, so ``mosear --help`` stays quick.

Exit codes are the classes of :mod:`mosear.orchestrate.errors` (0 ok, 1 failed shards/units, 2 bad
input, 3 refused resume, 75 transient: retry, 130 interrupted), the same in embedded and cluster mode.
A failure prints one line naming its cause; ``--debug`` adds the traceback. ``--result-file PATH``
(what a cluster job is given) also writes the verdict as JSON (:func:`mosear.orchestrate.errors.result_record`).
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
    parser = argparse.ArgumentParser(prog="mosear", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="print the traceback of a failure (default: one line)")
    parser.add_argument("--result-file", default=None, metavar="PATH",
                        help="also write the verdict (class, exit code, message, counts) to this JSON file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def build_command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of one subcommand, filled by its module's ``add_arguments``."""
    parser = argparse.ArgumentParser(prog=f"mosear {name}", description=COMMANDS[name][1])
    _load(name).add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="print the traceback of a failure (default: one line)")
    return parser


def _command_index(argv: list[str]) -> int | None:
    """Where the subcommand is in ``argv`` (global flags and their values come before it)."""
    skip = False
    for i, a in enumerate(argv):
        if skip:
            skip = False
        elif a == "--result-file":
            skip = True
        elif not a.startswith("-"):
            return i
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    idx = _command_index(argv)
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
    args.debug = args.debug or global_args.debug
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    code, exc = _run(command, args)
    if global_args.result_file:
        from pathlib import Path

        from mosear.atomic import atomic_write_json
        from mosear.orchestrate.errors import result_record

        Path(global_args.result_file).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(global_args.result_file, result_record(code, exc))
    return code


def _one_line(exc: BaseException) -> str:
    """A validation message (a header and one line per field) joined into one line."""
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())


def _run(command: str, args: argparse.Namespace) -> tuple[int, BaseException | None]:
    """Run the subcommand; return its exit code and the exception it failed with (printed in one line)."""
    from mosear.orchestrate.errors import BadInputError, StageFailedError, exit_code

    try:
        return int(_load(command).main(args) or 0), None
    except KeyboardInterrupt as exc:
        print(f"mosear {command}: interrupted", file=sys.stderr)
        return 130, exc
    except Exception as exc:  # noqa: BLE001 - every failure leaves with its class's exit code
        code = exit_code(exc)
        if args.debug:
            import traceback

            traceback.print_exc()
        if isinstance(exc, ConfigError):  # 3 for a refused resume (a ConfigError subclass), else 2
            print(f"mosear {command}: {'refused' if code == 3 else 'bad config'}: {_one_line(exc)}", file=sys.stderr)
        elif isinstance(exc, BadInputError) and str(exc).startswith("mosear "):  # names its stage already
            print(f"{'' if str(exc).startswith(f'mosear {command}') else f'mosear {command}: '}{_one_line(exc)}",
                  file=sys.stderr)
        else:
            label = {1: "failed", 3: "refused", 75: "transient failure (retry)", 130: "interrupted"}.get(code, "error")
            name = "" if isinstance(exc, StageFailedError) else f"{type(exc).__name__}: "
            print(f"mosear {command}: {label}: {name}{exc}", file=sys.stderr)
        return code, exc


if __name__ == "__main__":
    raise SystemExit(main())
