"""A node makes sure it has a task's image before preparing it: from its own store, else from
the manager's image store (image/distserver.py, over mutual TLS with the node certificate),
else from the image's registry with the credentials stored on the node, as Docker pulls in a
task's prepare step.

Every byte is checked: a manifest asked for by digest must hash to it, every blob to its
descriptor's digest and size, every layer's content to the config's diff_id; nothing is
indexed unless all of it matched (image/registry.py's pull path, given a client for the
manager). Two tasks needing one image on a node pull it once: the second waits for the first.
"""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

from shoal.errors import InvalidArgument, NotFound, ShoalError
from shoal.image import reference as refs
from shoal.image import registry
from shoal.image.auth import Credentials
from shoal.image.registry_client import RegistryClient, RegistryError, RegistryUnreachable
from shoal.image.store import Image, ImageStore
from shoal.manager.ca import MANAGER_ROLE, CertStore
from shoal.tlscontext import client_context

# A pull that never answers must not hold a task in preparing forever (connect is 15 s).
PULL_TIMEOUT = 60.0


class ImageUnavailable(ShoalError):
    """No source had the image: the task is rejected with this message, which begins with
    Docker's `No such image: <ref>` and says why each source failed (in parentheses, so that
    `service ps`'s truncated ERROR column still starts with Docker's words). `docker_message`
    is Docker's words alone, for a caller that keeps the reason elsewhere."""

    def __init__(self, ref: str, why: str = "") -> None:
        self.docker_message = f"No such image: {ref}"
        self.reason = why
        super().__init__(f"{self.docker_message} ({why})" if why else self.docker_message)


_flights: dict[tuple[str, str], threading.Lock] = {}
_flights_lock = threading.Lock()


def _flight(store: ImageStore, key: str) -> threading.Lock:
    """One lock per (store, image): the first task pulls, the others wait and then find it."""
    with _flights_lock:
        return _flights.setdefault((str(store.root), key), threading.Lock())


def _local(images: ImageStore, ref: refs.Reference, digest: str | None) -> Image | None:
    """The image when the store has it: by manifest digest when the service is pinned (a tag
    may name another build on this node), else by name."""
    text = f"{ref.familiar_name()}@{digest}" if digest else ref.familiar()
    try:
        return images.resolve(text)
    except NotFound:
        return None


def _tag(images: ImageStore, image: Image, ref: refs.Reference) -> Image:
    """Name the image as the service does, so `shoal images` on the node shows it, unless the
    name is already another image's here: a pinned service must not move a tag the node's user
    gave (say, to a newer build of web:v1 on the manager itself)."""
    if ref.tag is None:
        return image
    name = f"{ref.familiar_name()}:{ref.tag}"
    if name in image.repo_tags:
        return image
    try:
        images.resolve(name)
        return image  # the name is taken: the image stays known by its digest
    except NotFound:
        pass
    images.tag(image.id, name)
    return images.get(image.id)


def manager_client(ref: refs.Reference, manager_url: str, ssl_context: ssl.SSLContext,
                   server_hostname: str = MANAGER_ROLE) -> RegistryClient:
    """A distribution client for the manager's image store: the repository is the full name
    (docker.io/library/web), the server must present a manager's certificate of the cluster.
    Over aiohttp's client, as every pull of a node's shoald: it has aiohttp loaded, and httpx
    would stay in its memory (about 4 MiB)."""
    return RegistryClient(ref.domain, ref.name(), ("pull",), None, PULL_TIMEOUT, base=manager_url,
                          ssl_context=ssl_context, server_hostname=server_hostname, aiohttp=True)


def manager_source(managers: list[str], cert_dir: Path) -> tuple[str, ssl.SSLContext]:
    """(manager_url, ssl_context) for ensure_image on a node that joined a cluster: the first
    manager address (`host:port` or `tcp://host:port`, as the agent's session has them) and a
    context with the node's current certificate (read now, so a renewed one is used)."""
    if not managers:
        raise ShoalError("no manager address to pull images from")
    certs = CertStore(cert_dir)
    host = managers[0].removeprefix("tcp://")
    return f"https://{host}", client_context(certs.root_pem(), certs.cert_path, certs.key_path)


def _reason(exc: BaseException) -> str:
    return str(exc).strip().replace("\n", " ") or type(exc).__name__


def ensure_image(images: ImageStore, ref: str, digest: str | None = None, manager_url: str | None = None,
                 ssl_context: ssl.SSLContext | None = None, *, server_hostname: str = MANAGER_ROLE,
                 registry_fallback: bool = True, credentials: Credentials | None = None) -> Image:
    """The image `ref` names (`web:v1`, or pinned `web:v1@sha256:...`; `digest` pins it too),
    pulled first if this node lacks it. `credentials`: the service's own for the registry
    (`--with-registry-auth`, from the assignment), used instead of any stored on the node. Raises ImageUnavailable with Docker's wording and the
    reasons when neither the manager nor the registry has it (or the bytes did not verify)."""
    if ref.startswith("sha256:") or refs.is_identifier(ref):
        # An image ID (ParseAnyReference reads these as digests, not names): only ever local.
        try:
            return images.resolve(ref)
        except (NotFound, InvalidArgument):
            raise ImageUnavailable(ref) from None
    try:
        parsed = refs.parse(ref)
    except InvalidArgument as exc:
        raise ImageUnavailable(ref, str(exc)) from None
    if digest is not None:
        try:
            refs.validate_digest(digest)
        except InvalidArgument as exc:
            raise ImageUnavailable(ref, str(exc)) from None
        if parsed.digest and parsed.digest != digest:
            raise ImageUnavailable(ref, f"pinned to {digest}, the reference says {parsed.digest}")
    digest = digest or parsed.digest
    image = _local(images, parsed, digest)
    if image is not None:
        return _tag(images, image, parsed)
    with _flight(images, digest or str(parsed)):
        image = _local(images, parsed, digest)  # another task may have pulled it meanwhile
        if image is not None:
            return _tag(images, image, parsed)
        wanted = f"{parsed.familiar_name()}{':' + parsed.tag if parsed.tag else ''}{'@' + digest if digest else ''}"
        reasons: list[str] = []
        if manager_url is not None and ssl_context is not None:
            try:
                with manager_client(parsed, manager_url, ssl_context, server_hostname) as client:
                    image = registry.pull(images, wanted, quiet=True, client=client)
                return _tag(images, image, parsed)
            except (RegistryError, RegistryUnreachable, ShoalError, OSError) as exc:
                reasons.append(f"from the manager: {_reason(exc)}")
        if registry_fallback:
            try:
                if credentials is not None:
                    with RegistryClient(parsed.domain, parsed.path, ("pull",), credentials, PULL_TIMEOUT,
                                        aiohttp=True) as client:
                        image = registry.pull(images, wanted, quiet=True, client=client)
                else:
                    image = registry.pull(images, wanted, quiet=True, aiohttp=True)
                return _tag(images, image, parsed)
            except (RegistryError, RegistryUnreachable, ShoalError, OSError) as exc:
                reasons.append(f"from {parsed.domain}: {_reason(exc)}")
        raise ImageUnavailable(ref, f"pull failed {'; '.join(reasons)}" if reasons else "")
