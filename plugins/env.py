"""``env``: the key from an environment variable (default KEYHELPER_API_KEY)."""

from __future__ import annotations

from keyhelper.backend import Backend, Option, Token
from keyhelper.errors import Skip

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar


class EnvBackend(Backend):
    summary = "an environment variable"
    options: ClassVar = {"var": Option(str, "KEYHELPER_API_KEY", help="the variable's name")}
    cacheable = False  # reading the environment is cheaper than a cache entry

    def watched_env(self) -> tuple[str, ...]:
        return (self.config["var"],)

    def fetch(self) -> Token:
        value = self.context.env.get(self.config["var"])
        if not value:
            raise Skip(f"${self.config['var']} is not set")
        return Token(value.strip(), metadata={"source": f"${self.config['var']}"})
