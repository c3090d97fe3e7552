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
if len(sys.argv) > 2:
    with open(sys.argv[2]) as gate:  # blocks until the test opens the FIFO for writing
        gate.read()
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
                     name: str = "backend") -> CountingCommand:
    """Write the script into ``directory``; ``gate`` is a FIFO the script waits on."""
    script = directory / f"{name}.py"
    script.write_text(_SCRIPT.format(key=key))
    counter = directory / f"{name}.calls"
    argv = [sys.executable, str(script), str(counter)]
    if gate is not None:
        argv.append(str(gate))
    return CountingCommand(argv, counter, key)
