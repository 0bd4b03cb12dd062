"""The pages for reaching instances, without JavaScript: the port maps page (every map with the
address to connect to and its state; adding and deleting through forms; bad input shown again
with the user's values), an instance's SSH card (the exact ssh command, the ~/.ssh/config
block, each state said plainly, the key choice) and port maps card, and SSH and port maps on
the create form.

Most tests run against a scriptable agent (tests/nodes/helpers.FakeAgent) that says what the
node would say for each state, so every state the pages show is seen; one runs on the real
Docker Engine through the local node and sees the busybox image said to have no SSH server.
"""

from __future__ import annotations

import asyncio
import html as htmllib
import re
import subprocess
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from agent import protocol as p
from dmd.core import DM
from dmd.db.schema import port_maps
from dmd.queries import audit
from tests.conftest import add_user, make_token, share_node
from tests.instances.conftest import (  # noqa: F401 (fixtures)
    IMAGE,
    docker_test_image,
    instance,
    local,
    wait_for,
    wait_status,
)
from tests.instances.test_gpus_and_reconcile import GpuNode, gpu_node
from tests.pages.conftest import get_csrf, page_login, post_form

PUBLIC = "203.0.113.7"
POOL = (21000, 21009)
SSH_READY = {"state": "ready", "user": "dev", "message": None,
             "host_keys": [{"type": "ED25519", "fingerprint": "SHA256:hostkeyfingerprintAAAAAAAAAAAAAAAAAAAAAAAA"}]}
NO_SERVER = ("This image has no SSH server (sshd), so DM cannot let you in over SSH; the instance runs "
             "normally.")


def _main(html: str) -> str:
    return htmllib.unescape(html.split('<main id="main"', 1)[1].split("</main>", 1)[0])


def _raw_main(html: str) -> str:
    return html.split('<main id="main"', 1)[1].split("</main>", 1)[0]


def _values(html: str, form_action: str) -> dict[str, Any]:
    """The values of the form posting to `form_action`: inputs, the selected options, ticks."""
    m = re.search(rf'<form method="post" action="{re.escape(form_action)}"[^>]*>(.*?)</form>', html, re.S)
    assert m, f"no form posting to {form_action}"
    body = m.group(1)
    out: dict[str, Any] = {"checked": []}
    for i in re.finditer(r"<input ([^>]*)>", body):
        attrs = dict(re.findall(r'([a-z_-]+)="([^"]*)"', i.group(1)))
        if attrs.get("type") in ("checkbox", "radio"):
            if re.search(r"\schecked\b", i.group(1)):
                out["checked"].append((attrs["name"], attrs.get("value")))
        elif "name" in attrs and attrs["name"] != "csrf_token":
            out[attrs["name"]] = htmllib.unescape(attrs.get("value", ""))
    for s in re.finditer(r'<select [^>]*name="([^"]+)"[^>]*>(.*?)</select>', body, re.S):
        sel = re.search(r'<option value="([^"]*)"[^>]*\sselected', s.group(2))
        out[s.group(1)] = sel.group(1) if sel else ""
    return out


def _map_row(html: str, map_id: int) -> str:
    m = re.search(rf'<tr id="map-{map_id}" data-map-id="{map_id}">(.*?)</tr>', html, re.S)
    assert m, f"no row for map {map_id}"
    return htmllib.unescape(m.group(1))


