"""The codebase's own rules, checked on its source: comments and docstrings carry no issue
numbers, no module imports another's private names, and ruff's rule set (pyproject's
[tool.ruff.lint]) finds nothing."""

import ast
import importlib.util
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "optbench"
ISSUE = re.compile(r"\bissue\s*#?\s*\d+", re.IGNORECASE)


def _sources():
    return sorted(PACKAGE.rglob("*.py"))


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _prose(source: str):
    """(line, text) of every comment and docstring of a module's source."""
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                yield body[0].lineno, body[0].value.value


def issue_numbers(source: str) -> list[tuple[int, str]]:
    return [(line, m.group(0)) for line, text in _prose(source) for m in ISSUE.finditer(text)]


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")  # __version__ is public


MODULES = {_module(p) for p in _sources()}


def private_imports(source: str, module: str) -> list[tuple[int, str]]:
    """Private names of another optbench module: `from optbench... import _name`, and
    `other._name` where `other` was imported as an optbench module."""
    tree, found, aliases = ast.parse(source), [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "optbench":
            for a in node.names:
                if f"{node.module}.{a.name}" in MODULES:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
                elif _private(a.name) and node.module != module:
                    found.append((node.lineno, f"from {node.module} import {a.name}"))
        elif isinstance(node, ast.Import):
            aliases.update({a.asname: a.name for a in node.names
                            if a.asname and a.name in MODULES})
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in aliases and aliases[node.value.id] != module \
                and _private(node.attr):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return found


def test_the_checks_find_what_they_look_for():
    source = '"""Fixes issue 8."""\n# see Issue #12\nx = "issue 3"  # a string, not prose\n' \
             'from optbench.nn.model import _zeros, SPREAD\nfrom optbench import __version__\n' \
             'from optbench.same import _own\nfrom optbench import train\n' \
             'train._check(cell)\ntrain.run_cell(cell)\n'
    assert issue_numbers(source) == [(2, "Issue #12"), (1, "issue 8")]
    assert private_imports(source, "optbench.same") == [
        (4, "from optbench.nn.model import _zeros"), (8, "train._check")]


def test_no_issue_numbers_in_comments_or_docstrings():
    found = [f"{p.relative_to(ROOT)}:{line}: {text}" for p in _sources()
             for line, text in issue_numbers(p.read_text(encoding="utf-8"))]
    assert not found, "comments say why, not which issue:\n" + "\n".join(found)


def test_no_private_names_imported_across_modules():
    found = [f"{p.relative_to(ROOT)}:{line}: {text}" for p in _sources()
             for line, text in private_imports(p.read_text(encoding="utf-8"), _module(p))]
    assert not found, "make the name public or move it:\n" + "\n".join(found)


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None,
                    reason="ruff is in the test extra; CI installs it")
def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_cli_parser_loads_nothing_heavy():
    """`--help` and the option checks before any work run on the parser's modules alone:
    they must not pull in numpy, Numba, pandas, matplotlib or torch."""
    code = ("import sys; from optbench import cli; cli.build_parser(); "
            "print(' '.join(m for m in ('numpy', 'numba', 'pandas', 'matplotlib', 'torch', "
            "'distributed') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []
