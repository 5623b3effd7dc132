"""Which stage failures are worth a retry.

A pipeline retries a stage only when the failure says nothing about its input: a Ray job that died,
a lost connection, a worker killed by the OS. A stage that rejects its input (a bad config, a
missing corpus, a malformed file) fails the same way every time, so it fails the flow run at once
with the stage's own message.

The rule is an allow-list of transient exception types (by qualified name, so it also applies to
the last exception printed by a Ray job's driver, where only the name is known). Everything else
counts as bad input.
"""

from __future__ import annotations

import re

__all__ = [
    "StageError",
    "TransientStageError",
    "BadInputError",
    "TRANSIENT_EXCEPTIONS",
    "is_transient",
    "is_transient_name",
    "last_exception_line",
]


class StageError(RuntimeError):
    """A stage run that did not succeed; the message carries the stage's own words."""


class TransientStageError(StageError):
    """A failure outside the stage's input: the Ray job died or was stopped, a connection dropped."""


class BadInputError(StageError):
    """The stage rejected its input or config; retrying cannot help."""


# Qualified (or bare) names of exceptions that mean "the machinery failed", not "the input is bad".
TRANSIENT_EXCEPTIONS: frozenset[str] = frozenset(
    {
        "TransientStageError",
        "ConnectionError",
        "ConnectionResetError",
        "ConnectionRefusedError",
        "ConnectionAbortedError",
        "BrokenPipeError",
        "TimeoutError",
        "requests.exceptions.ConnectionError",
        "requests.exceptions.Timeout",
        "requests.exceptions.ReadTimeout",
        "requests.exceptions.ConnectTimeout",
        "httpx.ConnectError",
        "httpx.ReadTimeout",
        "ray.exceptions.RaySystemError",
        "ray.exceptions.WorkerCrashedError",
        "ray.exceptions.NodeDiedError",
        "ray.exceptions.ObjectLostError",
        "ray.exceptions.OwnerDiedError",
        "ray.exceptions.ActorDiedError",
        "ray.exceptions.ActorUnavailableError",
        "ray.exceptions.LocalRayletDiedError",
        "ray.exceptions.OutOfMemoryError",
        "ray.exceptions.GetTimeoutError",
        "ray.exceptions.RpcError",
        "ray.exceptions.ObjectFetchTimedOutError",
        "ray.exceptions.RuntimeEnvSetupError",
        "ray.exceptions.TaskUnschedulableError",
        "ray.exceptions.ActorUnschedulableError",
    }
)


def _names(exc_type: type) -> set[str]:
    names = set()
    for cls in exc_type.__mro__:
        names.add(cls.__name__)
        names.add(f"{cls.__module__}.{cls.__qualname__}")
    return names


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or, for Ray task errors, its cause) is a failure worth retrying."""
    if isinstance(exc, BadInputError):
        return False
    if _names(type(exc)) & TRANSIENT_EXCEPTIONS:
        return True
    # ray.exceptions.RayTaskError wraps the user's exception: judge by what it wraps.
    cause = getattr(exc, "cause", None) or exc.__cause__
    if isinstance(cause, BaseException) and cause is not exc:
        return is_transient(cause)
    return False


def is_transient_name(name: str) -> bool:
    """Judge an exception by the name a traceback printed (``ray.exceptions.NodeDiedError``)."""
    bare = name.rsplit(".", 1)[-1]
    return name in TRANSIENT_EXCEPTIONS or bare in TRANSIENT_EXCEPTIONS


_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b)(?::\s*(.*))?$")


def last_exception_line(log_text: str) -> tuple[str, str] | None:
    """The last ``Name: message`` line of a traceback in ``log_text``: ``(name, message)`` or None.

    Ray wraps a task's error as ``ray.exceptions.RayTaskError(ValueError): ...``; the wrapped name
    is returned in that case.
    """
    found = None
    for raw in log_text.splitlines():
        line = raw.strip()
        m = re.match(r"^ray\.exceptions\.RayTaskError\((\w+)\)(?::\s*(.*))?$", line)
        if m:
            found = (m.group(1), m.group(2) or "")
            continue
        m = _EXC_LINE.match(line)
        if m:
            found = (m.group(1), m.group(2) or "")
    return found
