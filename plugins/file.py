"""``file``: the key from the first line of a private file."""

from __future__ import annotations

import os
from typing import ClassVar

from keyhelper import _lean
from keyhelper.backend import Backend, Option, Token
from keyhelper.errors import BackendError, Skip


class FileBackend(Backend):
    summary = "the first line of a file readable by its owner only"
    options: ClassVar = {"path": Option(str, required=True, help="the file; ~ expands")}
    cacheable = False  # reading the file is cheaper than a cache entry

    def hit_path_step(self) -> tuple[str, str]:
        return ("file", self.config["path"])  # expanded by the hit path, as by fetch

    def fetch(self) -> Token:
        path = os.path.expanduser(self.config["path"])
        # The hit path reads it through the same function (_lean._key_file_line), so both
        # paths refuse the same files: a symlink of another user's, a FIFO, a hard link,
        # another owner, a mode open to group or others.
        data, why = _lean.read_user_file(path)
        if data is None:
            if why == _lean.MISSING:
                raise Skip(f"{path} does not exist")
            raise BackendError(f"{path} {why}")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BackendError(f"{path} is not UTF-8 text") from None
        value = text.splitlines()[0].strip() if text.strip() else ""
        if not value:
            raise BackendError(f"{path} is empty")
        return Token(value, metadata={"source": path})
