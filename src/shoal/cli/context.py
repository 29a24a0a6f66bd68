"""`shoal context create|ls|use|inspect|rm|show|update`, as `docker context` (docker/cli
cli/command/context): the store itself is api/contexts.py."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from shoal.api import contexts
from shoal.cli.format import FORMAT_HELP, INSPECT_FORMAT_HELP
from shoal.errors import InvalidArgument, ShoalError


def _docker_opts(text: str | None) -> dict[str, str]:
    """Docker's `--docker host=...,ca=...,cert=...,key=...`."""
    if not text:
        return {}
    out: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or key not in ("host", "ca", "cert", "key", "skip-tls-verify"):
            raise InvalidArgument(f'--docker: invalid item "{item}" (use host=,ca=,cert=,key=)')
        out[key] = value
    if out.get("skip-tls-verify", "false").lower() not in ("false", "0", ""):
        raise InvalidArgument("--docker: skip-tls-verify is not supported: a node is trusted only through its cluster's CA")
    return out


def _endpoint_from_args(args: argparse.Namespace, existing: contexts.Context | None) -> contexts.Context | None:
    """The host and TLS material the flags give; None when they give none."""
    docker = _docker_opts(getattr(args, "docker", None))
    host = args.host or docker.get("host")
    ca, cert, key = (args.tls_ca or docker.get("ca"), args.tls_cert or docker.get("cert"),
                     args.tls_key or docker.get("key"))
    if host is None and not (ca or cert or key):
        return None
    ctx = contexts.Context(name=args.name, description=existing.description if existing else "",
                           extra=existing.extra if existing else None)
    ctx.host = contexts.normalize_host(host) if host else (existing.host if existing else contexts.default_host())
    tls = contexts.read_tls_files(ca, cert, key)
    if ctx.host.startswith("tcp://") and not tls:
        if existing is not None and existing.host.startswith("tcp://"):
            # Only the host changes: the context keeps its TLS material (its copy, or the node
            # certificates it follows).
            ctx.node_certs = existing.node_certs
            return ctx
        # This node's own certificates, from swarm init/join: followed where they are, not
        # copied, so that the context keeps working after their renewal and a root rotation.
        ctx.node_certs = contexts.node_certs_dir()
        return ctx
    if ctx.host.startswith("tcp://") and "ca.pem" not in tls:
        raise InvalidArgument(f"context {args.name}: a tcp:// host needs the cluster's CA certificate (--tls-ca)")
    ctx.tls = tls
    return ctx


def _create(args: argparse.Namespace) -> int:
    name = args.name
    contexts.validate_name(name)
    if contexts.exists(name):
        raise InvalidArgument(f'context "{name}" already exists')
    ctx = _endpoint_from_args(args, None)
    if ctx is not None and args.from_context:
        raise InvalidArgument("cannot use --host or --tls-* flags when --from is set")
    if ctx is None:
        # Docker: no endpoint flags copies the named (or current) context.
        source = args.from_context or contexts.current_name()
        src = contexts.load(source)
        ctx = contexts.Context(name=name, description=src.description if source != contexts.DEFAULT else "",
                               host=src.host, node_certs=src.node_certs, extra=src.extra)
        if source == contexts.DEFAULT:
            ep = contexts.endpoint(contexts.DEFAULT)
            ctx.host = ep.host
            if ep.is_tcp and ep.follows is not None:
                ctx.node_certs = str(ep.follows.absolute())  # this node's own: followed, as above
            elif ep.is_tcp:
                ctx.tls = {f: p.read_bytes() for f, p in (("ca.pem", ep.ca), ("cert.pem", ep.cert),
                                                         ("key.pem", ep.key)) if p is not None and p.is_file()}
        elif not src.node_certs:
            d = contexts.tls_dir(source) / contexts.ENDPOINT
            ctx.tls = {f: (d / f).read_bytes() for f in contexts.tls_material(source)}
    if args.description is not None:
        ctx.description = args.description
    contexts.save(ctx, replace_tls=True)
    print(name)
    print(f'Successfully created context "{name}"', file=sys.stderr)
    return 0


