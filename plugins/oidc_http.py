"""Talking to an OpenID provider: JSON over HTTP with the standard library (urllib), each call
with a timeout inside the run's deadline, a bounded response size, no redirects (a token
endpoint that redirects elsewhere is refused, never followed), and errors that name the
endpoint and the provider's ``error`` code only: a response body may hold tokens.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from keyhelper import redact
from keyhelper.backend import Context
from keyhelper.errors import BackendError, DeadlineExceeded

MAX_RESPONSE_BYTES = 256 * 1024  # discovery, JWKS and token responses are a few KiB
MAX_ERROR_TEXT = 160
RETRY_STATUSES = frozenset({500, 502, 503, 504})


class ProviderError(BackendError):
    """The provider answered a grant with an OAuth error (``invalid_grant``...)."""

    def __init__(self, code: str, description: str, status: int, where: str):
        self.code = code
        self.status = status
        text = redact.printable(redact.redact(description), newlines=False)[:MAX_ERROR_TEXT]
        super().__init__(f"{where}: {code}" + (f" ({text})" if text else ""))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


_OPENER = urllib.request.build_opener(_NoRedirect)


def check_url(url: str, what: str) -> str:
    """An https URL, or http on loopback only (tokens must not travel in clear text)."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    loopback = host in ("localhost", "::1") or host.startswith("127.")
    if parts.scheme == "https" or (parts.scheme == "http" and loopback):
        return url
    raise BackendError(f"{what} {redact.printable(url, newlines=False)[:200]} is not https "
                       "(plain http is allowed on loopback only)")


def same_origin(url: str, issuer: str, what: str) -> str:
    """An endpoint named by the discovery document: https (some providers put the token
    endpoint or keys on another host of theirs, e.g. Google), or plain http only on the
    issuer's own loopback origin: no token goes in clear text to another address."""
    check_url(url, what)
    a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(issuer)
    if a.scheme == "http" and (a.scheme, a.hostname, a.port) != (b.scheme, b.hostname, b.port):
        raise BackendError(f"the provider's {what} is on another host than its issuer")
    return url


def call(context: Context, method: str, url: str, *, form: Mapping[str, str] | None = None,
         timeout: float, what: str, retries: int = 1) -> tuple[int, dict[str, Any]]:
    """One request; (status, JSON object). 5xx and connection errors are retried
    ``retries`` times. Raises BackendError for transport faults, non-JSON or oversized
    answers; OAuth error answers (4xx with ``error``) come back as (status, body)."""
    data = None if form is None else urllib.parse.urlencode(form).encode()
    headers = {"Accept": "application/json", "User-Agent": "keyhelper"}
    if data is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    for attempt in range(retries + 1):
        # check_url() admitted only https, or http on loopback, before any call.
        request = urllib.request.Request(url, data=data, method=method,  # noqa: S310
                                         headers=headers)
        try:
            seconds = context.timeout(timeout)
        except DeadlineExceeded:
            raise DeadlineExceeded(f"{what}: the run's deadline passed") from None
        try:
            with _OPENER.open(request, timeout=seconds) as response:
                return response.status, _json(response, what)
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                raise BackendError(f"{what}: the provider answered with a redirect "
                                   f"(HTTP {exc.code}); not followed") from None
            if exc.code in RETRY_STATUSES and attempt < retries:
                continue
            try:
                body = _json(exc, what)
            except BackendError:
                body = {}
            if exc.code >= 500 or not isinstance(body.get("error"), str):
                raise BackendError(f"{what}: HTTP {exc.code}") from None
            return exc.code, body
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            if attempt < retries:
                continue
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                raise BackendError(f"{what}: no answer within {seconds:.1f} s") from None
            raise BackendError(f"{what}: cannot connect ({_short(reason)})") from None
    raise AssertionError("unreachable")


def _json(response: Any, what: str) -> dict[str, Any]:
    raw = response.read(MAX_RESPONSE_BYTES + 1)
    if len(raw) > MAX_RESPONSE_BYTES:
        raise BackendError(f"{what}: the answer is larger than "
                           f"{MAX_RESPONSE_BYTES // 1024} KiB; refused")
    if not raw.strip():
        return {}  # revocation answers 200 with no body (RFC 7009 2.2)
    try:
        body = json.loads(raw)
    except ValueError:
        raise BackendError(f"{what}: the answer is not JSON") from None
    if not isinstance(body, dict):
        raise BackendError(f"{what}: the answer is not a JSON object")
    return body


def _short(reason: object) -> str:
    text = getattr(reason, "strerror", None) or str(reason)
    return redact.printable(str(text), newlines=False)[:MAX_ERROR_TEXT]


def oauth_error(status: int, body: Mapping[str, Any], what: str) -> ProviderError:
    return ProviderError(str(body.get("error", "error")),
                         str(body.get("error_description") or ""), status, what)
