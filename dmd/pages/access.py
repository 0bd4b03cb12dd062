"""What the pages show and take about reaching instances: SSH (the login command, the
~/.ssh/config block, which keys go in) and port maps (host port of the node -> port of the
instance), shared by the instance page, the port maps page and the create form.

Every change goes through dmd.usecases (port_maps, instances), the same calls the JSON API
makes; the addresses come from dmd.views, so a page and the API never show different addresses.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dmd.auth.flows import actor_of
from dmd.errors import ApiError
from dmd.models import Node, PortMap
from dmd.pages import forms
from dmd.pages.render import current_identity, dm_of, flash
from dmd.schemas import PortMapIn, is_digits, parse_id
from dmd.usecases import gateway as gateway_uc
from dmd.usecases import instances as inst_uc
from dmd.usecases import nodes as node_uc
from dmd.usecases import port_maps as port_uc
from dmd.views import map_out, node_address, ssh_view

MAX_PORTS_TEXT = 2000
MAP_STATES = ("active", "waiting", "pending", "failed")
SSH_STATES = ("unknown", "ready", "no_server", "not_running", "disabled", "error")

# Refusals of a port map with their own words (err.portmap.<code>).
MAP_CODES = ("out_of_pool", "port_busy", "port_taken", "already_mapped", "pool_exhausted", "too_many_maps",
             "host_network", "deleting", "busy")


# --- reading the forms ----------------------------------------------------------------------

def port_number(value: Any) -> int | str | None:
    """A port field: empty is None, digits an int; anything else stays text so that
    validation names the field."""
    v = value.strip() if isinstance(value, str) else ""
    if not v:
        return None
    return int(v) if is_digits(v) and len(v) <= 6 else v


def map_body(data: Any) -> dict[str, Any]:
    """The JSON API's port map body (PortMapIn), from a form."""
    def text(name: str) -> str:
        v = data.get(name, "")
        return v if isinstance(v, str) else ""

    instance_port = port_number(text("instance_port"))
    return {"instance_port": 0 if instance_port is None else instance_port,
            "protocol": text("protocol").strip().lower() or "tcp",
            "host_port": port_number(text("host_port"))}


def validate_map(data: Any) -> PortMapIn:
    try:
        return forms.validate(PortMapIn, map_body(data))
    except forms.FormError as fe:
        key = {"instance_port": "err.portmap.instance_port", "host_port": "err.portmap.host_port",
               "protocol": "err.portmap.protocol"}.get(fe.field or "", "err.invalid")
        raise forms.FormError(422, key, fe.field) from None


def map_error(e: ApiError | forms.FormError, body: dict[str, Any], node: Node | None) -> forms.FormError:
    """A refused port map in the user's language; the field to mark is the form's."""
    if isinstance(e, forms.FormError):
        return e
    protocol = str(body.get("protocol") or "tcp")
    params: dict[str, Any] = {"protocol": protocol, "port": body.get("host_port") or "",
                              "instance_port": body.get("instance_port") or "",
                              "max": port_uc.MAX_MAPS_PER_INSTANCE,
                              "pool": port_uc.describe_pool(port_uc.pools_of(node).get(protocol) or [])
                              if node else "—"}
    if e.code in MAP_CODES:
        field = {"out_of_pool": "host_port", "port_busy": "host_port", "port_taken": "host_port",
                 "already_mapped": "instance_port"}.get(e.code)
        return forms.FormError(e.status, f"err.portmap.{e.code}", field, params)
    if e.field in ("instance_port", "host_port", "protocol"):
        return forms.FormError(e.status, f"err.portmap.{e.field}", e.field)
    return forms.from_api_error(e)


async def add_map(request: web.Request, instance_id: int, data: Any) -> PortMap:
    """The add-a-port-map form of either page, through the port_maps use case: what the user can fix comes
    back as a FormError in their language; 403/404 pass through (each page says those its way)."""
    ident = current_identity(request)
    b = validate_map(data)
    try:
        m, _ = await port_uc.add(dm_of(request), actor_of(request, ident), ident.user, instance_id, b.protocol,
                                 b.instance_port, b.host_port)
        return m
    except ApiError as e:
        if e.status in (403, 404):
            raise
        node = None
        with contextlib.suppress(ApiError):  # for the pool in the message; gone meanwhile: no pool
            node = await port_uc.node_of_instance(dm_of(request), ident.user, instance_id)
        raise map_error(e, map_body(data), node) from None


