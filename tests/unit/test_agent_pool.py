"""The worker's thread pool: bounded like ThreadPoolExecutor, but its idle threads exit, so a burst
(a stack rm of 50 tasks) does not leave shoald with 64 threads for the rest of its life."""

from __future__ import annotations

import threading
import time

import pytest

from shoal.agent.pool import ElasticPool


def _threads_named(prefix: str) -> int:
    return sum(t.name.startswith(prefix) for t in threading.enumerate())


def test_a_burst_starts_up_to_max_threads_and_they_exit_when_idle() -> None:
    pool = ElasticPool(6, idle=0.3, thread_name_prefix="shoaltest-burst")
    gate = threading.Event()
    running = []
    lock = threading.Lock()

    def step(i: int) -> int:
        with lock:
            running.append(i)
        gate.wait(10)
        return i * 2

    futures = [pool.submit(step, i) for i in range(20)]
    deadline = time.monotonic() + 5
    while len(running) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(running) == 6 and pool.threads == 6  # the bound holds, the rest wait in the queue
    gate.set()
    assert [f.result(5) for f in futures] == [i * 2 for i in range(20)]
    deadline = time.monotonic() + 5
    while pool.threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.threads == 0 and _threads_named("shoaltest-burst") == 0
    # ...and the pool still works afterwards.
    assert pool.submit(lambda: "again").result(5) == "again"
    pool.shutdown()
    assert _threads_named("shoaltest-burst") == 0


def test_work_spaced_out_reuses_one_thread() -> None:
    pool = ElasticPool(8, idle=2.0, thread_name_prefix="shoaltest-seq")
    names = {pool.submit(lambda: threading.current_thread().name).result(5) for _ in range(10)}
    assert len(names) == 1 and pool.threads == 1
    pool.shutdown()
    assert pool.threads == 0


def test_a_trickle_of_work_after_a_burst_keeps_one_thread() -> None:
    """The agent's pass comes every 0.25 s: the threads a burst started must still go. Each
    step wakes the thread that went idle last, so the others stay idle until they exit; woken
    in turn (the longest waiting first) none of them ever did."""
    pool = ElasticPool(6, idle=0.5, thread_name_prefix="shoaltest-trickle")
    gate = threading.Event()
    burst = [pool.submit(gate.wait, 10) for _ in range(6)]
    deadline = time.monotonic() + 5
    while pool.threads < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.threads == 6
    gate.set()
    assert all(f.result(5) for f in burst)
    deadline = time.monotonic() + 10
    while pool.threads > 1 and time.monotonic() < deadline:
        assert pool.submit(lambda: "step").result(5) == "step"
        time.sleep(0.05)  # much less than idle: one thread is always enough for this
    assert pool.threads == 1
    pool.shutdown()
    assert pool.threads == 0 and _threads_named("shoaltest-trickle") == 0


def test_errors_reach_the_future_and_shutdown_cancels_what_waits() -> None:
    pool = ElasticPool(1, idle=5.0, thread_name_prefix="shoaltest-err")
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(5)
    gate, started = threading.Event(), threading.Event()
    first = pool.submit(lambda: started.set() or gate.wait(10))
    assert started.wait(5)
    queued = pool.submit(lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    gate.set()
    assert first.result(5) is True
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)
    pool.shutdown(wait=True)
    assert pool.threads == 0
