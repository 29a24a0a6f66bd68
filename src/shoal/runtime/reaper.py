"""conmon's exit command: `python -m shoal.runtime.reaper STATE_ROOT RUN_ROOT ID`. Runs with no
shoal process around: records the exit, unmounts, removes cgroups and the network, and honours
--rm. Kept apart from the CLI so it starts fast and small."""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m shoal.runtime.reaper STATE_ROOT RUN_ROOT CONTAINER_ID", file=sys.stderr)
        return 2
    os.environ["SHOAL_ROOT"], os.environ["SHOAL_RUN"] = argv[0], argv[1]
    from shoal.errors import NotFound
    from shoal.runtime.manager import ContainerManager

    try:
        ContainerManager().cleanup(argv[2])
    except (NotFound, FileNotFoundError):
        pass  # removed meanwhile by `rm -f`: it did the cleanup itself
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
