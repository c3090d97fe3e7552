"""``aws_secrets``: the API key kept in an AWS Secrets Manager secret.

The whole SecretString is the key, or one field of it when the secret is a JSON object
(``field = "api_key"``). Credentials and region come from boto3's usual chain (environment,
``~/.aws`` profiles, SSO, instance roles), optionally narrowed by ``profile`` and ``region``.

Skip ("not configured here"): no credentials, no region, or an unknown profile on this
machine. Fail ("mine, but it broke"): the secret is missing, access is denied, the endpoint
cannot be reached or times out, the field is absent. boto3 is imported in ``fetch`` only:
importing it costs ~100 ms, which a cache hit never pays.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any, ClassVar

from keyhelper.backend import Backend, Option, Token
from keyhelper.errors import BackendError, DeadlineExceeded, Skip, Unavailable

ATTEMPTS = 2  # one retry for a throttled or dropped request, both inside the deadline
MAX_MESSAGE = 200


class SecretsManagerBackend(Backend):
    summary = "a secret in AWS Secrets Manager (boto3)"
    options: ClassVar = {
        "secret_id": Option(str, required=True, help="the secret's name or ARN"),
        "field": Option(str, help="key of a JSON SecretString (default: the whole string)"),
        "version_stage": Option(str, "AWSCURRENT", help="the version stage to read"),
        "region": Option(str, help="default: $AWS_REGION, $AWS_DEFAULT_REGION, the profile's"),
        "profile": Option(str, help="a profile of ~/.aws/config (default: $AWS_PROFILE)"),
        "endpoint_url": Option(str, help="another endpoint, e.g. a VPC endpoint"),
        "connect_timeout": Option(float, 2.0, help="seconds to connect, per attempt"),
        "read_timeout": Option(float, 5.0, help="seconds to wait for the answer, per attempt"),
    }

    @classmethod
    def check_available(cls) -> None:
        if importlib.util.find_spec("boto3") is None:
            raise Unavailable("needs boto3: pip install keyhelper-aws-secretsmanager")

    def watched_env(self) -> tuple[str, ...]:
        """Where boto3 finds credentials and region: a change means another key may answer."""
        return ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
                "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")

    def fetch(self) -> Token:
        secret_id = self.config["secret_id"]
        response = self._get_secret_value(self._client())
        value = response.get("SecretString")
        if not isinstance(value, str):
            raise BackendError(f"secret {secret_id!r} holds binary data, not a string")
        if self.config["field"]:
            value = self._field(value)
        value = value.strip()
        if not value:
            raise BackendError(f"secret {secret_id!r} is empty")
        return Token(value, metadata={"secret_id": secret_id,
                                      "version_id": str(response.get("VersionId", ""))})

    def _client(self) -> Any:
        import boto3
        import botocore.session
        from botocore import exceptions
        from botocore.config import Config

        core = botocore.session.get_session()
        # Instance metadata (EC2 roles) is tried last in the chain; keep it inside the run.
        core.set_config_variable("metadata_service_timeout", self._timeout(1.0))
        core.set_config_variable("metadata_service_num_attempts", 1)
        try:
            session = boto3.session.Session(botocore_session=core,
                                            profile_name=self.config["profile"],
                                            region_name=self._region())
            region = session.region_name
            credentials = session.get_credentials() if region else None
        except exceptions.ProfileNotFound as exc:
            raise Skip(f"AWS profile {exc.kwargs.get('profile')!r} is not configured "
                       "here") from None
        except exceptions.BotoCoreError as exc:  # e.g. an expired SSO session
            raise BackendError(f"AWS credentials: {_text(exc)}") from None
        if not region:
            raise Skip("no AWS region: set region, $AWS_REGION or the profile's region")
        if credentials is None:
            raise Skip("no AWS credentials here (environment, ~/.aws, SSO or instance role)")
        config = Config(connect_timeout=self._timeout(self.config["connect_timeout"]),
                        read_timeout=self._timeout(self.config["read_timeout"]),
                        retries={"total_max_attempts": ATTEMPTS, "mode": "standard"})
        return session.client("secretsmanager", endpoint_url=self.config["endpoint_url"],
                              config=config)

    def _region(self) -> str | None:
        # boto3 reads $AWS_DEFAULT_REGION only; the AWS CLI and other SDKs read $AWS_REGION.
        return self.config["region"] or self.context.env.get("AWS_REGION") or None

    def _timeout(self, wanted: float) -> float:
        """Per attempt, so that every attempt fits in what is left of the run."""
        return self.context.timeout(min(wanted, self.context.remaining() / ATTEMPTS))

    def _get_secret_value(self, client: Any) -> dict[str, Any]:
        from botocore import exceptions

        secret_id = self.config["secret_id"]
        try:
            response: dict[str, Any] = client.get_secret_value(
                SecretId=secret_id, VersionStage=self.config["version_stage"])
        except exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            if code == "ResourceNotFoundException":
                raise BackendError(f"secret {secret_id!r} not found") from None
            if code in ("AccessDeniedException", "UnrecognizedClientException"):
                raise BackendError(f"access to secret {secret_id!r} denied ({code})") from None
            raise BackendError(f"{code}: {_text(exc)}") from None
        except (exceptions.ConnectTimeoutError, exceptions.ReadTimeoutError):
            raise DeadlineExceeded("no answer from Secrets Manager in time") from None
        except exceptions.EndpointConnectionError as exc:
            raise BackendError(f"cannot reach Secrets Manager ({_text(exc)})") from None
        except exceptions.NoCredentialsError:
            raise Skip("no AWS credentials here") from None
        except exceptions.BotoCoreError as exc:
            raise BackendError(f"{type(exc).__name__}: {_text(exc)}") from None
        return response

    def _field(self, text: str) -> str:
        secret_id, name = self.config["secret_id"], self.config["field"]
        try:
            document = json.loads(text)
        except ValueError:
            # Never quote the parser's message: it can show a piece of the secret.
            raise BackendError(f"secret {secret_id!r} is not a JSON object; cannot read "
                               f"field {name!r}") from None
        if not isinstance(document, dict):
            raise BackendError(f"secret {secret_id!r} is not a JSON object; cannot read "
                               f"field {name!r}")
        if name not in document:
            raise BackendError(f"secret {secret_id!r} has no field {name!r} "
                               f"(fields: {', '.join(sorted(map(str, document)))})")
        value = document[name]
        if not isinstance(value, str):
            raise BackendError(f"field {name!r} of secret {secret_id!r} is not a string")
        return value


def _text(exc: Exception) -> str:
    return str(exc).replace("\n", " ")[:MAX_MESSAGE]
