"""``aws_sts``: AWS session credentials from STS ``AssumeRoleWithWebIdentity``, for Bedrock.

The web-identity token (a JWT) comes from another backend of the config (``token_backend``:
the jwt or an OIDC backend) or a file (``token_file``, e.g. $AWS_WEB_IDENTITY_TOKEN_FILE).
The call is unsigned (the token is the credential): one form POST over HTTPS with the
standard library, the XML answer parsed with ElementTree after refusing any DOCTYPE (no
entity tricks from a configured endpoint). The key is the credential document
``keyhelper aws-credentials`` prints; it is cached until 5 minutes before its Expiration
(the cache drops it a minute before that).
"""

from __future__ import annotations

import http.client
import os
import ssl
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime
from typing import ClassVar
from urllib.parse import urlencode, urlsplit

from keyhelper import redact
from keyhelper.backend import (
    MISSING,
    Backend,
    Option,
    Token,
    aws_credentials,
    login_name,
    read_user_file,
)
from keyhelper.errors import BackendError, ConfigError, Skip

from .vault_http import is_loopback  # the same rule as Vault's: no DNS, 127/8, ::1

DEFAULT_ENDPOINT = "https://sts.amazonaws.com"
MAX_ANSWER = 65536
_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"


class AwsStsBackend(Backend):
    summary = "AWS session credentials from STS AssumeRoleWithWebIdentity (Bedrock)"
    options: ClassVar = {
        "role_arn": Option(str, required=True, help="the IAM role to assume"),
        "token_backend": Option(str, help="configured backend whose value is the web "
                                          "identity token (a JWT)"),
        "token_file": Option(str, help="file holding the web identity token (default "
                                       "$AWS_WEB_IDENTITY_TOKEN_FILE)"),
        "session_name": Option(str, help="RoleSessionName (default keyhelper-<login name>)"),
        "duration": Option(int, 3600, help="seconds the credentials last", min=900,
                           max=43200, message="expected seconds from 900 to 43200"),
        "region": Option(str, help="use the regional endpoint sts.REGION.amazonaws.com"),
        "endpoint": Option(str, help=f"STS endpoint URL (default {DEFAULT_ENDPOINT}; plain "
                                     "http only on loopback)"),
        "timeout": Option(float, 5.0, help="seconds to wait for STS"),
    }

    def watched_env(self) -> tuple[str, ...]:
        return () if self.config.get("token_file") or self.config.get(
            "token_backend") else ("AWS_WEB_IDENTITY_TOKEN_FILE",)

    def fetch(self) -> Token:
        token = self.web_identity_token()
        redact.remember(token)
        body = urlencode({
            "Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15",
            "RoleArn": self.config["role_arn"], "RoleSessionName": self.session_name(),
            "WebIdentityToken": token, "DurationSeconds": str(self.config["duration"])})
        status, answer = self.post(body)
        return parse_answer(status, answer)

    def web_identity_token(self) -> str:
        name = self.config.get("token_backend")
        if name:
            try:
                return self.context.fetch_other(name).value.strip()
            except Skip as exc:
                raise Skip(f"web identity token from backend {name!r}: {exc.message}") from None
            except BackendError as exc:
                raise BackendError(f"web identity token from backend {name!r}: "
                                   f"{exc.message}") from None
        path = self.config.get("token_file") or self.context.env.get(
            "AWS_WEB_IDENTITY_TOKEN_FILE")
        if not path:
            raise Skip("no web identity token: set token_backend or token_file")
        data, why = read_user_file(os.path.expanduser(path), "own")
        if data is None:
            if why == MISSING:
                raise Skip(f"no web identity token file {path}")
            raise BackendError(f"web identity token file {path} {why}")
        text = data.decode("utf-8", "replace").strip()
        if not text:
            raise BackendError(f"web identity token file {path} is empty")
        return text

    def session_name(self) -> str:
        name = self.config.get("session_name") or f"keyhelper-{login_name(self.context.env)}"
        # RoleSessionName allows [\w+=,.@-]{2,64}
        cleaned = "".join(ch if ch.isalnum() or ch in "+=,.@-_" else "-" for ch in name)
        return cleaned[:64]

    def endpoint(self) -> str:
        if self.config.get("endpoint"):
            return str(self.config["endpoint"])
        region = self.config.get("region")
        return f"https://sts.{region}.amazonaws.com" if region else DEFAULT_ENDPOINT

    def post(self, body: str) -> tuple[int, bytes]:
        url = self.endpoint()
        parts = urlsplit(url)
        where = f"backends.{self.name}.endpoint"
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError(f"expected an https:// URL, got {url!r}", key=where)
        if parts.scheme == "http" and not is_loopback(url):
            raise ConfigError("plain http would send the token unencrypted: use https",
                              key=where)
        timeout = self.context.timeout(self.config["timeout"])
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            conn.request("POST", parts.path or "/", body=body, headers={
                "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                "Accept": "application/xml"})
            response = conn.getresponse()
            return response.status, response.read(MAX_ANSWER + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise BackendError(f"STS at {parts.scheme}://{parts.netloc}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
        finally:
            conn.close()


def parse_answer(status: int, answer: bytes) -> Token:
    """The credentials of an AssumeRoleWithWebIdentity answer, or STS's error, said."""
    if len(answer) > MAX_ANSWER or b"<!DOCTYPE" in answer.upper():
        raise BackendError(f"STS answered {status} with something other than its XML")
    try:
        root = ElementTree.fromstring(answer)  # noqa: S314 - no DOCTYPE (checked above), so no entities
    except ElementTree.ParseError:
        raise BackendError(f"STS answered {status} with something other than XML") from None
    if status != 200:
        code = _text(root, "Code") or "no code"
        message = _text(root, "Message") or ""
        raise BackendError(f"STS refused ({status} {code}): {message}".rstrip(": "))
    fields = {name: _text(root, name) for name in
              ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration")}
    if not (fields["AccessKeyId"] and fields["SecretAccessKey"] and fields["Expiration"]):
        raise BackendError("STS answered without credentials")
    try:
        expires = datetime.fromisoformat(fields["Expiration"].replace("Z", "+00:00"))
    except ValueError:
        raise BackendError("STS answered an Expiration that is no ISO 8601 time") from None
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    for value in fields.values():
        if value:
            redact.remember(value)
    return aws_credentials(fields["AccessKeyId"], fields["SecretAccessKey"],
                           fields["SessionToken"] or None, expires.timestamp())


def _text(root: ElementTree.Element, name: str) -> str:
    """The text of the first element of this local name, in STS's namespace or none."""
    found = root.find(f".//{_NS}{name}")
    if found is None:
        found = root.find(f".//{name}")
    return (found.text or "").strip() if found is not None else ""
