"""A person at the provider's form, for ``$BROWSER`` (python form_browser.py URL): signs in
over HTTP with a cookie jar (fixtures_oidc.sign_in), as $SIGN_IN_USER (default alice)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fixtures_oidc import sign_in  # after the sys.path line above

if __name__ == "__main__":
    if os.environ.get("BROWSER_CWD_FILE"):  # where the sign-in process was started
        with open(os.environ["BROWSER_CWD_FILE"], "w") as handle:
            handle.write(os.getcwd())
    sign_in(sys.argv[1], os.environ.get("SIGN_IN_USER", "alice"))
