"""What the API replies and the pages show, built from rows: shared by dmd.api and dmd.pages, so
neither imports the other and a page never shows another address or status than the API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dmd.models import SSH_PORT, Instance, InstanceDetail, Node, PortMap, SshKey, User
from dmd.schemas import InstanceOut, NodeOut, PortMapOut, SshKeyOut, SshOut

if TYPE_CHECKING:
    from dmd.agents.hub import Hub


# --- addresses and SSH ----------------------------------------------------------------------

def node_address(node: Node, fallback: str | None = None) -> str:
    """The address users reach the node at: its public address when the agent was given one,
    else (for the node dmd itself runs on) the host the browser used, else its first IPv4."""
    facts = node.facts or {}
    public = facts.get("public_address")
    if isinstance(public, str) and public:
        return public
    if node.local and fallback:
        return fallback
    addrs = facts.get("addresses") or {}
    for family in ("ipv4", "ipv6"):
        for a in addrs.get(family) or []:
            if isinstance(a, str) and a:
                return a
    return fallback or "NODE-ADDRESS"


@dataclass(frozen=True, slots=True)
class SshView:
    enabled: bool
    keys_all: bool
    key_ids: list[int]
    state: str  # unknown | ready | no_server | not_running | disabled | error
    user: str
    message: str | None
    host_keys: list[dict[str, str]]
    port: int | None
    address: str
    command: str | None
    config: str | None


def ssh_view(inst: Instance, node: Node, ids: list[int], maps: list[PortMap], host: str | None) -> SshView:
    status = inst.ssh_status or {}
    user = str(status.get("user") or "root")
    port = next((m.host_port for m in maps if m.protocol == "tcp" and m.instance_port == SSH_PORT), None)
    address = node_address(node, host)
    command = config = None
    if inst.ssh_enabled and port is not None:
        command = f"ssh -p {port} {user}@{address}"
        config = (f"Host {inst.name}\n    HostName {address}\n    Port {port}\n    User {user}\n")
    host_keys = [{"type": str(k.get("type", "")), "fingerprint": str(k.get("fingerprint", ""))}
                 for k in status.get("host_keys") or [] if isinstance(k, dict)]
    if not inst.ssh_enabled:
        state = "disabled"
    elif inst.status != "running":
        state = "not_running"  # the agent's last word was about the instance when it ran
    else:
        state = str(status.get("state") or "unknown")
    return SshView(enabled=inst.ssh_enabled, keys_all=inst.ssh_keys_all, key_ids=ids, state=state,
                   user=user, message=status.get("message"), host_keys=host_keys, port=port, address=address,
                   command=command, config=config)


# --- replies ----------------------------------------------------------------------------------

def node_out(hub: Hub, node: Node, user: User) -> NodeOut:
    """The node as `user` sees it; online when its link is on this dmd."""
    if node.owner_id == user.id:
        access = "owner"
    elif user.is_admin:
        access = "admin"
    elif node.public:
        access = "public"  # provided for everyone (a share of it, if any, changes nothing)
    else:
        access = "shared"
    status = node.status
    if hub.is_online(node.id):
        status = "online"
    elif status == "online":
        status = "offline"  # online in the database, but its link is not on this dmd
    return NodeOut(
        id=node.id, name=node.name, owner_id=node.owner_id, access=access, status=status,  # type: ignore[arg-type]
        cordoned=node.cordoned, local=node.local, public=node.public,
        last_seen=hub.last_seen(node.id) or node.last_seen,
        connected_at=node.connected_at, agent_version=node.agent_version, protocol_version=node.protocol_version,
        facts=node.facts, gpus=node.gpus, join_expires_at=node.join_expires_at, created_at=node.created_at,
        updated_at=node.updated_at,
    )


def map_out(m: PortMap, address: str) -> PortMapOut:
    return PortMapOut(
        id=m.id, instance_id=m.instance_id, instance_name=m.instance_name, node_id=m.node_id, node_name=m.node_name,
        protocol=m.protocol,  # type: ignore[arg-type]
        host_port=m.host_port, instance_port=m.instance_port,
        state=m.state,  # type: ignore[arg-type]
        message=m.message, address=f"{address}:{m.host_port}" if ":" not in address else f"[{address}]:{m.host_port}",
        created_at=m.created_at,
    )


def held_out(inst: Instance, keys: list[str], ssh: SshOut | None = None,
             maps: list[PortMapOut] | None = None, *, node_online: bool) -> InstanceOut:
    return InstanceOut(
        id=inst.id, name=inst.name, owner_id=inst.owner_id, node_id=inst.node_id, image=inst.image, cpus=inst.cpus,
        memory_mb=inst.memory_mb, gpus=keys, env=inst.env, command=inst.command, privileged=inst.privileged,
        host_network=inst.host_network, desired=inst.desired,  # type: ignore[arg-type]
        status=inst.status, status_message=inst.status_message,  # type: ignore[arg-type]
        node_online=node_online,
        container_id=inst.container_id, created_at=inst.created_at, updated_at=inst.updated_at,
        ssh=ssh, port_maps=maps,
    )


def full_out(d: InstanceDetail, host: str | None, *, node_online: bool) -> InstanceOut:
    """The instance with its SSH access and port maps (single-instance replies)."""
    view = ssh_view(d.instance, d.node, d.key_ids, d.maps, host)
    return held_out(d.instance, d.gpus, SshOut(**{k: getattr(view, k) for k in SshOut.model_fields}),
                    [map_out(m, view.address) for m in d.maps], node_online=node_online)


def key_out(k: SshKey) -> SshKeyOut:
    return SshKeyOut(
        id=k.id, user_id=k.user_id, name=k.name, type=k.key_type, bits=k.bits, fingerprint=k.fingerprint,
        comment=k.comment, public_key=k.public_key, created_at=k.created_at, updated_at=k.updated_at,
    )
