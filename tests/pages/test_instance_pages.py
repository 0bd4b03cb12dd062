"""The instance pages, without JavaScript, on the real Docker Engine through the in-process
local node: the list, the create form (free CPU, memory and GPUs per node; bad input shown
again with the user's values), an instance's page with its status, escaped logs and actions,
stop / start / restart / delete, commit, and who may see what. GPUs come from fake agents
with the GPUs of a real nvidia-smi."""

from __future__ import annotations

import html as htmllib
import re
import secrets
from typing import Any

import aiodocker
import pytest

from dmd.core import DM
from dmd.queries import audit
from tests.conftest import add_user, make_token, share_node
from tests.images.conftest import made  # noqa: F401 (fixture)
from tests.instances.conftest import (  # noqa: F401 (fixtures)
    IMAGE,
    docker,
    docker_test_image,
    local,
    wait_for,
    wait_status,
)
from tests.instances.test_gpus_and_reconcile import a5000_gpus, gpu_node
from tests.pages.conftest import csrf_of, get_csrf, page_login, post_form

XSS = "<script>alert(1)</script>"


def _main(html: str) -> str:
    return html.split('<main id="main"', 1)[1].split("</main>", 1)[0]


def _form_values(html: str) -> dict[str, str]:
    """name -> value of the text inputs, the textareas and the selected options of a page."""
    out: dict[str, str] = {}
    for m in re.finditer(r'<input id="f-[^"]*" name="([^"]+)" type="(?:text|number)" value="([^"]*)"', html):
        out[m.group(1)] = htmllib.unescape(m.group(2))
    for m in re.finditer(r'<textarea id="f-[^"]*" name="([^"]+)"[^>]*>(.*?)</textarea>', html, re.S):
        out[m.group(1)] = htmllib.unescape(m.group(2))
    for m in re.finditer(r'<select id="f-[^"]*" name="([^"]+)"[^>]*>(.*?)</select>', html, re.S):
        sel = re.search(r'<option value="([^"]*)"[^>]*\sselected', m.group(2))
        out[m.group(1)] = htmllib.unescape(sel.group(1)) if sel else ""
    return out


async def _actions(client, prefix: str) -> list[str]:
    async with client.app[DM].db.read() as conn:
        return [e["action"] for e in await audit.list_entries(conn, limit=500, action=prefix)]


async def _create(client, **fields: str) -> Any:
    data = {"name": "", "image": IMAGE, "node": "auto", "cpus": "", "memory_mb": "", "gpus": "0", "env": "",
            "command": ""}
    data.update(fields)
    return await post_form(client, "/instances", data, csrf_from="/instances/new")


async def _gone(client, headers, iid: int) -> None:
    async def gone() -> bool:
        return (await client.get(f"/api/v1/instances/{iid}", headers=headers)).status == 404

    await wait_for(gone, f"instance {iid} gone", 30)


# --- the whole life of an instance, through the pages ----------------------------------------

