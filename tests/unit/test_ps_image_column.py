"""The IMAGE column of `ps` and `system df -v`: docker/cli's formatter.ContainerContext.Image,
with the cases of its container_test.go and a task's pinned reference."""

from __future__ import annotations

import pytest

from shoal.cli.format import container_image

ID = "a5a665ff33eced1e0803148700880edab4269067ed77e27737a708d0d293fbf5"
DIGEST = "sha256:f635ff674348aeb4b2c038648bd6be669b9ded871e6ee28f543ff5f895592ef0"


@pytest.mark.parametrize("image,image_id,trunc,want", [
    ("ubuntu", "", True, "ubuntu"),
    ("verylongimagename", "", True, "verylongimagename"),
    ("verylongimagename", "", False, "verylongimagename"),
    ("a5a665ff33eced1e0803148700880edab4", ID, True, "a5a665ff33ec"),
    ("a5a665ff33eced1e0803148700880edab4", ID, False, "a5a665ff33eced1e0803148700880edab4"),
    ("", "", True, "<no image>"),
    # A service's task runs the reference the manager pinned: the digest is dropped unless --no-trunc.
    (f"localhost/busybox:test@{DIGEST}", ID, True, "localhost/busybox:test"),
    (f"localhost/busybox:test@{DIGEST}", ID, False, f"localhost/busybox:test@{DIGEST}"),
    (f"docker.io/library/nginx:1.27@{DIGEST}", ID, True, "nginx:1.27"),
    (f"nginx@{DIGEST}", ID, True, "nginx"),
    ("docker.io/library/nginx:latest", ID, True, "nginx:latest"),
])
def test_image_column_as_docker(image: str, image_id: str, trunc: bool, want: str) -> None:
    assert container_image(image, image_id, trunc) == want
