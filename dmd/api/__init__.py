"""The JSON API under /api/v1."""

from dmd.api.registry import Api


def build_api() -> Api:
    from dmd.api import (
        audit,
        auth,
        gpus,
        images,
        instances,
        meta,
        nodes,
        port_maps,
        ssh_gateway,
        ssh_keys,
        tokens,
        users,
    )

    api = Api()
    for mod in (meta, auth, users, tokens, audit, nodes, gpus, instances, port_maps, images, ssh_keys, ssh_gateway):
        api.include(mod.api)
    return api
