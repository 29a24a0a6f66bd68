"""Hostile Compose files (issue 10, item 11): numbers of thousands of digits where a port, a count or
a size belongs gave a ValueError traceback from compose/convert.py. Each must be one line naming
the file or the key, a non-zero exit, and no stack deployed. (The fuzz in
tests/unit/test_compose_fuzz.py covers the rest of the space.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT_ONLY

DIGITS = "9" * 4000

CASES = {
    "published": f"""\
version: "3.8"
services:
  web:
    image: busybox
    ports:
      - target: 80
        published: {DIGITS}
""",
    "target": f"""\
version: "3.8"
services:
  web:
    image: busybox
    ports:
      - "{DIGITS}:80"
""",
    "max_attempts": f"""\
version: "3.8"
services:
  web:
    image: busybox
    deploy:
      restart_policy:
        max_attempts: {DIGITS}
""",
    "memory": f"""\
version: "3.8"
services:
  web:
    image: busybox
    deploy:
      resources:
        limits:
          memory: {DIGITS}M
""",
}


@ROOT_ONLY
@pytest.mark.parametrize("key", sorted(CASES))
def test_thousands_of_digits_are_one_line_errors(shoal, tmp_path: Path, key: str) -> None:
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(CASES[key])
    proc = shoal("stack", "deploy", "-c", str(compose), "hostile")
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    # The first deploy starts shoald and says so on a line of its own; a file that loads gets
    # Docker's notice of a background deploy (-d left out) before the daemon refuses it; the error
    # is one line.
    notice = ("Since --detach=false was not specified, tasks will be created in the background.",
              "In a future release, --detach=false will become the default.")
    lines = [line for line in proc.stderr.splitlines()
             if line and not line.startswith("Starting shoald") and line not in notice]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(("Error:", "Error response from daemon:")), lines[0]
    assert ("docker-compose.yml" in lines[0] or key in lines[0]) and len(lines[0]) < 400, lines[0]
    assert "hostile" not in shoal("stack", "ls").stdout
