"""Request and response schemas of the JSON API (pydantic). They validate requests (the
pages' forms too) and generate the OpenAPI document; shared by dmd.api and dmd.pages."""

from dmd.schemas import accounts, base, instances, nodes, ssh_keys
from dmd.schemas.accounts import *  # noqa: F403
from dmd.schemas.base import *  # noqa: F403
from dmd.schemas.instances import *  # noqa: F403
from dmd.schemas.nodes import *  # noqa: F403
from dmd.schemas.ssh_keys import *  # noqa: F403

__all__: list[str] = []
__all__ += accounts.__all__
__all__ += base.__all__
__all__ += instances.__all__
__all__ += nodes.__all__
__all__ += ssh_keys.__all__