def _update(args: argparse.Namespace) -> int:
    name = args.name
    if name == contexts.DEFAULT:
        raise InvalidArgument('context "default" cannot be updated')
    existing = contexts.load(name)
    ctx = _endpoint_from_args(args, existing)
    replace_tls = ctx is not None and (bool(ctx.tls) or bool(ctx.node_certs) or not ctx.host.startswith("tcp://"))
    if ctx is None:
        ctx = existing
    if args.description is not None:
        ctx.description = args.description
    contexts.save(ctx, replace_tls=replace_tls)
    print(name)
    print(f'Successfully updated context "{name}"', file=sys.stderr)
    return 0


def _warn_host_override() -> None:
    if os.environ.get("SHOAL_HOST"):
        print("Warning: SHOAL_HOST environment variable overrides the active context. To use a context, "
              "either set the global --context flag, or unset SHOAL_HOST environment variable.", file=sys.stderr)


def _ls(args: argparse.Namespace) -> int:
    current = contexts.current_name()
    rows: list[dict[str, Any]] = []
    seen = False
    for name in contexts.names():
        error = ""
        try:
            ctx = contexts.load(name)
            desc, host = ctx.description, ctx.host
        except ShoalError as exc:
            desc, host, error = "", "", str(exc)
        seen |= name == current
        rows.append({"Name": name, "Current": name == current, "Description": desc,
                     "DockerEndpoint": host, "Error": error})
    if not seen:
        rows.append({"Name": current, "Current": True, "Description": "", "DockerEndpoint": "",
                     "Error": f'context "{current}": context not found'})
    rows.sort(key=lambda r: r["Name"])
    if args.quiet:
        for r in rows:
            print(r["Name"])
    elif args.format and args.format != "table":
        from shoal.cli.format import print_formatted

        print_formatted(args.format, ["NAME", "DESCRIPTION", "DOCKER ENDPOINT", "ERROR"],
                        ["Name", "Description", "DockerEndpoint", "Error"], rows)
    else:
        from shoal.cli.format import print_table

        print_table(["NAME", "DESCRIPTION", "DOCKER ENDPOINT", "ERROR"],
                    [[r["Name"] + (" *" if r["Current"] else ""), r["Description"], r["DockerEndpoint"], r["Error"]]
                     for r in rows])
    _warn_host_override()
    return 0


def _use(args: argparse.Namespace) -> int:
    name = args.name
    if name != contexts.DEFAULT:
        contexts.load(name)
    contexts.set_current(name)
    print(name)
    print(f'Current context is now "{name}"', file=sys.stderr)
    if os.environ.get("SHOAL_HOST"):
        print(f"Warning: SHOAL_HOST environment variable overrides the active context. To use \"{name}\", "
              "either set the global --context flag, or unset SHOAL_HOST environment variable.", file=sys.stderr)
    return 0


def _show(_: argparse.Namespace) -> int:
    print(contexts.current_name())
    return 0


def _inspect_one(name: str) -> dict[str, Any]:
    ctx = contexts.load(name)
    endpoint = {"Host": ctx.host, "SkipTLSVerify": False}
    if name == contexts.DEFAULT:
        return {"Name": name, "Metadata": {}, "Endpoints": {contexts.ENDPOINT: endpoint}, "TLSMaterial": {},
                "Storage": {"MetadataPath": "<IN MEMORY>", "TLSPath": "<IN MEMORY>"}}
    material = contexts.tls_material(name)  # what the store holds: nothing when it follows a node's
    metadata = dict(ctx.extra)
    if ctx.description:
        metadata["Description"] = ctx.description
    if ctx.node_certs:
        metadata[contexts.NODE_CERTS] = ctx.node_certs
    return {"Name": name, "Metadata": metadata,
            "Endpoints": {contexts.ENDPOINT: endpoint},
            "TLSMaterial": {contexts.ENDPOINT: material} if material else {},
            "Storage": {"MetadataPath": str(contexts.meta_dir(name)), "TLSPath": str(contexts.tls_dir(name))}}


