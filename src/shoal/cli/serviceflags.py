"""The flags of `service create` and `service update`, named, typed and described as docker/cli's
cli/command/service/{create,update,opts}.go register them. Only the definitions live here, so a
`service ls` does not import what turns them into a spec (cli/servicespec.py).

A flag left out is None in the parsed namespace: "changed" in pflag's sense."""

from __future__ import annotations

import argparse

# Flags whose value is appended to a list (pflag's ListOpts and friends).
_LIST = {"action": "append", "default": None}


def _bool_flag(p: argparse.ArgumentParser, *names: str, help: str) -> None:
    """A pflag boolean: `--tty`, and also `--tty=false` / `--tty=true` (how `service update`
    turns one off). argparse looks an argument up whole before splitting it at `=`, so the
    spelled-out forms are options of their own, hidden from the help."""
    p.add_argument(*names, action="store_true", default=None, help=help)
    dest = names[-1].lstrip("-").replace("-", "_")
    for text, value in (("false", False), ("true", True), ("0", False), ("1", True)):
        p.add_argument(*(f"{n}={text}" for n in names if n.startswith("--")), dest=dest, action="store_const",
                       const=value, help=argparse.SUPPRESS)

# ---- flag definitions ----------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    """addServiceFlags: the flags create and update share."""
    p.add_argument("-d", "--detach", action="store_true", default=None,
                   help="Exit immediately instead of waiting for the service to converge")
    p.add_argument("-q", "--quiet", action="store_true", default=None, help="Suppress progress output")
    p.add_argument("-w", "--workdir", metavar="string", help="Working directory inside the container")
    p.add_argument("-u", "--user", metavar="string", help="Username or UID (format: <name|uid>[:<group|gid>])")
    p.add_argument("--hostname", metavar="string", help="Container hostname")
    p.add_argument("--entrypoint", metavar="command", help="Overwrite the default ENTRYPOINT of the image")
    p.add_argument("--cap-add", metavar="list", **_LIST, help="Add Linux capabilities")
    p.add_argument("--cap-drop", metavar="list", **_LIST, help="Drop Linux capabilities")
    p.add_argument("--limit-cpu", metavar="decimal", help="Limit CPUs")
    p.add_argument("--limit-memory", metavar="bytes", help="Limit Memory")
    p.add_argument("--limit-pids", metavar="int", help="Limit maximum number of processes (default 0 = unlimited)")
    p.add_argument("--reserve-cpu", metavar="decimal", help="Reserve CPUs")
    p.add_argument("--reserve-memory", metavar="bytes", help="Reserve Memory")
    p.add_argument("--stop-grace-period", metavar="duration",
                   help="Time to wait before force killing a container (ns|us|ms|s|m|h) (default 10s)")
    p.add_argument("--replicas", metavar="uint", help="Number of tasks")
    p.add_argument("--max-concurrent", metavar="uint",
                   help="Number of job tasks to run concurrently (default equal to --replicas)")
    p.add_argument("--replicas-max-per-node", metavar="uint",
                   help="Maximum number of tasks per node (default 0 = unlimited)")
    p.add_argument("--restart-condition", metavar="string",
                   help='Restart when condition is met ("none", "on-failure", "any") (default "any")')
    p.add_argument("--restart-delay", metavar="duration",
                   help="Delay between restart attempts (ns|us|ms|s|m|h) (default 5s)")
    p.add_argument("--restart-max-attempts", metavar="uint", help="Maximum number of restarts before giving up")
    p.add_argument("--restart-window", metavar="duration",
                   help="Window used to evaluate the restart policy (ns|us|ms|s|m|h)")
    for what, verb, actions in (("update", "updated", '"pause", "continue", "rollback"'),
                                ("rollback", "rolled back", '"pause", "continue"')):
        noun = "updates" if what == "update" else "task rollbacks"
        p.add_argument(f"--{what}-parallelism", metavar="uint",
                       help=f"Maximum number of tasks {verb} simultaneously (0 to {'update' if what == 'update' else 'roll back'} all at once) (default 1)")
        p.add_argument(f"--{what}-delay", metavar="duration",
                       help=f"Delay between {noun} (ns|us|ms|s|m|h) (default 0s)")
        p.add_argument(f"--{what}-monitor", metavar="duration",
                       help=f"Duration after each task {'update' if what == 'update' else 'rollback'} to monitor for failure (ns|us|ms|s|m|h) (default 5s)")
        p.add_argument(f"--{what}-failure-action", metavar="string",
                       help=f'Action on {what} failure ({actions}) (default "pause")')
        p.add_argument(f"--{what}-max-failure-ratio", metavar="float",
                       help=f"Failure rate to tolerate during {'an update' if what == 'update' else 'a rollback'} (default 0)")
        p.add_argument(f"--{what}-order", metavar="string",
                       help=f'{"Update" if what == "update" else "Rollback"} order ("start-first", "stop-first") (default "stop-first")')
    p.add_argument("--endpoint-mode", metavar="string", help='Endpoint mode (vip or dnsrr) (default "vip")')
    p.add_argument("--with-registry-auth", action="store_true", default=None,
                   help="Send registry authentication details to swarm agents")
    p.add_argument("--no-resolve-image", action="store_true", default=None,
                   help="Do not query the registry to resolve image digest and supported platforms")
    p.add_argument("--log-driver", metavar="string", help="Logging driver for service")
    p.add_argument("--log-opt", metavar="list", **_LIST, help="Logging driver options")
    p.add_argument("--health-cmd", metavar="string", help="Command to run to check health")
    p.add_argument("--health-interval", metavar="duration", help="Time between running the check (ms|s|m|h)")
    p.add_argument("--health-timeout", metavar="duration", help="Maximum time to allow one check to run (ms|s|m|h)")
    p.add_argument("--health-retries", metavar="int", help="Consecutive failures needed to report unhealthy")
    p.add_argument("--health-start-period", metavar="duration",
                   help="Start period for the container to initialize before counting retries towards unstable (ms|s|m|h)")
    p.add_argument("--health-start-interval", metavar="duration",
                   help="Time between running the check during the start period (ms|s|m|h)")
    p.add_argument("--no-healthcheck", action="store_true", default=None,
                   help="Disable any container-specified HEALTHCHECK")
    _bool_flag(p, "-t", "--tty", help="Allocate a pseudo-TTY")
    _bool_flag(p, "--read-only", help="Mount the container's root filesystem as read only")
    p.add_argument("--stop-signal", metavar="string", help="Signal to stop the container")


