"""Preemption: SIGTERM asks the loop to save at the next step boundary and exit cleanly.

Single process: a SIGTERM handler sets a flag. Several processes: the hosts must agree on the
step to stop at, so the loop asks JAX's preemption sync point (the coordination service hears
the signal on any host and picks a step every host reaches).
"""

from __future__ import annotations

import logging
import signal
import threading

import jax
from jax.experimental import multihost_utils


class PreemptionWatcher:
    """`with PreemptionWatcher() as w: ... if w.should_stop(step): save; break`."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self._signals = signals
        self._event = threading.Event()
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "PreemptionWatcher":
        # With several processes JAX's coordination service owns SIGTERM; do not replace its handler.
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            for sig in self._signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        del frame
        logging.warning("received signal %d: saving at the next step boundary", signum)
        self._event.set()

    @property
    def signalled(self) -> bool:
        """A preemption signal (or request) has arrived in this process."""
        return self._event.is_set()

    def request_stop(self) -> None:
        """Programmatic preemption (single process: tests, schedulers with their own notice)."""
        self._event.set()

    def should_stop(self, step: int) -> bool:
        """True at a step boundary where every process should save and exit."""
        if jax.process_count() > 1:
            try:
                return multihost_utils.reached_preemption_sync_point(step)
            except RuntimeError:  # no preemption sync manager (distributed not initialized by JAX)
                return False
        return self._event.is_set()
