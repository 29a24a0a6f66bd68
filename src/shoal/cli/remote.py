"""Commands that act on the node a tcp:// context names, through its shoald's node API
(api/nodeapi.py), as `docker` does with DOCKER_HOST: `build` sends the context (a tar, with
.dockerignore applied here as docker/cli does) and prints the node's output as it comes,
`save`/`load`/`import` stream the archive, `images`, `history`, `container inspect`, `rmi`, `tag`,
`ps` and `logs` fetch the node's data and print it with the same tables as the local commands, and
`run`, `create`, `start`, `stop`, `kill`, `rm`, `wait`, `exec` and `attach` drive the node's
containers (with -i/-t through a WebSocket session: cli/interactive.py, api/attachapi.py).

A handler that can do this is marked `func.on_node = True`; cli/main.py then lets a tcp://
context through and sets args.node. Only imported for a remote context: a local `shoal images`
or `shoal ps` never loads it (nor any HTTP code)."""

from __future__ import annotations

import argparse
import base64
import json
import os
import stat
import sys
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from shoal.api.client import Client, quote_ref
from shoal.errors import InvalidArgument, NotFound, ShoalError


def client(args: argparse.Namespace) -> Client:
    return Client(endpoint=args.node, timeout=60.0)


# ---- images ----------------------------------------------------------------------------------


def image_records(args: argparse.Namespace, filters: dict[str, list[str]], digests: bool) -> list[dict[str, Any]]:
    params = {"all": "1" if args.all else None, "digests": "1" if digests else None,
              "filters": json.dumps(filters) if filters else None}
    records: list[dict[str, Any]] = client(args).request("GET", "/images", params)
    return records


