"""A clean stop for long-running commands (`dev`, `serve`, `catalog`, and any later one such as `stream`):
on Ctrl-C (SIGINT) or SIGTERM the command finishes or cancels its in-flight work, and every process it
started, at any depth, is gone within STOP_DEADLINE_S.

One helper each command calls:
  - `stops_on_signals()`: a context manager; the first SIGINT/SIGTERM sets the yielded event (and
    calls `on_stop`), the command's loop sees it and winds down; a second signal stops waiting. On
    leaving, whatever child process is still alive is sent SIGTERM, then SIGKILL after the grace time.
  - `serve_http()`: a uvicorn server under it (in-flight requests get STOP_GRACE_S to finish).
On Linux this process becomes a child subreaper, so grandchildren whose parent died first are still
found and stopped rather than left to init.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psutil

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_DEADLINE_S = 10.0  # promised to users: stopped, children included, within this
STOP_GRACE_S = 3.0  # what in-flight work gets to finish before it is ended (leaves room under the deadline on a busy machine)
_KILL_WAIT_S = 2.0
_PR_SET_CHILD_SUBREAPER = 36


def _become_child_subreaper() -> None:
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def end_child_processes(grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM every descendant of this process, SIGKILL those still alive after `grace_s`, reap them."""
    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace_s)
    # Processes started meanwhile (a dying parent may spawn, or orphans reparented to us) are ended too.
    alive += [child for child in psutil.Process().children(recursive=True) if child not in alive]
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(alive, timeout=_KILL_WAIT_S)


@contextlib.contextmanager
def stops_on_signals(on_stop: Callable[[], None] | None = None, grace_s: float = STOP_GRACE_S) -> Iterator[threading.Event]:
    """Run a command body that stops when the yielded event is set (first SIGINT/SIGTERM). A second
    signal ends the child processes at once and exits. Child processes left at the end are stopped."""
    stopping = threading.Event()
    _become_child_subreaper()

    def handle(signum: int, _frame: Any) -> None:
        if stopping.is_set():
            end_child_processes(grace_s=0)
            os._exit(128 + signum)
        stopping.set()
        if on_stop is not None:
            on_stop()

    previous = {signum: signal.signal(signum, handle) for signum in STOP_SIGNALS}
    try:
        yield stopping
    finally:
        try:
            end_child_processes(grace_s)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def serve_http(app: Any, host: str, port: int, log_level: str = "warning") -> None:
    """Serve an ASGI app with uvicorn until SIGINT/SIGTERM; requests in flight get STOP_GRACE_S."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=STOP_GRACE_S))

    def request_exit() -> None:
        server.should_exit = True

    # uvicorn handles the signals while it serves and re-raises them afterwards: ours then see them.
    with stops_on_signals(on_stop=request_exit, grace_s=_KILL_WAIT_S):
        server.run()
