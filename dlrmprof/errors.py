"""User-facing errors.

A `UserError` is a problem with what the user gave us (a file, an option, a host that cannot
do what was asked).  The CLI turns it into one line on stderr and exit code 2.  Anything else
is a bug and keeps its traceback (exit code 1).
"""

from __future__ import annotations

import os


class UserError(Exception):
    """Bad input: reported as one line, exit code 2, no traceback."""

    exit_code = 2


def input_error(path: str | os.PathLike | None, expected: str, *, line: int | None = None,
                field: str | None = None, got: str | None = None) -> UserError:
    """Build a one-line error naming file, line, field and what was expected.

    >>> str(input_error("train.txt", "8 hex digits", line=12, field="C3", got="'zz'"))
    "train.txt:12: field C3: expected 8 hex digits, got 'zz'"
    """
    where = str(path) if path is not None else "<input>"
    if line is not None:
        where += f":{line}"
    msg = where + ": "
    if field is not None:
        msg += f"field {field}: "
    msg += f"expected {expected}"
    if got is not None:
        msg += f", got {got}"
    return UserError(msg)
