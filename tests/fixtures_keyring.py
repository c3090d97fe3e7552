"""gnome-keyring Secret Service fixture (owned by the keyring backend tests)."""