def history(args: argparse.Namespace, ref: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = client(args).get(f"/images/{quote_ref(ref)}/history")
    return rows


def image_inspect(args: argparse.Namespace, ref: str) -> dict[str, Any]:
    found: dict[str, Any] = client(args).get(f"/images/{quote_ref(ref)}")
    return found


def rmi(args: argparse.Namespace, ref: str) -> list[str]:
    lines: list[str] = client(args).delete(f"/images/{quote_ref(ref)}",
                                           force="1" if args.force else None)["lines"]
    return lines


def tag(args: argparse.Namespace, source: str, target: str) -> None:
    client(args).request("POST", f"/images/{quote_ref(source)}/tag", {"repo": target})


def save(args: argparse.Namespace, out: BinaryIO) -> None:
    """The node's archive copied to `out` as it arrives; a cut stream is an error, not a
    silently short archive."""
    response = client(args).stream("GET", "/images/get", {"names": list(args.images)})
    try:
        for chunk in response.chunks():
            out.write(chunk)
    except ShoalError as exc:
        raise ShoalError(f"failed to save image: the archive from {args.node.host} was cut: {exc}") from None
    finally:
        response.close()


def import_image(args: argparse.Namespace) -> str:
    """`import FILE|- [REF]` on the node: the tarball streamed to it (checked here first, as far
    as this machine can: the reference and every --change)."""
    from shoal.image import reference
    from shoal.image.importer import apply_change

    if args.reference:
        reference.parse(args.reference)
    for change in args.change:
        apply_change({}, change)
    if args.file == "-":
        src: BinaryIO = sys.stdin.buffer
    else:
        try:
            src = open(args.file, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise ShoalError(f"open {args.file}: no such file or directory") from None
    try:
        response = client(args).stream("POST", "/images/import", {
            "repo": args.reference, "changes": list(args.change), "message": args.message or None,
            "platform": args.platform}, upload=_copy_from(src))
        try:
            image_id: str = json.loads(response.read())["id"]
        finally:
            response.close()
    finally:
        if src is not sys.stdin.buffer:
            src.close()
    return image_id


def _copy_from(src: BinaryIO) -> Callable[[Any], None]:
    def upload(writer: Any) -> None:
        while chunk := src.read(1 << 20):
            writer.write(chunk)

    return upload


def load(args: argparse.Namespace, src: BinaryIO, source: str) -> list[dict[str, Any]]:
    response = client(args).stream("POST", "/images/load", {"source": source}, upload=_copy_from(src))
    try:
        loaded: list[dict[str, Any]] = json.loads(response.read())
    finally:
        response.close()
    return loaded


# ---- build -----------------------------------------------------------------------------------


def _context_upload(context_dir: Path, dockerfile: Path | None) -> tuple[Callable[[Any], None], str]:
    """The build context as docker/cli sends it: the directory minus what .dockerignore
    excludes (the Dockerfile and .dockerignore always in), and a Dockerfile from outside the
    context added under a random name. Returns the body writer and the Dockerfile's name in it."""
    from shoal.build.context import BuildContext

    if not context_dir.is_dir():
        raise ShoalError(f'unable to prepare context: path "{context_dir}" not found')
    df_path = dockerfile if dockerfile is not None else context_dir / "Dockerfile"
    if not df_path.is_file():
        raise ShoalError("unable to prepare context: unable to evaluate symlinks in Dockerfile path: "
                         f"lstat {df_path.absolute()}: no such file or directory")
    rel = os.path.relpath(df_path.resolve(), context_dir.resolve())
    inside = not rel.startswith("..")
    context = BuildContext.load(context_dir, rel if inside else None)
    name = rel if inside else f".dockerfile.{uuid.uuid4().hex[:20]}"
    root = context.root

    def upload(writer: Any) -> None:
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for entry in sorted(context.entries):
                full = root / entry
                info = tar.gettarinfo(str(full), arcname=entry)
                info.uname = info.gname = ""
                if stat.S_ISREG(context.entries[entry].st_mode):
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
            if inside and rel not in context.entries:
                tar.add(str(df_path), arcname=rel, recursive=False)
            if not inside:
                # Under a random name, as docker/cli's AddDockerfileToBuildContext; the node takes
                # it out of the context before building (dockerfile_outside), as a local build
                # never has it in the context.
                real = df_path.resolve()  # its content, as docker/cli reads it (a symlink followed)
                info = tar.gettarinfo(str(real), arcname=name)
                info.uname = info.gname = ""
                with open(real, "rb") as f:
                    tar.addfile(info, f)

    return upload, name if inside else f"outside:{name}"


def build(node_client: Client, *, context_dir: Path, dockerfile: Path | None, tags: list[str],
          build_args: dict[str, str | None], target: str = "", no_cache: bool = False, pull: bool = False,
          network: str = "default", quiet: bool = False, out: BinaryIO) -> str:
    """POST /build on the node; its output written to `out` as it comes. Returns the image ID;
    a failed step raises BuildError (printed bare, exit 1), anything else a ShoalError."""
    upload, name = _context_upload(context_dir, dockerfile)
    outside = name.startswith("outside:")
    params = {"t": tags, "dockerfile": name.removeprefix("outside:"), "dockerfile_outside": "1" if outside else None, "buildargs": json.dumps(build_args) if build_args else None,
              "target": target or None, "nocache": "1" if no_cache else None, "pull": "1" if pull else None,
              "network": network, "q": "1" if quiet else None}
    response = node_client.stream("POST", "/build", params, upload=upload)
    image_id = ""
    try:
        for raw in response.lines():
            if not raw.strip():
                continue
            message = json.loads(raw)
            if "stream" in message:
                out.write(message["stream"].encode())
                out.flush()
            elif "aux" in message:
                image_id = message["aux"]["ID"]
            elif "error" in message:
                if message.get("setup"):
                    raise ShoalError(message["error"])
                raise BuildError(message["error"])
    finally:
        response.close()
    if not image_id:
        raise ShoalError(f"the build on {node_client.where} ended without a result (the connection was cut)")
    return image_id


class BuildError(ShoalError):
    """A build step failed on the node: printed bare, as a local build prints it."""


def image_exists(node_client: Client, ref: str) -> bool:
    try:
        node_client.get(f"/images/{quote_ref(ref)}")
    except NotFound:
        return False
    return True


# ---- containers ------------------------------------------------------------------------------


def containers(args: argparse.Namespace) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client(args).get("/containers", all="1" if args.all else None)
    return found


def container_inspect(args: argparse.Namespace, ref: str) -> dict[str, Any]:
    found: dict[str, Any] = client(args).get(f"/containers/{quote_ref(ref)}/json")
    return found


def logs(args: argparse.Namespace) -> int:
    tail = args.tail
    if tail not in (None, "all"):
        try:
            int(tail)
        except ValueError:
            raise InvalidArgument(f'invalid value for "tail": "{tail}"') from None
    response = client(args).stream("GET", f"/containers/{quote_ref(args.container)}/logs",
                                   {"tail": tail or "all", "follow": "1" if args.follow else None})
    out, err = sys.stdout.buffer, sys.stderr.buffer
    try:
        for raw in response.lines():
            if not raw.strip():
                continue
            line = json.loads(raw)
            stream = out if line["stream"] == "stdout" else err
            if args.timestamps:
                stream.write(line["time"].encode() + b" ")
            if args.details:
                stream.write(b" ")  # no log options: no attributes (cli/container.py DETAILS)
            stream.write(base64.b64decode(line["data"]))
            stream.flush()
    finally:
        response.close()
    return 0


def ps_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """`ps` rows of the node's containers, the fields cli/container.py ps_row gives locally."""
    import time

    from shoal.cli.format import container_image, human_duration

    trunc = not args.no_trunc
    now = time.time()
    rows = []
    for c in containers(args):
        command = c["Command"]
        rows.append({
            "ID": c["Id"][:12] if trunc else c["Id"],
            "Image": container_image(c["Image"], c.get("ImageID", ""), trunc),
            "Command": json.dumps(_ellipsis(command, 20) if trunc else command, ensure_ascii=False),
            "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(c["Created"])),
            "RunningFor": human_duration(max(0.0, now - c["Created"])) + " ago",
            "Status": c["Status"], "State": c["State"], "Ports": c["Ports"], "Names": c["Names"],
            "Labels": ",".join(f"{k}={v}" for k, v in sorted(c["Labels"].items())),
            "Mounts": ",".join(c["Mounts"]),
            "Networks": c["Network"] if c["Network"] != "default" else "bridge",
            "Size": "0B", "Created": c["CreatedRFC3339"],
        })
    return rows


def _ellipsis(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def inspect(args: argparse.Namespace) -> int:
    """`container inspect` on the node (plain `inspect`, of any kind: cli/inspectobj.py)."""
    from shoal.cli.format import render_template

    docs = []
    failed = False
    for ref in args.containers:
        try:
            docs.append(container_inspect(args, ref))
        except NotFound:
            print(f"Error response from daemon: No such container: {ref}", file=sys.stderr)
            failed = True
    if args.format:
        for d in docs:
            print(render_template(args.format, d))
    else:
        print(json.dumps(docs, indent=4))
    return 1 if failed else 0


# ---- run, create, start, stop, kill, rm, wait --------------------------------------------------


def create(args: argparse.Namespace, spec: Any) -> str:
    """The container made on the node from the spec this CLI built from its flags."""
    created: dict[str, Any] = client(args).request("POST", "/containers/create", None, {"spec": spec.to_dict()})
    return str(created["Id"])


def run(args: argparse.Namespace, spec: Any) -> int:
    """`run` on the node: detached, the ID; else the output as it comes, signals forwarded to
    the container (docker's --sig-proxy), and its exit code as this command's."""
    import signal

    keys = b""
    if not args.detach and (args.interactive or args.tty):
        from shoal.cli import interactive

        keys = interactive.check(args)  # the terminal checked before the container is made
    container_id = create(args, spec)
    if args.detach:
        client(args).request("POST", f"/containers/{container_id}/start", None)
        print(container_id)
        return 0
    if args.interactive or args.tty:
        from shoal.cli import interactive

        return interactive.run_remote(args, container_id, keys)

    def forward(signum: int, _frame: Any) -> None:
        try:
            client(args).request("POST", f"/containers/{container_id}/kill", {"signal": str(signum)})
        except ShoalError:
            pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
           } if args.sig_proxy else {}
    try:
        code = _relay_output(client(args).stream("POST", f"/containers/{container_id}/start", {"attach": "1"}))
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if code is None:
        raise ShoalError(f"the connection to {args.node.host} was cut before container {container_id[:12]} exited")
    return code


def _relay_output(response: Any) -> int | None:
    """A container's or exec's output, streamed by the node as ndjson, written to this process's
    stdout and stderr as it comes; the exit code, or None when the stream was cut first."""
    out, err = sys.stdout.buffer, sys.stderr.buffer
    code: int | None = None
    try:
        for raw in response.lines():
            if not raw.strip():
                continue
            message = json.loads(raw)
            if "data" in message:
                stream = out if message["stream"] == "stdout" else err
                stream.write(base64.b64decode(message["data"]))
                stream.flush()
            elif "exit" in message:
                code = int(message["exit"])
            elif "error" in message:
                raise ShoalError(message["error"])
    finally:
        response.close()
    return code


def each(args: argparse.Namespace, action: str) -> int:
    """stop / kill / rm / start / wait of each container on the node, printed as the local
    commands print them (the name as given; wait: the exit code)."""
    failed = False
    for ref in args.containers:
        path = f"/containers/{quote_ref(ref)}"
        try:
            if action == "rm":
                client(args).request("DELETE", path, {"force": "1" if args.force else None,
                                                      "v": "1" if args.volumes else None})
            elif action == "stop":
                client(args).request("POST", f"{path}/stop", {"t": args.time})
            elif action == "kill":
                client(args).request("POST", f"{path}/kill", {"signal": args.signal})
            elif action == "start":
                client(args).request("POST", f"{path}/start", None)
            elif action == "wait":
                print(client(args).request("POST", f"{path}/wait", None)["StatusCode"], flush=True)
                continue
            print(ref)
        except ShoalError as exc:
            print(f"Error response from daemon: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


def command(args: argparse.Namespace, verb: str) -> int:
    """The entry from cli/container.py's handlers for a tcp:// context."""
    if verb == "exec":
        return exec_(args)
    if verb in ("run", "create"):
        from shoal.cli.container import spec_from_args

        spec = spec_from_args(args)  # flags checked (and --env-file read) here, before the node
        if verb == "run":
            return run(args, spec)
        print(create(args, spec))
        return 0
    status = each(args, verb)
    if verb == "start" and status:
        print("Error: failed to start containers: " + ", ".join(args.containers), file=sys.stderr)
    return status


def exec_(args: argparse.Namespace) -> int:
    """`exec` on the node: the output as it comes and the process's exit code; with -i or -t a
    WebSocket session (cli/interactive.py) carries stdin and the terminal too."""
    if not args.command:
        raise InvalidArgument('"exec" requires at least 2 arguments.')
    from shoal.cli.container import parse_env

    body = {"cmd": list(args.command), "env": parse_env(args.env), "user": args.user or "",
            "workdir": args.workdir or "", "detach": bool(args.detach)}
    path = f"/containers/{quote_ref(args.container)}/exec"
    if (args.interactive or args.tty) and not args.detach:
        from shoal.cli import interactive

        return interactive.exec_remote(args, body)
    if args.detach:
        client(args).request("POST", path, None, body)
        return 0
    code = _relay_output(client(args).stream("POST", path, json_body=body))
    if code is None:
        raise ShoalError(f"the connection to {args.node.host} was cut before the exec ended")
    return code
