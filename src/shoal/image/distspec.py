"""What both sides of the distribution API (registry_client pulling, distserver serving a
manager's image store) say the same way, in a module of its own: a manager serving images never
pulls, so it never imports registry_client and its httpx (about 3.6 MiB of a manager's memory
once loaded, measured in a fork of the cluster's zygote)."""

from __future__ import annotations

import json

from shoal.image.mediatypes import OCI_INDEX, OCI_MANIFEST

DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

# distribution's registry/api/errcode descriptors: code -> default message.
ERROR_CODE_MESSAGES = {
    "UNKNOWN": "unknown error",
    "UNSUPPORTED": "The operation is unsupported.",
    "UNAUTHORIZED": "authentication required",
    "DENIED": "requested access to the resource is denied",
    "UNAVAILABLE": "service unavailable",
    "TOOMANYREQUESTS": "too many requests",
    "BLOB_UNKNOWN": "blob unknown to registry",
    "BLOB_UPLOAD_UNKNOWN": "blob upload unknown to registry",
    "BLOB_UPLOAD_INVALID": "blob upload invalid",
    "DIGEST_INVALID": "provided digest did not match uploaded content",
    "MANIFEST_UNKNOWN": "manifest unknown",
    "MANIFEST_INVALID": "manifest invalid",
    "MANIFEST_BLOB_UNKNOWN": "blob unknown to registry",
    "MANIFEST_UNVERIFIED": "manifest failed signature verification",
    "NAME_INVALID": "invalid repository name",
    "NAME_UNKNOWN": "repository name not known to registry",
    "SIZE_INVALID": "provided length did not match content length",
    "TAG_INVALID": "manifest tag did not match URI",
    "RANGE_INVALID": "invalid content range",
}


def manifest_media_type(body: bytes, content_type: str | None) -> str:
    """The manifest's own mediaType wins; the Content-Type header is the fallback."""
    try:
        data = json.loads(body)
    except ValueError:
        data = {}
    if isinstance(data, dict):
        if data.get("mediaType"):
            return str(data["mediaType"])
        if data.get("schemaVersion") == 1:
            return DOCKER_SCHEMA1_SIGNED
        if "manifests" in data:
            return OCI_INDEX
        if "config" in data and "layers" in data:
            return OCI_MANIFEST
    return (content_type or "").split(";")[0].strip()
