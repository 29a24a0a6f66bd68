"""`shoal save`, `shoal load` (also as `shoal image save|load`) and `shoal image bootstrap`."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from collections.abc import Callable
from typing import BinaryIO

from shoal.cli.image import image_group
from shoal.errors import ShoalError


def register(sub: argparse._SubParsersAction) -> None:
    _add_save(sub)
    _add_load(sub)
    image_sub = image_group(sub)
    _add_save(image_sub)
    _add_load(image_sub)
    _add_bootstrap(image_sub)


def _add_save(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("save", help="Save one or more images to a tar archive (streamed to STDOUT by default)",
                       description="Save one or more images to a tar archive (streamed to STDOUT by default). "
                       "The archive is both a `docker save` archive and an OCI image layout.")
    p.add_argument("-o", "--output", help="Write to a file, instead of STDOUT")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_save)


def _add_load(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("load", help="Load an image from a tar archive or STDIN",
                       description="Load an image from a tar archive or STDIN (`docker save` format or "
                       "an OCI image layout, optionally gzip/bzip2/xz compressed)")
    p.add_argument("-i", "--input", help="Read from tar archive file, instead of STDIN")
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress the load output")
    p.set_defaults(func=cmd_load)


def _add_bootstrap(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bootstrap", help="Make a base image from the Debian archive with debootstrap (offline, cached)",
                       description="Make a base image from the Debian archive with debootstrap --variant=minbase, "
                       "with the CA certificates the host trusts. The root filesystem is cached, so later runs "
                       "only import it. Default tags: localhost/shoal-debian:SUITE, with --python "
                       "localhost/shoal-python:X.Y.")
    p.add_argument("--suite", default="bookworm", help="Debian suite (default bookworm)")
    p.add_argument("--python", action="store_true",
                   help="Add python3, pip, venv, ca-certificates and python-is-python3 (pip installs allowed)")
    p.add_argument("--include", default="", metavar="PKG,...", help="Extra Debian packages, comma separated")
    p.add_argument("-t", "--tag", action="append", default=[], metavar="REF",
                   help="Name and optionally a tag (repeatable); must not be a Docker Hub name")
    p.add_argument("--mirror", help="Debian mirror URL (default: the host's apt source)")
    p.add_argument("--rebuild", action="store_true", help="Ignore the cached root filesystem and rebuild it")
    p.set_defaults(func=cmd_bootstrap)


def _store():  # type: ignore[no-untyped-def]
    from shoal.image.store import ImageStore

    return ImageStore()


def _saver(args: argparse.Namespace) -> Callable[[BinaryIO], None]:
    """Writes the archive to a stream: from this machine's store, or streamed from the node
    the context names (args.node, cli/remote.py)."""
    if getattr(args, "node", None) is not None:
        from shoal.cli import remote

        return lambda out: remote.save(args, out)
    from shoal.image import archive

    store = _store()
    return lambda out: archive.save(store, args.images, out)


def cmd_save(args: argparse.Namespace) -> int:
    save = _saver(args)
    if not args.output:
        if sys.stdout.isatty():
            raise ShoalError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
        sys.stdout.flush()
        save(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return 0
    target = Path(args.output)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise ShoalError(f"failed to save image: invalid output path: directory {str(directory)!r} does not exist")
    # written next to the target and renamed at the end: a failed save leaves no partial file
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            save(out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_name, 0o644 & ~_umask())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return 0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cmd_load(args: argparse.Namespace) -> int:
    src: BinaryIO
    if args.input:
        try:
            src = open(args.input, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise ShoalError(f"open {args.input}: no such file or directory") from None
        except IsADirectoryError:
            raise ShoalError(f"open {args.input}: is a directory") from None
        source = args.input
    else:
        if sys.stdin.isatty():
            raise ShoalError("requested load from stdin, but stdin is empty")
        src, source = sys.stdin.buffer, "from stdin"
    # docker shows layer progress only on a terminal; the result lines are always printed
    show_progress = not args.quiet and sys.stdout.isatty()
    try:
        if getattr(args, "node", None) is not None:
            from shoal.cli import remote

            loaded = [(i["id"], i["tags"], i["replaced"]) for i in remote.load(args, src, source)]
        else:
            from shoal.image import archive

            loaded = [(i.id, i.tags, i.replaced) for i in archive.load(
                _store(), src, source=source, progress=_print_layer if show_progress else None)]
    finally:
        if args.input:
            src.close()
    for image_id, tags, replaced in loaded:
        for tag, old in replaced:
            print(f"The image {tag} already exists, renaming the old one with ID {old} to empty string")
        if tags:
            for tag in tags:
                print(f"Loaded image: {tag}")
        else:
            print(f"Loaded image ID: {image_id}")
    return 0


cmd_save.on_node = True  # type: ignore[attr-defined] # cli/main.py: a tcp:// context reaches them
cmd_load.on_node = True  # type: ignore[attr-defined]


def _print_layer(diff_id: str, size: int) -> None:
    from shoal.cli.format import human_size

    print(f"{diff_id[7:19]}: Loading layer  {human_size(size)}", flush=True)


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from shoal.image import bootstrap

    include = tuple(p.strip() for p in args.include.split(",") if p.strip())
    recipe = bootstrap.Recipe(suite=args.suite, python=args.python, include=include, mirror=args.mirror)
    for tag in args.tag:
        bootstrap.check_local_tag(tag)   # before minutes of debootstrap, not after
    image = bootstrap.bootstrap(_store(), recipe, args.tag or None, rebuild=args.rebuild,
                                log=lambda line: print(line, flush=True))
    print(image.id)
    for tag in image.repo_tags:
        print(f"Successfully tagged {tag}")
    return 0
