"""`shoal swarm init|join|join-token|leave|update|ca` and `shoal info`, as docker/cli's
cli/command/swarm and system/info.go print them."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from shoal.errors import InvalidArgument, ShoalError


def _client() -> Any:
    from shoal.api.client import connect

    return connect()


def _duration(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    from shoal.manager.swarmnode import parse_duration

    return parse_duration(text, flag)


def _init(args: argparse.Namespace) -> int:
    from shoal.cli.swarmtext import init_text

    if args.external_ca:
        external_cas(args.external_ca)
        raise ShoalError(EXTERNAL_CA_UNSUPPORTED)
    body = {"ListenAddr": args.listen_addr, "AdvertiseAddr": args.advertise_addr,
            "CertExpiry": _duration(args.cert_expiry, "--cert-expiry"),
            "HeartbeatPeriod": _duration(args.dispatcher_heartbeat, "--dispatcher-heartbeat"),
            "TaskHistoryRetentionLimit": args.task_history_limit}
    with _client() as client:
        answer = client.post("/swarm/init", {k: v for k, v in body.items() if v is not None})
    sys.stdout.write(init_text(answer["NodeID"], answer["WorkerToken"], answer["ManagerAddr"]))
    return 0


def _join(args: argparse.Namespace) -> int:
    from shoal.cli.swarmtext import joined_text

    body = {"RemoteAddrs": [args.remote], "JoinToken": args.token, "AdvertiseAddr": args.advertise_addr,
            "ListenAddr": args.listen_addr}
    with _client() as client:
        answer = client.post("/swarm/join", {k: v for k, v in body.items() if v is not None})
    sys.stdout.write(joined_text(answer["Role"] == "manager"))
    return 0


def _join_token(args: argparse.Namespace) -> int:
    from shoal.cli.swarmtext import join_token_text

    if args.role not in ("worker", "manager"):
        raise InvalidArgument(f"unknown role {args.role}")
    with _client() as client:
        answer = client.get(f"/swarm/join-token/{args.role}", rotate="1" if args.rotate else None)
    sys.stdout.write(join_token_text(args.role, answer["Token"], answer["ManagerAddr"], rotated=args.rotate,
                                     quiet=args.quiet))
    return 0


def _leave(args: argparse.Namespace) -> int:
    with _client() as client:
        # The query as params: request_target escapes a '?' written into the path.
        client.request("POST", "/swarm/leave", {"force": "1"} if args.force else None, {})
    print("Node left the swarm.")
    return 0


def _update(args: argparse.Namespace) -> int:
    if args.external_ca:
        external_cas(args.external_ca)  # the flag's own errors first, as pflag's
        raise ShoalError(EXTERNAL_CA_UNSUPPORTED)
    body = {"CertExpiry": _duration(args.cert_expiry, "--cert-expiry"),
            "HeartbeatPeriod": _duration(args.dispatcher_heartbeat, "--dispatcher-heartbeat"),
            "TaskHistoryRetentionLimit": args.task_history_limit}
    with _client() as client:
        client.post("/swarm/update", {k: v for k, v in body.items() if v is not None})
    print("Swarm updated.")
    return 0


CERTS_ROTATED = "  rotated TLS certificates"  # docker/cli progress/root_rotation.go
ROOTS_ROTATED = "  rotated CA certificates"
ROTATION_POLL = 0.2  # seconds, as docker/cli polls


def progress_bar(current: int, total: int, units: str = "nodes") -> str:
    """moby's JSONProgress.String() for a terminal wider than 110 columns: a 50-wide bar, then
    `current/total units`."""
    filled = min(50, int(current / total * 100) // 2) if total > 0 else 0
    return f"[{'=' * filled}>{' ' * (50 - filled)}] {current}/{total} {units}"


def rotation_lines(answer: dict[str, Any]) -> tuple[list[str], bool]:
    """docker/cli's updateProgress: the desired root's digest, nodes on the new issuer, nodes
    trusting the new root (shown as 0 until the certificates are all rotated and the rotation
    finished); done when both are complete."""
    import hashlib

    prog = answer.get("Progress") or {}
    total, certs, roots = int(prog.get("Nodes", 0)), int(prog.get("TLSRotated", 0)), int(prog.get("CARotated", 0))
    in_progress = bool(answer.get("RootRotationInProgress"))
    certs_done = certs == total and not in_progress
    digest = "sha256:" + hashlib.sha256(answer["Certificate"].encode()).hexdigest()
    lines = [f"desired root digest: {digest}", f"{CERTS_ROTATED}: {progress_bar(certs, total)}",
             f"{ROOTS_ROTATED}:  {progress_bar(roots if certs_done else 0, total)}"]
    return lines, certs_done and roots == total


EXTERNAL_CA_UNSUPPORTED = ("--external-ca is supported by `shoal swarm ca --rotate --ca-cert FILE --external-ca "
                           "protocol=cfssl,url=URL` only: on swarm init and swarm update (an external CA for "
                           "the current root) it is not supported yet")


def external_cas(specs: list[str] | None) -> list[dict[str, str]]:
    """`--external-ca` flags as docker/cli's ExternalCAOption parses them, pflag's error line."""
    from shoal.manager.externalca import parse_spec

    result = []
    for spec in specs or []:
        try:
            parsed = parse_spec(spec)
        except InvalidArgument as exc:
            raise InvalidArgument(f'invalid argument "{spec}" for "--external-ca" flag: {exc}') from None
        result.append({"Protocol": parsed.protocol, "URL": parsed.url})
    return result


def read_pem_file(path: str, flag: str) -> str:
    """docker/cli's PEMFile.Set: the file's contents, which must hold a PEM block; its errors
    come out as pflag's `invalid argument` line."""
    import re

    try:
        with open(path, "rb") as f:
            data = f.read(1024 * 1024 + 1)
    except OSError as exc:
        raise InvalidArgument(f'invalid argument "{path}" for "{flag}" flag: open {path}: '
                              f"{(exc.strerror or str(exc)).lower()}") from None
    text = data.decode("utf-8", "replace")
    if len(data) > 1024 * 1024 or not re.search(r"-----BEGIN [^\n-]*-----.*?-----END [^\n-]*-----", text, re.S):
        raise InvalidArgument(f'invalid argument "{path}" for "{flag}" flag: file contents must be in PEM format')
    return text


