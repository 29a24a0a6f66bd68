"""Image references parsed and normalised exactly as docker/distribution's `reference` package
does (regexp.go, normalize.go): `web:v1` is docker.io/library/web:v1, a first component with a
`.` or `:` (or `localhost`, or upper-case letters) is a registry domain."""

from __future__ import annotations

import re
from dataclasses import dataclass

from shoal.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

# The grammar of regexp.go, transcribed; `\w` is ASCII-only in Go, hence re.ASCII.
_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_DOMAIN_NAME_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_OPTIONAL_PORT = r"(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_IDENTIFIER = r"([a-f0-9]{64})"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_NAME = _DOMAIN_NAME_COMPONENT + r"(?:\." + _DOMAIN_NAME_COMPONENT + r")*"
_HOST = r"(?:" + _DOMAIN_NAME + r"|" + _IPV6 + r")"
_DOMAIN_AND_PORT = _HOST + _OPTIONAL_PORT
_PATH_COMPONENT = _ALPHANUMERIC + r"(?:" + _SEPARATOR + _ALPHANUMERIC + r")*"
_REMOTE_NAME = _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*"
_NAME = r"(?:" + _DOMAIN_AND_PORT + r"/)?" + _REMOTE_NAME

REFERENCE_RE = re.compile(
    r"^(" + _NAME + r")(?::(" + _TAG + r"))?(?:@(" + _DIGEST + r"))?$", re.ASCII
)
ANCHORED_NAME_RE = re.compile(r"^(?:(" + _DOMAIN_AND_PORT + r")/)?(" + _REMOTE_NAME + r")$", re.ASCII)
ANCHORED_TAG_RE = re.compile(r"^" + _TAG + r"$", re.ASCII)
ANCHORED_DIGEST_RE = re.compile(r"^" + _DIGEST + r"$", re.ASCII)
ANCHORED_IDENTIFIER_RE = re.compile(r"^" + _IDENTIFIER + r"$", re.ASCII)
# go-digest: the algorithms it knows and the length of their hex encodings.
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


def _invalid(detail: str) -> InvalidArgument:
    return InvalidArgument(f"invalid reference format: {detail}")


@dataclass(frozen=True)
class Reference:
    domain: str  # "docker.io", "localhost", "127.0.0.1:5000"
    path: str  # "library/python", "shoal-python"
    tag: str | None  # "v1"; parse() fills "latest" when there is neither tag nor digest
    digest: str | None  # "sha256:..."

    def name(self) -> str:
        """The full repository name without tag or digest: docker.io/library/web."""
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def __str__(self) -> str:
        return self.name() + self._suffix()

    def _suffix(self) -> str:
        text = f":{self.tag}" if self.tag else ""
        return text + (f"@{self.digest}" if self.digest else "")

    def familiar_name(self) -> str:
        """The REPOSITORY column: `web`, `user/app`, `localhost/busybox`, `reg:5000/a/b`."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name()
        path = self.path
        if path.startswith(OFFICIAL_REPO_PREFIX):
            rest = path[len(OFFICIAL_REPO_PREFIX) :]
            if "/" not in rest:
                return rest
        return path

    def familiar(self) -> str:
        """As Docker prints it: web:v1, localhost/x:y, reg:5000/a/b:c, web@sha256:..."""
        return self.familiar_name() + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, digest)


def validate_digest(digest: str) -> str:
    """go-digest's Digest.Validate: `algo:hex` of the right length; returns the digest."""
    if not ANCHORED_DIGEST_RE.fullmatch(digest):
        raise InvalidArgument(f"invalid checksum digest format: {digest}")
    algorithm, _, encoded = digest.partition(":")
    expected = _DIGEST_HEX_LENGTHS.get(algorithm)
    if expected is None:
        raise InvalidArgument(f"unsupported digest algorithm: {digest}")
    if len(encoded) != expected or encoded != encoded.lower():
        raise InvalidArgument(f"invalid checksum digest length: {digest}" if len(encoded) != expected
                              else f"invalid checksum digest format: {digest}")
    return digest


def split_docker_domain(name: str) -> tuple[str, str]:
    """splitDockerDomain: (domain, remote name), with docker.io/library/ filled in."""
    maybe_domain, sep, maybe_remote = name.partition("/")
    if not sep:
        return DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + name
    if maybe_domain == "localhost":
        domain, remote = maybe_domain, maybe_remote
    elif maybe_domain == LEGACY_DEFAULT_DOMAIN:
        domain, remote = DEFAULT_DOMAIN, maybe_remote
    elif "." in maybe_domain or ":" in maybe_domain:
        domain, remote = maybe_domain, maybe_remote
    elif maybe_domain.lower() != maybe_domain:
        domain, remote = maybe_domain, maybe_remote
    else:
        domain, remote = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in remote:
        remote = OFFICIAL_REPO_PREFIX + remote
    return domain, remote


def parse_normalized(text: str) -> Reference:
    """ParseNormalizedNamed: the reference as given, normalised, without a default tag."""
    if ANCHORED_IDENTIFIER_RE.fullmatch(text):
        raise InvalidArgument(f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings")
    domain, remainder = split_docker_domain(text)
    remote = remainder.split(":", 1)[0] if ":" in remainder else remainder
    # A digest's `@` is inside `remote` when there is no tag; the check is only about case.
    remote = remote.split("@", 1)[0]
    if remote.lower() != remote:
        raise _invalid(f"repository name ({remote}) must be lowercase")
    return _parse_full(f"{domain}/{remainder}", text)


def parse_exact(text: str) -> Reference:
    """distribution's Parse: the grammar only, no normalisation and no default tag
    (`test.com:5000` is the repository test.com with tag 5000)."""
    return _parse_full(text, text)


def _parse_full(full: str, original: str) -> Reference:
    m = REFERENCE_RE.fullmatch(full)
    if m is None:
        if not original:
            raise _invalid("repository name must have at least one component")
        if REFERENCE_RE.fullmatch(full.lower()):
            raise _invalid(f"repository name must be lowercase: \"{original}\"")
        raise _invalid(f"\"{original}\"")
    name, tag, digest = m.group(1), m.group(2), m.group(3)
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise _invalid(f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    name_match = ANCHORED_NAME_RE.fullmatch(name)
    assert name_match is not None  # the full pattern matched, so the name pattern does
    domain, path = name_match.group(1) or "", name_match.group(2)
    if digest:
        validate_digest(digest)
    return Reference(domain=domain, path=path, tag=tag or None, digest=digest or None)


def parse(text: str) -> Reference:
    """Parse and normalise a reference; `latest` is filled in when there is no tag or digest.

    Raises InvalidArgument("invalid reference format: ...") as Docker words it.
    """
    ref = parse_normalized(text)
    if ref.tag is None and ref.digest is None:
        ref = Reference(ref.domain, ref.path, DEFAULT_TAG, None)
    return ref


def parse_name(text: str) -> Reference:
    """A repository name only (no tag, no digest), e.g. for `shoal images REPOSITORY`."""
    ref = parse_normalized(text)
    if ref.tag or ref.digest:
        raise _invalid(f"\"{text}\" is not a repository name")
    return ref


def is_identifier(text: str) -> bool:
    """A full 64-hex image ID without its `sha256:` prefix."""
    return bool(ANCHORED_IDENTIFIER_RE.fullmatch(text))

