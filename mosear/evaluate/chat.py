"""One chat-completions POST with retries, shared by the judge and the endpoint model backend.

Connection errors, timeouts, HTTP 429 and 5xx are retried with a doubling backoff (``backoff_s``, then
twice that, ...); no success after ``retries + 1`` attempts raises ``failed``. Any other non-200 status
is final (retrying a 4xx will not help): a status that says this request is bad (400, 413, 415, 422:
:data:`ITEM_STATUSES`) raises ``rejected``, any other (401, 403, 404, ...: the key, the URL or the
service is wrong, whatever the request) raises ``failed``. A 200 without ``choices[0].message.content``
raises ``bad_reply`` (default ``failed``). ``what`` names the service in every message and log line; the
URL is shown without credentials.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["post_chat", "ITEM_STATUSES"]

# Statuses that blame this one request (its media, its length), not the service: a data error of the item.
ITEM_STATUSES = frozenset({400, 413, 415, 422})


def post_chat(client: Any, url: str, body: dict[str, Any], *, retries: int, backoff_s: float, what: str,
              rejected: type[Exception], failed: type[Exception],
              on_attempt: Callable[[], None] | None = None, bad_reply: type[Exception] | None = None) -> str:
    """The reply text (``""`` for a null content) of one chat completion posted with ``client`` (httpx)."""
    import httpx

    from mosear.secrets import redact_url

    shown = redact_url(url)

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
            log.warning("%s %s: attempt %d failed: %s", what, shown, attempt + 1, last)
            continue
        if r.status_code == 429 or r.status_code >= 500:
            last = f"HTTP {r.status_code}: {r.text[:200]}"
            log.warning("%s %s: attempt %d failed: %s", what, shown, attempt + 1, last)
            continue
        if r.status_code != 200:
            cls = rejected if r.status_code in ITEM_STATUSES else failed
            raise cls(f"{what} {shown} refused the request: HTTP {r.status_code}: {r.text[:300]}")
        try:
            return r.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise (bad_reply or failed)(f"{what} {shown} sent no chat completion: {r.text[:300]!r}") from exc
    raise failed(f"{what} {shown} unreachable after {retries + 1} attempts; last error: {last}")
