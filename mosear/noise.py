"""Library output a mosear user cannot act on, stopped where it is produced, and only that.

Each filter names the exact message it drops and why; everything else (warnings, errors, any line
these patterns do not match) still reaches the terminal.

- :func:`quiet_ray_data`: Ray Data logs every dataset execution's start, plan and end at INFO to the
  console ("Starting execution of Dataset ...", "Execution plan of Dataset ...", "Dataset ... execution
  finished in ...") and warns once that its progress bars are disabled, which mosear does on purpose
  (it draws its own). The console handler is raised to WARNING and that one warning is dropped; Ray
  Data's own log file (``ray-data.log`` in the session folder) keeps everything.
- :func:`drop_c_stderr`: a C/C++ library that prints to file descriptor 2 directly (LiteRT's "INFO:
  Created TensorFlow Lite XNNPACK delegate for CPU." once per interpreter, in every mining actor) cannot
  be silenced through Python's logging; the descriptor is captured around the call and every line
  that does not match a pattern is written back to it.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from contextlib import contextmanager
from typing import Iterator

__all__ = ["quiet_ray_data", "drop_c_stderr", "LITERT_DELEGATE_INFO"]

LITERT_DELEGATE_INFO = re.compile(r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$")
_PROGRESS_DISABLED = "Progress bars disabled"


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_ray_data() -> None:
    """Call after ``import ray.data`` in the driver: its console shows warnings and errors only."""
    logger = logging.getLogger("ray.data")
    for h in logger.handlers:  # on the handler: records of child loggers (ray.data._internal...) pass here
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            h.setLevel(max(h.level, logging.WARNING))
            if not any(isinstance(f, _DropMessage) for f in h.filters):
                h.addFilter(_DropMessage(_PROGRESS_DISABLED))


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
