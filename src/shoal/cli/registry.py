"""`shoal pull`, `shoal push`, `shoal login`, `shoal logout` (and `shoal image pull|push`),
with docker/cli's flags, prompts and messages (cli/command/image/pull.go, push.go,
cli/command/registry/login.go, logout.go)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any, TextIO

from shoal.errors import InvalidArgument, ShoalError
from shoal.image import reference as refs
from shoal.image.auth import (
    DOCKER_HUB_AUTH_KEY,
    DOCKER_HUB_DOMAIN,
    Credentials,
    erase_credentials,
    load_credentials,
    server_key,
    store_credentials,
)
from shoal.image.store import ImageStore

# shoal.image.registry (and httpx) are imported inside the commands: every other shoal command
# would otherwise pay for them at start-up.


def register(sub: argparse._SubParsersAction) -> None:
    _add_pull(sub)
    _add_push(sub)
    try:
        from shoal.cli.image import image_group
    except ImportError:  # the image commands are not there: only the top-level forms
        pass
    else:
        group = image_group(sub)
        _add_pull(group)
        _add_push(group)
    p = sub.add_parser("login", help="Log in to a registry",
                       description="Log in to a registry. If no server is specified, the default is defined by the daemon.")
    p.add_argument("server", nargs="?", metavar="SERVER")
    p.add_argument("-u", "--username", help="Username")
    p.add_argument("-p", "--password", help="Password or Personal Access Token (PAT)")
    p.add_argument("--password-stdin", action="store_true", help="Take the Password or Personal Access Token (PAT) from stdin")
    p.set_defaults(func=cmd_login)
    p = sub.add_parser("logout", help="Log out from a registry",
                       description="Log out from a registry. If no server is specified, the default is defined by the daemon.")
    p.add_argument("server", nargs="?", metavar="SERVER")
    p.set_defaults(func=cmd_logout)


def _add_pull(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pull", help="Download an image from a registry",
                       description="Download an image from a registry")
    p.add_argument("name", metavar="NAME[:TAG|@DIGEST]")
    p.add_argument("-a", "--all-tags", action="store_true", help="Download all tagged images in the repository")
    p.add_argument("--platform", help="Set platform if server is multi-platform capable")
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress verbose output")
    p.add_argument("--disable-content-trust", action="store_true", default=True, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_pull)


def _add_push(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="Upload an image to a registry", description="Upload an image to a registry")
    p.add_argument("name", metavar="NAME[:TAG]")
    p.add_argument("-a", "--all-tags", action="store_true", help="Push all tags of an image to the repository")
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress verbose output")
    p.add_argument("--disable-content-trust", action="store_true", default=True, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_push)


# The credentials `login` stored for the registry (shoal.image.registry.STORED, which this
# module does not import at start-up).
_STORED = "stored"


def pull_images(store: ImageStore, name: str, out: TextIO, *, all_tags: bool = False, platform: str | None = None,
                quiet: bool = False, aiohttp: bool = False, credentials: Any = _STORED) -> None:
    """`pull` into this node's store, its output (the last line too) written to `out`: by this
    process for a local context, by the node's shoald for a remote CLI (POST /images/pull:
    api/nodeops.py, given the CLI's credentials, None for none)."""
    from shoal.image.registry import STORED, pull

    creds = STORED if credentials is _STORED else credentials
    if all_tags:
        ref = refs.parse_normalized(name)
        if ref.tag or ref.digest:
            raise InvalidArgument("tag can't be used with --all-tags/-a")
        from shoal.image.registry import client_for

        with client_for(refs.parse(name), ("pull",), aiohttp=aiohttp, credentials=creds) as client:
            tags = client.list_tags()
        for tag in sorted(tags):
            pull(store, ref.with_tag(tag).familiar(), out, platform=platform, quiet=quiet, aiohttp=aiohttp,
                 credentials=creds)
        out.write(ref.name() + "\n")
        return
    ref = refs.parse(name)
    pull(store, name, out, platform=platform, quiet=quiet, aiohttp=aiohttp, credentials=creds)
    # docker/cli prints the fully qualified reference last (and alone with -q).
    out.write(str(ref) + "\n")


def push_images(store: ImageStore, name: str, out: TextIO, *, all_tags: bool = False, quiet: bool = False,
                aiohttp: bool = False, credentials: Any = _STORED) -> None:
    """`push` from this node's store, its output written to `out` (as pull_images)."""
    from shoal.image.registry import STORED, push

    creds = STORED if credentials is _STORED else credentials
    if all_tags:
        parsed = refs.parse_normalized(name)
        if parsed.tag or parsed.digest:
            raise InvalidArgument("tag can't be used with --all-tags/-a")
        tags = sorted({t for image in store.list() for t in image.repo_tags
                       if refs.parse(t).name() == parsed.name()})
        if not tags:
            raise ShoalError(f"An image does not exist locally with the tag: {parsed.familiar_name()}")
        for n, tag in enumerate(tags):
            push(store, tag, out, quiet=quiet, announce=n == 0, aiohttp=aiohttp, credentials=creds)
        if quiet:
            out.write(parsed.name() + "\n")
        return
    push(store, name, out, quiet=quiet, aiohttp=aiohttp, credentials=creds)
    if quiet:
        out.write(str(refs.parse(name)) + "\n")


