"""Stopping on SIGINT/SIGTERM after the current step, with all ranks agreeing."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop stops (all ranks agreeing) after the step.

    `watch_parent`: also stop when the parent process dies (a torchrun worker whose
    launcher was SIGKILLed is adopted by another process and would train on unseen).
    `event`: also stop once it is set (by another thread: signals reach only the main one).
    """

    def __init__(self, watch_parent: bool = False, event: threading.Event | None = None):
        self.requested = False
        self.agreed = False
        self.signal: int | None = None
        self._parent = os.getppid() if watch_parent else None
        self._event = event

    def poll(self) -> bool:
        """Whether a stop is requested, checking on the parent and the event first."""
        if self._parent is not None and not self.requested and os.getppid() != self._parent:
            self._request(f"the launcher (pid {self._parent}) is gone")
        if self._event is not None and not self.requested and self._event.is_set():
            self._request("stop requested")
        return self.requested

    def _request(self, why: str, signum: int | None = None) -> None:
        self.requested = True
        self.signal = signum
        log.warning("%s: finishing this step and saving a checkpoint", why)

    def _handler(self, signum, frame) -> None:
        if self.requested:
            if signum == signal.SIGINT:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            return  # a repeated SIGTERM (a process manager, `kill` twice): already stopping
        self._request("stop requested", signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """A DataLoader worker moves to a process group of its own.

    Ctrl-C, `timeout` and cluster schedulers signal the whole process group; a worker killed
    by it would make the loader fail the step before the trainer could checkpoint. The
    loader can still stop its workers itself, and they exit when the trainer dies.
    """
    os.setpgrp()


__all__ = ["StopRequest", "leave_stop_signals_to_the_trainer"]
