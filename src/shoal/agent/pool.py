"""A thread pool whose idle threads go away.

concurrent.futures.ThreadPoolExecutor never ends a thread before shutdown: one `stack rm` of 50
tasks started 64 stop threads that shoald then kept for its whole life, each with its stack and,
under glibc, its own malloc arena holding freed memory (measured by bench/bench_soak.py: threads
11 -> 78 and the RSS with them). This pool has the same submit/shutdown interface, starts a thread
only when no idle one can take the work, and a thread idle for `idle` seconds exits.

When the last thread goes, the pool calls `on_quiet` (the worker gives release_memory): the
burst is over, and what it freed can go back to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger("shoald.worker")

_Item = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class ElasticPool:
    def __init__(self, max_workers: int, idle: float = 5.0, thread_name_prefix: str = "pool",
                 on_quiet: Callable[[], None] | None = None) -> None:
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._max = max_workers
        self._idle_timeout = idle
        self._prefix = thread_name_prefix
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # shutdown(wait=True) waits on it
        # Each idle thread's own wake-up, the most recently idle last. Work wakes that one:
        # Condition.notify wakes the longest waiting, so a trickle of work (the agent's pass
        # every 0.25 s) went round every thread in turn and none was ever idle long enough to
        # exit; a manager kept the 7 control threads of its deploy's burst for good.
        self._waiting: list[threading.Condition] = []
        self._items: deque[_Item] = deque()
        self._threads = 0
        self._idle = 0        # threads waiting for work
        self._shutdown = False
        self._names = itertools.count()
        self._on_quiet = on_quiet

    @property
    def threads(self) -> int:
        """Threads alive now (running work or waiting for it)."""
        with self._cond:
            return self._threads

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._cond:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._items.append((future, fn, args, kwargs))
            # An idle thread may already be woken for an earlier item: start one more whenever
            # the queue is longer than the threads that wait for it.
            if len(self._items) > self._idle and self._threads < self._max:
                self._threads += 1
                threading.Thread(target=self._work, name=f"{self._prefix}_{next(self._names)}").start()
            elif self._waiting:
                self._waiting.pop().notify()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cond:
            self._shutdown = True
            if cancel_futures:
                while self._items:
                    self._items.popleft()[0].cancel()
            self._cond.notify_all()
            for waiter in self._waiting:
                waiter.notify()
            self._waiting.clear()
            if wait:
                while self._threads:
                    self._cond.wait()

    def _work(self) -> None:
        wake = threading.Condition(self._lock)
        while True:
            with self._cond:
                self._idle += 1
                deadline = time.monotonic() + self._idle_timeout
                while not self._items and not self._shutdown:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._waiting.append(wake)
                    try:
                        wake.wait(left)
                    finally:
                        if wake in self._waiting:  # timed out (not popped by a submit)
                            self._waiting.remove(wake)
                self._idle -= 1
                if not self._items:  # idle too long, or shut down with nothing left to do
                    self._threads -= 1
                    self._cond.notify_all()  # a shutdown(wait=True) counts the threads down
                    quiet = self._threads == 0 and not self._shutdown
                    break
                future, fn, args, kwargs = self._items.popleft()
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - handed to the future, as the stdlib pool does
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            # Keep nothing of the step alive while waiting for the next one.
            del future, fn, args, kwargs
        if quiet and self._on_quiet is not None:
            self._on_quiet()


_libc: ctypes.CDLL | None = None


def release_memory() -> None:
    """Hand the memory glibc's malloc keeps free back to the system (malloc_trim(0) releases
    the free pages inside every arena, not only the top of the heap). After a burst of task
    steps most of the RSS it grew is freed chunks spread over the threads' arenas; measured by
    bench/bench_soak.py. A no-op where there is no glibc."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _libc.malloc_trim(0)
    except (OSError, AttributeError) as exc:
        log.debug("malloc_trim unavailable: %s", exc)


# ---- the node's control threads -----------------------------------------------------------------
# The event loop's default executor (asyncio.to_thread) has min(32, CPUs + 4) threads, and the API
# holds some of them for as long as a request lasts (an exec relaying its output, a container
# wait). Work that must never wait behind requests runs here instead: the agent's pass and the
# application of its assignment sets, the manager's pass, the dispatcher's assignment sets. With
# every default thread taken by execs, a worker stayed Ready (its heartbeats need no thread) while
# it neither started nor stopped a task (issue 11; tests/cluster/test_worker_busy_api.py).
CONTROL_THREADS = 8
_control: ElasticPool | None = None
_control_lock = threading.Lock()


def control_pool() -> ElasticPool:
    global _control
    with _control_lock:
        if _control is None:
            _control = ElasticPool(CONTROL_THREADS, thread_name_prefix="control")
        return _control


def stop_control_pool() -> None:
    """At shoald's exit: its idle control threads end now, not after their idle timeout
    (they are not daemon threads, so the interpreter's exit waited for them: every SIGTERM'd
    shoald took 5 s to stop). One still running its step finishes it; a later off_loop (none
    in shoald) gets a new pool."""
    global _control
    with _control_lock:
        if _control is not None:
            _control.shutdown(wait=False)
            _control = None


async def off_loop(fn: Callable[..., Any], /, *args: Any) -> Any:
    """`fn(*args)` in a control thread (as asyncio.to_thread, not in the default executor)."""
    import asyncio

    return await asyncio.wrap_future(control_pool().submit(fn, *args))
