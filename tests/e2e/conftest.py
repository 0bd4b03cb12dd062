from tests.agent.test_binary import binary  # noqa: F401 (the built dist/dmc, as a fixture)
from tests.runtime.conftest import docker_test_image  # noqa: F401 (builds the busybox test image)
