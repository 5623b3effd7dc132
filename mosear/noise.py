"""Library output a mosear user cannot act on, stopped where it is produced, and only that.

Each filter names the exact message it drops and why; everything else (warnings, errors, any line
these patterns do not match) still reaches the terminal.

- :func:`drop_c_stderr`: a C/C++ library that prints to file descriptor 2 directly (LiteRT's "INFO:
  Created TensorFlow Lite XNNPACK delegate for CPU." once per interpreter, in every mining actor) cannot
  be silenced through Python's logging; the descriptor is captured around the call and every line
  that does not match a pattern is written back to it.
"""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from typing import Iterator

__all__ = ["drop_c_stderr", "LITERT_DELEGATE_INFO"]

LITERT_DELEGATE_INFO = re.compile(r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$")


@contextmanager
def drop_c_stderr(*patterns: re.Pattern) -> Iterator[None]:
    """Capture fd 2 inside the block; on exit write back every line that matches none of ``patterns``."""
    try:
        fd = os.dup(2)
    except OSError:  # no stderr to capture (closed descriptor): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)
            buf.seek(0)
            kept = [line for line in buf.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(p.match(line.rstrip("\r\n")) for p in patterns)]
            if kept:
                os.write(2, "".join(kept).encode())
