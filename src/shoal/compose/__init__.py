"""Compose files -> StackSpec (load_stack) or the merged mapping `stack config` prints
(load_config). Every failure is a ComposeError, a ShoalError of one line."""

from shoal.compose.api import load_config, load_stack
from shoal.compose.errors import ComposeError

__all__ = ["ComposeError", "load_config", "load_stack"]
