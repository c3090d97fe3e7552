"""``file``: the key from the first line of a private file."""

from __future__ import annotations

import os

from keyhelper.backend import MISSING, Backend, Option, Token, read_user_file
from keyhelper.errors import BackendError, Skip

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar


class FileBackend(Backend):
    summary = "the first line of a file readable by its owner only"
    options: ClassVar = {"path": Option(str, required=True, help="the file; ~ expands")}
    cacheable = False  # reading the file is cheaper than a cache entry

    def fetch(self) -> Token:
        path = os.path.expanduser(self.config["path"])
        # The hit path reads it through the same function (base.route.key_file_line), so both
        # paths refuse the same files: a symlink of another user's, a FIFO, a hard link,
        # another owner, a mode open to group or others.
        data, why = read_user_file(path)
        if data is None:
            if why == MISSING:
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
