"""Pinning a service's image to a manifest digest at deploy, as Docker's daemon does for
`service create/update` and `stack deploy` with `--resolve-image always` (moby's
daemon/cluster/services.go, imageWithDigestString): `web:v1` becomes
`web:v1@sha256:<manifest digest>`, so every node runs the same bytes whatever the tag later
points at.

Docker asks the image's registry; a shoal manager first looks in its own image store (what it
built or loaded is what its nodes pull from it: image/distserver.py), then asks the registry.
When neither knows the image it is left unpinned with Docker's warning, word for word.
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.errors import InvalidArgument, NotFound, ShoalError
from shoal.image import reference as refs
from shoal.image.store import ImageStore


@dataclass(frozen=True)
class Pinned:
    image: str  # what the service spec records: pinned, or as given when it could not be
    warning: str | None = None  # Docker's digestWarning, for the deploy's output


def digest_warning(image: str) -> str:
    """moby's digestWarning, with its line breaks (the CLI prints it as it comes)."""
    return (f"image {image} could not be accessed on a registry to record\n"
            f"its digest. Each node will access {image} independently,\n"
            "possibly leading to different nodes running different\n"
            "versions of the image.\n")


def _registry_digest(ref: refs.Reference) -> str:
    """The digest the registry gives for the tag (an index's digest for a multi-platform
    image, as Docker records), asked with the credentials stored for that registry."""
    from shoal.image.registry import client_for  # the registry client only when needed

    with client_for(ref, ("pull",), aiohttp=True) as client:  # in shoald: aiohttp, not httpx
        return client.get_manifest(ref.tag or refs.DEFAULT_TAG).digest


def pin_image(images: ImageStore, image: str, *, query_registry: bool = True) -> Pinned:
    """`image` as the service spec should record it. Already pinned (`name@digest`, or an
    image ID) stays as given; `name[:tag]` gets `:tag@<digest>` from the manager's store, else
    from the registry; failing both, unpinned with the warning."""
    if refs.is_identifier(image) or refs.ANCHORED_DIGEST_RE.match(image):
        return Pinned(image)  # ParseAnyReference: a bare digest or ID is its own pin
    try:
        ref = refs.parse_normalized(image)
    except InvalidArgument:
        return Pinned(image, digest_warning(image))
    if ref.digest:
        return Pinned(ref.familiar())
    tagged = refs.Reference(ref.domain, ref.path, ref.tag or refs.DEFAULT_TAG, None)
    try:
        found = images.resolve(str(tagged))
        if found.manifest_digest:
            return Pinned(f"{tagged.familiar()}@{found.manifest_digest}")
    except (NotFound, ShoalError):
        pass
    if query_registry:
        try:
            return Pinned(f"{tagged.familiar()}@{_registry_digest(tagged)}")
        except (ShoalError, OSError):
            pass
    return Pinned(image, digest_warning(image))


def display_image(image: str) -> str:
    """The IMAGE column of `service ls` and `service ps` (docker/cli's formatter): a tagged
    reference without its digest (`web:v1@sha256:..` -> `web:v1`); `name@digest` without a
    tag, and anything that does not parse, as stored."""
    try:
        ref = refs.parse_normalized(image)
    except InvalidArgument:
        return image
    if ref.tag is None:
        return image
    return refs.Reference(ref.domain, ref.path, ref.tag, None).familiar()


RESOLVE_IMAGE_MODES = ("always", "changed", "never")


def deploy_image(images: ImageStore, image: str, *, resolve_image: str = "always",
                 existing_image: str | None = None, existing_label: str | None = None,
                 query_registry: bool = True) -> Pinned:
    """What `stack deploy --resolve-image MODE` records for one service (docker/cli's
    deployServices with moby's pinning): `image` as the Compose file has it; for a service that
    exists already, `existing_image` is its spec's image (maybe pinned) and `existing_label` its
    `com.docker.stack.image` label (the image its Compose file had).

    always: pin on create and update; changed: pin on create, and on update only when the
    Compose image changed (else keep the recorded pin, so a redeploy is no update); never: no
    pinning, an unchanged image keeps its recorded pin. The warning is given only where `stack
    deploy` prints it: on an update (on a create docker/cli drops the daemon's warnings)."""
    if resolve_image not in RESOLVE_IMAGE_MODES:
        raise InvalidArgument(f"Invalid option {resolve_image} for flag --resolve-image")
    if existing_image is None:
        if resolve_image == "never":
            return Pinned(image)
        return Pinned(pin_image(images, image, query_registry=query_registry).image)
    unchanged = image == existing_label
    if resolve_image == "always" or (resolve_image == "changed" and not unchanged):
        return pin_image(images, image, query_registry=query_registry)
    return Pinned(existing_image if unchanged else image)