def cmd_pull(args: argparse.Namespace) -> int:
    if getattr(args, "node", None) is not None:
        return _on_node(args, "pull", {"platform": args.platform})
    pull_images(ImageStore(), args.name, sys.stdout, all_tags=args.all_tags, platform=args.platform, quiet=args.quiet)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    if getattr(args, "node", None) is not None:
        return _on_node(args, "push", {})
    push_images(ImageStore(), args.name, sys.stdout, all_tags=args.all_tags, quiet=args.quiet)
    return 0


def _on_node(args: argparse.Namespace, verb: str, extra: dict[str, Any]) -> int:
    """`pull`/`push` by the node a tcp:// context names, with this machine's stored credentials
    for the image's registry (docker/cli's X-Registry-Auth); the node's output printed as it
    comes, and its error as the local command would print it."""
    import json

    from shoal.cli import remote
    from shoal.image import registryauth

    body = {"name": args.name, "all_tags": bool(args.all_tags), "quiet": bool(args.quiet),
            "registry_auth": registryauth.for_image(args.name), **extra}
    response = remote.client(args).stream("POST", f"/images/{verb}", json_body=body)
    try:
        for raw in response.lines():
            if not raw.strip():
                continue
            message = json.loads(raw)
            if "stream" in message:
                sys.stdout.write(message["stream"])
                sys.stdout.flush()
            elif "error" in message:
                error = ShoalError(message["error"])
                error.from_daemon = bool(message.get("from_daemon"))  # type: ignore[attr-defined]
                error.exit_code = int(message.get("exit_code") or 1)
                raise error
            elif message.get("done"):
                return 0
    finally:
        response.close()
    raise ShoalError(f"the {verb} on {args.node.host} ended without a result (the connection was cut)")


cmd_pull.on_node = cmd_push.on_node = True  # type: ignore[attr-defined] # cli/main.py: a tcp:// context


def _server_domain(server: str | None) -> str:
    """The registry host a SERVER argument names (Docker Hub when there is none)."""
    if not server or server_key(server) == DOCKER_HUB_AUTH_KEY:
        return DOCKER_HUB_DOMAIN
    return server_key(server)


def _display_server(domain: str) -> str:
    return DOCKER_HUB_AUTH_KEY if domain == DOCKER_HUB_DOMAIN else domain


def cmd_login(args: argparse.Namespace) -> int:
    domain = _server_domain(args.server)
    username, password = args.username, args.password
    if args.password_stdin:
        if args.password:
            raise InvalidArgument("--password and --password-stdin are mutually exclusive")
        if not username:
            raise InvalidArgument("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    elif password:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
    stored = load_credentials(domain)
    from shoal.image.registry_client import RegistryClient

    if stored and not username and not password:
        # docker/cli: try what is stored before asking for anything.
        print("Authenticating with existing credentials...")
        try:
            with RegistryClient(domain, "", credentials=stored) as client:
                client.login()
        except ShoalError as exc:
            print(f"Login did not succeed, error: {exc}", file=sys.stderr)
        else:
            print("Login Succeeded")
            return 0
    if not username:
        default = stored.username if stored else ""
        prompt = f"Username ({default}): " if default else "Username: "
        username = _prompt(prompt).strip() or default
        if not username:
            raise ShoalError("Non-null Username Required")
    if not password:
        password = getpass.getpass("Password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise ShoalError("Password Required")
    creds = Credentials(username, password)
    with RegistryClient(domain, "", credentials=creds) as client:
        client.login()
    path = store_credentials(domain, creds)
    print(f"WARNING! Your password will be stored unencrypted in {path}.", file=sys.stderr)
    print("Configure a credential helper to remove this warning.\n", file=sys.stderr)
    print("Login Succeeded")
    return 0


def _prompt(text: str) -> str:
    sys.stdout.write(text)
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line and not sys.stdin.isatty():
        raise ShoalError("Cannot perform an interactive login from a non TTY device")
    return line


def cmd_logout(args: argparse.Namespace) -> int:
    domain = _server_domain(args.server)
    shown = _display_server(domain)
    if not erase_credentials(domain):
        print(f"Not logged in to {shown}")
        return 0
    print(f"Removing login credentials for {shown}")
    return 0

