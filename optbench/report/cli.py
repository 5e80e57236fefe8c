"""`python -m optbench report`: the report of a results directory, complete or not.

    python -m optbench report [RESULTS_DIR] [--out reports/NAME.pdf] [--matrix NAME]
                              [--kernels FILE]

Reads RESULTS_DIR/optbench.sqlite (default `results/`) and writes the PDF (default
RESULTS_DIR/reports/MATRIX.pdf) with its tables and PNGs in a folder of the same name
beside it. A store with cells still missing gives a partial report that lists them; a
missing or empty store is one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys

DEFAULT_DIR = "results"


def configure(parser) -> None:
    parser.add_argument("directory", nargs="?", default=DEFAULT_DIR, metavar="RESULTS_DIR",
                        help=f"the results directory of `run --out` (default: {DEFAULT_DIR}/)")
    parser.add_argument("--out", metavar="PDF",
                        help="the PDF to write (default: RESULTS_DIR/reports/MATRIX.pdf); its "
                        "tables and figures go to a folder of the same name beside it")
    parser.add_argument("--matrix", metavar="NAME",
                        help="which matrix of the store (default: the one run last)")
    parser.add_argument("--kernels", metavar="FILE",
                        help="`python -m optbench kernels --json` output to include "
                        "(default: RESULTS_DIR/kernels.json when it exists)")


def run(args) -> int:
    from optbench.report.document import build

    report = build(args.directory, out=args.out, matrix=args.matrix, kernels=args.kernels)
    print(summary(report), file=sys.stderr)
    return 0


def summary(report) -> str:
    """What was written, and whether the report is partial."""
    state = "complete" if report.complete else (
        f"PARTIAL: {report.planned - report.finished} of {report.planned} cells missing, "
        "listed on its title page")
    return (f"report: {report.pdf} ({len(report.pages)} pages, {state}); tables and "
            f"{len(report.figures)} figures in {report.pdf[:-4]}/")
