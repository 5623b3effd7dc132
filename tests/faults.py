"""Fault injection from outside the production code: the test finds the process doing the work and
SIGKILLs it, as the OOM killer or a lost node would. Nothing in ``mosear/`` knows about it.

Ray names its worker processes after what they run (``ray::_unit_task`` while an evaluation unit runs,
``ray::RayTrainWorker...`` for a training worker), which is how the worker is found.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import psutil


def find_processes(title: str) -> list[psutil.Process]:
    """Processes of this machine whose command line (Ray's process title) contains ``title``."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except (psutil.Error, TypeError):
            continue
        if title in cmd and p.pid != os.getpid():
            found.append(p)
    return found


@contextlib.contextmanager
def kill_once_when(title: str, when: Callable[[], bool] = lambda: True, poll_s: float = 0.02,
                   all_matching: bool = False) -> Iterator[list[int]]:
    """While the block runs, SIGKILL (once) the process(es) titled ``title`` as soon as ``when()`` holds.

    Yields the list of killed pids (empty when no such process was seen in time).
    """
    killed: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set() and not killed:
            if when():
                procs = find_processes(title)
                for p in procs if all_matching else procs[:1]:
                    with contextlib.suppress(ProcessLookupError, psutil.Error):
                        os.kill(p.pid, signal.SIGKILL)
                        killed.append(p.pid)
            time.sleep(poll_s)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        yield killed
    finally:
        stop.set()
        t.join(timeout=5)