def _ca(args: argparse.Namespace) -> int:
    import time

    # pflag reads the files as it parses the flags, before the command runs (ca.go's order)
    ca_cert = read_pem_file(args.ca_cert, "--ca-cert") if args.ca_cert is not None else None
    ca_key = read_pem_file(args.ca_key, "--ca-key") if args.ca_key is not None else None
    externals = external_cas(args.external_ca)
    if not args.rotate:
        for flag, value in (("ca-cert", ca_cert), ("ca-key", ca_key), ("cert-expiry", args.cert_expiry),
                            ("external-ca", args.external_ca)):
            if value is not None:
                raise InvalidArgument(f"`--{flag}` flag requires the `--rotate` flag to update the CA")
        with _client() as client:
            answer = client.get("/swarm/ca")
        sys.stdout.write(answer["Certificate"].strip() + "\n")
        return 0
    if args.external_ca and ca_cert is None:
        raise InvalidArgument("rotating to an external CA requires the `--ca-cert` flag to specify the external "
                              "CA's cert - to add an external CA with the current root CA certificate, use the "
                              "`update` command instead")
    if ca_cert is not None and not args.external_ca and ca_key is None:
        raise InvalidArgument("the --ca-cert flag requires that a --ca-key flag and/or --external-ca flag be "
                              "provided as well")
    expiry = _duration(args.cert_expiry, "--cert-expiry")
    options: dict[str, Any] = {k: v for k, v in (("CACert", ca_cert), ("CAKey", ca_key)) if v is not None}
    if externals:
        options["ExternalCAs"] = externals
    with _client() as client:
        client.get("/swarm/ca")  # "not a swarm manager" before anything changes
        if expiry is not None:
            client.post("/swarm/update", {"CertExpiry": expiry})
        client.post("/swarm/ca/rotate", options)
        if args.detach:
            return 0
        tty = sys.stdout.isatty() and not args.quiet
        shown: list[str] = []
        while True:
            answer = client.get("/swarm/ca")
            lines, done = rotation_lines(answer)
            if not args.quiet and lines != shown:
                if tty and shown:
                    sys.stdout.write(f"\x1b[{len(shown)}A")  # redraw in place, as jsonmessage does
                sys.stdout.write("".join(f"\x1b[2K{line}\n" if tty else f"{line}\n" for line in lines))
                sys.stdout.flush()
                shown = lines
            if done:
                break
            time.sleep(ROTATION_POLL)
    if not args.quiet:
        sys.stdout.write(answer["Certificate"].strip() + "\n")
    return 0


