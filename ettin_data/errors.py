"""The project's error taxonomy: each error is one readable line for the user.

ConfigError  bad options (exit code 2)
InputError   bad or missing input data; names the file and the fix (exit code 1)
UnitError    one unit failed; the others continue and a summary is printed (exit code 1)
"""

from __future__ import annotations

import errno

__all__ = ["EttinError", "ConfigError", "InputError", "UnitError", "UnitFailure", "os_error_message"]


class EttinError(Exception):
    """Base class: the message is shown to the user as one line."""

    exit_code = 1


class ConfigError(EttinError, ValueError):
    """An option or combination of options is invalid."""

    exit_code = 2


class InputError(EttinError):
    """Input data is missing, malformed or inconsistent."""


class UnitFailure(EttinError):
    """Raised after a run in which some units failed; carries one line per failed unit."""

    def __init__(self, failures: list[tuple[str, str]], total: int):
        self.failures = failures
        self.total = total
        lines = "; ".join(f"{unit}: {err}" for unit, err in failures[:20])
        more = f" (+{len(failures) - 20} more)" if len(failures) > 20 else ""
        super().__init__(f"{len(failures)} of {total} units failed: {lines}{more}")


UnitError = UnitFailure


def os_error_message(e: OSError, output: str | None = None) -> str:
    """One readable line for a file-system error; disk full and read-only outputs name the output and the
    file being written. A copy, link or rename fails with ``filename`` = its source and ``filename2`` = the
    file it writes (``shutil.copyfile`` on a full disk): the written file is the second one."""
    written = str(e.filename2 or e.filename or output or "?")
    detail = f" (while writing {written})" if output and written != str(output) else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device of {output or written}{detail}; free space and rerun (finished units kept)"
    if e.errno == errno.EROFS:
        return f"{output or written} is on a read-only file system{detail}; choose another --output"
    where = f"{e.filename} -> {e.filename2}" if e.filename and e.filename2 else str(e.filename or output or "?")
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: {where}"
    return f"{e.strerror or type(e).__name__}: {where}"