async def test_create_run_stop_start_restart_delete(client, admin, local, docker):  # noqa: F811
    await page_login(client, "admin@example.org")

    r = await client.get("/instances")
    main = _main(await r.text())
    assert r.status == 200 and "No instances yet" in main and 'href="/instances/new"' in main
    assert 'aria-current="page"' in await r.text()

    # The form: the local node with its free CPU and memory, the busybox image under it,
    # and (an administrator) the privileged / host network boxes with their warning.
    r = await client.get("/instances/new")
    html = await r.text()
    main = _main(html)
    assert r.status == 200
    assert f'<option value="{IMAGE}">{IMAGE}</option>' in main
    row = re.search(rf'<tr class="" data-node-id="{local["id"]}">(.*?)</tr>', main, re.S)
    assert row, main
    assert "Online" in row.group(1) and re.search(r"\d+(\.\d+)? <span class=\"muted small\">/ \d+", row.group(1))
    assert "GiB" in row.group(1) and "none" in row.group(1)  # memory free; no GPUs here
    assert 'name="privileged"' in main and 'name="host_network"' in main and "power over the whole node" in main
    assert 'name="command"' in main and "One argument per line" in main

    # Without the CSRF field: refused, nothing made.
    r = await client.post("/instances", data={"name": "x", "image": IMAGE}, allow_redirects=False)
    assert r.status == 403
    assert (await (await client.get("/api/v1/instances", headers=admin)).json())["items"] == []

    # Bad input comes back with the message and everything the user typed.
    cases = [
        ({"name": "bad name!"}, 422, "Instance names use"),
        ({"name": "web", "env": "GREETING=hi\nNOEQUALS"}, 422, "line 2"),
        ({"name": "web", "env": "1BAD=x"}, 422, "KEY=VALUE"),
        ({"name": "web", "cpus": "lots"}, 422, "CPUs must be a number"),
        ({"name": "web", "memory_mb": "3"}, 422, "Memory must be"),
        ({"name": "web", "gpus": "-1"}, 422, "GPUs must be"),
        ({"name": "web", "image": ""}, 422, "Choose an image"),
        ({"name": "web", "cpus": "1000"}, 409, "No node can take this instance"),
        ({"name": "web", "node": "999"}, 422, "Choose a node you may use"),
        ({"name": "web", "gpus": "1"}, 409, "0 of 0 GPUs free"),
    ]
    for fields, status, text in cases:
        r = await _create(client, command="sh\n-c\necho 'a  b'", **fields)
        html = await r.text()
        assert r.status == status, (fields, r.status, _main(html)[:3000])
        assert text in htmllib.unescape(html), (fields, text)
        kept = _form_values(html)
        assert kept["name"] == fields["name"] and kept["command"] == "sh\n-c\necho 'a  b'", kept
        if "env" in fields:
            assert kept["env"] == fields["env"]
        if fields.get("image", IMAGE):
            assert kept["image"] == IMAGE
    assert (await (await client.get("/api/v1/instances", headers=admin)).json())["items"] == []

    # A good one: the command is one argument per line, never a shell string.
    r = await _create(client, name="web", cpus="0.5", memory_mb="64", env="GREETING=hi\r\nEMPTY=\r\n",
                      command=f"sh\n-c\necho 'hello {XSS}'; echo \"$GREETING\"; exec sleep 3600\n")
    assert r.status == 303, await r.text()
    iid = int(r.headers["Location"].rsplit("/", 1)[1])
    r = await client.get(f"/instances/{iid}")
    html = await r.text()
    assert r.status == 200 and "The instance web has been created" in html
    assert f'data-instance-url="/api/v1/instances/{iid}"' in html  # dm.js polls this
    assert "Refresh to see the current status" in html  # the no-JS way

    inst = await wait_status(client, admin, iid, "running")
    assert inst["cpus"] == 0.5 and inst["memory_mb"] == 64 and inst["env"] == {"GREETING": "hi", "EMPTY": ""}
    assert inst["command"] == ["sh", "-c", f"echo 'hello {XSS}'; echo \"$GREETING\"; exec sleep 3600"]
    # (By its id: other DM installations may share this engine, with the same instance ids.)
    container = await docker.containers.get(inst["container_id"])
    assert container["HostConfig"]["NanoCpus"] == 500_000_000

    # Its page: running, the logs escaped, the actions, the commit form.
    async def logs_shown() -> str | None:
        page = await (await client.get(f"/instances/{iid}")).text()
        return page if "hello &lt;script&gt;alert(1)&lt;/script&gt;" in page else None

    html = await wait_for(logs_shown, "the log line on the page", 20)
    main = _main(html)
    assert XSS not in html and "<script>alert" not in html
    assert re.search(r'<pre class="logs" id="logs-text"[^>]*>hello &lt;script&gt;alert\(1\)&lt;/script&gt;\nhi\n',
                     main), main
    assert 'data-inst-status="running"' in main and "Running" in main
    for action in ("stop", "restart"):
        assert f'action="/instances/{iid}/{action}"' in main
    assert f'action="/instances/{iid}/start"' not in main
    assert f'href="/instances/{iid}/delete"' in main and f'action="/instances/{iid}/commit"' in main
    assert "<code>GREETING=hi</code>" in main and "<li><code>-c</code></li>" in main
    assert "This instance holds no GPUs." in main
    assert 'id="logs-follow"' in main and "hidden" in main.split('id="logs-follow"')[1].split(">")[0]

    # The list: the row links to it, with node, image, status and resources.
    main = _main(await (await client.get("/instances")).text())
    row = re.search(rf'<tr data-instance-id="{iid}"[^>]*>(.*?)</tr>', main, re.S)
    assert row and f'href="/instances/{iid}"' in row.group(1) and IMAGE in row.group(1)
    assert "Running" in row.group(1) and "0.5 CPUs" in row.group(1) and "64 MiB" in row.group(1)
    assert f'href="/nodes/{local["id"]}"' in row.group(1)

    # Stop, start, restart: each a POST that redirects back with a message.
    r = await post_form(client, f"/instances/{iid}/stop", {}, csrf_from=f"/instances/{iid}")
    assert r.status == 303 and r.headers["Location"] == f"/instances/{iid}"
    await wait_status(client, admin, iid, "stopped")
    main = _main(await (await client.get(f"/instances/{iid}")).text())
    assert "is stopping" in main and f'action="/instances/{iid}/start"' in main
    assert f'action="/instances/{iid}/stop"' not in main and 'data-inst-status="stopped"' in main
    r = await post_form(client, f"/instances/{iid}/start", {}, csrf_from=f"/instances/{iid}")
    assert r.status == 303
    await wait_status(client, admin, iid, "running")
    r = await post_form(client, f"/instances/{iid}/restart", {}, csrf_from=f"/instances/{iid}")
    assert r.status == 303
    assert "has been restarted" in await (await client.get(f"/instances/{iid}")).text()
    r = await client.post(f"/instances/{iid}/stop", data={"csrf_token": "wrong"}, allow_redirects=False)
    assert r.status == 403

    # Delete: a confirmation page first, then the container goes.
    r = await client.get(f"/instances/{iid}/delete")
    main = _main(await r.text())
    assert r.status == 200 and "Delete web?" in main and f'action="/instances/{iid}/delete"' in main
    assert IMAGE in main
    r = await post_form(client, f"/instances/{iid}/delete", {}, csrf_from=f"/instances/{iid}")
    assert r.status == 303 and r.headers["Location"] == "/instances"
    html = await (await client.get("/instances")).text()
    assert "The instance web is being deleted" in html
    await _gone(client, admin, iid)
    with pytest.raises(aiodocker.DockerError):
        await docker.containers.get(inst["container_id"])
    assert (await client.get(f"/instances/{iid}")).status == 404
    assert await _actions(client, "instance.") == [
        "instance.delete", "instance.restart", "instance.start", "instance.stop", "instance.create"]