def info_lines(info: dict[str, Any]) -> list[str]:
    """docker/cli system/info.go printSwarmInfo, for what shoal has."""
    from shoal.cli.format import human_duration

    lines = [f" Swarm: {info['LocalNodeState']}", f"  NodeID: {info['NodeID']}",
             f"  Is Manager: {str(info['ControlAvailable']).lower()}"]
    cluster = info.get("Cluster")
    if info["ControlAvailable"]:
        if info.get("ClusterID"):
            lines.append(f"  ClusterID: {info['ClusterID']}")
        lines += [f"  Managers: {info['Managers']}", f"  Nodes: {info['Nodes']}"]
        if cluster:
            spec = cluster["Spec"]
            lines += ["  Orchestration:", f"   Task History Retention Limit: {spec['task_history_limit']}",
                      "  Dispatcher:", f"   Heartbeat Period: {human_duration(spec['heartbeat_period'])}",
                      "  CA Configuration:", f"   Expiry Duration: {human_duration(spec['cert_expiry'])}"]
            externals = cluster.get("ExternalCAs") or []
            if externals:  # docker/cli's printSwarmInfo
                lines.append("   External CAs:")
                lines += [f"     {e.get('Protocol', '')}: {e.get('URL', '')}" for e in externals]
            lines.append(f"  Root Rotation In Progress: {str(bool(cluster.get('RootRotationInProgress'))).lower()}")
    managers = sorted(m["Addr"] for m in info.get("RemoteManagers") or [] if m.get("Addr"))
    # docker/cli prints the node's own address on a worker too (dockerd's NodeAddr)
    address = info.get("NodeAddr") or (managers[0].rsplit(":", 1)[0] if managers and info["ControlAvailable"] else "")
    if address:
        lines.append(f"  Node Address: {address}")
    if managers:
        lines.append("  Manager Addresses:")
        lines += [f"   {m}" for m in managers]
    return [line for line in lines if line]


def _info(args: argparse.Namespace) -> int:
    from shoal import __version__

    from shoal.api import contexts

    with _client() as client:
        version = client.get("/version")
        base = client.get("/info")
        swarm = client.get("/swarm/info")
    try:
        context = contexts.endpoint().context
    except ShoalError:
        context = contexts.DEFAULT
    client_info = {"Version": __version__, "Context": context, "Debug": False}
    fmt = getattr(args, "format", None)
    if fmt:  # docker's info context: the daemon's Info fields, Swarm as /swarm/info answers it
        from shoal.cli.format import render_template

        obj = {**base, "ServerVersion": version.get("Version", __version__), "OSType": "linux",
               "Architecture": version.get("Arch", ""), "Swarm": swarm, "ClientInfo": client_info}
        print(render_template("{{json .}}" if fmt == "json" else fmt, obj))
        return 0
    print("\n".join(["Client:", f" Version:    {__version__}", f" Context:    {context}", " Debug Mode: false", "",
                     "Server:", *server_lines(base, version, swarm)]))
    return 0


def server_lines(info: dict[str, Any], version: dict[str, Any], swarm: dict[str, Any]) -> list[str]:
    """docker/cli system/info.go prettyPrintServerInfo, the lines shoal has a value for (no
    containerd, runc or init commit, no proxies or registry mirrors)."""
    from shoal.units import bytes_size

    plugins = info.get("Plugins") or {}
    lines = [f" Containers: {info.get('Containers', 0)}", f"  Running: {info.get('ContainersRunning', 0)}",
             f"  Paused: {info.get('ContainersPaused', 0)}", f"  Stopped: {info.get('ContainersStopped', 0)}",
             f" Images: {info.get('Images', 0)}", f" Server Version: {version.get('Version', '')}"]
    lines += [f" {label}: {info[key]}" for label, key in (
        ("Storage Driver", "Driver"), ("Logging Driver", "LoggingDriver"), ("Cgroup Driver", "CgroupDriver"),
        ("Cgroup Version", "CgroupVersion")) if info.get(key)]
    lines += [" Plugins:", f"  Volume: {' '.join(plugins.get('Volume') or [])}",
              f"  Network: {' '.join(plugins.get('Network') or [])}", f"  Log: {' '.join(plugins.get('Log') or [])}"]
    lines += info_lines(swarm)
    if info.get("Runtimes"):
        lines += [f" Runtimes: {' '.join(info['Runtimes'])}", f" Default Runtime: {info.get('DefaultRuntime', '')}"]
    if info.get("InitBinary"):
        lines.append(f" Init Binary: {info['InitBinary']}")
    lines += [f" {label}: {info[key]}" for label, key in (
        ("Kernel Version", "KernelVersion"), ("Operating System", "OperatingSystem"), ("OSType", "OSType"))
        if info.get(key)]
    lines.append(f" Architecture: {info.get('Architecture') or version.get('Arch', '')}")
    if "NCPU" in info:
        lines += [f" CPUs: {info['NCPU']}", f" Total Memory: {bytes_size(info.get('MemTotal', 0))}"]
    lines += [f" {label}: {info[key]}" for label, key in (("Name", "Name"), ("ID", "ID")) if info.get(key)]
    if "DockerRootDir" in info:
        lines += [f" Docker Root Dir: {info['DockerRootDir']}", " Debug Mode: false", " Experimental: false",
                  " Live Restore Enabled: false"]
    return lines