def kept_map(data: Any) -> dict[str, str]:
    out = {k: v[:20] if isinstance(v := data.get(k, ""), str) else "" for k in ("instance_port", "host_port")}
    proto = data.get("protocol", "tcp")
    out["protocol"] = proto if proto in port_uc.PROTOCOLS else "tcp"
    iid = data.get("instance_id", "")
    out["instance_id"] = iid[:20] if isinstance(iid, str) else ""
    return out


_PORT_TOKEN = re.compile(r"(?:([0-9]{1,6}):)?([0-9]{1,6})(?:/([A-Za-z]+))?")  # ASCII digits only


def parse_ports(text: str) -> list[dict[str, Any]]:
    """The create form's extra port maps: "8080/tcp, 53/udp, 20080:8080/tcp" (host port
    before a colon, protocol after a slash, tcp when left out), separated by commas or spaces.
    Anything else is refused with the piece that is wrong."""
    if len(text) > MAX_PORTS_TEXT:
        raise forms.FormError(422, "err.inst.ports_many", "port_maps", {"max": port_uc.MAX_MAPS_PER_INSTANCE})
    out: list[dict[str, Any]] = []
    seen: set[tuple[int, str]] = set()
    for token in (t for t in re.split(r"[,\s]+", text) if t):
        m = _PORT_TOKEN.fullmatch(token)
        if not m or (m.group(3) and m.group(3).lower() not in port_uc.PROTOCOLS):
            raise forms.FormError(422, "err.inst.ports_token", "port_maps", {"token": token[:40]})
        host = int(m.group(1)) if m.group(1) else None
        port = int(m.group(2))
        protocol = (m.group(3) or "tcp").lower()
        for p in (port, host):
            if p is not None and not 1 <= p <= 65535:
                raise forms.FormError(422, "err.inst.ports_range", "port_maps", {"port": p})
        if (port, protocol) in seen:
            raise forms.FormError(422, "err.inst.ports_twice", "port_maps", {"port": port, "protocol": protocol})
        seen.add((port, protocol))
        out.append({"instance_port": port, "protocol": protocol, "host_port": host})
        if len(out) > port_uc.MAX_MAPS_PER_INSTANCE:
            raise forms.FormError(422, "err.inst.ports_many", "port_maps", {"max": port_uc.MAX_MAPS_PER_INSTANCE})
    return out


def key_choice(data: Any) -> list[int] | None:
    """The keys chosen in a form: None for "all of my keys", else the ticked ids."""
    if data.get("ssh_keys", "all") != "chosen":
        return None
    ids: list[int] = []
    for v in data.getall("ssh_key_ids", []):
        key_id = parse_id(v)
        if key_id is None:
            raise forms.FormError(422, "err.ssh.keys", "ssh_key_ids")
        ids.append(key_id)
    return sorted(set(ids))


# --- what the pages show --------------------------------------------------------------------

def request_host(request: web.Request) -> str | None:
    """The host the browser used: the local node's address when it has no public one."""
    return request.url.host


@dataclass(frozen=True, slots=True)
class MapRow:
    m: PortMap
    address: str
    node_online: bool


def map_rows(request: web.Request, maps: list[PortMap], nodes: dict[int, Node]) -> list[MapRow]:
    host = request_host(request)
    hub = dm_of(request).hub
    rows = []
    for m in maps:
        node = nodes.get(m.node_id)
        address = node_address(node, host) if node else (host or "?")
        rows.append(MapRow(m, map_out(m, address).address, hub.is_online(m.node_id)))
    return rows


def pools_text(node: Node) -> dict[str, str]:
    return {p: port_uc.describe_pool(r) for p, r in port_uc.pools_of(node).items()}


def instance_context(request: web.Request, page: inst_uc.Page) -> dict[str, Any]:
    """The SSH card and the port maps card of an instance's page."""
    node, maps = page.node, page.maps
    ssh = ssh_view(page.instance, node, page.key_ids, maps, request_host(request)) if node else None
    return {
        "ssh": ssh,
        "gateway_command": gateway_uc.instance_command(dm_of(request), current_identity(request).user,
                                                       page.instance),
        "owner_keys": page.owner_keys,
        "map_rows": map_rows(request, maps, {node.id: node} if node else {}),
        "pools": pools_text(node) if node else {},
        "maps_signature": ",".join(f"{m.id}:{m.state}" for m in maps),
    }


async def flash_added(request: web.Request, m: PortMap) -> None:
    """Say where the new map is reached."""
    node = await node_uc.get(dm_of(request), m.node_id)
    row = map_rows(request, [m], {node.id: node})[0]
    await flash(request, "ok", "flash.port_map_added", name=m.instance_name or "", instance_port=m.instance_port,
                protocol=m.protocol, address=row.address)
