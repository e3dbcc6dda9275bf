"""Console entry point ``adalrs-ray``: one sub-command per module.

Each sub-command module exposes ``register(subparsers)`` that adds its parser and sets
``func=callable(args) -> int`` on it. Modules are imported lazily so ``adalrs-ray --help`` is fast
and a broken optional dependency only breaks its own sub-command.

The CLI parses arguments and calls library functions (:mod:`adalrs_ray.experiments`, the tasks of
:mod:`train_loops`, the report) that the examples call too.

May import: every layer (it is the top one). Nothing imports it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# sub-command modules, in the order shown by --help
_COMMAND_MODULES = ("adalrs_ray.cli.train", "adalrs_ray.cli.compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adalrs-ray",
        description="AdaLRS learning-rate search on Ray: train, sweep, compare, report.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a sub-command not yet installed
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except ValueError as exc:  # bad user input: one clear line, no traceback
        print(f"adalrs-ray {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
