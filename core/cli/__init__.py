"""`python -m core <command>`: the service layer for scripts, CI and GPU boxes.

Every command prints one JSON document on stdout; bad input exits non-zero with one line on stderr.
Each area registers its commands in its own module (listed in COMMAND_MODULES).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from typing import Any

from core.errors import UserError

COMMAND_MODULES = ["core.cli.system", "core.cli.storage", "core.cli.imports", "core.cli.images", "core.cli.classes", "core.cli.datasets", "core.cli.dataset_tools", "core.cli.dataset_space", "core.cli.training", "core.cli.search", "core.cli.duplicates", "core.cli.predict", "core.cli.similar"]


class JsonArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's usage dump becomes the one-line error
        raise UserError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = JsonArgumentParser(prog="python -m core", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=JsonArgumentParser)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        args = build_parser().parse_args(argv)
        result = args.handler(args)
    except UserError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    print_json(result)
    return 0
