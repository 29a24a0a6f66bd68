"""shoal: Docker Swarm stacks, re-built in Python, with no Docker daemon."""

__version__ = "0.1.0"
