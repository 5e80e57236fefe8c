"""The one exception type for bad user input.

Raised before any work starts; the CLI prints its message as one line (no traceback)
and exits with status 2. It subclasses ValueError so library callers can catch it
the usual way.
"""


class UsageError(ValueError):
    """Bad input from the user: the message names what is wrong and what is allowed."""
