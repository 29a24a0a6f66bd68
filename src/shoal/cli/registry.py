"""`shoal pull`, `shoal push`, `shoal login`, `shoal logout` (and `shoal image pull|push`),
with docker/cli's flags, prompts and messages (cli/command/image/pull.go, push.go,
cli/command/registry/login.go, logout.go)."""

from __future__ import annotations

import argparse
import getpass
import sys

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


def cmd_pull(args: argparse.Namespace) -> int:
    from shoal.image.registry import pull

    store = ImageStore()
    if args.all_tags:
        ref = refs.parse_normalized(args.name)
        if ref.tag or ref.digest:
            raise InvalidArgument("tag can't be used with --all-tags/-a")
        from shoal.image.registry import client_for

        with client_for(refs.parse(args.name), ("pull",)) as client:
            tags = client.list_tags()
        for tag in sorted(tags):
            pull(store, ref.with_tag(tag).familiar(), sys.stdout, platform=args.platform, quiet=args.quiet)
        print(ref.name())
        return 0
    ref = refs.parse(args.name)
    pull(store, args.name, sys.stdout, platform=args.platform, quiet=args.quiet)
    # docker/cli prints the fully qualified reference last (and alone with -q).
    print(str(ref))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from shoal.image.registry import push

    store = ImageStore()
    if args.all_tags:
        name = refs.parse_normalized(args.name)
        if name.tag or name.digest:
            raise InvalidArgument("tag can't be used with --all-tags/-a")
        tags = sorted({t for image in store.list() for t in image.repo_tags
                       if refs.parse(t).name() == name.name()})
        if not tags:
            raise ShoalError(f"An image does not exist locally with the tag: {name.familiar_name()}")
        for n, tag in enumerate(tags):
            push(store, tag, sys.stdout, quiet=args.quiet, announce=n == 0)
        if args.quiet:
            print(name.name())
        return 0
    push(store, args.name, sys.stdout, quiet=args.quiet)
    if args.quiet:
        print(str(refs.parse(args.name)))
    return 0


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