def add_create_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", metavar="string",
                   help='Service mode ("replicated", "global", "replicated-job", "global-job") (default "replicated")')
    p.add_argument("--name", metavar="string", help="Service name")
    _common(p)
    p.add_argument("-l", "--label", metavar="list", **_LIST, help="Service labels")
    p.add_argument("--container-label", metavar="list", **_LIST, help="Container labels")
    p.add_argument("-e", "--env", metavar="list", **_LIST, help="Set environment variables")
    p.add_argument("--env-file", metavar="list", **_LIST, help="Read in a file of environment variables")
    p.add_argument("--mount", metavar="mount", **_LIST, help="Attach a filesystem mount to the service")
    p.add_argument("--constraint", metavar="list", **_LIST, help="Placement constraints")
    p.add_argument("--placement-pref", metavar="pref", **_LIST, help="Add a placement preference")
    p.add_argument("--network", metavar="network", **_LIST, help="Network attachments")
    p.add_argument("--secret", metavar="secret", **_LIST, help="Specify secrets to expose to the service")
    p.add_argument("--config", metavar="config", **_LIST, help="Specify configurations to expose to the service")
    p.add_argument("-p", "--publish", metavar="port", **_LIST, help="Publish a port as a node port")
    p.add_argument("--group", metavar="list", **_LIST,
                   help="Set one or more supplementary user groups for the container")
    p.add_argument("--dns", metavar="list", **_LIST, help="Set custom DNS servers")
    p.add_argument("--dns-option", metavar="list", **_LIST, help="Set DNS options")
    p.add_argument("--dns-search", metavar="list", **_LIST, help="Set custom DNS search domains")
    p.add_argument("--host", metavar="list", **_LIST, help="Set one or more custom host-to-IP mappings (host:ip)")
    _bool_flag(p, "--init", help="Use an init inside each service container to forward signals and reap processes")
    p.add_argument("--sysctl", metavar="list", **_LIST, help="Sysctl options")
    p.add_argument("--ulimit", metavar="ulimit", **_LIST, help="Ulimit options (default [])")
    p.add_argument("--oom-score-adj", metavar="int", help="Tune host's OOM preferences (-1000 to 1000) ")
    p.add_argument("--generic-resource", metavar="list", **_LIST, help="User defined resources")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="[COMMAND] [ARG...]")


