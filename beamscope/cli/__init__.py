"""The ``beamscope`` command: one verb per module, errors printed as one line at this edge.

Each verb module has ``add(sub)``, which defines its sub-parser and returns it, and ``run(args)``,
its handler; heavy imports stay inside ``run`` so that the command starts fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from beamscope.cli import (
    attribute,
    calibrate,
    compare,
    demo,
    errors,
    index,
    migrate,
    perturb,
    serve,
    sql,
    trace,
    train,
)
from schemas import BeamscopeError
from schemas.version import beamscope_version

VERBS = (
    train,
    trace,
    attribute,
    perturb,
    calibrate,
    index,
    migrate,
    sql,
    errors,
    compare,
    serve,
    demo,
)  # --help order


class _Version(argparse.Action):
    """``--version``: the installed version, looked up only when asked (importlib.metadata is slow
    to import, and every other command would pay for it)."""

    def __init__(self, option_strings: Sequence[str], **kwargs: Any) -> None:
        super().__init__(option_strings, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"beamscope {beamscope_version()}")
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """Usage mistakes as one line, like every other error (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="beamscope", description="Trace warehouse and visual debugger for seq2seq models.")
    parser.add_argument("--version", action=_Version, help="show program's version number and exit")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        verb.add(sub).set_defaults(handler=verb.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("LANCEDB_LOG", "error")  # Lance's k-means warnings are not for users
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BeamscopeError as e:
        print(f"beamscope: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"beamscope: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("beamscope: interrupted (a trace resumes when started again)", file=sys.stderr)
        return 130
