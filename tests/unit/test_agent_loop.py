"""The node's agent loop (daemon.Daemon.agent_loop) drives its tasks on every change and poll: a
pass that fails with an unexpected error (not a ShoalError) is logged with its traceback and
the loop goes on. It used to end the loop's task silently (its exception read only when shoald
stopped): a worker stayed Ready in `node ls` while its tasks were never stopped (a `stack rm`
left them running) nor started (new ones stayed Assigned)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest


class _FailingOnce:
    """A worker whose first pass fails as a bug would (a KeyError), then passes."""

    def __init__(self) -> None:
        self.passes = 0

    def sync(self) -> None:
        self.passes += 1
        if self.passes == 1:
            raise KeyError("status")


def test_an_unexpected_error_in_a_pass_does_not_end_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SHOAL_ROOT", str(tmp_path))
    monkeypatch.setenv("SHOAL_RUN", str(tmp_path / "run"))
    from shoal import daemon as daemon_module

    d = daemon_module.Daemon(root=tmp_path)
    worker = _FailingOnce()

    def make_worker() -> Any:
        # What the real one sets up beside the worker: the node's networks and attachments,
        # idle here (no task, no network).
        d.node_networks = SimpleNamespace(sync_overlays=lambda: None, collect=lambda: None)
        d.attachments = SimpleNamespace(reconcile=lambda: None)
        return worker

    monkeypatch.setattr(d, "_make_worker", make_worker)

    async def run() -> None:
        loop = asyncio.create_task(d.agent_loop())
        try:
            for _ in range(100):
                if worker.passes >= 3:
                    break
                await asyncio.sleep(0.05)
            assert not loop.done(), loop.exception() if loop.done() else None
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)

    with caplog.at_level(logging.ERROR, logger="shoald"):
        asyncio.run(run())
    d.agent.close()
    d.store.close()
    assert worker.passes >= 3
    assert any("agent pass failed" in r.getMessage() and r.exc_info for r in caplog.records)


class _Stuck:
    """A worker whose second pass blocks (a call that never returns, as a hung subprocess or a
    lock never released would) until the test lets it go."""

    def __init__(self) -> None:
        import threading

        self.passes = 0
        self.release = threading.Event()

    def sync(self) -> None:
        self.passes += 1
        if self.passes == 2:
            self.wait_for_the_never_ending_call()

    def wait_for_the_never_ending_call(self) -> None:
        self.release.wait(30)


def test_a_pass_that_does_not_end_is_logged_with_where_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Nothing on the node is started or stopped while a pass hangs, and its heartbeats keep it
    Ready: the log says so, with the stack of the pass's thread, every PASS_SLOW seconds."""
    monkeypatch.setenv("SHOAL_ROOT", str(tmp_path))
    monkeypatch.setenv("SHOAL_RUN", str(tmp_path / "run"))
    from shoal import daemon as daemon_module

    monkeypatch.setattr(daemon_module, "PASS_SLOW", 0.3)
    d = daemon_module.Daemon(root=tmp_path)
    worker = _Stuck()

    def make_worker() -> Any:
        d.node_networks = SimpleNamespace(sync_overlays=lambda: None, collect=lambda: None)
        d.attachments = SimpleNamespace(reconcile=lambda: None)
        return worker

    monkeypatch.setattr(d, "_make_worker", make_worker)

    def told() -> list[str]:
        return [r.getMessage() for r in caplog.records if "agent pass running for" in r.getMessage()]

    async def run() -> None:
        loop = asyncio.create_task(d.agent_loop())
        try:
            for _ in range(100):
                if len(told()) >= 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            worker.release.set()
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)

    with caplog.at_level(logging.ERROR, logger="shoald"):
        asyncio.run(run())
    d.agent.close()
    d.store.close()
    messages = told()
    assert len(messages) >= 2, messages  # told again while it lasts
    assert "wait_for_the_never_ending_call" in messages[0]


def test_an_unexpected_error_in_a_manager_pass_does_not_end_the_orchestration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The manager's loop, likewise: a pass failing with a bug (a KeyError) is logged with its
    traceback and the next pass runs; it ended the loop silently, and the manager orchestrated
    nothing more while it answered every heartbeat."""
    monkeypatch.setenv("SHOAL_ROOT", str(tmp_path))
    monkeypatch.setenv("SHOAL_RUN", str(tmp_path / "run"))
    from shoal import daemon as daemon_module

    d = daemon_module.Daemon(root=tmp_path)
    passes = []

    def manager_pass() -> None:
        passes.append(1)
        if len(passes) == 1:
            raise KeyError("spec")
        return None

    monkeypatch.setattr(d, "manager_pass", manager_pass)

    async def run() -> None:
        loop = asyncio.create_task(d.manager_loop())
        try:
            for _ in range(100):
                if len(passes) >= 3:
                    break
                d.kick()  # a change, as a service update makes: the next pass now
                await asyncio.sleep(0.05)
            assert not loop.done(), loop.exception() if loop.done() else None
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)

    with caplog.at_level(logging.ERROR, logger="shoald"):
        asyncio.run(run())
    d.agent.close()
    d.store.close()
    assert len(passes) >= 3
    assert any("manager pass failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_shoald_stops_failed_when_its_agent_loop_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A loop that ends on its own (here the agent loop, its worker failing to be made) stops
    shoald as failed, so systemd or the cluster's supervisor starts it again; it left the node
    answering and heartbeating with nothing driving its tasks, the error unread until shutdown."""
    monkeypatch.setenv("SHOAL_ROOT", str(tmp_path))
    monkeypatch.setenv("SHOAL_RUN", str(tmp_path / "run"))
    from shoal import daemon as daemon_module

    d = daemon_module.Daemon(root=tmp_path)

    def make_worker() -> Any:
        raise RuntimeError("no worker today")

    monkeypatch.setattr(d, "_make_worker", make_worker)

    async def run() -> None:
        async with asyncio.timeout(30):
            await d.serve()

    with caplog.at_level(logging.ERROR, logger="shoald"):
        asyncio.run(run())
    assert d.failed
    assert any("the agent loop ended" in r.getMessage() and r.exc_info for r in caplog.records)
