"""``file``: the key from the first line of a private file."""

from __future__ import annotations

import os
import stat
from typing import ClassVar

from keyhelper.backend import Backend, Option, Token
from keyhelper.errors import BackendError, Skip

MAX_BYTES = 65536


class FileBackend(Backend):
    summary = "the first line of a file readable by its owner only"
    options: ClassVar = {"path": Option(str, required=True, help="the file; ~ expands")}
    cacheable = False  # reading the file is cheaper than a cache entry

    def hit_path_step(self) -> tuple[str, str]:
        return ("file", self.config["path"])  # expanded by the hit path, as by fetch

    def fetch(self) -> Token:
        path = os.path.expanduser(self.config["path"])
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            raise Skip(f"{path} does not exist") from None
        except OSError as exc:
            raise BackendError(f"cannot open {path} ({exc.strerror})") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # before fdopen, which raises on a directory
            os.close(fd)
            raise BackendError(f"{path} is not a regular file")
        with os.fdopen(fd, "rb") as handle:
            if os.name == "posix" and st.st_mode & 0o077:
                raise BackendError(f"{path} is readable by group or others (mode "
                                   f"{st.st_mode & 0o777:o}); run: chmod 600 {path}")
            data = handle.read(MAX_BYTES)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BackendError(f"{path} is not UTF-8 text") from None
        value = text.splitlines()[0].strip() if text.strip() else ""
        if not value:
            raise BackendError(f"{path} is empty")
        return Token(value, metadata={"source": path})
