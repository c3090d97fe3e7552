"""A person with a real browser, for ``$BROWSER``: Debian's chromium, headless, driven by
playwright, opens the sign-in URL it is given, fills the provider's login form, consents,
and stops once the provider has redirected to the loopback callback.

Usage (as keyhelper's ``$BROWSER``): python headless_browser.py URL; the user name comes
from $SIGN_IN_USER (default alice), a trace of the pages from $BROWSER_TRACE.
"""

from __future__ import annotations

import os
import sys
import tempfile

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags chromium keeps dialling hosts this machine cannot
# reach; --no-sandbox because the tests run as root.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(url: str) -> int:
    user = os.environ.get("SIGN_IN_USER", "alice")
    trace = os.environ.get("BROWSER_TRACE")
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = context.new_page()
        page.goto(url)
        for _ in range(6):
            if "/callback" in page.url:
                break
            if trace:
                with open(trace, "a") as out:
                    out.write(page.url.split("?")[0] + "\n")
            if page.locator("input[name=login]").count():
                page.fill("input[name=login]", user)
                page.fill("input[name=password]", "any")
            page.click("button[type=submit]")
            page.wait_for_load_state()
        page.wait_for_url("**/callback?*", timeout=10000)
        text = page.inner_text("body")
        context.close()
    if trace:
        with open(trace, "a") as out:
            out.write("callback: " + text.strip() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
