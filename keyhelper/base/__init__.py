"""The bottom layer: where things live, the one record format, private-file I/O, the cache
entry and its neighbours (route, served markers, failure record), the lock, the audit log,
and starting a background refresh.

Everything here imports only the standard library's cheapest modules (``sys``, ``time``,
the ``_sha256`` primitive; ``fcntl`` and ``_socket`` where needed) and other modules of this
package, and does its I/O through :mod:`keyhelper.base.oslite` (the ``posix`` or ``nt``
module, not ``os``): a cache hit (``keyhelper.cachepolicy.try_hit``) runs on this package
and that module alone, so a hit costs about one interpreter start.
tests/project/test_layers.py and tests/cache/test_launcher.py hold the rule.
"""
