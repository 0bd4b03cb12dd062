"""Streams through dmd to a real local node (the in-process agent on the real Docker Engine)."""

from tests.access.conftest import test_images  # noqa: F401 (fixture: the OpenSSH Debian and busybox images)
from tests.instances.conftest import docker, local, wait_for, wait_status  # noqa: F401 (fixtures)
from tests.runtime.conftest import docker_test_image  # noqa: F401 (fixture: builds the busybox image)
