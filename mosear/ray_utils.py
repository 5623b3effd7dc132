"""One way to get a Ray runtime: embedded (a local Ray started in-process) or an existing cluster.

``address=None`` starts (or reuses, inside the same process) a local Ray of its own, always: Ray's own
``ray.init()`` without an address would join whatever cluster ``ray start`` last left on the machine
(its ``ray_current_cluster`` file), or hang retrying one that has been stopped, so embedded mode passes
``address="local"``. Joining a cluster is only ever explicit: ``address="auto"``, ``"ray://host:10001"``
or ``"host:6379"``, or the ``RAY_ADDRESS`` variable (set inside a job started by ``ray job submit``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def ray_env_defaults() -> None:
    """Environment every mosear process wants before Ray is imported or started."""
    # Ray >= 2.50 writes an auth token file unless told not to; embedded runs need none.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # No usage-stats prompt or network call on machines without internet.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs: Any):
    """Start or connect to Ray once per process and return the ``ray`` module.

    ``num_cpus`` only applies to an embedded Ray (a cluster's size is the cluster's).
    """
    ray_env_defaults()
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        log.info("connecting to Ray cluster at %s", address)
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=True, **kwargs)
    else:
        # Ray Train's PreemptionWatcher actor watches for spot nodes being taken away, which a Ray living in
        # this process cannot have; started, it makes Ray's core worker log an ERROR line about its own
        # restartable actor ("core_worker.cc ... 'PreemptionWatcher' ... max_restarts > 0") on every run.
        # Ray Train's own switch turns it off (read by the train controller, which inherits this env).
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            ignore_reinit_error=True,
            log_to_driver=True,
            logging_level=logging.WARNING,
            **kwargs,
        )
    return ray


def wait_one(refs: list, poll_s: float = 0.5) -> tuple[list, list]:
    """``ray.wait(refs, num_returns=1)`` that Ctrl-C can interrupt: ``(ready, not_ready)``.

    Without a timeout ``ray.wait`` blocks inside Ray's C++ core until a task ends, and Python runs no
    signal handler meanwhile: a Ctrl-C during a stage whose units take minutes went unanswered until the
    next unit finished. Waiting in slices of ``poll_s`` seconds lets the handler run between them.
    """
    import ray

    while True:
        ready, rest = ray.wait(list(refs), num_returns=1, timeout=poll_s)
        if ready:
            return ready, rest