def add_update_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", metavar="string", help="Service image tag")
    p.add_argument("--args", metavar="command", help="Service command args")
    p.add_argument("--rollback", action="store_true", default=None, help="Rollback to previous specification")
    p.add_argument("--force", action="store_true", default=None, help="Force update even if no changes require it")
    _common(p)
    removes = (
        ("env-rm", "Remove an environment variable"),
        ("group-rm", "Remove a previously added supplementary user group from the container"),
        ("label-rm", "Remove a label by its key"),
        ("container-label-rm", "Remove a container label by its key"),
        ("mount-rm", "Remove a mount by its target path"),
        ("constraint-rm", "Remove a constraint"),
        ("dns-rm", "Remove a custom DNS server"),
        ("dns-option-rm", "Remove a DNS option"),
        ("dns-search-rm", "Remove a DNS search domain"),
        ("host-rm", 'Remove a custom host-to-IP mapping ("host:ip")'),
        ("secret-rm", "Remove a secret"),
        ("config-rm", "Remove a configuration file"),
        ("network-rm", "Remove a network"),
        ("sysctl-rm", "Remove a Sysctl option"),
        ("ulimit-rm", "Remove a ulimit option"),
        ("generic-resource-rm", "Remove a Generic resource"),
    )
    for name, text in removes:
        p.add_argument(f"--{name}", metavar="list", **_LIST, help=text)
    p.add_argument("--publish-rm", metavar="port", **_LIST, help="Remove a published port by its target port")
    p.add_argument("--placement-pref-rm", metavar="pref", **_LIST, help="Remove a placement preference")
    adds = (
        ("label-add", "list", "Add or update a service label"),
        ("container-label-add", "list", "Add or update a container label"),
        ("env-add", "list", "Add or update an environment variable"),
        ("secret-add", "secret", "Add or update a secret on a service"),
        ("config-add", "config", "Add or update a config file on a service"),
        ("mount-add", "mount", "Add or update a mount on a service"),
        ("constraint-add", "list", "Add or update a placement constraint"),
        ("placement-pref-add", "pref", "Add a placement preference"),
        ("network-add", "network", "Add a network"),
        ("publish-add", "port", "Add or update a published port"),
        ("group-add", "list", "Add an additional supplementary user group to the container"),
        ("dns-add", "list", "Add or update a custom DNS server"),
        ("dns-option-add", "list", "Add or update a DNS option"),
        ("dns-search-add", "list", "Add or update a custom DNS search domain"),
        ("host-add", "list", 'Add a custom host-to-IP mapping ("host:ip")'),
        ("sysctl-add", "list", "Add or update a Sysctl option"),
        ("ulimit-add", "ulimit", "Add or update a ulimit option (default [])"),
        ("generic-resource-add", "list", "Add a Generic resource"),
    )
    for name, meta, text in adds:
        p.add_argument(f"--{name}", metavar=meta, **_LIST, help=text)
    _bool_flag(p, "--init", help="Use an init inside each service container to forward signals and reap processes")
    p.add_argument("--oom-score-adj", metavar="int", help="Tune host's OOM preferences (-1000 to 1000) ")
    p.add_argument("service", metavar="SERVICE")


# The flags `update --rollback` may be combined with (update.go runUpdate).
ROLLBACK_COMPATIBLE = {"rollback", "detach", "quiet", "service"}


def changed(args: argparse.Namespace) -> set[str]:
    """The flags given on the command line, by pflag name (`env-add`)."""
    return {k.replace("_", "-") for k, v in vars(args).items()
            if v is not None and k not in ("func", "command", "service_command", "global_host", "global_context")}
