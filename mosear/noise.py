"""Library output a mosear user cannot act on, stopped where it is produced, and only that.

Each filter names the exact message it drops and why; everything else (warnings, errors, any line
these patterns do not match) still reaches the terminal, in order, even when the process dies inside
the filtered block.

- :func:`drop_c_stderr`: a C/C++ library that prints to file descriptor 2 directly (LiteRT's "INFO:
  Created TensorFlow Lite XNNPACK delegate for CPU." once per interpreter, in every mining actor) cannot
  be silenced through Python's logging, nor by a setting (LiteRT reads none for it). Inside the block fd 2
  is a pipe read by a small filter *process* that copies every other line to the real stderr as it
  arrives: a segfault or ``os._exit`` in the block closes the pipe, and the filter still writes out
  everything written before it (a thread of the dying process, or a buffer written back on exit, would
  lose it).

Ray's and Ray Train's own chatter is configured, not filtered: see :mod:`mosear.ray_utils`
(``RAY_BACKEND_LOG_LEVEL``) and the train stage's ``LoggingConfig``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

__all__ = ["drop_c_stderr", "LITERT_DELEGATE_INFO"]

LITERT_DELEGATE_INFO = re.compile(r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$")

# The filter process: stdin (the pipe) -> stdout (the real stderr), line by line, dropping the lines that
# match one of the regular expressions given as arguments. Exits at end of input (every writer closed).
_FILTER = r"""
import os, re, sys
pats = [re.compile(p) for p in sys.argv[1:]]
def keep(line):
    text = line.decode(errors="replace").rstrip("\r\n")
    return not any(p.match(text) for p in pats)
buf = b""
while True:
    try:
        chunk = os.read(0, 65536)
    except InterruptedError:
        continue
    if not chunk:
        break
    buf += chunk
    *lines, buf = buf.split(b"\n")
    out = b"".join(l + b"\n" for l in lines if keep(l))
    if out:
        os.write(1, out)
if buf and keep(buf):
    os.write(1, buf)
"""


@contextmanager
def drop_c_stderr(*patterns: re.Pattern, wait_s: float = 10.0) -> Iterator[None]:
    """Inside the block, fd 2 goes through a filter process that drops lines matching any of ``patterns``
    and passes every other byte on at once. On exit fd 2 is restored and the filter is waited for (up
    to ``wait_s``; a child started in the block that still holds the pipe keeps it running, nothing is
    lost), so what the block wrote comes before what follows it."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to capture (closed descriptor): nothing to filter
        yield
        return
    try:
        r, w = os.pipe()
        proc = subprocess.Popen([sys.executable, "-c", _FILTER, *(p.pattern for p in patterns)],
                                stdin=r, stdout=saved, stderr=saved, close_fds=True)
    except OSError:  # cannot start the filter: show everything rather than risk losing it
        os.close(saved)
        yield
        return
    os.close(r)
    sys.stderr.flush()
    os.dup2(w, 2)
    os.close(w)
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # closes this process's last write end of the pipe: the filter sees EOF
        os.close(saved)
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            pass
