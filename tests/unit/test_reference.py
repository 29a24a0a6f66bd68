"""Image references against the tables of distribution/reference's own tests
(reference_test.go TestReferenceParse, normalize_test.go)."""

from __future__ import annotations

import pytest

from shoal.errors import InvalidArgument
from shoal.image import reference as refs

F64 = "f" * 64

# (input, repository name, domain, tag, digest) for distribution's Parse (no normalisation).
PARSE_OK = [
    ("test_com", "test_com", "", None, None),
    ("test.com:tag", "test.com", "", "tag", None),
    ("test.com:5000", "test.com", "", "5000", None),
    ("test.com/repo:tag", "test.com/repo", "test.com", "tag", None),
    ("test:5000/repo", "test:5000/repo", "test:5000", None, None),
    ("test:5000/repo:tag", "test:5000/repo", "test:5000", "tag", None),
    (f"test:5000/repo@sha256:{F64}", "test:5000/repo", "test:5000", None, f"sha256:{F64}"),
    (f"test:5000/repo:tag@sha256:{F64}", "test:5000/repo", "test:5000", "tag", f"sha256:{F64}"),
    ("lowercase:Uppercase", "lowercase", "", "Uppercase", None),
    ("a/" * 127 + "a:tag-puts-this-over-max", "a/" * 127 + "a", "a", "tag-puts-this-over-max", None),
    ("sub-dom1.foo.com/bar/baz/quux", "sub-dom1.foo.com/bar/baz/quux", "sub-dom1.foo.com", None, None),
    ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", "sub-dom1.foo.com/bar/baz/quux", "sub-dom1.foo.com",
     "some-long-tag", None),
    ("b.gcr.io/test.example.com/my-app:test.example.com", "b.gcr.io/test.example.com/my-app", "b.gcr.io",
     "test.example.com", None),
    ("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com/myimage", "xn--n3h.com", "xn--n3h.com", None),
    ("xn--7o8h.com/myimage:xn--7o8h.com@sha512:" + "f" * 128, "xn--7o8h.com/myimage", "xn--7o8h.com",
     "xn--7o8h.com", "sha512:" + "f" * 128),
    ("foo_bar.com:8080", "foo_bar.com", "", "8080", None),
    ("foo/foo_bar.com:8080", "foo/foo_bar.com", "foo", "8080", None),
    ("192.168.1.1", "192.168.1.1", "", None, None),
    ("192.168.1.1:tag", "192.168.1.1", "", "tag", None),
    ("192.168.1.1:5000", "192.168.1.1", "", "5000", None),
    ("192.168.1.1/repo", "192.168.1.1/repo", "192.168.1.1", None, None),
    ("192.168.1.1:5000/repo", "192.168.1.1:5000/repo", "192.168.1.1:5000", None, None),
    ("192.168.1.1:5000/repo:5050", "192.168.1.1:5000/repo", "192.168.1.1:5000", "5050", None),
    ("[2001:db8::1]/repo", "[2001:db8::1]/repo", "[2001:db8::1]", None, None),
    ("[2001:db8:1:2:3:4:5:6]/repo:tag", "[2001:db8:1:2:3:4:5:6]/repo", "[2001:db8:1:2:3:4:5:6]", "tag", None),
    ("[2001:db8::1]:5000/repo", "[2001:db8::1]:5000/repo", "[2001:db8::1]:5000", None, None),
    ("[2001:db8::1]:5000/repo:tag", "[2001:db8::1]:5000/repo", "[2001:db8::1]:5000", "tag", None),
    (f"[2001:db8::1]:5000/repo@sha256:{F64}", "[2001:db8::1]:5000/repo", "[2001:db8::1]:5000", None,
     f"sha256:{F64}"),
    ("[2001:db8::]:5000/repo", "[2001:db8::]:5000/repo", "[2001:db8::]:5000", None, None),
    ("[::1]:5000/repo", "[::1]:5000/repo", "[::1]:5000", None, None),
]

# (input, a fragment of the error) for Parse.
PARSE_BAD = [
    ("", "at least one component"),
    (":justtag", "invalid reference format"),
    (f"@sha256:{F64}", "invalid reference format"),
    ("repo@sha256:" + "f" * 34, "invalid checksum digest length"),
    (f"validname@invaliddigest:{F64}", "unsupported digest algorithm"),
    ("Uppercase:tag", "must be lowercase"),
    ("test:5000/Uppercase/lowercase:tag", "must be lowercase"),
    ("a/" * 128 + "a:tag", "must not be more than 255 characters"),
    ("aa/asdf$$^/aa", "invalid reference format"),
    ("[2001:db8::1]", "invalid reference format"),
    ("[2001:db8::1]:5000", "invalid reference format"),
    ("[2001:db8::1]:tag", "invalid reference format"),
    ("[fe80::1%eth0]:5000/repo", "invalid reference format"),
    ("[fe80::1%@invalidzone]:5000/repo", "invalid reference format"),
]


