"""LiteLLM's ``custom_auth`` hook, verifying the keys keyhelper hands Claude Code.

In LiteLLM's config::

    general_settings:
      master_key: os.environ/LITELLM_MASTER_KEY
      custom_auth: keyhelper.gateway.litellm.user_api_key_auth

and ``KEYHELPER_GATEWAY_CONFIG=/path/to/gateway.toml`` in the proxy's environment
(keyhelper/gateway/settings.py, docs/gateway.md). The keys load when LiteLLM imports this
module at start-up; with none, the proxy does not start. Install with
``pip install 'keyhelper[litellm]'`` (it brings ``prisma``: without it LiteLLM turns a
rejection into a 500 instead of the 401 that makes Claude Code re-run its helper).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from litellm.proxy._types import (
    LitellmUserRoles,
    ProxyErrorTypes,
    ProxyException,
    UserAPIKeyAuth,
)

from keyhelper.gateway import settings
from keyhelper.gateway.verify import Identity, Rejected, Verifier
from keyhelper.redact import fingerprint

log = logging.getLogger("keyhelper.gateway")

verifier = Verifier(settings.from_env()).start()


async def user_api_key_auth(request: Any, api_key: str) -> UserAPIKeyAuth:
    """The identity behind ``api_key``, or a 401 with a short reason (never the key)."""
    from litellm.proxy import proxy_server  # its master_key is set once the config loads

    master = proxy_server.master_key
    if isinstance(master, str) and master and hmac.compare_digest(api_key.encode(),
                                                                  master.encode()):
        return UserAPIKeyAuth(api_key=api_key, user_role=LitellmUserRoles.PROXY_ADMIN,
                              user_id=proxy_server.litellm_proxy_admin_name)
    identity = verifier.cached(api_key)
    if identity is None:
        try:
            # Off the event loop: a first sight may check a signature and, for an unknown
            # kid, fetch the JWKS (rate-limited).
            identity = await asyncio.to_thread(verifier.verify, api_key)
        except Rejected as exc:
            log.warning("keyhelper gateway: refused %s: %s", fingerprint(api_key), exc.reason)
            raise ProxyException(message=f"keyhelper gateway: {exc.reason}",
                                 type=ProxyErrorTypes.auth_error, param="api_key",
                                 code=401) from None
    return as_litellm(api_key, identity)


def as_litellm(api_key: str, identity: Identity) -> UserAPIKeyAuth:
    # LiteLLM hashes api_key (sha256 hex) before it logs or stores it.
    return UserAPIKeyAuth(api_key=api_key, user_id=identity.user_id, team_id=identity.team_id,
                          metadata=dict(identity.metadata),
                          user_role=LitellmUserRoles.INTERNAL_USER)
