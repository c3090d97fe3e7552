"""A contract test kit for backend authors (see README, "Writing a backend")."""