async def test_commit_to_an_image(client, admin, local, docker, made):  # noqa: F811
    await page_login(client, "admin@example.org")
    r = await _create(client, name="saver", command="sh\n-c\necho saved > /etc/saved; exec sleep 3600")
    assert r.status == 303, await r.text()
    iid = int(r.headers["Location"].rsplit("/", 1)[1])
    await wait_status(client, admin, iid, "running")

    r = await post_form(client, f"/instances/{iid}/commit", {"repository": "Not Valid", "tag": "v1"},
                        csrf_from=f"/instances/{iid}")
    html = await r.text()
    assert r.status == 422 and "Repositories use lower-case letters" in html
    assert _form_values(html)["repository"] == "Not Valid" and _form_values(html)["tag"] == "v1"

    repo = f"dm-test/page-commit-{secrets.token_hex(3)}"
    made.append(f"{repo}:v1")
    r = await post_form(client, f"/instances/{iid}/commit", {"repository": repo, "tag": "v1"},
                        csrf_from=f"/instances/{iid}")
    assert r.status == 303, await r.text()
    image_id = int(r.headers["Location"].split("#image-")[1])
    html = await (await client.get("/images")).text()
    assert f"Saved as the image {repo}:v1." in html and f'id="image-{image_id}"' in html
    await docker.images.inspect(f"{repo}:v1")


# --- who sees what ------------------------------------------------------------------------------

