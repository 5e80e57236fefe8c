"""Output paths: making a directory that results or a report will be written into."""

from __future__ import annotations

import os
from collections.abc import Callable

from optbench.errors import UsageError


def make_writable_directory(path: str, cannot_create: Callable[[str], str],
                            not_writable: str) -> None:
    """Create directory `path` (and its parents) unless it exists, then check that files can
    be made in it. A UsageError, one line, where not: `cannot_create(reason)` with the
    system's reason, or `not_writable`. The caller words both, so that each names the option
    or the directory the user gave."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise UsageError(cannot_create(exc.strerror)) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(not_writable)
