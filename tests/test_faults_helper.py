"""The fault injector kills only what the test started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil

from faults import find_processes, kill_once_when


def test_fault_injector_spares_a_stranger_with_the_same_title():
    """Catches: ``find_processes`` scanning every process on the machine by name (mutation: back to
    ``psutil.process_iter``), which kills another helper's worker and lets a fault test pass without its
    own fault firing. A matching process that is not a descendant (double-forked, re-parented away from the
    test) must be left alone; a matching child must be killed."""
    title = f"mosear-fault-probe-{os.getpid()}-{time.monotonic_ns()}"
    code = "import time; time.sleep(60)"
    # a stranger: started via a shell that exits at once, so it is nobody's child in this test's tree
    out = subprocess.run(["bash", "-c", f'({sys.executable} -c "{code}" {title} </dev/null >/dev/null 2>&1 & echo $!)'],
                         capture_output=True, text=True, check=True)
    stranger = int(out.stdout.split()[-1])
    child = subprocess.Popen([sys.executable, "-c", code, title])
    try:
        time.sleep(0.3)
        assert stranger not in {p.pid for p in psutil.Process().children(recursive=True)}
        assert [p.pid for p in find_processes(title)] == [child.pid]
        with kill_once_when(title, all_matching=True) as killed:
            child.wait(timeout=10)
        assert killed == [child.pid] and child.returncode == -signal.SIGKILL
        assert psutil.pid_exists(stranger) and psutil.Process(stranger).status() != psutil.STATUS_ZOMBIE
    finally:
        if child.poll() is None:
            child.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(stranger, signal.SIGKILL)  # by the pid this test started, nothing else
