"""A `command` backend source for tests that counts its calls.

The command is a small Python script: it appends a line to a counter file (so a test can
assert exactly how many times the backend really ran), optionally blocks until the test
releases it through a FIFO (so a test decides when it finishes, without sleeping), then
prints the key.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

KEY = "sk-test-Counted-0123456789"

_SCRIPT = """\
import sys
with open(sys.argv[1], "a") as counter:
    counter.write("call\\n")
if len(sys.argv) > 2 and sys.argv[2]:
    with open(sys.argv[2]) as gate:  # blocks until the test opens the FIFO for writing
        gate.read()
if len(sys.argv) > 3:  # the key is this file's content (a test rotates it there)
    with open(sys.argv[3]) as key_file:
        print(key_file.read().strip())
else:
    print({key!r})
"""


@dataclass
class CountingCommand:
    argv: list[str]
    counter: Path
    key: str

    @property
    def calls(self) -> int:
        return len(self.counter.read_text().splitlines()) if self.counter.exists() else 0

    def toml(self, name: str = "counted", timeout: float | None = None) -> str:
        """A ``[backends.NAME]`` table that runs this command."""
        lines = [f"[backends.{name}]", 'type = "command"', f"command = {json.dumps(self.argv)}"]
        if timeout is not None:
            lines.append(f"timeout = {timeout}")
        return "\n".join(lines) + "\n"


def counting_command(directory: Path, key: str = KEY, gate: Path | None = None,
                     name: str = "backend", key_file: Path | None = None) -> CountingCommand:
    """Write the script into ``directory``; ``gate`` is a FIFO the script waits on;
    ``key_file``, if given, holds the key (written now with ``key``; rewrite it to rotate)."""
    script = directory / f"{name}.py"
    script.write_text(_SCRIPT.format(key=key))
    counter = directory / f"{name}.calls"
    argv = [sys.executable, str(script), str(counter)]
    if gate is not None or key_file is not None:
        argv.append(str(gate or ""))
    if key_file is not None:
        key_file.write_text(key)
        argv.append(str(key_file))
    return CountingCommand(argv, counter, key)


def rotating_command(directory: Path) -> CountingCommand:
    """A backend whose key changes on every call: key-1, key-2 ..."""
    script = directory / "rotating.py"
    counter = directory / "rotating.calls"
    script.write_text(
        "import sys\n"
        "with open(sys.argv[1], 'a') as c:\n    c.write('call\\n')\n"
        "with open(sys.argv[1]) as c:\n    n = len(c.read().splitlines())\n"
        "if n in {int(x) for x in sys.argv[2:]}:\n    sys.exit('backend down')\n"
        "print(f'key-{n}')\n")
    return CountingCommand([sys.executable, str(script), str(counter)], counter, "key-1")
