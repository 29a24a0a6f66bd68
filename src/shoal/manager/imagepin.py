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

    with client_for(ref, ("pull",)) as client:
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
