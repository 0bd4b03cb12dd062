from collections.abc import Iterator

import pytest

from tests.agent.test_binary import binary  # noqa: F401 (the built dist/dmc, as a fixture)
from tests.netns import Nat, behind_nat
from tests.runtime.conftest import docker_test_image  # noqa: F401 (builds the busybox test image)


@pytest.fixture
def nat() -> Iterator[Nat]:
    """A network namespace behind NAT with its own dockerd (tests/netns.py); sync, so its
    commands run before the test's event loop does."""
    with behind_nat() as made:
        yield made
