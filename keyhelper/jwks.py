"""``keyhelper jwks``: the public JWKS of the selected jwt backends' signing keys, so a
gateway or Vault's JWT auth can be told to trust the tokens keyhelper mints."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from keyhelper.base.files import Selection
from keyhelper.errors import EXIT_OK, BackendError, UsageError
from keyhelper.resolver import Run

JWT_TYPE = "jwt"


@runtime_checkable
class PublishesJwk(Protocol):
    """A backend that signs with a key and can show its public half.

    ``public_jwk`` raises :class:`BackendError` naming the backend itself (``backend=``)
    when it has no public key to publish (an HMAC secret): the command was pointed at the
    wrong backend, a usage error. Any other error is a failure to read the key.
    """

    def public_jwk(self) -> dict[str, str]: ...


def public_jwks(selection: Selection, env: Mapping[str, str]) -> dict[str, Any]:
    """``{"keys": [...]}`` for every backend of type jwt in the selected chain."""
    run = Run(selection, env)
    specs = [spec for spec in run.settings.chain if spec.type == JWT_TYPE]
    if not specs:
        chosen = ", ".join(f"{s.name} ({s.type})" for s in run.settings.chain)
        raise UsageError(f"keyhelper jwks: no backend of type jwt in the chain ({chosen}); "
                         "pick one with --backend NAME")
    keys: list[dict[str, str]] = []
    for spec in specs:
        backend = run.chain.build(spec)
        if not isinstance(backend, PublishesJwk):
            raise UsageError(f"keyhelper jwks: backend {spec.name!r} has no public key")
        try:
            jwk = backend.public_jwk()
        except BackendError as exc:
            if exc.backend != spec.name:
                raise
            raise UsageError(exc.describe()) from None
        if jwk not in keys:
            keys.append(jwk)
    return {"keys": keys}


def print_jwks(selection: Selection, env: Mapping[str, str],
               echo: Callable[[str], None]) -> int:
    echo(json.dumps(public_jwks(selection, env), indent=2))
    return EXIT_OK
