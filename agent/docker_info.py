"""What the node's container runtime says about itself, through the Docker Engine API.

aiodocker talks to the Engine's socket directly (never the docker CLI). When the Engine
cannot be reached the agent still runs: the facts then say why.

Public API::

    await runtime_facts("unix:///var/run/docker.sock")
    # {"runtime": {"name": "docker", "version": "24.0.7", "api_version": "1.43",
    #              "data_root": "/var/lib/docker", "os": "Debian GNU/Linux 12 (bookworm)"}}
    # or {"runtime": None, "runtime_error": "cannot connect to unix:///var/run/docker.sock: ..."}

    await node_facts(docker_host, public_address=None)   # collect_facts() + runtime_facts()
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agent.facts import collect_facts
from agent.gpu import DEFAULT_TIMEOUT

__all__ = ["node_facts", "runtime_facts"]

log = logging.getLogger(__name__)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def runtime_facts(
    docker_host: str,
    timeout: float = 5,
) -> dict[str, Any]:
    """``{"runtime": {...}}`` from the Engine's /version and /info, or
    ``{"runtime": None, "runtime_error": "<why>"}``. Never raises (cancellation aside)."""
    if docker_host.startswith("ssh://"):  # aiodocker would pull in asyncssh, a server-only dependency
        return {"runtime": None, "runtime_error": "ssh:// Docker hosts are not supported by the agent"}
    import aiodocker  # imported here: `dmc` starts faster and smaller without it
    import aiohttp

    docker: aiodocker.Docker | None = None
    try:
        async with asyncio.timeout(timeout):
            docker = aiodocker.Docker(url=docker_host, timeout=aiohttp.ClientTimeout(total=timeout))
            version = await docker.version()
            info = await docker.system.info()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # any failure means "no runtime", with the reason
        reason = f"cannot reach Docker at {docker_host}: {_describe(exc)}"
        log.debug("%s", reason)
        return {"runtime": None, "runtime_error": reason}
    finally:
        if docker is not None:
            try:
                await docker.close()
            except Exception:
                log.debug("closing the Docker client failed", exc_info=True)
    runtime = {
        "name": "docker",
        "version": version.get("Version"),
        "api_version": version.get("ApiVersion"),
        "data_root": info.get("DockerRootDir"),
        "os": info.get("OperatingSystem") or version.get("Os"),
    }
    return {"runtime": runtime}


async def node_facts(
    docker_host: str,
    *,
    public_address: str | None = None,
    docker_timeout: float = 5,
    gpu_timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """The full facts the agent reports: host facts plus the container runtime.

    The disk figures are those of the runtime's data root when the runtime is known.
    """
    runtime = await runtime_facts(docker_host, timeout=docker_timeout)
    data_root = runtime["runtime"]["data_root"] if runtime.get("runtime") else None
    facts = await collect_facts(
        docker_data_root=data_root if isinstance(data_root, str) and data_root else None,
        public_address=public_address,
        gpu_timeout=gpu_timeout,
    )
    facts.update(runtime)
    return facts
