"""OpenBao dev server fixture (owned by the Vault backend tests)."""
