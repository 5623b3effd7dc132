"""API keys and service URLs: which variable a key may come from, where it may go, how a URL is shown.

- A key comes only from an environment variable whose name starts with :data:`KEY_PREFIX`
  (``MOSEAR_API_KEY``, ``MOSEAR_API_KEY_JUDGE``, ...) or is in :data:`ALLOWED_KEY_VARS`
  (``OPENAI_API_KEY``): a config file can never make mosear send, say, ``AWS_SECRET_ACCESS_KEY`` to a
  server of its choosing (:data:`ApiKeyEnv` checks the name when the config is read).
- A key is sent only over ``https`` or to a loopback host (``127.0.0.0/8``, ``::1``, ``localhost``):
  :func:`api_key` refuses a plain-http remote URL with a one-line error naming the config field.
- A URL is stored and shown without credentials (:func:`redact_url`: no ``user:pass@``, secret-looking
  query values masked). :data:`ApiUrl` applies it wherever a config is dumped to JSON (``run.json``,
  ``commit.json``, the cluster job's config), so credentials in a URL never reach a file or a log;
  they are not carried into cluster jobs either (put the key in a ``MOSEAR_API_KEY*`` variable).
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import AfterValidator, PlainSerializer

__all__ = ["KEY_PREFIX", "ALLOWED_KEY_VARS", "ApiKeyEnv", "ApiUrl", "api_key", "check_key_env", "is_loopback",
           "redact_url"]

KEY_PREFIX = "MOSEAR_API_KEY"
ALLOWED_KEY_VARS = frozenset({"OPENAI_API_KEY"})
_SECRET_PARAM = re.compile(r"key|token|secret|sig|password|auth", re.I)


def check_key_env(name: str | None) -> str | None:
    """``name`` when a key may be read from it (see the module docstring); ValueError otherwise."""
    if name is None or name == "":
        return name
    if not (name.startswith(KEY_PREFIX) or name in ALLOWED_KEY_VARS):
        raise ValueError(f"api_key_env {name!r}: an API key is read only from a variable named {KEY_PREFIX}* "
                         f"or one of {sorted(ALLOWED_KEY_VARS)} (so a config cannot send another secret away)")
    return name


def redact_url(url: str | None) -> str | None:
    """``url`` without ``user:pass@`` and with secret-looking query values replaced by ``***``."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc.rpartition("@")[2]
    query = urlencode([(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
                      safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def is_loopback(url: str) -> bool:
    """True when ``url``'s host is this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_key(env_name: str | None, url: str, field: str = "api_key_env") -> str | None:
    """The key in ``$env_name`` (None when unset or empty), refused for a URL it must not travel to."""
    check_key_env(env_name)
    key = os.environ.get(env_name) if env_name else None
    if not key:
        return None
    if urlsplit(url).scheme != "https" and not is_loopback(url):
        raise ValueError(f"{field} {env_name}: the API key is sent only over https or to a loopback host, not to "
                         f"{redact_url(url)} (use https, or unset {env_name})")
    return key


# Config field types: a key variable name checked on load; a URL dumped without credentials.
ApiKeyEnv = Annotated[str, AfterValidator(check_key_env)]
ApiUrl = Annotated[str, PlainSerializer(redact_url, return_type=str, when_used="json")]
