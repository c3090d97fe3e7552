"""The gateway side: verify the tokens keyhelper (or an OIDC issuer, or Vault's identity
tokens) hands Claude Code, on every request a gateway serves (``verify``), and LiteLLM's
``custom_auth`` hook on top of it (``litellm``, the ``keyhelper[litellm]`` extra)."""