async def test_other_users_instances_are_not_found(client, admin, local):  # noqa: F811
    alice_id = await add_user(client, "alice@example.org", username="alice")
    alice = await make_token(client, "alice@example.org")
    # Alice may use the local node and the busybox image.
    await share_node(client, local["id"], "alice", admin)
    r = await client.patch(f"/api/v1/images/{local['image_id']}", headers=admin, json={"public": True})
    assert r.status == 200
    r = await client.post("/api/v1/instances", headers=admin, json={
        "name": "admins-box", "image": IMAGE, "command": ["sleep", "3600"]})
    theirs = (await r.json())["id"]
    r = await client.post("/api/v1/instances", headers=alice, json={
        "name": "alices-box", "image": IMAGE, "command": ["sleep", "3600"]})
    mine = (await r.json())["id"]

    await page_login(client, "alice@example.org")
    main = _main(await (await client.get("/instances")).text())
    assert "alices-box" in main and "admins-box" not in main
    assert "Owner" not in main  # only administrators see the owner column
    for path in (f"/instances/{theirs}", f"/instances/{theirs}/delete"):
        r = await client.get(path)
        assert r.status == 404 and "Page not found" in await r.text(), path
    token = await get_csrf(client, f"/instances/{mine}")
    for action in ("stop", "start", "restart", "delete", "commit"):
        r = await client.post(f"/instances/{theirs}/{action}", data={"csrf_token": token, "repository": "x"},
                              allow_redirects=False)
        assert r.status == 404, action
    assert (await client.get("/instances/abc")).status == 404

    # The form: no privileged / host network boxes; sending them anyway is refused.
    main = _main(await (await client.get("/instances/new")).text())
    assert 'name="privileged"' not in main and f'<option value="{IMAGE}">' in main
    r = await _create(client, name="sneaky", privileged="on")
    assert r.status == 403 and "Only administrators may create privileged" in await r.text()
    r = await _create(client, name="alices-box")
    assert r.status == 409 and "You already have an instance with this name" in await r.text()

    # The administrator sees both, with their owners.
    await client.post("/logout", data={"csrf_token": token})
    await page_login(client, "admin@example.org")
    main = _main(await (await client.get("/instances")).text())
    assert "alices-box" in main and "admins-box" in main and ">alice<" in main
    main = _main(await (await client.get(f"/instances/{mine}")).text())
    assert "Owner" in main and "alice" in main
    assert alice_id


async def test_japanese(client, admin, local):  # noqa: F811
    await page_login(client, "admin@example.org")
    headers = {"Accept-Language": "ja"}
    main = _main(await (await client.get("/instances", headers=headers)).text())
    assert "インスタンスはまだありません" in main and "インスタンスを作成" in main
    main = _main(await (await client.get("/instances/new", headers=headers)).text())
    for text in ("実行する内容", "配置先とリソース", "各ノードの空き", "空きのあるノード (DM が選択)",
                 "管理者向けオプション"):
        assert text in main, text
    token = csrf_of(await (await client.get("/instances/new")).text())
    r = await client.post("/instances", headers=headers, data={"csrf_token": token, "name": "悪い名前", "image": IMAGE})
    assert r.status == 422 and "インスタンス名は英数字" in await r.text()


# --- GPUs ---------------------------------------------------------------------------------------

async def test_gpus_shown_picked_and_freed(client, admin):
    gpus = a5000_gpus()
    uuids = [g["uuid"] for g in gpus]
    node = await gpu_node(client, admin, "gpu-box", gpus)
    try:
        await page_login(client, "admin@example.org")
        main = _main(await (await client.get("/instances/new")).text())
        row = re.search(rf'data-node-id="{node.node_id}">(.*?)</tr>', main, re.S)
        assert row, main
        assert "2 of 2 free" in row.group(1) and row.group(1).count("NVIDIA RTX A5000") == 2
        for u in uuids:
            assert f'name="gpu" value="{u}"' in row.group(1)
        assert "64 <span" in row.group(1)  # CPUs free of the node's 64
        assert '<option value="cuda:12">cuda:12</option>' in main

        # Pick the second GPU by ticking it; a wrong number with it is ignored.
        r = await post_form(client, "/instances", {"name": "train", "image": "cuda:12", "node": "auto", "gpus": "0",
                                                   "gpu": uuids[1]}, csrf_from="/instances/new")
        assert r.status == 303, await r.text()
        iid = int(r.headers["Location"].rsplit("/", 1)[1])
        inst = await wait_status(client, admin, iid, "running")
        assert inst["gpus"] == [uuids[1]] and inst["node_id"] == node.node_id
        main = _main(await (await client.get(f"/instances/{iid}")).text())
        assert "#1 NVIDIA RTX A5000" in main and uuids[1] in main and "until it is deleted" in main
        assert "The logs cannot be read right now." in main  # the fake agent has no logs

        main = _main(await (await client.get("/instances/new")).text())
        row = re.search(rf'data-node-id="{node.node_id}">(.*?)</tr>', main, re.S)
        assert row and "1 of 2 free" in row.group(1) and uuids[1] not in row.group(1)
        main = _main(await (await client.get("/instances")).text())
        assert "1 GPUs" in main

        # Taken GPUs: refused with the message and the ticks kept.
        r = await client.post("/instances", data={
            "csrf_token": csrf_of(await (await client.get("/instances/new")).text()), "name": "again",
            "image": "cuda:12", "node": str(node.node_id), "gpus": "0", "gpu": uuids[1]}, allow_redirects=False)
        html = await r.text()
        assert r.status == 409 and "No node can take this instance" in html
        r = await post_form(client, "/instances", {"name": "two", "image": "cuda:12", "gpus": "2"},
                            csrf_from="/instances/new")
        assert r.status == 409 and "1 of 2 GPUs free" in await r.text()

        # Deleted: both GPUs free again.
        r = await post_form(client, f"/instances/{iid}/delete", {}, csrf_from=f"/instances/{iid}")
        assert r.status == 303
        await _gone(client, admin, iid)
        main = _main(await (await client.get("/instances/new")).text())
        row = re.search(rf'data-node-id="{node.node_id}">(.*?)</tr>', main, re.S)
        assert row and "2 of 2 free" in row.group(1)
    finally:
        await node.close()