@pytest.mark.parametrize("text,name,domain,tag,digest", PARSE_OK)
def test_parse_exact_matches_distribution(text: str, name: str, domain: str, tag: str | None,
                                          digest: str | None) -> None:
    ref = refs.parse_exact(text)
    assert str(ref) == text
    assert ref.name() == name
    assert ref.domain == domain
    assert ref.tag == tag
    assert ref.digest == digest


@pytest.mark.parametrize("text,fragment", PARSE_BAD)
def test_parse_exact_rejects_as_distribution(text: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        refs.parse_exact(text)
    assert fragment in str(info.value)


# (input, full string, familiar string, familiar name) after normalisation (parse()).
NORMALIZED = [
    ("ubuntu", "docker.io/library/ubuntu:latest", "ubuntu:latest", "ubuntu"),
    ("web:v1", "docker.io/library/web:v1", "web:v1", "web"),
    ("docker.io/library/ubuntu", "docker.io/library/ubuntu:latest", "ubuntu:latest", "ubuntu"),
    ("index.docker.io/library/ubuntu:22.04", "docker.io/library/ubuntu:22.04", "ubuntu:22.04", "ubuntu"),
    ("docker.io/ubuntu", "docker.io/library/ubuntu:latest", "ubuntu:latest", "ubuntu"),
    ("dmcgowan/myapp", "docker.io/dmcgowan/myapp:latest", "dmcgowan/myapp:latest", "dmcgowan/myapp"),
    ("docker.io/dmcgowan/myapp", "docker.io/dmcgowan/myapp:latest", "dmcgowan/myapp:latest", "dmcgowan/myapp"),
    ("docker.io/library/foo/bar", "docker.io/library/foo/bar:latest", "library/foo/bar:latest", "library/foo/bar"),
    ("localhost/busybox:test", "localhost/busybox:test", "localhost/busybox:test", "localhost/busybox"),
    ("localhost:5000/web:v1", "localhost:5000/web:v1", "localhost:5000/web:v1", "localhost:5000/web"),
    ("127.0.0.1:5000/a/b:c", "127.0.0.1:5000/a/b:c", "127.0.0.1:5000/a/b:c", "127.0.0.1:5000/a/b"),
    ("example.com/shoal-python:3.11", "example.com/shoal-python:3.11", "example.com/shoal-python:3.11",
     "example.com/shoal-python"),
    ("Foo/bar", "Foo/bar:latest", "Foo/bar:latest", "Foo/bar"),  # an upper-case first part is a domain
    (f"web@sha256:{F64}", f"docker.io/library/web@sha256:{F64}", f"web@sha256:{F64}", "web"),
    (f"localhost:5000/web:v1@sha256:{F64}", f"localhost:5000/web:v1@sha256:{F64}",
     f"localhost:5000/web:v1@sha256:{F64}", "localhost:5000/web"),
]


@pytest.mark.parametrize("text,full,familiar,familiar_name", NORMALIZED)
def test_parse_normalises_like_docker(text: str, full: str, familiar: str, familiar_name: str) -> None:
    ref = refs.parse(text)
    assert str(ref) == full
    assert ref.familiar() == familiar
    assert ref.familiar_name() == familiar_name
    assert str(ref) == ref.name() + (f":{ref.tag}" if ref.tag else "") + (f"@{ref.digest}" if ref.digest else "")
    assert refs.parse(str(ref)) == ref  # the full form parses back to the same reference


def test_parse_fills_latest_only_without_tag_or_digest() -> None:
    assert refs.parse("web").tag == "latest"
    assert refs.parse(f"web@sha256:{F64}").tag is None
    assert refs.parse_normalized("web").tag is None


@pytest.mark.parametrize("text,message", [
    ("Web:v1", "invalid reference format: repository name (library/Web) must be lowercase"),
    ("foo/Bar", "invalid reference format: repository name (foo/Bar) must be lowercase"),
    (F64, f"invalid repository name ({F64}), cannot specify 64-byte hexadecimal strings"),
    ("web:", "invalid reference format"),
    ("web:v1:v2", "invalid reference format"),
    ("-web", "invalid reference format"),
    ("web@sha256:abc", "invalid reference format"),
    ("web:" + "t" * 129, "invalid reference format"),
    ("", "invalid reference format"),
])
def test_parse_errors_are_docker_wording(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        refs.parse(text)
    assert message in str(info.value)
    assert info.value.exit_code == 125


def test_reference_is_hashable_and_frozen() -> None:
    a, b = refs.parse("web:v1"), refs.parse("docker.io/library/web:v1")
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.tag = "v2"  # type: ignore[misc]
