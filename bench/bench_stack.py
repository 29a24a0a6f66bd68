"""Benchmark: the seed's stack on shoald (issue 5).

    sudo .venv/bin/python bench/bench_stack.py [--no-swarm]

The seed stack (busybox httpd serving its hostname, 5 replicas, 0.1 CPU, 50M, on-failure with a
5 s delay, a published port, one overlay network) is deployed, scaled and removed with shoal's
CLI under a private SHOAL_ROOT (address pool 10.216.0.0/16), and timed:

 1. `stack deploy` until 5/5 tasks run;
 2. `service scale 5 -> 50` until 50/50 run;
 3. kill -9 of one task's process until its replacement runs, less the 5 s restart delay;
 4. `stack rm` of the 50 tasks until no container is left;
 5. shoald's RSS, idle with the 5 tasks up (target under 60 MB), and its CPU idle with 50.

Targets: each time at most a fifth of Swarm's. Swarm's figures are measured now when a Docker
Engine answers here (the same stack, `docker import` of the same busybox rootfs), else they are
platform-notes' and labelled so. bench/compare-swarm does the full side-by-side (it can install
Docker and adds the rolling update and requests/s)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _swarm  # noqa: E402 - after the path insert


def swarm_now(work: Path, tar: Path, port: int) -> _swarm.Figures | None:
    """The same run on Docker Swarm, when a Docker Engine already runs here. A swarm this run
    creates is left again; one that was there is left alone."""
    if not _swarm.docker_running():
        return None
    state = _swarm.swarm_state()
    if state == "active" and "true" not in _swarm.docker("info", "--format", "{{.Swarm.ControlAvailable}}"):
        print("Docker runs but this node is not a swarm manager: using platform-notes' figures", file=sys.stderr)
        return None
    created = state != "active"
    if created:
        _swarm.docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    swarm = _swarm.Swarm()
    try:
        swarm.import_image(tar)
        return _swarm.measure(swarm, work, port, update=False, rps=False, log=print)
    finally:
        swarm.cleanup()
        if created:
            _swarm.docker("swarm", "leave", "--force", check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-swarm", action="store_true",
                        help="do not measure Docker Swarm even when an Engine runs here")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_stack: needs root", file=sys.stderr)
        return 1
    work = _swarm.work_dir()
    try:
        tar = _swarm.make_busybox_tar(work / "busybox.tar")
        port = _swarm.free_port()
        with _swarm.shoal_session(work, tar) as sh:
            sh.start_daemon()
            mine = _swarm.measure(sh, work, port, update=False, rps=False, log=print)
        theirs = None if opts.no_swarm else swarm_now(work, tar, port)
        source = ""
        if theirs is None:
            theirs = _swarm.Figures("Docker Swarm", seconds={k: v for k, v in _swarm.PLATFORM_NOTES.items()
                                                              if k in ("deploy", "kill", "scale", "rm")},
                                    rss_mib=_swarm.PLATFORM_NOTES["rss"])
            source = " (platform-notes, not measured here)"
        targets = {}
        for key in ("deploy", "scale", "kill", "rm"):
            limit = (_swarm.value(theirs, key) or 0) / 5
            targets[key] = f"<= {limit:.2f} s: " + ("met" if (_swarm.value(mine, key) or 0) <= limit else "missed")
        rss = mine.rss_mib or 0
        targets["rss"] = "< 60 MB: " + ("met" if rss * 1024 * 1024 < 60e6 else "missed")
        print()
        print(_swarm.table(mine, theirs, ["deploy", "scale", "kill", "rm", "rss", "cpu"], targets=targets,
                           swarm_source=source))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