async def test_unavailable_nodes_are_marked(client, admin):
    node = await gpu_node(client, admin, "cordoned-box", a5000_gpus()[:1])
    try:
        r = await client.post(f"/api/v1/nodes/{node.node_id}/cordon", headers=admin)
        assert r.status == 200, await r.text()
        await page_login(client, "admin@example.org")
        main = _main(await (await client.get("/instances/new")).text())
        row = re.search(rf'<tr class="row-muted" data-node-id="{node.node_id}">(.*?)</tr>', main, re.S)
        assert row and "unavailable" in row.group(1) and "cordoned" in row.group(1)
        assert re.search(rf'<option value="{node.node_id}" disabled>cordoned-box \(unavailable\)', main)
        assert "None of your nodes can take an instance now" in main
        assert 'name="gpu"' in row.group(1) and "disabled" in row.group(1)
    finally:
        await node.close()


# --- honest state: a stopped instance, an offline node ------------------------------------------

def _restart_button(main: str) -> str:
    m = re.search(r'action="/instances/\d+/restart">.*?(<button[^>]*>)', main, re.S)
    assert m, "no restart button"
    return m.group(1)


async def test_ssh_lines_only_while_running_and_an_offline_node_says_so(client, admin):
    node = await gpu_node(client, admin, "edge", a5000_gpus()[:1])
    try:
        r = await client.post("/api/v1/instances", headers=admin, json={"name": "web", "image": "cuda:12"})
        assert r.status == 201, await r.text()
        iid = (await r.json())["id"]
        inst = await wait_status(client, admin, iid, "running")
        assert inst["node_online"] is True and inst["ssh"]["port"], inst
        await page_login(client, "admin@example.org")
        main = _main(await (await client.get(f"/instances/{iid}")).text())
        assert 'id="ssh-command"' in main and "data-node-offline" not in main
        assert "disabled" not in _restart_button(main)

        # Stopped: no ssh line that cannot work (nor its config block), the note says why.
        r = await post_form(client, f"/instances/{iid}/stop", {}, csrf_from=f"/instances/{iid}")
        assert r.status == 303
        await wait_status(client, admin, iid, "stopped")
        main = _main(await (await client.get(f"/instances/{iid}")).text())
        assert 'id="ssh-command"' not in main and "ssh -p" not in main and "ssh -J" not in main
        assert 'id="ssh-config"' not in main and 'data-ssh-note="not_running"' in main
        r = await post_form(client, f"/instances/{iid}/start", {}, csrf_from=f"/instances/{iid}")
        assert r.status == 303
        await wait_status(client, admin, iid, "running")

        # The node goes offline: the API says so beside the last known status.
        await node.close()

        async def offline() -> dict[str, Any] | None:
            got = await (await client.get(f"/api/v1/instances/{iid}", headers=admin)).json()
            return got if got["node_online"] is False else None

        got = await wait_for(offline, "the instance's node offline")
        assert got["status"] == "running"  # the last one reported, kept as it was
        listed = await (await client.get("/api/v1/instances", headers=admin)).json()
        assert [(i["id"], i["node_online"]) for i in listed["items"]] == [(iid, False)]

        # The pages: "node offline" with the last known status in small text, in the list too.
        main = _main(await (await client.get(f"/instances/{iid}")).text())
        assert "Node offline" in main and "last known: Running" in main and "data-inst-status" not in main
        assert "data-node-offline-note" in main and "The node edge is offline" in main
        # What needs the agent is disabled, saying why; no ssh line that cannot work.
        assert "disabled" in _restart_button(main)
        commit = main.split('id="commit"', 1)[1]
        assert "the node is offline" in commit and re.search(r'<button type="submit" class="btn" disabled>', commit)
        assert 'id="ssh-command"' not in main and 'data-ssh-note="node_offline"' in main
        assert 'id="logs-follow"' not in main and 'id="term-open"' not in main
        listing = _main(await (await client.get("/instances")).text())
        row = re.search(rf'data-instance-id="{iid}"(.*?)</tr>', listing, re.S)
        assert row and "Node offline" in row.group(1) and "last known: Running" in row.group(1)
        assert "data-inst-status" not in row.group(1) and "data-instance-url" not in row.group(0)
        client.session.cookie_jar.update_cookies({"dm_lang": "ja"})
        main = _main(await (await client.get(f"/instances/{iid}")).text())
        assert "ノードがオフライン" in main and "最後の状態: 実行中" in main
        client.session.cookie_jar.update_cookies({"dm_lang": "en"})

        # Restart is refused before anything changes (no start that waits in its place)...
        r = await post_form(client, f"/instances/{iid}/restart", {}, csrf_from=f"/instances/{iid}")
        assert r.status == 409 and "not online" in await r.text()
        r = await client.post(f"/api/v1/instances/{iid}/restart", headers=admin)
        assert r.status == 409 and (await r.json())["error"]["code"] == "node_offline"
        assert "instance.restart" not in await _actions(client, "instance.restart")
        # ...while stop only changes the desired state, done when the node returns.
        r = await post_form(client, f"/instances/{iid}/stop", {}, csrf_from=f"/instances/{iid}")
        assert r.status == 303
        got = await (await client.get(f"/api/v1/instances/{iid}", headers=admin)).json()
        assert (got["desired"], got["status"], got["node_online"]) == ("stopped", "running", False)
        # Another user's instance stays a 404, offline node or not.
        await add_user(client, "eve@example.org")
        eve = await make_token(client, "eve@example.org")
        r = await client.post(f"/api/v1/instances/{iid}/restart", headers=eve)
        assert r.status == 404
    finally:
        await node.close()


