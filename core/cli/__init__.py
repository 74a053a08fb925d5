"""`python -m core <command>`: the service layer for scripts, CI and GPU boxes.

Every command prints one JSON document on stdout; bad input exits non-zero with one line on stderr.
Each area registers its commands in its own module (listed in COMMAND_MODULES).

Exit codes: 0 done (a batch command: at least one item succeeded, its report lists the rest);
1 a batch command whose every item failed (refused, corrupt, unreadable), its report still printed;
2 bad usage or input (unknown option, missing file, no such dataset, a malformed setting).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from dataclasses import dataclass
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


@dataclass
class BatchReport:
    """What a batch command returns: its JSON report and how many of its items it tried and how
    many succeeded. main() exits 1 when items were tried and none succeeded; an empty batch (a
    filter that matches nothing) is not a failure."""

    document: dict[str, Any]
    attempted: int
    succeeded: int

    @property
    def exit_code(self) -> int:
        return 1 if self.attempted and not self.succeeded else 0


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
    if isinstance(result, BatchReport):
        print_json(result.document)
        if result.exit_code:
            sys.stderr.write(f"error: none of the {result.attempted} items succeeded; the report lists why\n")
        return result.exit_code
    print_json(result)
    return 0
