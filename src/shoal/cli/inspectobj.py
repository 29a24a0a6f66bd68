"""`shoal inspect [--type TYPE] NAME|ID...` as docker/cli's system inspect (cli/command/system/
inspect.go): each reference tried as a container, an image, a network, a volume, then, when a
manager answers, a service, a task, a node, a secret and a config, in that order; the first that
knows it is printed. `--type` asks only that kind. Through a tcp:// context the node's own
objects come from its node API, the swarm's from the manager the context names. The swarm objects are printed as moby's API
types (cli/dockerjson.py), so `{{.Status.State}}` or `{{.NodeID}}` work on a task."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from shoal.errors import InvalidArgument, NotFound, ShoalError

TYPES = ("config", "container", "image", "network", "node", "plugin", "secret", "service", "task", "volume")
_ONE_OF = '"' + '", "'.join(TYPES) + '"'


def check_type(value: str | None) -> None:
    """The --type given, as newInspectCommand and runInspect refuse it."""
    if value is None:
        return
    if value == "":
        raise ShoalError(f"type is empty: must be one of {_ONE_OF}")
    if value not in TYPES:
        raise ShoalError(f'unknown type: "{value}": must be one of {_ONE_OF}')


def find_task(tasks: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    from shoal.manager.controlapi import resolve_task

    return resolve_task(tasks, ref)


class _Swarm:
    """The manager's objects, asked only once a reference was not found on this node, and only
    of a shoald that runs (docker asks Info whether the daemon is a manager; nothing is started
    to answer an inspect)."""

    def __init__(self) -> None:
        self._client: Any = None
        self._tried = False
        self._networks: dict[str, dict[str, Any]] | None = None
        self._tasks: list[dict[str, Any]] | None = None

    def client(self) -> Any:
        if not self._tried:
            self._tried = True
            from shoal.api.client import connect

            try:
                self._client = connect(autostart=False)
            except ShoalError:
                self._client = None
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def networks(self) -> dict[str, dict[str, Any]]:
        if self._networks is None:
            self._networks = {n["name"]: n for n in self.client().get("/networks")}
        return self._networks

    def ids(self, names: bool = False) -> dict[str, str]:
        """Names of networks (and, when asked, secrets and configs) to their IDs."""
        ids = {name: n["id"] for name, n in self.networks().items()}
        if names:
            for path in ("/secrets", "/configs"):
                for obj in self.client().get(path):
                    name = obj.get("name") or (obj.get("Spec") or {}).get("Name")
                    if name:
                        ids[name] = obj.get("ID") or obj.get("id") or ""
        return ids

    def service(self, ref: str) -> dict[str, Any]:
        from shoal.cli.dockerjson import service

        record = self.client().get(f"/services/{ref}")
        spec = record["spec"]
        return service(record, self.ids(bool(spec.get("secrets") or spec.get("configs"))))

    def task(self, ref: str) -> dict[str, Any]:
        from shoal.cli.dockerjson import task

        if self._tasks is None:
            self._tasks = list(self.client().get("/tasks"))
        record = find_task(self._tasks, ref)
        spec = record.get("spec") or {}
        return task(record, self.networks(), self.ids(bool(spec.get("secrets") or spec.get("configs"))))

    def node(self, ref: str) -> dict[str, Any]:
        from shoal.cli.dockerjson import node

        return node(self.client().get(f"/nodes/{ref}"))

    def secret(self, ref: str) -> dict[str, Any]:
        found: dict[str, Any] = self.client().get(f"/secrets/{ref}")
        return found

    def config(self, ref: str) -> dict[str, Any]:
        found: dict[str, Any] = self.client().get(f"/configs/{ref}")
        return found


def _local(mgr: Any, swarm: _Swarm) -> dict[str, Callable[[str], dict[str, Any]]]:
    def container(ref: str) -> dict[str, Any]:
        from shoal.network.endpointinfo import with_networks
        from shoal.runtime.inspect import inspect

        found = mgr.get(ref)
        doc: dict[str, Any] = with_networks(inspect(found), found)
        return doc

    def image(ref: str) -> dict[str, Any]:
        from shoal.cli.image import inspect_object

        doc: dict[str, Any] = inspect_object(mgr.images.resolve(ref))  # type: ignore[arg-type]
        return doc

    def network(ref: str) -> dict[str, Any]:
        """A swarm network as the manager has it (`network inspect`'s rule), else this node's."""
        from shoal.cli.network import inspect_dict, swarm_inspect_dict
        from shoal.network.store import NetworkStore

        if swarm.client() is not None:
            try:
                return swarm_inspect_dict(swarm.client().get(f"/networks/{ref}"))
            except NotFound:
                pass
        return inspect_dict(NetworkStore().get(ref))

    def volume(ref: str) -> dict[str, Any]:
        from shoal.runtime import volumes

        doc: dict[str, Any] = volumes.get(ref).to_api()
        return doc

    return {"container": container, "image": image, "network": network, "volume": volume}


def _on_node(node: Any, swarm: _Swarm) -> dict[str, Callable[[str], dict[str, Any]]]:
    """The same four kinds on the node a tcp:// context (or another shoald's socket) names,
    through its node API (api/nodeapi.py): that daemon's objects, as docker -H inspects them."""
    from shoal.api.client import Client, quote_ref

    client = Client(endpoint=node, timeout=60.0)

    def container(ref: str) -> dict[str, Any]:
        found: dict[str, Any] = client.get(f"/containers/{quote_ref(ref)}/json")
        return found

    def image(ref: str) -> dict[str, Any]:
        found: dict[str, Any] = client.get(f"/images/{quote_ref(ref)}")
        return found

    def network(ref: str) -> dict[str, Any]:
        from shoal.cli.network import _Listed, inspect_dict, swarm_inspect_dict
        from shoal.network.store import Network

        if swarm.client() is not None:
            try:
                return swarm_inspect_dict(swarm.client().get(f"/networks/{ref}"))
            except NotFound:
                pass
        nets = [Network.from_dict(raw) for raw in client.get("/node/networks")]
        return inspect_dict(_Listed(nets).get(ref))

    def volume(ref: str) -> dict[str, Any]:
        found: dict[str, Any] = client.get(f"/node/volumes/{quote_ref(ref)}")
        return found

    return {"container": container, "image": image, "network": network, "volume": volume}


def inspect_objects(mgr: Any, refs: list[str], object_type: str | None,
                    node: Any = None) -> tuple[list[dict[str, Any]], list[str]]:
    """(documents found, error lines) for the references, as inspectAll finds them; with `node`
    (an endpoint) the containers, images, networks and volumes are that node's."""
    check_type(object_type)
    swarm = _Swarm()
    local = _local(mgr, swarm) if node is None else _on_node(node, swarm)
    order: list[tuple[str, bool]] = [("container", False), ("image", False), ("network", False),
                                     ("volume", False), ("service", True), ("task", True), ("node", True),
                                     ("plugin", False), ("secret", True), ("config", True)]
    docs: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        for ref in refs:
            for kind, is_swarm in order:
                if object_type and kind != object_type:
                    continue
                if is_swarm and swarm.client() is None:
                    if object_type:  # asked for: the reason no manager answered
                        swarm._tried = False
                        from shoal.api.client import connect

                        connect(autostart=False)
                    continue
                getter = getattr(swarm, kind) if is_swarm else local.get(kind)
                if getter is None:  # plugins: shoal has none
                    continue
                try:
                    docs.append(getter(ref))
                    break
                except (NotFound, ImportError) as exc:
                    if object_type:
                        errors.append(_error(exc, kind, ref))
                        break
                except ShoalError as exc:  # isErrSkippable: these do not end the search either
                    if object_type or not any(s in str(exc) for s in ("not supported", "invalid reference format")):
                        errors.append(_error(exc, kind, ref))
                        break
            else:
                if not object_type:
                    errors.append(f"Error: No such object: {ref}")
                elif object_type == "plugin":
                    errors.append(f"Error response from daemon: plugin {ref} not found")
    finally:
        swarm.close()
    return docs, errors


def _error(exc: Exception, kind: str, ref: str) -> str:
    """What docker prints for a lookup of one kind that failed: the daemon's words."""
    if kind in ("container", "image", "network", "volume") and isinstance(exc, NotFound):
        what = {"container": "container", "image": "image", "network": "network", "volume": "volume"}[kind]
        return f"Error: No such {what}: {ref}"
    text = str(exc)
    return text if text.startswith("Error") else f"Error response from daemon: {text}"


def print_objects(docs: list[dict[str, Any]], errors: list[str], fmt: str | None) -> int:
    """inspect.Inspect: the documents (docker/cli's indented JSON, or the template per
    document), then every error; exit 1 when there was one."""
    if fmt:
        from shoal.cli.format import render_template

        for doc in docs:
            print(render_template(fmt, doc))
    else:
        from shoal.cli.dockerjson import dumps

        print(dumps(docs))
    if errors:
        sys.stdout.flush()
        print("\n".join(errors), file=sys.stderr)
        return 1
    return 0
