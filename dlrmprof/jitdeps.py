"""The digest that ties a module's numba cache to the sources its kernels compile in.

numba's on-disk cache (``cache=True``) keys compiled code on the file that defines a kernel
alone, not on the files of the helpers it calls or inlines, nor on the constants it reads
from other modules: a kernel compiled with an older helper stays in use after the helper's
file changes.  So a module whose kernels compile in another file's code carries
``_DEPS`` (those files) and ``_DEPS_SHA256`` (their digest, `deps_digest`); a test fails
until the digest is updated, and that edit of the module makes numba recompile its kernels.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def deps_digest(here: Path, *names: str) -> str:
    """16 hex digits of sha256 over the files `names` of directory `here`, in order."""
    return hashlib.sha256(b"".join((Path(here) / n).read_bytes() for n in names)).hexdigest()[:16]