def add_info_flags(p: argparse.ArgumentParser) -> None:
    from shoal.cli.format import INSPECT_FORMAT_HELP

    p.add_argument("-f", "--format", metavar="string", help=INSPECT_FORMAT_HELP)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="Display system-wide information")
    add_info_flags(p)
    p.set_defaults(func=_info)

    swarm = sub.add_parser("swarm", help="Manage Swarm")
    ss = swarm.add_subparsers(dest="swarm_command", metavar="COMMAND")
    swarm.set_defaults(func=lambda _: (swarm.print_help(), 0)[1])

    p = ss.add_parser("init", help="Initialize a swarm")
    p.add_argument("--advertise-addr", help="Advertised address (format: <ip>[:port])")
    p.add_argument("--listen-addr", help="Listen address (format: <ip>[:port]) (default 0.0.0.0:2377)")
    p.add_argument("--cert-expiry", help="Validity period for node certificates (ns|us|ms|s|m|h) (default 2160h0m0s)")
    p.add_argument("--dispatcher-heartbeat", help="Dispatcher heartbeat period (ns|us|ms|s|m|h) (default 1s)")
    p.add_argument("--external-ca", metavar="external-ca", action="append",
                   help='Specifications of one or more certificate signing endpoints')
    p.add_argument("--task-history-limit", type=int, help="Task history retention limit (default 5)")
    p.set_defaults(func=_init)

    p = ss.add_parser("join", help="Join a swarm as a node and/or manager")
    p.add_argument("--token", required=True, help="Token for entry into the swarm")
    p.add_argument("--advertise-addr", help="Advertised address (format: <ip>[:port])")
    p.add_argument("--listen-addr", help="Listen address (format: <ip>[:port]) (default 0.0.0.0:2377)")
    p.add_argument("remote", metavar="HOST:PORT")
    p.set_defaults(func=_join)

    p = ss.add_parser("join-token", help="Manage join tokens")
    p.add_argument("-q", "--quiet", action="store_true", help="Only display token")
    p.add_argument("--rotate", action="store_true", help="Rotate join token")
    p.add_argument("role", metavar="(worker|manager)")
    p.set_defaults(func=_join_token)

    p = ss.add_parser("leave", help="Leave the swarm")
    p.add_argument("-f", "--force", action="store_true",
                   help="Force this node to leave the swarm, ignoring warnings")
    p.set_defaults(func=_leave)

    p = ss.add_parser("update", help="Update the swarm")
    p.add_argument("--cert-expiry", help="Validity period for node certificates (ns|us|ms|s|m|h)")
    p.add_argument("--dispatcher-heartbeat", help="Dispatcher heartbeat period (ns|us|ms|s|m|h)")
    p.add_argument("--external-ca", metavar="external-ca", action="append",
                   help='Specifications of one or more certificate signing endpoints')
    p.add_argument("--task-history-limit", type=int, help="Task history retention limit")
    p.set_defaults(func=_update)

    p = ss.add_parser("ca", help="Display and rotate the root CA")
    p.add_argument("--rotate", action="store_true",
                   help="Rotate the swarm CA - if no certificate or key are provided, new ones will be generated")
    p.add_argument("--ca-cert", metavar="pem-file",
                   help="Path to the PEM-formatted root CA certificate to use for the new cluster")
    p.add_argument("--ca-key", metavar="pem-file",
                   help="Path to the PEM-formatted root CA key to use for the new cluster")
    p.add_argument("--cert-expiry", metavar="duration",
                   help="Validity period for node certificates (ns|us|ms|s|m|h) (default 2160h0m0s)")
    p.add_argument("--external-ca", metavar="external-ca", action="append",
                   help='Specifications of one or more certificate signing endpoints')
    p.add_argument("-d", "--detach", action="store_true",
                   help="Exit immediately instead of waiting for the root rotation to converge")
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress progress output")
    p.set_defaults(func=_ca)
