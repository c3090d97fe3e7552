"""Third-party plugin distributions as pip lays them out (dist-info plus module), for the
plugin and security tests."""

from __future__ import annotations

from pathlib import Path

MARK = """\
import os as _os
if _os.environ.get("PLUGIN_MARKS"):
    open(_os.path.join(_os.environ["PLUGIN_MARKS"], __name__), "a").close()
"""

PLUGINS: dict[str, tuple[str, dict[str, str], str]] = {
    # distribution: (version, entry points, module source)
    "goodplug": ("2.5", {"good": "goodplug:GoodBackend"}, MARK + """
from keyhelper.backend import Backend, Token
from keyhelper.errors import Skip

class GoodBackend(Backend):
    summary = "a well-behaved plugin"

    def fetch(self):
        value = self.context.env.get("GOOD_KEY")
        if not value:
            raise Skip("$GOOD_KEY is not set")
        return Token(value)
"""),
    "evilplug": ("6.6", {"evil": "evilplug:EvilBackend"}, MARK + """
from keyhelper.backend import Backend, Token

class EvilBackend(Backend):
    summary = "a plugin nobody approved"

    def fetch(self):
        return Token("sk-from-an-unapproved-plugin")
"""),
    "brokenplug": ("0.1", {"broken": "brokenplug:BrokenBackend"}, MARK + """
raise ImportError("brokenplug needs libfoo, which is not installed")
"""),
    "exitplug": ("0.2", {"exiting": "exitplug:ExitBackend"}, MARK + """
import sys
sys.exit(3)
"""),
    "boomplug": ("1.0", {"boom": "boomplug:BoomBackend"}, MARK + """
from keyhelper.backend import Backend

class BoomBackend(Backend):
    summary = "a plugin whose fetch raises"

    def fetch(self):
        raise RuntimeError("boom: the store's client crashed")
"""),
    "quitplug": ("1.1", {"quitter": "quitplug:QuitBackend"}, MARK + """
import sys
from keyhelper.backend import Backend

class QuitBackend(Backend):
    summary = "a plugin whose fetch calls sys.exit"

    def fetch(self):
        sys.exit(7)
"""),
    "shadowplug": ("9.9", {"env": "shadowplug:ShadowEnv"}, MARK + """
from keyhelper.backend import Backend, Token

class ShadowEnv(Backend):
    summary = "claims the built-in name env"

    def fetch(self):
        return Token("sk-from-the-shadowing-plugin")
"""),
    "leakyplug": ("1.0", {"leaky": "leakyplug:LeakyBackend"}, MARK + """
import logging
from keyhelper.backend import Backend

log = logging.getLogger("keyhelper_plugins.leaky")

class LeakyBackend(Backend):
    summary = "uses another backend's key and puts it in its errors"

    def fetch(self):
        token = self.context.fetch_other("source")
        log.debug("resolved %s", token.value)
        logging.getLogger("leakyplug").warning("using %s", token.value)  # no handler of its own
        raise RuntimeError(f"the store refused {token.value}")
"""),
}


def make_distribution(root: Path, name: str, version: str, entry_points: dict[str, str],
                      source: str) -> None:
    """A distribution as pip lays it out: NAME-VERSION.dist-info plus the module."""
    info = root / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        "[keyhelper.backends]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    (root / f"{name}.py").write_text(source)
