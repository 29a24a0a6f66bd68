"""The agent's status sender (Agent._flusher) survives an unexpected error of one send: the
states are kept and sent again. Such an error ended its asyncio task, unread until shoald
stopped: no state of the node reached the manager again (its new tasks stayed Assigned there)
while its heartbeats, another task, kept it Ready (issue 11).

The real Daemon's agent and dispatcher, over the in-process session; the session fails its
first status send with an error no session is meant to raise (a bug), as test_agent_session.py
cuts its session with Unreachable."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest


def test_an_unexpected_error_of_one_status_send_does_not_end_the_sending(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SHOAL_ROOT", str(tmp_path))
    monkeypatch.setenv("SHOAL_RUN", str(tmp_path / "run"))
    from shoal import daemon as daemon_module
    from shoal.agent.inprocess import InProcessSession
    from shoal.model.cluster import Task, TaskState

    sends: list[int] = []

    class FailsOnce(InProcessSession):
        async def update_status(self, updates):  # type: ignore[no-untyped-def]
            sends.append(len(updates))
            if len(sends) == 1:
                raise RuntimeError("a bug in the first send")
            await super().update_status(updates)

    d = daemon_module.Daemon(root=tmp_path, session_factory=lambda dm: FailsOnce(dm.dispatcher))

    async def run() -> None:
        d.dispatcher.start()
        agent = asyncio.create_task(d.agent.run())
        try:
            assert await d.agent.wait_registered(10)
            task = Task(id="t1", service_id="s1", service_name="app", slot=1, node_id=d.agent.node_id,
                        desired_state=TaskState.RUNNING)
            task.status.state = TaskState.RUNNING
            d.agent.report(task)
            for _ in range(200):
                if len(sends) >= 2 and not d.agent.pending():
                    break
                await asyncio.sleep(0.05)
            assert not agent.done(), agent.exception() if agent.done() else None
        finally:
            agent.cancel()
            await asyncio.gather(agent, return_exceptions=True)

    with caplog.at_level(logging.ERROR, logger="shoald"):
        asyncio.run(run())
    d.agent.close()
    d.store.close()
    assert len(sends) >= 2, sends  # sent again after the failure
    assert d.agent.pending() == 0  # and taken (the manager skips a task it does not have)
    assert any("status not sent" in r.getMessage() and r.exc_info for r in caplog.records)
