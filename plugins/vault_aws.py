"""``vault_aws``: AWS credentials from Vault / OpenBao's AWS secrets engine, for Bedrock.

Reads ``aws/creds/ROLE`` (or ``aws/sts/ROLE``) with the vault backend's connection, auth
methods and errors; the key is the credential document ``keyhelper aws-credentials`` prints,
its Expiration the lease's end. An IAM-user credential has no session token: it is left out.
"""

from __future__ import annotations

from keyhelper.backend import Option, Token, aws_credentials
from keyhelper.errors import BackendError

from .vault import VaultBackend
from .vault_kv import table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from .vault_auth import Credential
    from .vault_http import VaultHttp

_KV_ONLY = ("path", "field", "engine", "mount", "kv_version", "version")


class VaultAwsBackend(VaultBackend):
    summary = "AWS credentials from Vault / OpenBao's AWS secrets engine (Bedrock)"
    options: ClassVar = {
        "path": Option(str, required=True, help='the credentials endpoint, mount included, '
                                                'e.g. "aws/creds/bedrock" or "aws/sts/bedrock"'),
        "ttl": Option(str, help='lease asked for (e.g. "1h"; STS roles only)'),
        **{name: option for name, option in VaultBackend.options.items()
           if name not in _KV_ONLY},
    }

    def _read(self, http: VaultHttp, credential: Credential) -> Token:
        path = self.config["path"].strip("/")
        params = {"ttl": self.config["ttl"]} if self.config.get("ttl") else None
        body = http.call("GET", path, token=credential.token, params=params)
        data: dict[str, Any] = table(body.get("data"))
        access, secret = data.get("access_key"), data.get("secret_key")
        if not (isinstance(access, str) and access and isinstance(secret, str) and secret):
            raise BackendError(f"{path} holds no AWS credentials (is it an AWS secrets "
                               "engine's creds or sts path?)")
        session = data.get("security_token")
        lease = float(body.get("lease_duration") or 0)
        if lease <= 0:
            raise BackendError(f"{path} gave AWS credentials without a lease")
        return aws_credentials(access, secret, session if isinstance(session, str) else None,
                               self.context.now() + lease)