class AccessNode(GpuNode):
    """A node whose agent answers SSH and port map requests as told: `ssh` is the SSH status it
    reports, `states` the state of each map id (default `default`)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.ssh: dict[str, Any] = {"state": "not_running", "user": None, "message": None, "host_keys": []}
        self.states: dict[int, str] = {}
        self.default = "active"
        self.applied: list[list[dict[str, Any]]] = []
        self.answers[p.INSTANCE_ACCESS] = lambda d: {"ssh": dict(self.ssh)}
        self.answers[p.PORTS_APPLY] = self._apply

    def _apply(self, data: dict[str, Any]) -> dict[str, Any]:
        self.applied.append(data["maps"])
        out: dict[str, Any] = {"mode": "proxy", "active": [], "waiting": [], "failed": [],
                               "listening": {"tcp": [], "udp": []}}
        for m in data["maps"]:
            state = self.states.get(m["id"], self.default)
            if state == "failed":
                out["failed"].append({"id": m["id"], "code": "bind_failed", "message": "cannot listen <here>"})
            elif state != "pending":
                out[state].append(m["id"])
        return out

    def facts(self) -> dict[str, Any]:
        return {"hostname": "edge", "cpu_count": 8, "memory_total_mb": 16000, "gpus": [],
                "public_address": PUBLIC, "ports": {"pools": {"tcp": [list(POOL)], "udp": [list(POOL)]},
                                                    "mode": "proxy"}}


async def access_node(client: Any, admin: dict[str, str], name: str = "edge") -> AccessNode:
    node: AccessNode = await gpu_node(client, admin, name, [], node_cls=AccessNode)
    return node


async def _settle(client: Any) -> None:
    await client.app[DM].reconciler.idle()


async def _make(client: Any, headers: dict[str, str], name: str, **extra: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/instances", headers=headers, json={"name": name, "image": "cuda:12", **extra})
    assert r.status == 201, await r.text()
    inst: dict[str, Any] = await r.json()
    await wait_status(client, headers, inst["id"], "running")
    await _settle(client)
    return await instance(client, headers, inst["id"])


def _keygen(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", str(path)],
                   check=True, capture_output=True, timeout=60)
    return (tmp_path / f"{name}.pub").read_text().strip()


async def _add_key(client: Any, headers: dict[str, str], tmp_path: Path, name: str) -> int:
    key = await asyncio.to_thread(_keygen, tmp_path, name)  # ssh-keygen, waited for off the loop
    r = await client.post("/api/v1/ssh-keys", headers=headers, json={"name": name, "public_key": key})
    assert r.status == 201, await r.text()
    return int((await r.json())["id"])


async def _actions(client: Any, prefix: str) -> list[str]:
    async with client.app[DM].db.read() as conn:
        return [e["action"] for e in await audit.list_entries(conn, limit=500, action=prefix)]


# --- the port maps page -------------------------------------------------------------------------

async def test_port_maps_page_lists_adds_and_deletes(client, admin):
    node = await access_node(client, admin)
    try:
        await page_login(client, "admin@example.org")
        # Nothing yet: the empty state, and the form offers nothing to map to.
        r = await client.get("/port-maps")
        main = _main(await r.text())
        assert r.status == 200 and "No port maps yet" in main and "You have no instance to map a port to" in main
        assert 'aria-current="page"' in await r.text() and "not available yet" not in main

        web = await _make(client, admin, "web")
        ssh_map = web["port_maps"][0]
        assert (ssh_map["instance_port"], ssh_map["protocol"], ssh_map["state"]) == (22, "tcp", "active")
        assert POOL[0] <= ssh_map["host_port"] <= POOL[1]

        # The list: instance (a link), node, protocol, host -> instance port, the address, the state.
        html = await (await client.get("/port-maps")).text()
        row = _map_row(html, ssh_map["id"])
        assert f'href="/instances/{web["id"]}"' in row and ">web<" in row and ">edge<" in row
        assert f"{ssh_map['host_port']}</span> <span aria-hidden=\"true\">→</span>" in row and ">22<" in row
        assert f"<code class=\"map-address\">{PUBLIC}:{ssh_map['host_port']}</code>" in row
        assert 'data-map-state="active"' in row and "Active" in row
        assert ">tcp<" in row
        assert f'action="/port-maps/{ssh_map["id"]}/delete"' in row and 'name="csrf_token"' in row

        # The add form: the instance, port, protocol, optional host port; the node's pool said.
        main = _main(html)
        assert f'<option value="{web["id"]}">web · edge</option>' in main
        assert f"edge: tcp {POOL[0]}-{POOL[1]} · udp {POOL[0]}-{POOL[1]}" in re.sub(r"<[^>]+>", "", main)

        # Good: a free port of the pool is picked, the page says where it is reached.
        r = await post_form(client, "/port-maps", {"instance_id": str(web["id"]), "instance_port": "8080",
                                                   "protocol": "tcp", "host_port": ""}, csrf_from="/port-maps")
        assert r.status == 303, await r.text()
        new_id = int(r.headers["Location"].split("#map-")[1])
        assert r.headers["Location"] == f"/port-maps#map-{new_id}"
        got = await (await client.get(f"/api/v1/port-maps/{new_id}", headers=admin)).json()
        html = await (await client.get("/port-maps")).text()
        assert f"Port 8080/tcp of web is reachable at {PUBLIC}:{got['host_port']}." in _main(html)
        assert 'data-map-state="active"' in _map_row(html, new_id)

        # A chosen host port and udp.
        r = await post_form(client, "/port-maps", {"instance_id": str(web["id"]), "instance_port": "53",
                                                   "protocol": "udp", "host_port": str(POOL[1])},
                            csrf_from="/port-maps")
        assert r.status == 303, await r.text()
        udp_id = int(r.headers["Location"].split("#map-")[1])
        row = _map_row(await (await client.get("/port-maps")).text(), udp_id)
        assert f"{PUBLIC}:{POOL[1]}" in row and ">udp<" in row and ">53<" in row

        # Bad input: the form again with the message and everything the user chose.
        taken = got["host_port"]
        cases = [
            ({"instance_port": "8081", "host_port": "80"}, 422,
             f"Host port 80 is not in the node's tcp pool ({POOL[0]}-{POOL[1]})", "host_port"),
            ({"instance_port": "0"}, 422, "The instance port must be a whole number from 1 to 65535", "instance_port"),
            ({"instance_port": "http"}, 422, "The instance port must be a whole number", "instance_port"),
            ({"instance_port": "70000"}, 422, "The instance port must be a whole number", "instance_port"),
            ({"instance_port": "9000", "host_port": "x1"}, 422, "The host port must be a whole number", "host_port"),
            ({"instance_port": "9000", "protocol": "sctp"}, 422, "Choose tcp or udp", "protocol"),
            ({"instance_port": "8080"}, 409, "Port 8080/tcp of this instance is already mapped", "instance_port"),
            ({"instance_port": "9000", "host_port": str(taken)}, 409,
             f"Host port {taken}/tcp of this node is already mapped", "host_port"),
            ({"instance_id": "", "instance_port": "9000"}, 422, "Choose one of your instances", "instance_id"),
        ]
        for fields, status, text, field in cases:
            data = {"instance_id": str(web["id"]), "protocol": "tcp", "host_port": "", **fields}
            r = await post_form(client, "/port-maps", data, csrf_from="/port-maps")
            html = await r.text()
            assert r.status == status, (fields, r.status, _main(html)[:2000])
            main = _main(html)
            assert text in main, (fields, text, main[:3000])
            kept = _values(html, "/port-maps")
            assert kept["instance_port"] == data["instance_port"][:20] and kept["host_port"] == data["host_port"]
            assert kept["instance_id"] == data["instance_id"]
            assert kept["protocol"] == (data["protocol"] if data["protocol"] in ("tcp", "udp") else "tcp")
            assert re.search(rf'id="f-{field}"[^>]*aria-invalid="true"', html), field
            assert "Traceback" not in html
        maps = (await (await client.get("/api/v1/port-maps", headers=admin)).json())["items"]
        assert len(maps) == 3

        # Without the CSRF token: refused, nothing changes.
        r = await client.post("/port-maps", data={"instance_id": str(web["id"]), "instance_port": "9001"},
                              allow_redirects=False)
        assert r.status == 403
        r = await client.post(f"/port-maps/{new_id}/delete", data={"csrf_token": "wrong"}, allow_redirects=False)
        assert r.status == 403
        assert len((await (await client.get("/api/v1/port-maps", headers=admin)).json())["items"]) == 3

        # Delete: back to the page given (only a local one), the map gone, its port free again.
        r = await post_form(client, f"/port-maps/{new_id}/delete", {"next": "/port-maps"}, csrf_from="/port-maps")
        assert r.status == 303 and r.headers["Location"] == "/port-maps"
        html = await (await client.get("/port-maps")).text()
        assert f"Host port {taken} no longer leads to 8080/tcp of web." in _main(html)
        assert f'id="map-{new_id}"' not in html
        assert (await client.get(f"/api/v1/port-maps/{new_id}", headers=admin)).status == 404
        r = await post_form(client, f"/port-maps/{udp_id}/delete", {"next": "https://evil.example/"},
                            csrf_from="/port-maps")
        assert r.status == 303 and r.headers["Location"] == "/port-maps"
        r = await post_form(client, f"/port-maps/{udp_id}/delete", {}, csrf_from="/port-maps")
        assert r.status == 404 and "Page not found" in await r.text()
        assert [m["id"] for m in node.applied[-1]] == [ssh_map["id"]]  # the agent was told
        assert await _actions(client, "port_map.") == ["port_map.delete", "port_map.delete", "port_map.create",
                                                       "port_map.create"]
    finally:
        await node.close()


async def test_port_map_states_are_said_plainly(client, admin):
    node = await access_node(client, admin)
    try:
        await page_login(client, "admin@example.org")
        node.states = {}
        node.default = "waiting"
        web = await _make(client, admin, "web", port_maps=[{"instance_port": 80}, {"instance_port": 81}])
        ids = {m["instance_port"]: m["id"] for m in web["port_maps"]}
        node.states = {ids[22]: "active", ids[80]: "failed", ids[81]: "waiting"}
        client.app[DM].reconciler.kick(node.node_id)
        await _settle(client)
        html = await (await client.get("/port-maps")).text()
        assert 'data-map-state="active"' in _map_row(html, ids[22])
        row = _map_row(html, ids[80])
        assert 'data-map-state="failed"' in row and "Failed" in row and "bind_failed: cannot listen <here>" in row
        assert "cannot listen <here>" not in _raw_main(html)  # escaped
        row = _map_row(html, ids[81])
        assert 'data-map-state="waiting"' in row and "It forwards once the instance runs." in row

        # The node goes away: its maps wait for it (pending), and the page says it is offline.
        await node.close()
        async def offline() -> bool:
            return (await (await client.get(f"/api/v1/nodes/{node.node_id}", headers=admin)).json())["status"] \
                == "offline"
        await wait_for(offline, "the node offline")
        async with client.app[DM].db.begin() as conn:
            await conn.execute(sa.update(port_maps).where(port_maps.c.id == ids[81]).values(state="pending"))
        html = await (await client.get("/port-maps")).text()
        row = _map_row(html, ids[81])
        assert 'data-map-state="pending"' in row and "Pending" in row and "The node is offline" in row
        assert "Offline" in row
        # The instance's page shows the same rows.
        html = await (await client.get(f"/instances/{web['id']}")).text()
        assert "The node is offline" in _map_row(html, ids[81]) and "bind_failed" in _map_row(html, ids[80])
    finally:
        await node.close()


async def test_other_users_maps_are_not_found(client, admin):
    node = await access_node(client, admin)
    try:
        await add_user(client, "alice@example.org", username="alice")
        alice = await make_token(client, "alice@example.org")
        await share_node(client, node.node_id, "alice", admin)
        images = await (await client.get(f"/api/v1/nodes/{node.node_id}/images", headers=admin)).json()
        r = await client.patch(f"/api/v1/images/{images[0]['id']}", headers=admin, json={"public": True})
        assert r.status == 200, await r.text()
        theirs = await _make(client, admin, "admins-box")
        mine = await _make(client, alice, "alices-box")

        await page_login(client, "alice@example.org")
        html = await (await client.get("/port-maps")).text()
        main = _main(html)
        assert "alices-box" in main and "admins-box" not in main and "Owner" not in main
        assert f'<option value="{theirs["id"]}"' not in main
        token = await get_csrf(client, "/port-maps")
        r = await client.post("/port-maps", data={"csrf_token": token, "instance_id": str(theirs["id"]),
                                                  "instance_port": "8080", "protocol": "tcp", "host_port": ""},
                              allow_redirects=False)
        html = await r.text()
        assert r.status == 404 and "There is no such instance of yours" in _main(html)
        assert _values(html, "/port-maps")["instance_port"] == "8080"
        their_map = theirs["port_maps"][0]["id"]
        for path, data in ((f"/port-maps/{their_map}/delete", {}),
                           (f"/instances/{theirs['id']}/port-maps", {"instance_port": "8080"}),
                           (f"/instances/{theirs['id']}/ssh", {"enabled": "on", "ssh_keys": "all"}),
                           ("/port-maps/abc/delete", {})):
            r = await client.post(path, data={"csrf_token": token, **data}, allow_redirects=False)
            assert r.status == 404, path
        assert len((await (await client.get("/api/v1/port-maps", headers=admin)).json())["items"]) == 2

        # The administrator sees every map, with its owner, and may choose any instance.
        await client.post("/logout", data={"csrf_token": token})
        await page_login(client, "admin@example.org")
        html = await (await client.get("/port-maps")).text()
        row = _map_row(html, mine["port_maps"][0]["id"])
        assert "alices-box" in row and ">alice<" in row
        assert f'<option value="{mine["id"]}">alices-box · edge (alice)</option>' in html
    finally:
        await node.close()


# --- an instance's page: SSH and port maps ------------------------------------------------------

async def test_instance_page_ssh_card_and_key_choice(client, admin, tmp_path):
    node = await access_node(client, admin)
    try:
        k1 = await _add_key(client, admin, tmp_path, "laptop")
        k2 = await _add_key(client, admin, tmp_path, "desktop")
        await page_login(client, "admin@example.org")
        node.ssh = dict(SSH_READY)
        web = await _make(client, admin, "web")
        port = web["ssh"]["port"]
        assert web["ssh"]["state"] == "ready" and port == web["port_maps"][0]["host_port"]

        html = await (await client.get(f"/instances/{web['id']}")).text()
        main = _main(html)
        command = f"ssh -p {port} dev@{PUBLIC}"
        assert f'<code class="secret secret-plain ssh-command" id="ssh-command">{command}</code>' in main
        assert web["ssh"]["command"] == command  # the same as the API's
        config = f"Host web\n    HostName {PUBLIC}\n    Port {port}\n    User dev\n"
        assert web["ssh"]["config"] == config  # the same as the API's
        assert f'<pre class="code-block" id="ssh-config" tabindex="0">{config.strip()}</pre>' in main
        assert 'data-copy="ssh-command"' in main and 'data-copy="ssh-config"' in main
        assert "Login user" in main and "<code>dev</code>" in main
        assert "SHA256:hostkeyfingerprintAAAA" in main and "ED25519" in main
        assert 'data-ssh-state="ready"' in main and "Ready" in main
        assert "add this to ~/.ssh/config, then log in with: ssh web".lower() in main.lower()
        # The key choice: all of my keys (following additions).
        kept = _values(html, f"/instances/{web['id']}/ssh")
        assert ("enabled", "on") in kept["checked"] and ("ssh_keys", "all") in kept["checked"]
        assert "laptop" in main and "desktop" in main

        # Choose one key: the instance holds only it; the agent is told.
        r = await post_form(client, f"/instances/{web['id']}/ssh",
                            {"enabled": "on", "ssh_keys": "chosen", "ssh_key_ids": str(k2)},
                            csrf_from=f"/instances/{web['id']}")
        assert r.status == 303 and r.headers["Location"] == f"/instances/{web['id']}#ssh"
        got = (await instance(client, admin, web["id"]))["ssh"]
        assert got["keys_all"] is False and got["key_ids"] == [k2] and got["enabled"] is True
        html = await (await client.get(f"/instances/{web['id']}")).text()
        assert "SSH settings of web saved" in _main(html)
        kept = _values(html, f"/instances/{web['id']}/ssh")
        assert ("ssh_keys", "chosen") in kept["checked"] and ("ssh_key_ids", str(k2)) in kept["checked"]
        assert ("ssh_key_ids", str(k1)) not in kept["checked"]
        await _settle(client)
        sent = [e.data for e in node.received if e.type == p.INSTANCE_ACCESS]
        assert sent and len(sent[-1]["ssh"]["keys"]) == 1 and "desktop@test" in sent[-1]["ssh"]["keys"][0]

        # All keys again (a key added later goes in too).
        r = await post_form(client, f"/instances/{web['id']}/ssh", {"enabled": "on", "ssh_keys": "all"},
                            csrf_from=f"/instances/{web['id']}")
        assert r.status == 303
        got = (await instance(client, admin, web["id"]))["ssh"]
        assert got["keys_all"] is True and got["key_ids"] == sorted([k1, k2])

        # A key that is not the owner's: the form again, the choice kept.
        r = await post_form(client, f"/instances/{web['id']}/ssh",
                            {"enabled": "on", "ssh_keys": "chosen", "ssh_key_ids": "999999"},
                            csrf_from=f"/instances/{web['id']}")
        html = await r.text()
        assert r.status == 422 and "Choose among your own SSH keys." in _main(html)
        assert ("ssh_keys", "chosen") in _values(html, f"/instances/{web['id']}/ssh")["checked"]
        r = await post_form(client, f"/instances/{web['id']}/ssh", {"enabled": "on", "ssh_keys": "chosen",
                                                                     "ssh_key_ids": "x"},
                            csrf_from=f"/instances/{web['id']}")
        assert r.status == 422 and "Choose among your own SSH keys." in _main(await r.text())
        assert (await instance(client, admin, web["id"]))["ssh"]["keys_all"] is True

        # Off: no command, said plainly; on again.
        r = await post_form(client, f"/instances/{web['id']}/ssh", {"ssh_keys": "all"},
                            csrf_from=f"/instances/{web['id']}")
        assert r.status == 303
        assert (await instance(client, admin, web["id"]))["ssh"]["enabled"] is False
        main = _main(await (await client.get(f"/instances/{web['id']}")).text())
        assert "SSH is off for web" in main and "SSH is off for this instance" in main
        assert 'id="ssh-command"' not in main
        r = await post_form(client, f"/instances/{web['id']}/ssh", {"enabled": "on", "ssh_keys": "all"},
                            csrf_from=f"/instances/{web['id']}")
        assert r.status == 303 and (await instance(client, admin, web["id"]))["ssh"]["enabled"] is True
        r = await client.post(f"/instances/{web['id']}/ssh", data={"ssh_keys": "all"}, allow_redirects=False)
        assert r.status == 403 and (await instance(client, admin, web["id"]))["ssh"]["enabled"] is True

        # Each state the node may report, said plainly.
        states = [
            ({"state": "no_server"}, NO_SERVER),
            ({"state": "error", "message": "sshd exited <1>"}, "SSH could not be set up: sshd exited <1>"),
            ({"state": "not_running"}, "The instance is not running. SSH is set up when it runs."),
        ]
        for status, text in states:
            node.ssh = {"user": None, "message": None, "host_keys": [], **status}
            client.app[DM].reconciler.kick(node.node_id)
            await _settle(client)
            html = await (await client.get(f"/instances/{web['id']}")).text()
            main = _main(html)
            assert text in main, (status, main[:4000])
            assert f'data-ssh-state="{status["state"]}"' in main
            assert "sshd exited <1>" not in _raw_main(html)
            if status["state"] == "no_server":
                assert 'id="ssh-command"' not in main  # no command that cannot work
            else:
                assert 'id="ssh-command"' in main
        async with client.app[DM].db.begin() as conn:
            from dmd.queries import instance_access

            await instance_access.set_status(conn, web["id"], None)
        main = _main(await (await client.get(f"/instances/{web['id']}")).text())
        assert "Waiting for the node to set up SSH" in main and 'data-ssh-state="unknown"' in main
    finally:
        await node.close()


async def test_instance_page_port_maps_card(client, admin):
    node = await access_node(client, admin)
    try:
        await page_login(client, "admin@example.org")
        web = await _make(client, admin, "web", ssh=False)
        iid = web["id"]
        assert web["port_maps"] == [] and web["ssh"]["enabled"] is False
        html = await (await client.get(f"/instances/{iid}")).text()
        main = _main(html)
        assert "No port of this instance is mapped." in main and "SSH is off for this instance" in main
        assert f"Pool of edge: tcp {POOL[0]}-{POOL[1]} · udp {POOL[0]}-{POOL[1]}" in re.sub(r"<[^>]+>", "", main)

        # Add from the instance's page: back to its port maps.
        r = await post_form(client, f"/instances/{iid}/port-maps", {"instance_port": "8080", "protocol": "tcp",
                                                                    "host_port": ""}, csrf_from=f"/instances/{iid}")
        assert r.status == 303 and r.headers["Location"] == f"/instances/{iid}#port-maps"
        maps = (await instance(client, admin, iid))["port_maps"]
        assert [(m["instance_port"], m["protocol"]) for m in maps] == [(8080, "tcp")]
        html = await (await client.get(f"/instances/{iid}")).text()
        row = _map_row(html, maps[0]["id"])
        assert f"{PUBLIC}:{maps[0]['host_port']}" in row and 'data-map-state="active"' in row
        assert f"reachable at {PUBLIC}:{maps[0]['host_port']}" in _main(html)
        assert "web" not in row  # no instance column here
        assert f'data-maps="{maps[0]["id"]}:active"' in html  # dm.js reloads when this changes

        # Bad input: the instance's page again, with the message in the port maps card and the input kept.
        for fields, status, text in (
            ({"instance_port": "0"}, 422, "The instance port must be a whole number from 1 to 65535"),
            ({"instance_port": "9000", "host_port": "80"}, 422, "Host port 80 is not in the node's tcp pool"),
            ({"instance_port": "8080"}, 409, "Port 8080/tcp of this instance is already mapped"),
        ):
            data = {"protocol": "tcp", "host_port": "", **fields}
            r = await post_form(client, f"/instances/{iid}/port-maps", data, csrf_from=f"/instances/{iid}")
            html = await r.text()
            assert r.status == status, (fields, r.status)
            card = _main(html).split('id="port-maps"', 1)[1]
            assert text in card, (fields, card[:2000])
            kept = _values(html, f"/instances/{iid}/port-maps")
            assert kept["instance_port"] == data["instance_port"] and kept["host_port"] == data["host_port"]

        # SSH on maps port 22 by itself; with that map deleted, the page says so and offers a
        # button to map it again; then the command appears.
        r = await post_form(client, f"/instances/{iid}/ssh", {"enabled": "on", "ssh_keys": "all"},
                            csrf_from=f"/instances/{iid}")
        assert r.status == 303
        (ssh_map,) = [m for m in (await instance(client, admin, iid))["port_maps"] if m["instance_port"] == 22]
        assert (await client.delete(f"/api/v1/port-maps/{ssh_map['id']}", headers=admin)).status == 204
        node.ssh = dict(SSH_READY)
        client.app[DM].reconciler.kick(node.node_id)
        await _settle(client)
        main = _main(await (await client.get(f"/instances/{iid}")).text())
        assert "Port 22 of this instance is not mapped" in main and "Map port 22" in main
        r = await post_form(client, f"/instances/{iid}/port-maps", {"instance_port": "22", "protocol": "tcp"},
                            csrf_from=f"/instances/{iid}")
        assert r.status == 303
        got = await instance(client, admin, iid)
        main = _main(await (await client.get(f"/instances/{iid}")).text())
        assert got["ssh"]["command"] and f">{got['ssh']['command']}</code>" in main

        # Delete from the instance's page: back there.
        r = await post_form(client, f"/port-maps/{maps[0]['id']}/delete", {"next": f"/instances/{iid}#port-maps"},
                            csrf_from=f"/instances/{iid}")
        assert r.status == 303 and r.headers["Location"] == f"/instances/{iid}#port-maps"
        assert [m["instance_port"] for m in (await instance(client, admin, iid))["port_maps"]] == [22]
    finally:
        await node.close()


# --- the create form ----------------------------------------------------------------------------

async def _create(client: Any, **fields: Any) -> Any:
    data = {"name": "", "image": "cuda:12", "node": "auto", "cpus": "", "memory_mb": "", "gpus": "0", "env": "",
            "command": "", "ssh": "on", "ssh_keys": "all", "port_maps": ""}
    data.update(fields)
    data = {k: v for k, v in data.items() if v is not None}
    return await post_form(client, "/instances", data, csrf_from="/instances/new")


async def test_create_form_ssh_and_port_maps(client, admin, tmp_path):
    node = await access_node(client, admin)
    try:
        k1 = await _add_key(client, admin, tmp_path, "laptop")
        await _add_key(client, admin, tmp_path, "desktop")
        await page_login(client, "admin@example.org")
        html = await (await client.get("/instances/new")).text()
        kept = _values(html, "/instances")
        assert ("ssh", "on") in kept["checked"] and ("ssh_keys", "all") in kept["checked"]
        assert kept["port_maps"] == "" and "laptop" in html and "desktop" in html
        assert f"edge: tcp {POOL[0]}-{POOL[1]}" in re.sub(r"<[^>]+>", "", _raw_main(html))

        # Bad port maps: said plainly, everything kept (SSH unticked stays unticked).
        cases = [
            ("8080/sctp", 422, 'Port maps: "8080/sctp" is not understood'),
            ("http", 422, 'Port maps: "http" is not understood'),
            ("8080;53", 422, 'Port maps: "8080;53" is not understood'),
            ("70000/tcp", 422, "Port maps: 70000 is not a port; use 1 to 65535."),
            ("0", 422, "Port maps: 0 is not a port"),
            ("8080, 8080/tcp", 422, "Port maps: 8080/tcp is listed twice."),
            ("80:8080", 422, "A port map cannot be made: host_port: 80 is not in node edge's tcp pool"),
        ]
        for text, status, message in cases:
            r = await _create(client, name="web", ssh=None, ssh_keys="chosen", ssh_key_ids=str(k1), port_maps=text)
            html = await r.text()
            assert r.status == status, (text, r.status, _main(html)[:2000])
            assert message in _main(html), (text, _main(html)[:3000])
            kept = _values(html, "/instances")
            assert kept["port_maps"] == text and kept["name"] == "web"
            assert ("ssh", "on") not in kept["checked"] and ("ssh_keys", "chosen") in kept["checked"]
            assert ("ssh_key_ids", str(k1)) in kept["checked"]
            assert 'id="f-port_maps"' in html and re.search(r'id="f-port_maps"[^>]*aria-invalid="true"', html)
        r = await _create(client, name="web", ssh_keys="chosen", ssh_key_ids="12345")
        assert r.status == 422 and "Choose among your own SSH keys." in _main(await r.text())
        assert (await (await client.get("/api/v1/instances", headers=admin)).json())["items"] == []

        # Good: SSH with one chosen key, and two more ports, one with its host port.
        r = await _create(client, name="web", ssh_keys="chosen", ssh_key_ids=str(k1),
                          port_maps=f" 8080/tcp,53/UDP  {POOL[1]}:9000 ")
        assert r.status == 303, _main(await r.text())[:3000]
        iid = int(r.headers["Location"].rsplit("/", 1)[1])
        got = await wait_status(client, admin, iid, "running")
        assert got["ssh"]["enabled"] is True and got["ssh"]["keys_all"] is False and got["ssh"]["key_ids"] == [k1]
        assert sorted((m["instance_port"], m["protocol"]) for m in got["port_maps"]) == [
            (22, "tcp"), (53, "udp"), (8080, "tcp"), (9000, "tcp")]
        assert next(m for m in got["port_maps"] if m["instance_port"] == 9000)["host_port"] == POOL[1]

        # Without SSH: no port 22, nothing to log in to.
        r = await _create(client, name="quiet", ssh=None)
        assert r.status == 303
        got = await instance(client, admin, int(r.headers["Location"].rsplit("/", 1)[1]))
        assert got["ssh"]["enabled"] is False and got["port_maps"] == []
    finally:
        await node.close()


async def test_japanese(client, admin):
    node = await access_node(client, admin)
    try:
        await page_login(client, "admin@example.org")
        web = await _make(client, admin, "web")
        headers = {"Accept-Language": "ja"}
        main = _main(await (await client.get("/port-maps", headers=headers)).text())
        for text in ("ポートマップ", "接続先", "ポートマップを追加", "有効"):
            assert text in main, text
        main = _main(await (await client.get(f"/instances/{web['id']}", headers=headers)).text())
        for text in ("SSH 接続", "入れる鍵", "~/.ssh/config 用"):
            assert text in main, text
        main = _main(await (await client.get("/instances/new", headers=headers)).text())
        assert "SSH でログインする" in main and "外部から到達するその他のポート" in main
    finally:
        await node.close()


# --- the real Docker Engine: busybox has no sshd --------------------------------------------------

async def test_busybox_has_no_ssh_server(client, admin, local):  # noqa: F811
    await page_login(client, "admin@example.org")
    r = await post_form(client, "/instances", {"name": "plain", "image": IMAGE, "node": "auto", "gpus": "0",
                                               "command": "sleep\n3600", "ssh": "on", "ssh_keys": "all",
                                               "port_maps": "8080/tcp"}, csrf_from="/instances/new")
    assert r.status == 303, _main(await r.text())[:3000]
    iid = int(r.headers["Location"].rsplit("/", 1)[1])
    await wait_status(client, admin, iid, "running")

    async def reported() -> dict[str, Any] | None:
        got = await instance(client, admin, iid)
        return got if got["ssh"]["state"] not in ("unknown", "not_running") else None

    try:
        got = await wait_for(reported, "the node's word on SSH", 60)
    except AssertionError as e:
        raise AssertionError(f"{e}: {await instance(client, admin, iid)}") from None
    assert got["ssh"]["state"] == "no_server", got["ssh"]
    html = await (await client.get(f"/instances/{iid}")).text()
    main = _main(html)
    assert NO_SERVER in main and 'id="ssh-command"' not in main
    # Its maps, with the address the browser used (the local node has no public address).
    for m in got["port_maps"]:
        row = _map_row(html, m["id"])
        assert f"127.0.0.1:{m['host_port']}" in row and m["address"] in row
    main = _main(await (await client.get("/port-maps")).text())
    assert "plain" in main and str(got["port_maps"][0]["host_port"]) in main
