"""OpenBao's identity tokens (its own OIDC issuer, ``identity/oidc``) for the gateway tests:
a named signing key, a role whose template adds ``user`` and ``team`` claims, and per person
an entity with a userpass login whose token may read ``identity/oidc/token/ROLE``."""

from __future__ import annotations

from dataclasses import dataclass

from fixtures_openbao import OpenBao

TEMPLATE = '{"user": {{identity.entity.name}}, "team": {{identity.entity.metadata.team}}}'


@dataclass(frozen=True)
class IdentityIssuer:
    bao: OpenBao
    key: str
    role: str
    client_id: str  # the tokens' aud

    @property
    def issuer(self) -> str:
        return f"{self.bao.addr}/v1/identity/oidc"

    @property
    def token_path(self) -> str:
        return f"identity/oidc/token/{self.role}"

    def login(self, user: str, team: str) -> str:
        """A Vault token for a new entity ``user`` (metadata team) allowed to mint."""
        bao = self.bao
        mount = bao.enable_auth("userpass")
        accessor = bao.api("GET", "sys/auth")["data"][f"{mount}/"]["accessor"]
        password = f"pw-{user}-{bao.unique()}"
        bao.api("POST", f"auth/{mount}/users/{user}",
                {"password": password, "token_policies": [f"mint-{self.role}"]})
        entity = bao.api("POST", "identity/entity",
                         {"name": user, "metadata": {"team": team}})["data"]["id"]
        bao.api("POST", "identity/entity-alias",
                {"name": user, "canonical_id": entity, "mount_accessor": accessor})
        reply = bao.api("POST", f"auth/{mount}/login/{user}", {"password": password})
        return str(reply["auth"]["client_token"])

    def mint(self, vault_token: str) -> str:
        return str(self.bao.api("GET", self.token_path, token=vault_token)["data"]["token"])

    def rotate(self, verification_ttl: str = "1h") -> None:
        """A new signing key; the old one stays in the JWKS for ``verification_ttl``."""
        self.bao.api("POST", f"identity/oidc/key/{self.key}/rotate",
                     {"verification_ttl": verification_ttl})

    def kids(self) -> list[str]:
        reply = self.bao.api("GET", "identity/oidc/.well-known/keys")
        return [key["kid"] for key in reply["keys"]]


def identity_issuer(bao: OpenBao, ttl: str = "1h") -> IdentityIssuer:
    bao.api("POST", "identity/oidc/config", {"issuer": bao.addr})
    key, role = bao.unique("key"), bao.unique("role")
    bao.api("POST", f"identity/oidc/key/{key}",
            {"allowed_client_ids": ["*"], "verification_ttl": "1h",
             "rotation_period": "24h", "algorithm": "RS256"})
    bao.api("POST", f"identity/oidc/role/{role}", {"key": key, "ttl": ttl, "template": TEMPLATE})
    client_id = bao.api("GET", f"identity/oidc/role/{role}")["data"]["client_id"]
    bao.policy(f"mint-{role}", f'path "identity/oidc/token/{role}" {{ capabilities = ["read"] }}')
    return IdentityIssuer(bao, key, role, str(client_id))
