"""One run per output folder: an exclusive ``fcntl`` lock on ``OUTPUT/.mhub-fmcib.lock``.

The lock file holds the PID, host and start time of the run that holds it (one line, for the
message a second run prints). The lock is a POSIX record lock (:func:`fcntl.lockf`, honoured
over NFS): it is released by the kernel when the process ends, however it ends (kill -9
included), so a stale lock file never blocks a re-run. The file itself is left in place.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from ..errors import ConfigError

LOCK_NAME = ".mhub-fmcib.lock"


class OutputLock:
    """Hold the exclusive lock of ``output`` (``with OutputLock(output): ...``).

    Raises:
        ConfigError: another process holds the lock (the message names its PID and host).
        OSError: the lock file cannot be created (the folder is not writable).
    """

    def __init__(self, output: Path) -> None:
        self.path = Path(output) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "an unknown process"
            os.close(fd)
            raise ConfigError(
                f"output folder {self.path.parent} is in use by another mhub-fmcib run ({holder}); "
                "wait for it to finish or choose another output folder "
                f"(lock {self.path}: {e.strerror})"
            ) from e
        os.ftruncate(fd, 0)
        since = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}, since {since}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
