"""Which stage failures are worth a retry.

A pipeline retries a stage only when the failure says nothing about its input: a Ray job that died,
a lost connection, a worker killed by the OS. A stage that rejects its input (a bad config, a
missing corpus, a malformed file) fails the same way every time, so it fails the flow run at once
with the stage's own message.

The rule is an allow-list of transient exception types (by qualified name, so it also applies to
the last exception printed by a Ray job's driver, where only the name is known). Everything else
counts as bad input.

Both modes share one set of exit-code classes (:data:`EXIT_CODES`): the ``mosear`` CLI exits with
them (:func:`exit_code`) and, given ``--result-file``, writes its verdict there (:func:`result_record`:
class, code, message, failed/total counts, first reasons); a cluster job's driver reads that file back
(:func:`error_from_result`, the same exception class in both modes) and falls back to the job's exit
code (:func:`error_for_exit_code`) only when the file is missing; an embedded stage's exception is
mapped to the same classes (:func:`classify`):

====  ==================  ==================================================  ========
code  class               meaning                                             retried
====  ==================  ==================================================  ========
0     ok                  the stage committed its output
1     failed              some shards / units failed (count and first reasons printed); no
                          ``allow_partial``
2     bad input           bad config, missing or malformed input              no
3     refused resume      the output / checkpoint belongs to another config   no
75    transient           lost worker, lost connection, Ray died (EX_TEMPFAIL) yes
130   interrupted         Ctrl-C (SIGINT)                                     no
====  ==================  ==================================================  ========
"""

from __future__ import annotations

import re

__all__ = [
    "StageError",
    "TransientStageError",
    "BadInputError",
    "RefusedResumeError",
    "StageFailedError",
    "InterruptedStageError",
    "EXIT_CODES",
    "CLASS_OF_CODE",
    "mark_interrupted",
    "interrupted",
    "result_record",
    "error_from_result",
    "exit_code",
    "classify",
    "error_for_exit_code",
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


class RefusedResumeError(BadInputError):
    """The output folder or checkpoint holds another config's work; the stage refused to mix them."""


class StageFailedError(StageError):
    """Some units of the stage (shards, evaluation units) failed and partial output was not allowed.

    ``count`` is how many failed, ``reasons`` maps the first of them to their error.
    """

    def __init__(self, stage: str, count: int, total: int, reasons: dict[str, str], hint: str = "") -> None:
        self.count, self.total, self.reasons = count, total, dict(reasons)
        first = "; ".join(f"{k}: {(v or '').strip().splitlines()[-1][:200] if v else ''}" for k, v in list(reasons.items())[:3])
        super().__init__(f"{stage}: {count} of {total} failed (first: {first}){hint}")

    @classmethod
    def from_message(cls, message: str) -> StageFailedError:
        """A failed-units error known only by its message (a job that left no result file)."""
        exc = cls.__new__(cls)
        exc.count, exc.total, exc.reasons = 0, 0, {}
        StageError.__init__(exc, message)
        return exc


class InterruptedStageError(StageError):
    """The stage (or the job running it) was interrupted (Ctrl-C / SIGINT); never retried."""


EXIT_CODES: dict[str, int] = {"ok": 0, "failed": 1, "bad_input": 2, "refused_resume": 3, "transient": 75,
                              "interrupted": 130}
CLASS_OF_CODE: dict[int, str] = {v: k for k, v in EXIT_CODES.items()}

_INTERRUPTED: list[bool] = []  # set by the first Ctrl-C this process received


def mark_interrupted() -> None:
    """Record that this process got SIGINT: from now on no failure counts as transient (never retried)."""
    if not _INTERRUPTED:
        _INTERRUPTED.append(True)


def interrupted() -> bool:
    """True once :func:`mark_interrupted` ran in this process."""
    return bool(_INTERRUPTED)


def _refused(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"RefusedResumeError", "OutputConflictError", "CheckpointMismatchError"})


def classify(exc: BaseException, where: str = "") -> StageError:
    """The :class:`StageError` of an exception raised by a stage's own code (embedded mode)."""
    msg = f"{where}: {exc}" if where else str(exc)
    if isinstance(exc, StageError):
        return exc
    if _refused(exc):
        return RefusedResumeError(msg)
    if is_transient(exc):
        return TransientStageError(msg)
    return BadInputError(msg)


def exit_code(exc: BaseException) -> int:
    """The CLI exit code of an exception (see the table in the module docstring)."""
    if isinstance(exc, (KeyboardInterrupt, InterruptedStageError)):
        return EXIT_CODES["interrupted"]
    if isinstance(exc, StageFailedError):
        return EXIT_CODES["failed"]
    if _refused(exc):
        return EXIT_CODES["refused_resume"]
    if is_transient(exc):
        return EXIT_CODES["transient"]
    return EXIT_CODES["bad_input"]


def error_for_exit_code(code: int | None, message: str, exc_name: str | None = None) -> StageError:
    """The error a cluster job's driver exit ``code`` stands for, when it left no result file
    (``None``/negative/other signals: the job died)."""
    if code == EXIT_CODES["failed"]:
        return StageFailedError.from_message(message)
    if code == EXIT_CODES["bad_input"]:
        return BadInputError(message)
    if code == EXIT_CODES["refused_resume"]:
        return RefusedResumeError(message)
    if code == EXIT_CODES["interrupted"]:
        return InterruptedStageError(message)
    if code == EXIT_CODES["transient"] or code is None or code < 0 or code > 128:
        return TransientStageError(message)  # killed by a signal, lost, or said so itself
    if exc_name is not None and is_transient_name(exc_name):
        return TransientStageError(message)
    return BadInputError(message)  # any other exit: an uncaught error in the stage's own code


def result_record(code: int, exc: BaseException | None = None) -> dict:
    """What a stage command writes to its ``--result-file``: its class, exit code and one-line message;
    for failed units also ``failed`` / ``total`` and the first ``reasons`` (unit -> error)."""
    rec: dict = {"class": CLASS_OF_CODE.get(code, "bad_input"), "code": code,
                 "message": " ".join(ln.strip() for ln in str(exc or "").splitlines() if ln.strip())[:4000],
                 "exception": type(exc).__name__ if exc is not None else None}
    if isinstance(exc, StageFailedError):
        rec.update(failed=exc.count, total=exc.total, reasons=dict(list(exc.reasons.items())[:10]))
    return rec


def error_from_result(rec: dict, where: str) -> StageError | None:
    """The exception a cluster job's result record stands for (None when it says ``ok``); the same
    class an embedded run of the stage raises, so both modes exit with the same code."""
    cls = rec.get("class")
    msg = f"{where}: {rec.get('message', '')}"
    if cls == "ok":
        return None
    if cls == "failed" and "failed" in rec:
        return StageFailedError(where, int(rec["failed"]), int(rec.get("total", 0)), rec.get("reasons") or {})
    return {"failed": StageFailedError.from_message, "refused_resume": RefusedResumeError,
            "transient": TransientStageError, "interrupted": InterruptedStageError}.get(cls, BadInputError)(msg)


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
    """True when ``exc`` (or, for Ray task errors, its cause) is a failure worth retrying; never after
    a Ctrl-C (the connection errors an interruption causes are not the machinery failing)."""
    if isinstance(exc, (BadInputError, InterruptedStageError, KeyboardInterrupt)) or interrupted():
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
