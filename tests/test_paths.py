import os

import pytest

from optbench import paths
from optbench.errors import UsageError


def _make(path):
    paths.make_writable_directory(path, lambda why: f"cannot create {path}: {why}",
                                  f"{path} is not writable")


def test_makes_missing_parents_and_accepts_an_existing_directory(tmp_path):
    target = tmp_path / "a" / "b"
    _make(str(target))
    assert target.is_dir()
    _make(str(target))  # already there: nothing to do


def test_a_file_in_the_way_is_one_line_with_the_system_reason(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError) as err:
        _make(str(tmp_path / "file" / "sub"))
    message = str(err.value)
    assert message.startswith(f"cannot create {tmp_path / 'file' / 'sub'}: ")
    assert message.split(": ", 1)[1] and "\n" not in message


def test_a_directory_that_cannot_be_written_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(UsageError, match="is not writable$"):
        _make(str(tmp_path))
