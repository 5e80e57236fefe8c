"""Reports: the store's results as tables (CSV, Markdown, LaTeX), figures (PNG) and one PDF
that answers "which optimizer, for which dependency length, and why".

    python -m optbench report [RESULTS_DIR] [--out reports/NAME.pdf]
    optbench.report.build("results", out="reports/quick.pdf")

Split as "compute the data, then draw it": `data` turns the store's rows into plain
DataFrames, `tables` formats and writes them, `figures` draws them, `document` lays out
the pages and writes the PDF (matplotlib alone), `cli` is the command. See `document` for
what a report holds.
"""

__all__ = ["build"]


def __getattr__(name):
    # `optbench.report.build` without importing pandas and matplotlib at import time.
    if name == "build":
        from optbench.report.document import build

        return build
    raise AttributeError(f"module 'optbench.report' has no attribute {name!r}")
