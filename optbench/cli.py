"""`python -m optbench`: one sub-command per module, each with `configure(parser)` and `run(args)`.

Bad input raises `optbench.errors.UsageError` before any work starts; it is printed here as
one line, without a traceback, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from optbench import __version__
from optbench.errors import UsageError

# name -> (module, one-line help). The parser imports each module for its `configure`,
# which must stay light: heavy imports (numba, pandas, ...) belong inside `run`, so that
# `--help` stays fast and a missing optional dependency only affects its own command.
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("optbench._info", "versions, Numba threading, CPU, and GPU / CUDA-simulator availability"),
    "kernels": ("optbench.kernels", "time the optimizer steps against memory bandwidth and torch.optim"),
    "run": ("optbench.run", "run a benchmark matrix into a resumable results store"),
    "report": ("optbench.report.cli", "tables, figures and one PDF from a results store"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line like every other refusal (argparse prints the
    usage first); sub-command parsers are of this class too."""

    def error(self, message: str):
        name = self.prog.removeprefix("python -m ")
        self.exit(2, f"{name}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m optbench",
        description="Which optimizer trains a recurrent network across a long time lag, "
        "how fast, and why.",
    )
    parser.add_argument("--version", action="version", version=f"optbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        importlib.import_module(module).configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except UsageError as exc:
        print(f"optbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"optbench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
