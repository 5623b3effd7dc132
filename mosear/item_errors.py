"""Data errors versus everything else: the one rule every stage's per-item loop follows.

An :class:`ItemError` says *this input item* cannot be used (a bad clip, a missing key, an unparseable
reply, a request the endpoint refuses for this sample): the item is quarantined or dropped with
``reason``, the unit goes on, and the stage counts it by reason (``max_item_error_fraction`` on a stage's
config bounds how many may be). Any other exception is an environment or code error (connection refused,
a timeout, HTTP 5xx/401/403, a bug in our code or a stage's): it fails the unit, which is then never
cached or marked complete, so a rerun after the fix (or with the service back) recomputes it.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ItemError", "count_reasons", "check_error_fraction"]


class ItemError(Exception):
    """One input item is unusable; ``reason`` is a short stable key (``unparseable_reply``, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


def count_reasons(reasons: list[str]) -> dict[str, int]:
    """``{reason: count}``, most frequent first (what a stage prints and records)."""
    out: dict[str, int] = {}
    for r in reasons:
        out[r] = out.get(r, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def check_error_fraction(stage: str, errors: Mapping[str, int], items: int, limit: float,
                         first: Mapping[str, str] | None = None) -> None:
    """Raise :class:`~mosear.orchestrate.errors.StageFailedError` when the data errors of ``items``
    (``errors``: count by reason) exceed the fraction ``limit`` (``max_item_error_fraction``)."""
    n = sum(errors.values())
    if items <= 0 or n <= limit * items:
        return
    from mosear.orchestrate.errors import StageFailedError

    reasons = dict(first or {}) or {k: f"{v} items" for k, v in errors.items()}
    raise StageFailedError(stage, n, items, reasons,
                           hint=f" inputs are data errors ({', '.join(f'{k}: {v}' for k, v in errors.items())}), "
                                f"more than max_item_error_fraction={limit} allows; fix the inputs or raise the limit")
