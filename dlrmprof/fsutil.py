"""Small filesystem helpers shared by every writer: nothing is ever half-written, nothing that is
not a regular file is ever replaced, and nothing is left behind.

* `atomic_path(path)`: write under a temporary name beside `path`, rename onto it on success.
  The target must be a new path or a writable regular file (a symlink is followed to its
  target); a FIFO, device node, socket or directory, or a read-only file, is a `UserError`.
  An existing file keeps its mode.
* Temporary names carry the writer's pid (``.<name>.dlrmprof-<pid>-<random><suffix>``, older
  versions' spill directories ``dlrmprof-spill-<pid>-<random>``), so a run killed by SIGKILL
  leaves names the next run recognises: `remove_stale` deletes those whose pid is no longer
  alive (and `remove_stale_spills` the spill directories older versions of gen-trace made).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from dlrmprof.errors import UserError

TEMP_TAG = "dlrmprof"
_STALE_FILE = re.compile(r"^\..+\." + TEMP_TAG + r"-(\d+)-[^/]*$")


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (or exists under another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


def remove_stale(directory: str | os.PathLike, pattern: re.Pattern = _STALE_FILE) -> list[Path]:
    """Remove entries of `directory` whose name matches `pattern` (group 1: a pid) and whose
    pid is dead: temporary files and spill directories of killed dlrmprof runs.  Only entries
    owned by this user are touched.  Returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    uid = os.getuid() if hasattr(os, "getuid") else None
    for e in entries:
        m = pattern.match(e.name)
        if not m or int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1))):
            continue
        try:
            st = e.stat(follow_symlinks=False)
            if uid is not None and st.st_uid != uid:
                continue
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(e.path, ignore_errors=True)
            else:
                os.unlink(e.path)
            removed.append(Path(e.path))
        except OSError:
            continue
    return removed


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def check_target(path: str | os.PathLike) -> Path:
    """The path a writer will replace: `path`, or a symlink's final target.  `UserError` when
    the target exists and is not a regular file, is read-only, or is '-' (stdout), which
    this output does not support."""
    if str(path) == "-":
        raise UserError("-: this output cannot go to stdout; give a file name")
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise UserError(f"{path}: cannot write here ({exc.strerror or exc})") from None
    for test, what in _KINDS:
        if test(st.st_mode):
            raise UserError(f"{path}: expected a regular file or a new path, got {what}; "
                            "not replacing it")
    if not st.st_mode & 0o222:
        raise UserError(f"{path}: the file is read-only (mode {stat.S_IMODE(st.st_mode):04o}); "
                        "not replacing it")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary name keeps `path`'s suffix (numpy appends `.npz` otherwise).  On any
    exception (KeyboardInterrupt included) the temporary file is removed and `path` is left as
    it was.  Stale temporary files of dead dlrmprof processes in the same folder are removed
    first.  A new file gets the mode a plain open() would give; an existing one keeps its own.
    """
    path = check_target(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale(parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{TEMP_TAG}-{os.getpid()}-",
                                   suffix=suffix or path.suffix or ".tmp", dir=parent)
    except OSError as exc:
        raise UserError(f"{path}: cannot write here ({exc.strerror or exc})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            # mkstemp creates 0600; give the file the mode a plain open() would have.
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp_path, mode)
        check_target(path)          # still a regular file (or absent) at the last moment
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


SPILL_PREFIX = "dlrmprof-spill-"
_STALE_SPILL = re.compile(r"^" + SPILL_PREFIX + r"(\d+)-[^/]*$")


def remove_stale_spills() -> list[Path]:
    """Remove the spill directories (``dlrmprof-spill-<pid>-*`` in the temporary directory)
    that killed runs of older dlrmprof versions left behind; gen-trace itself no longer
    spills."""
    return remove_stale(tempfile.gettempdir(), _STALE_SPILL)


def prepare_output(path: str | os.PathLike) -> Path:
    """Check an output path before the work that produces it (fail in seconds, not after the
    run) and remove stale temporary files of killed runs beside it.  Creates nothing."""
    target = check_target(path)
    parent = target.parent if str(target.parent) else Path(".")
    if parent.is_dir():
        remove_stale(parent)
    return target
