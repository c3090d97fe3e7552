"""Running the real Claude Code CLI with keyhelper as its apiKeyHelper (shared by the
end-to-end tests and scripts/e2e-litellm)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLAUDE = Path(os.environ.get("KEYHELPER_CLAUDE_BIN",
                             ROOT / ".deps" / "claude" / "node_modules" / ".bin" / "claude"))


def vault_config(directory: Path, addr: str, token: str, secret_path: str) -> Path:
    """A keyhelper config reading ``secret/<secret_path>`` with a token kept in a 0600 file."""
    token_file = directory / "vault-token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    config = directory / "keyhelper.toml"
    config.write_text(f'chain = ["vault"]\n[backends.vault]\naddr = "{addr}"\n'
                      f'path = "secret/{secret_path}"\ntoken_file = "{token_file}"\n')
    return config


def claude_home(directory: Path, keyhelper: str, config: Path) -> Path:
    """A scratch HOME whose settings.json runs ``keyhelper --config CONFIG``."""
    home = directory / "claude-home"
    (home / ".claude").mkdir(parents=True)
    (home / ".claude" / "settings.json").write_text(
        json.dumps({"apiKeyHelper": f"{keyhelper} --config {config}"}))
    return home


def claude_env(home: Path, base_url: str, **extra: str) -> dict[str, str]:
    """Claude Code offline against ``base_url``, without the caller's Claude variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "CLAUDE_CODE_", "AI_AGENT"))}
    env.update(HOME=str(home), ANTHROPIC_BASE_URL=base_url,
               CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_TELEMETRY="1",
               DISABLE_ERROR_REPORTING="1", DISABLE_AUTOUPDATER="1", **extra)
    return env


def claude_p(env: dict[str, str], cwd: Path, prompt: str = "say hi") -> subprocess.Popen[str]:
    """Start ``claude -p PROMPT`` (stdin closed, output captured)."""
    return subprocess.Popen([str(CLAUDE), "-p", prompt], env=env, cwd=cwd, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
