"""What `swarm init`, `swarm join` and `swarm join-token` print, word for word as docker/cli's
cli/command/swarm/{init,join,join_token}.go, with `shoal` where docker says `docker`."""

from __future__ import annotations

from shoal.errors import InvalidArgument


def join_command(role: str, token: str, manager_addr: str) -> str:
    """printJoinCommand for one role (`worker` or `manager`)."""
    return (f"To add a {role} to this swarm, run the following command:\n\n"
            f"    shoal swarm join --token {token} {manager_addr}\n\n")


def init_text(node_id: str, worker_token: str, manager_addr: str) -> str:
    return (f"Swarm initialized: current node ({node_id}) is now a manager.\n\n"
            + join_command("worker", worker_token, manager_addr)
            + "To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n")


def join_token_text(role: str, token: str, manager_addr: str, *, rotated: bool = False,
                    quiet: bool = False) -> str:
    """`swarm join-token [-q] [--rotate] worker|manager`."""
    if role not in ("worker", "manager"):
        raise InvalidArgument(f"unknown role {role}")
    if quiet:
        return token + "\n"
    head = f"Successfully rotated {role} join token.\n\n" if rotated else ""
    return head + join_command(role, token, manager_addr)


def joined_text(is_manager: bool) -> str:
    """`swarm join`: what the node became."""
    return f"This node joined a swarm as a {'manager' if is_manager else 'worker'}.\n"
