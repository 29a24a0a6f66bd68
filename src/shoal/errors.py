"""Errors a user sees as one line on stderr, with a non-zero exit."""

from __future__ import annotations


class ShoalError(Exception):
    """A failure the user caused or can fix; printed as `Error: <message>`."""

    exit_code = 1


class NotFound(ShoalError):
    """A named object (image, container, network...) does not exist."""


class Conflict(ShoalError):
    """A name or resource is already taken."""


class InvalidArgument(ShoalError):
    """A flag or value the user gave cannot be used; exit 125 as docker does."""

    exit_code = 125


class Unavailable(ShoalError):
    """The node cannot do it in its current role or state (not a manager, not in a swarm, the
    last manager leaving): Docker's errdefs.Unavailable, HTTP 503."""
