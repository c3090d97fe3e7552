"""The bottom layer: where things live, the one record format, private-file I/O, the cache
entry and its neighbours (route, served markers, failure record), the lock, the audit log,
and starting a background refresh.

Everything here imports only the standard library's cheapest modules (``os``, ``sys``,
``time``, the ``_sha256`` primitive; ``fcntl`` and ``_socket`` where needed) and other
modules of this package: a cache hit (``keyhelper.cachepolicy.try_hit``) runs on this package
and that module alone, so a hit costs about one interpreter start.
tests/project/test_layers.py holds the rule.
"""