def _inspect(args: argparse.Namespace) -> int:
    names = args.names or [contexts.current_name()]
    found, errors = [], []
    for name in names:
        try:
            found.append(_inspect_one(name))
        except ShoalError as exc:
            errors.append(str(exc))
    if args.format:
        from shoal.cli.format import render_template

        for obj in found:
            print(render_template(args.format, obj))
    else:
        print(json.dumps(found, indent=4))
    if errors:
        raise ShoalError("; ".join(errors))
    return 0


def _rm(args: argparse.Namespace) -> int:
    current = contexts.current_name()
    errors = []
    for name in args.names:
        if name == contexts.DEFAULT:
            errors.append('context "default" cannot be removed')
            continue
        if name == current and not args.force:
            errors.append(f'context "{name}" is in use, set -f flag to force remove')
            continue
        if not contexts.exists(name):
            if not args.force:
                errors.append(f'context "{name}" does not exist')
            continue
        if name == contexts.current_context_setting():
            contexts.set_current(contexts.DEFAULT)
        contexts.remove(name)
        print(name)
    if errors:
        raise ShoalError("\n".join(errors))
    return 0


def _endpoint_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--description", help="Description of the context")
    p.add_argument("--host", help="The node's API: unix:///PATH or tcp://HOST:PORT")
    p.add_argument("--docker", help='Docker\'s form: "host=tcp://HOST:PORT,ca=FILE,cert=FILE,key=FILE"')
    p.add_argument("--tls-ca", help="The cluster's CA certificate (default for tcp://: this node's own, "
                   "followed as it renews)")
    p.add_argument("--tls-cert", help="The client certificate (default for tcp://: this node's own, "
                   "followed as it renews)")
    p.add_argument("--tls-key", help="The client certificate's key")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("context", help="Manage contexts")
    csub = p.add_subparsers(dest="context_command", metavar="COMMAND")
    p.set_defaults(func=lambda _a: (p.print_help(), 0)[1])

    c = csub.add_parser("create", help="Create a context")
    c.add_argument("name", metavar="CONTEXT")
    _endpoint_flags(c)
    c.add_argument("--from", dest="from_context", help="create context from a named context")
    c.set_defaults(func=_create)

    c = csub.add_parser("update", help="Update a context")
    c.add_argument("name", metavar="CONTEXT")
    _endpoint_flags(c)
    c.set_defaults(func=_update)

    for alias in ("ls", "list"):
        c = csub.add_parser(alias, help="List contexts")
        c.add_argument("--format", metavar="string", help=FORMAT_HELP)
        c.add_argument("-q", "--quiet", action="store_true", help="Only show context names")
        c.set_defaults(func=_ls)

    c = csub.add_parser("use", help="Set the current shoal context")
    c.add_argument("name", metavar="CONTEXT")
    c.set_defaults(func=_use)

    c = csub.add_parser("show", help="Print the name of the current context")
    c.set_defaults(func=_show)

    c = csub.add_parser("inspect", help="Display detailed information on one or more contexts")
    c.add_argument("names", nargs="*", metavar="CONTEXT")
    c.add_argument("-f", "--format", metavar="string", help=INSPECT_FORMAT_HELP)
    c.set_defaults(func=_inspect)

    for alias in ("rm", "remove"):
        c = csub.add_parser(alias, help="Remove one or more contexts")
        c.add_argument("names", nargs="+", metavar="CONTEXT")
        c.add_argument("-f", "--force", action="store_true", help="Force the removal of a context in use")
        c.set_defaults(func=_rm)
