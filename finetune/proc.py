"""Process plumbing shared by the worker and the job runner: dying with the parent, exit codes."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Get SIGKILLed when `parent_pid` exits, so no orphan keeps training (or heartbeating).

    Linux: `prctl(PR_SET_PDEATHSIG)`; elsewhere a thread polls the parent pid. Either way, if
    the parent is already gone (it died before we got here), exit at once.
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent_pid:
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)


def terminate(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM a child, then SIGKILL it if it is still there after `grace_s`; reap it."""
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def describe_exit(code: int | None) -> str:
    """`code 2`, `signal SIGKILL`, or `no exit code`."""
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


class OutputTail:
    """Passes a child's output stream on to ours and keeps its last `keep` bytes: what a
    training process printed before it died (an import error, say) belongs in the job's log,
    not only in the worker's."""

    def __init__(self, stream: IO[bytes], keep: int = 4000) -> None:
        self.keep, self.tail = keep, b""
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        out = sys.stderr.buffer
        while chunk := stream.read1(65536):  # type: ignore[attr-defined]
            out.write(chunk)
            out.flush()
            self.tail = (self.tail + chunk)[-self.keep :]

    def text(self, timeout_s: float = 5.0) -> str:
        """The kept output, once the stream has ended (or `timeout_s` passed)."""
        self._thread.join(timeout_s)
        return self.tail.decode(errors="replace").replace("\r", "\n").strip()
