"""`shoal build` (also `shoal image build`): Docker's classic builder, without a daemon."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from shoal.errors import InvalidArgument, ShoalError


def register(sub: argparse._SubParsersAction) -> None:
    _add_build(sub)
    from shoal.cli.image import image_group

    _add_build(image_group(sub))


def _add_build(sub: argparse._SubParsersAction) -> None:
    if "build" in sub.choices:
        return
    p = sub.add_parser("build", help="Build an image from a Dockerfile",
                       description="Build an image from a Dockerfile")
    p.add_argument("-t", "--tag", action="append", default=[], metavar="NAME[:TAG]",
                   help="Name and optionally a tag in the 'name:tag' format")
    p.add_argument("-f", "--file", help="Name of the Dockerfile (Default is 'PATH/Dockerfile')")
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="Set build-time variables")
    p.add_argument("--target", default="", help="Set the target build stage to build.")
    p.add_argument("--no-cache", action="store_true", help="Do not use cache when building the image")
    p.add_argument("--pull", action="store_true", help="Always attempt to pull a newer version of the image")
    p.add_argument("--network", default="default",
                   help="Set the networking mode for the RUN instructions during build (default, host, none)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="Suppress the build output and print image ID on success")
    p.add_argument("context", metavar="PATH")
    p.set_defaults(func=cmd_build)


def _build_args(values: list[str]) -> dict[str, str | None]:
    """--build-arg K=V; a bare K takes its value from the environment, or stays unset."""
    out: dict[str, str | None] = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not key:
            raise InvalidArgument(f'invalid argument "{item}" for "--build-arg" flag: variable name is empty')
        if eq:
            out[key] = value
        else:
            out[key] = os.environ.get(key)
    return out


def cmd_build(args: argparse.Namespace) -> int:
    from shoal.build.builder import BuildFailed, Builder, BuildOptions
    from shoal.image.store import ImageStore

    if args.context == "-":
        raise InvalidArgument("building from a tar stream on STDIN is not supported: give a directory")
    if getattr(args, "node", None) is not None:
        return _build_on_node(args)
    opts = BuildOptions(
        context_dir=Path(args.context),
        dockerfile=Path(args.file) if args.file else None,
        tags=list(args.tag),
        build_args=_build_args(args.build_arg),
        target=args.target,
        no_cache=args.no_cache,
        pull=args.pull,
        quiet=args.quiet,
        network=args.network,
    )
    store = ImageStore()
    if args.quiet:
        # RUN output goes to a real file (the runtime may hand its descriptor to the container);
        # shown on stderr only when the build fails, as docker build -q does.
        with tempfile.TemporaryFile() as buffer:
            try:
                result = Builder(store, buffer).build(opts)  # type: ignore[arg-type]
            except ShoalError as exc:
                buffer.seek(0)
                sys.stderr.buffer.write(buffer.read())
                sys.stderr.flush()
                if isinstance(exc, BuildFailed):
                    print(str(exc), file=sys.stderr)
                    return 1
                raise
        print(result.image_id)
        return 0
    sys.stdout.flush()
    try:
        Builder(store, sys.stdout.buffer).build(opts)
    except BuildFailed as exc:
        sys.stdout.flush()
        print(str(exc), file=sys.stderr)
        return 1
    return 0


cmd_build.on_node = True  # type: ignore[attr-defined] # cli/main.py: a tcp:// context reaches it


def _build_on_node(args: argparse.Namespace) -> int:
    """The build on the node the context names: the context sent as a tar, the node's output
    printed as it comes, exactly as a local build prints it (with -q: kept, and shown only if
    the build fails)."""
    import io

    from shoal.cli import remote

    quiet_buffer = io.BytesIO()
    out = quiet_buffer if args.quiet else sys.stdout.buffer
    sys.stdout.flush()
    try:
        image_id = remote.build(remote.client(args), context_dir=Path(args.context),
                                dockerfile=Path(args.file) if args.file else None, tags=list(args.tag),
                                build_args=_build_args(args.build_arg), target=args.target,
                                no_cache=args.no_cache, pull=args.pull, network=args.network,
                                quiet=args.quiet, out=out)  # type: ignore[arg-type]
    except remote.BuildError as exc:
        sys.stdout.flush()
        if args.quiet:
            sys.stderr.buffer.write(quiet_buffer.getvalue())
            sys.stderr.flush()
        print(str(exc), file=sys.stderr)
        return 1
    except ShoalError:
        if args.quiet:
            sys.stderr.buffer.write(quiet_buffer.getvalue())
            sys.stderr.flush()
        raise
    if args.quiet:
        print(image_id)
    return 0
