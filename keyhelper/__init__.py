"""keyhelper: a credential broker for Claude Code's apiKeyHelper.

Kept empty on purpose: the console script imports this package on every call, and a
cache hit must not pay for anything it does not use.
"""

__version__ = "0.1.0"
