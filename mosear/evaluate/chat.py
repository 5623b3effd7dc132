"""One chat-completions POST with retries, shared by the judge and the endpoint model backend.

Connection errors, timeouts, HTTP 429 and 5xx are retried with a doubling backoff (``backoff_s``, then
twice that, ...); any other non-200 status is final (retrying a 4xx will not help) and raises
``rejected``; a 200 without ``choices[0].message.content``, or no success after ``retries + 1``
attempts, raises ``failed``. ``what`` names the service in every message and log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["post_chat"]


def post_chat(client: Any, url: str, body: dict[str, Any], *, retries: int, backoff_s: float, what: str,
              rejected: type[Exception], failed: type[Exception],
              on_attempt: Callable[[], None] | None = None) -> str:
    """The reply text (``""`` for a null content) of one chat completion posted with ``client`` (httpx)."""
    import httpx

    delay, last = backoff_s, "no attempt"
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(delay)
            delay *= 2
        if on_attempt is not None:
            on_attempt()
        try:
            r = client.post(url, json=body)
        except httpx.TransportError as exc:  # refused, reset, dropped connection, DNS, timeout
            last = f"{type(exc).__name__}: {exc}"
            log.warning("%s %s: attempt %d failed: %s", what, url, attempt + 1, last)
            continue
        if r.status_code == 429 or r.status_code >= 500:
            last = f"HTTP {r.status_code}: {r.text[:200]}"
            log.warning("%s %s: attempt %d failed: %s", what, url, attempt + 1, last)
            continue
        if r.status_code != 200:
            raise rejected(f"{what} {url} refused the request: HTTP {r.status_code}: {r.text[:300]}")
        try:
            return r.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise failed(f"{what} {url} sent no chat completion: {r.text[:300]!r}") from exc
    raise failed(f"{what} {url} unreachable after {retries + 1} attempts; last error: {last}")
