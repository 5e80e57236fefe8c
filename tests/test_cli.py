import json
import subprocess
import sys

import pytest

from optbench import __version__
from optbench.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"optbench {__version__}"


def test_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "info" in out


def test_info_json_as_a_subprocess():
    out = subprocess.run(
        [sys.executable, "-m", "optbench", "info", "--json"],
        capture_output=True, text=True, check=True,
    ).stdout
    env = json.loads(out)
    assert env["optbench"] == __version__
    assert env["numba_threads"] >= 1
    assert env["numba_threading_layer"] in {"omp", "tbb", "workqueue"}
    assert "cuda" in env


def test_unknown_command_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["nope"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