async def test_the_capacity_refusal_in_japanese_names_no_english_reason(client, admin):
    """The create form's no_capacity message, in Japanese: the node's reason translated, what
    was asked restated once; in English the same in the pages' units."""
    node = await gpu_node(client, admin, "far", a5000_gpus()[:1])
    await node.close()

    async def offline() -> bool:
        r = await client.get(f"/api/v1/nodes/{node.node_id}", headers=admin)
        return (await r.json())["status"] == "offline"

    await wait_for(offline, "the node offline")
    await page_login(client, "admin@example.org")
    r = await _create(client, name="web", image="cuda:12", cpus="2", memory_mb="3072")
    alert = re.search(r'class="alert alert-error"[^>]*>(.*?)</div>', await r.text(), re.S)
    assert r.status == 409 and alert, await r.text()
    assert "Asked for 2 CPUs, 3.0 GiB memory, 0 GPUs. far: offline." in htmllib.unescape(alert.group(1))
    client.session.cookie_jar.update_cookies({"dm_lang": "ja"})
    r = await _create(client, name="web", image="cuda:12", cpus="2", memory_mb="3072")
    alert = re.search(r'class="alert alert-error"[^>]*>(.*?)</div>', await r.text(), re.S)
    assert r.status == 409 and alert
    text = htmllib.unescape(alert.group(1))
    assert "far: オフライン" in text and "CPU 2 個" in text and "メモリ 3.0 GiB" in text, text
    assert "offline" not in text and "MB" not in text, text
