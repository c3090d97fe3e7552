"""keyhelper's built-in backends, registered in the ``keyhelper.backends`` entry-point group
like any third-party plugin. Installed under the import name ``keyhelper_plugins``."""
