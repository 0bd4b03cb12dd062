"""The SSH gateway as a client needs it: its address and host key, and a ~/.ssh/config for your
instances through it (what `dmd ssh-config` prints)."""

from __future__ import annotations

from typing import Any

from dmd.api.registry import Api, Ctx
from dmd.schemas import SshConfigOut, SshConfigQuery, SshGatewayOut
from dmd.usecases import gateway as uc

api = Api()


@api.get("/ssh/gateway", summary="The SSH gateway: host, port and host key (404 when it is off)", tag="ssh-keys",
         response=SshGatewayOut, errors=(404,))
async def gateway(ctx: Ctx) -> Any:
    addr = uc.gateway_address(ctx.dm)
    return SshGatewayOut(host=addr.host, port=addr.port, host_key=addr.host_key, fingerprint=addr.fingerprint,
                         known_hosts=addr.known_host, username=ctx.user_identity.user.username)


@api.get("/ssh/config", summary="A ~/.ssh/config block for your instances through the SSH gateway, and the "
         "host keys to trust", tag="ssh-keys", query=SshConfigQuery, response=SshConfigOut, errors=(404, 422))
async def ssh_config(ctx: Ctx) -> Any:
    q: SshConfigQuery = ctx.query
    got = await uc.ssh_config(ctx.dm, ctx.user_identity.user, q.known_hosts_path)
    return SshConfigOut(config=got.config, known_hosts=got.known_hosts, known_hosts_path=got.known_hosts_path,
                        instances=got.instances)
