"""Fault injection from outside the production code: the test finds the process doing the work and
SIGKILLs it, as the OOM killer or a lost node would. Nothing in ``mosear/`` knows about it.

Ray names its worker processes after what they run (``ray::_unit_task`` while an evaluation unit runs,
``ray::RayTrainWorker...`` for a training worker), which is how the worker is found. Only the test's own
processes are candidates: the descendants of the test process (an embedded Ray's raylet and workers are
its children and grandchildren) or of a ``root`` pid the test started itself (a ``ray start`` head). Other
helpers' or users' processes with the same title on the machine are never touched; a process is killed by
its pid through :mod:`psutil`, which refuses a pid that was reused by another process meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import psutil


def own_processes(roots: Iterable[int] | None = None) -> list[psutil.Process]:
    """The live descendants of ``roots`` (default: this test process), never the roots themselves."""
    seen: dict[int, psutil.Process] = {}
    for root in roots if roots is not None else [os.getpid()]:
        try:
            for p in psutil.Process(root).children(recursive=True):
                seen.setdefault(p.pid, p)
        except psutil.NoSuchProcess:
            continue
    return list(seen.values())


def find_processes(title: str, roots: Iterable[int] | None = None) -> list[psutil.Process]:
    """The test's own processes (:func:`own_processes`) whose command line (Ray's process title)
    contains ``title``."""
    found = []
    for p in own_processes(roots):
        try:
            cmd = " ".join(p.cmdline() or [])
        except (psutil.Error, TypeError):
            continue
        if title in cmd:
            found.append(p)
    return found


@contextlib.contextmanager
def kill_once_when(title: str, when: Callable[[], bool] = lambda: True, poll_s: float = 0.02,
                   all_matching: bool = False, roots: Iterable[int] | None = None) -> Iterator[list[int]]:
    """While the block runs, SIGKILL (once) the test's own process(es) titled ``title`` as soon as
    ``when()`` holds (``roots``: see :func:`own_processes`).

    Yields the list of killed pids (empty when no such process was seen in time).
    """
    killed: list[int] = []
    stop = threading.Event()
    roots = list(roots) if roots is not None else None

    def watch() -> None:
        while not stop.is_set() and not killed:
            if when():
                procs = find_processes(title, roots)
                for p in procs if all_matching else procs[:1]:
                    with contextlib.suppress(psutil.Error):
                        p.kill()  # psutil checks the pid still names the process it found
                        killed.append(p.pid)
            time.sleep(poll_s)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        yield killed
    finally:
        stop.set()
        t.join(timeout=5)
