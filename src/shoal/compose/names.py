"""Names Swarm accepts: stack names, service names and image references."""

from __future__ import annotations

import re

from shoal.compose.errors import ComposeError

# docker/cli's stack rule allows more, but swarmkit rejects a service name with a dot, so a
# dotted stack could never run a service: refused here, before anything is created.
_STACK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$")
# swarmkit controlapi: a service name must be a valid DNS label part, 63 characters at most.
SERVICE_NAME = re.compile(r"^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$")


def validate_stack_name(name: str) -> None:
    """docker/cli's rule (not empty once quotes and spaces are trimmed), then the characters a
    stack name may use, so that every `<stack>_<service>` is a name Swarm accepts."""
    if not name.strip().strip("\"'").strip():
        raise ComposeError(f"invalid stack name: {name!r}".replace("'", '"', 2))
    if not _STACK_NAME.fullmatch(name):
        raise ComposeError(
            f'invalid stack name: "{name}": it must start with a letter or a digit and use '
            "only letters, digits, '_' and '-'"
        )


_DOMAIN = r"(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"  # noqa: E501
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)


def check_image_reference(image: str) -> str | None:
    """distribution/reference's grammar; an error text or None."""
    if not image:
        return "no image specified"
    if len(image) > 255 + 128:
        return "invalid reference format"
    if _REFERENCE.match(image):
        return None
    # ParseNormalizedNamed names the repository after splitDockerDomain: `library/Busybox`.
    from shoal.image.reference import split_docker_domain

    _domain, remainder = split_docker_domain(image)
    name = remainder.split(":", 1)[0].split("@", 1)[0]
    if name != name.lower() and _REFERENCE.match(image.lower()):
        return f"invalid reference format: repository name ({name}) must be lowercase"
    return "invalid reference format"
