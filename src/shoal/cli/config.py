"""`shoal config create|ls|inspect|rm`, as docker/cli's cli/command/config: the secret commands'
code (cli/secret.py) with a config's words, columns and `inspect --pretty` (which shows the data)."""

from __future__ import annotations

import argparse

from shoal.cli.secret import register_kind


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    register_kind(sub, "config")
