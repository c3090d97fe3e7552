"""The verifier against a real OIDC issuer: OpenBao's identity tokens, found by discovery
(``/v1/identity/oidc/.well-known/openid-configuration``), through a signing-key rotation
whose JWKS keeps the old key for its verification TTL."""

from __future__ import annotations

import jwt
import pytest
from fixtures_openbao import OpenBao
from openbao_identity import identity_issuer

from keyhelper.gateway import settings as gateway_settings
from keyhelper.gateway.verify import Rejected, Verifier

pytestmark = pytest.mark.vault


def test_identity_tokens_verify_through_a_key_rotation(openbao: OpenBao) -> None:
    issuer = identity_issuer(openbao)
    vault_token = issuer.login(openbao.unique("erin"), "platform")
    settings = gateway_settings.from_mapping({
        "oidc_issuer": issuer.issuer, "audience": issuer.client_id,
        "claims": {"user_id": "user", "team_id": "team", "metadata": ["sub"]}})
    verifier = Verifier(settings).start()
    fetches = verifier.keys.fetches

    old = issuer.mint(vault_token)
    identity = verifier.verify(old)
    assert identity.user_id.startswith("erin-") and identity.team_id == "platform"
    assert set(identity.metadata) == {"sub"}

    published = issuer.kids()
    issuer.rotate()
    new = issuer.mint(vault_token)
    old_kid, new_kid = (jwt.get_unverified_header(t)["kid"] for t in (old, new))
    assert old_kid != new_kid
    assert {old_kid, new_kid} <= set(issuer.kids())  # both published: the overlap
    # OpenBao publishes the next key before it signs with it: no refetch was needed.
    assert new_kid in published
    assert verifier.verify(new).user_id == identity.user_id
    assert verifier.verify(issuer.mint(vault_token)).user_id == identity.user_id
    assert verifier.keys.fetches == fetches
    verifier._cache.clear()  # verify the old token's signature again, not from the cache
    assert verifier.verify(old).user_id == identity.user_id


def test_a_token_for_another_audience_is_refused(openbao: OpenBao) -> None:
    issuer = identity_issuer(openbao)
    other = identity_issuer(openbao)  # same OpenBao, another role: another client_id
    settings = gateway_settings.from_mapping({
        "oidc_issuer": issuer.issuer, "audience": issuer.client_id,
        "claims": {"user_id": "user"}})
    verifier = Verifier(settings).start()
    token = other.mint(other.login(openbao.unique("mallory"), "x"))
    with pytest.raises(Rejected, match=r"^wrong audience \(aud\)$"):
        verifier.verify(token)
