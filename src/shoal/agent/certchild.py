"""The certificate work of a worker's shoald, run in a short-lived child process so that the
long-lived daemon never imports cryptography (its Rust extension and OpenSSL bindings cost about
11 MiB of every node's memory, for work done once in weeks):

    python -m shoal.agent.certchild renew MANAGER_ADDR CERT_DIR
    python -m shoal.agent.certchild facts CERT_DIR

`renew` makes a new key and CSR, has the manager sign it over mutual TLS with the current
certificate and checks the answer (agent/join.py renew); `facts` parses the certificate and root
on disk. Both store the NodeFacts beside the certificate (manager/ca.py) and print them as JSON
on stdout; a failure is one line on stderr and exit status 1. The child inherits the daemon's
network and mount namespaces, so it reaches the manager exactly as the daemon would.

The parent's side is `run` (an asyncio caller): it kills the child when cancelled or late."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path

from shoal.errors import ShoalError
from shoal.manager.ca import CertStore, NodeFacts

CHILD_TIMEOUT = 90.0  # a Python start with cryptography and aiohttp, and the join timeout (20 s)


async def run(*args: str, timeout: float = CHILD_TIMEOUT) -> NodeFacts:
    """Run `python -m shoal.agent.certchild ARGS...` and return the facts it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shoal.agent.certchild", *args,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        await _kill(proc)
        raise ShoalError(f"certificate {args[0]}: no answer in {timeout:.0f} s") from None
    except BaseException:  # the daemon stops (cancelled): no child outlives its request
        await _kill(proc)
        raise
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise ShoalError(lines[-1] if lines else f"certificate {args[0]}: exit status {proc.returncode}")
    return NodeFacts.from_json(out)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await asyncio.shield(proc.wait())


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 3 and argv[0] == "renew":
            from shoal.agent.join import renew  # aiohttp and cryptography: this process only

            # No KeySource: a renewal writes the node's key (never sealed) and, on a node that
            # signs nothing, the root certificate; a sealed CA key is never touched here.
            asyncio.run(renew(argv[1], Path(argv[2])))
            facts = CertStore(Path(argv[2])).write_facts()
        elif len(argv) == 2 and argv[0] == "facts":
            facts = CertStore(Path(argv[1])).write_facts()
        else:
            print("usage: python -m shoal.agent.certchild renew MANAGER_ADDR CERT_DIR | facts CERT_DIR",
                  file=sys.stderr)
            return 2
    except ShoalError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    sys.stdout.buffer.write(facts.to_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
