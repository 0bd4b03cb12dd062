"""The Docker driver's container calls: create (idempotent by instance), start, stop, remove, list."""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from agent.protocol.types import LABEL_INSTANCE, LABEL_MANAGED, ContainerInfo, ContainerSpec
from agent.runtime.docker.convert import container_info
from agent.runtime.docker.engine import Engine, call, container_ref, engine_errors
from agent.runtime.errors import ConflictError, ImageNotFoundError, NotFoundError, RuntimeFailedError
from agent.runtime.ownership import identity_labels, pick_instance_container
from agent.runtime.payload import container_create_payload
from agent.runtime.refs import is_container_ref
from agent.runtime.validate import check_supported

__all__ = ["ContainerCalls"]

log = logging.getLogger("agent.runtime.docker")

_LIST_CONCURRENCY = 8


class ContainerCalls(Engine):
    """Containers: create, find, inspect, start, stop, restart, remove, list."""

    async def create(self, spec: ContainerSpec, *, fresh: bool = False) -> ContainerInfo:
        payload = container_create_payload(spec)  # validates the spec
        check_supported(spec, self.capabilities())
        async with self._create_locks.hold(spec.instance_id):
            existing = None if fresh else await self.find_instance(spec.instance_id, labels=identity_labels(spec))
            if existing is not None:
                log.info("instance %s already has container %s; not creating another", spec.instance_id, existing.id)
                return existing
            docker = await self._client()
            what = f"create container {spec.name}"
            try:
                with engine_errors(what):
                    data = await docker._query_json(
                        "containers/create", "POST", params={"name": spec.name}, data=payload
                    )
            except NotFoundError as exc:
                if "image" in exc.message.lower():
                    raise ImageNotFoundError(exc.message) from None
                raise
            except ConflictError:
                # The name is taken: by this instance's container (created meanwhile by someone
                # else on this engine), or by another container, which is a real conflict.
                existing = await self.find_instance(spec.instance_id, labels=identity_labels(spec))
                if existing is not None:
                    return existing
                raise
            container_id = data.get("Id") if isinstance(data, dict) else None
            if not container_id:
                raise RuntimeFailedError(f"{what}: the Docker Engine did not say which container it made: {data!r}")
            # What was just created is what was asked for: no inspect on the way of every start
            # (the caller inspects once the container is started).
            return ContainerInfo(id=str(container_id), name=spec.name, image=spec.image, state="created",
                                 instance_id=spec.instance_id, node_id=spec.node_id, managed=True,
                                 labels=dict(payload["Labels"]), cpus=spec.cpus, memory_mb=spec.memory_mb)

    async def find_instance(self, instance_id: int, *, labels: Mapping[str, str] | None = None) -> ContainerInfo | None:
        filters = {"label": [f"{LABEL_MANAGED}=1", f"{LABEL_INSTANCE}={int(instance_id)}",
                             *(f"{k}={v}" for k, v in (labels or {}).items())]}
        found = await self._list(all_=True, filters=filters)
        if len(found) > 1:
            log.warning("instance %s has %d containers: %s", instance_id, len(found), [c.id[:12] for c in found])
        return pick_instance_container(found)

    async def inspect(self, container: str) -> ContainerInfo | None:
        data = await self._inspect_raw(container)
        return container_info(data) if data is not None else None


    async def start(self, container: str) -> None:
        ref = container_ref(container)
        await self._post(f"containers/{ref}/start", f"start container {container}")

    async def stop(self, container: str, timeout: float = 10) -> None:
        ref = container_ref(container)
        await self._post(f"containers/{ref}/stop", f"stop container {container}", {"t": max(0, math.ceil(timeout))})

    async def restart(self, container: str, timeout: float = 10) -> None:
        ref = container_ref(container)
        await self._post(
            f"containers/{ref}/restart", f"restart container {container}", {"t": max(0, math.ceil(timeout))}
        )

    async def remove(self, container: str, *, force: bool = False) -> None:
        if not is_container_ref(container):
            return
        docker = await self._client()
        what = f"remove container {container}"
        try:
            with engine_errors(what):
                # v=1: the container's anonymous volumes go with it.
                params = {"force": bool(force), "v": True}
                await call(docker, f"containers/{container.lstrip('/')}", "DELETE", params=params)
        except NotFoundError:
            return
        except ConflictError as exc:
            if "already in progress" in exc.message:
                return
            raise

    async def _list(self, *, all_: bool, filters: Mapping[str, Any] | None = None) -> builtins.list[ContainerInfo]:
        docker = await self._client()
        params: dict[str, Any] = {"all": bool(all_)}
        if filters:
            params["filters"] = json.dumps(filters)
        with engine_errors("list containers"):
            rows = await docker._query_json("containers/json", params=params)
        gate = asyncio.Semaphore(_LIST_CONCURRENCY)

        async def one(container_id: str) -> ContainerInfo | None:
            async with gate:
                return await self.inspect(container_id)  # None: removed meanwhile

        ids = [str(row["Id"]) for row in rows if isinstance(row, dict) and row.get("Id")]
        infos = await asyncio.gather(*(one(container_id) for container_id in ids))
        return [info for info in infos if info is not None]

    async def list(self, *, all: bool = True, managed_only: bool = False) -> builtins.list[ContainerInfo]:
        filters = {"label": [f"{LABEL_MANAGED}=1"]} if managed_only else None
        return await self._list(all_=all, filters=filters)

