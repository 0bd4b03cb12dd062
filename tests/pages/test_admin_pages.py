"""Users administration and the audit log, without JavaScript."""

from __future__ import annotations

import re

from dmd.core import DM
from dmd.models import SYSTEM
from dmd.queries import audit
from dmd.queries import users as user_svc
from tests.conftest import add_user
from tests.pages.conftest import get_csrf, page_login, post_form


async def _user(client, email: str):
    async with client.app[DM].db.read() as conn:
        return await user_svc.get_by_email(conn, email)


async def _actions(client, prefix: str) -> list[str]:
    async with client.app[DM].db.read() as conn:
        return [e["action"] for e in await audit.list_entries(conn, limit=500, action=prefix)]


NEW_USER = {"email": "dave@example.org", "username": "", "role": "user", "password": "dave's password",
            "password2": "dave's password", "instance_limit": "3", "node_limit": "", "gpu_limit": "1"}


async def test_users_list_shows_roles_status_quotas(admin_client):
    await add_user(admin_client, "q@example.org", username="quota-user", instance_limit=5)
    r = await admin_client.get("/users")
    html = await r.text()
    assert r.status == 200
    assert "admin@example.org" in html and "quota-user" in html
    assert "Administrator" in html and "Active" in html and "No limit" in html
    assert 'href="/users/new"' in html


async def test_create_user(admin_client):
    client = admin_client
    r = await client.get("/users/new")
    assert r.status == 200
    r = await post_form(client, "/users", NEW_USER, csrf_from="/users/new")
    assert r.status == 303 and r.headers["Location"] == "/users"
    html = await (await client.get("/users")).text()
    assert "The user dave has been created" in html and "dave@example.org" in html
    u = await _user(client, "dave@example.org")
    assert u is not None and u.role == "user" and u.username == "dave"
    assert (u.instance_limit, u.node_limit, u.gpu_limit) == (3, None, 1)
    assert await _actions(client, "user.create") == ["user.create"]
    # The new user can log in.
    await post_form(client, "/logout", {})
    await page_login(client, "dave@example.org", "dave's password")


async def test_create_user_errors(admin_client):
    client = admin_client
    r = await post_form(client, "/users", {**NEW_USER, "instance_limit": "lots"}, csrf_from="/users/new")
    html = await r.text()
    assert r.status == 422 and "instance quota" in html
    assert 'value="lots"' in html and 'value="dave@example.org"' in html
    assert "dave&#39;s password" not in html and "dave's password" not in html
    r = await post_form(client, "/users", {**NEW_USER, "instance_limit": "-1"}, csrf_from="/users/new")
    assert r.status == 422
    r = await post_form(client, "/users", {**NEW_USER, "password2": "other"}, csrf_from="/users/new")
    assert r.status == 422 and "not the same" in await r.text()
    r = await post_form(client, "/users", {**NEW_USER, "role": "root"}, csrf_from="/users/new")
    assert r.status == 422 and "Choose a role" in await r.text()
    r = await post_form(client, "/users", {**NEW_USER, "username": "Bad Name!"}, csrf_from="/users/new")
    assert r.status == 422 and "Usernames use" in await r.text()
    r = await post_form(client, "/users", {**NEW_USER, "email": "admin@example.org"},
                        csrf_from="/users/new")
    assert r.status == 409 and "already exists" in await r.text()
    assert await _user(client, "dave@example.org") is None


async def test_edit_disable_enable_reset_delete(admin_client):
    client = admin_client
    uid = await add_user(client, "erin@example.org", username="erin", gpu_limit=2)
    r = await client.get(f"/users/{uid}")
    html = await r.text()
    assert r.status == 200 and 'value="erin@example.org"' in html
    assert f'action="/users/{uid}/disable"' in html

    # Edit: role and quotas (empty = no limit).
    r = await post_form(client, f"/users/{uid}", {
        "email": "erin@example.org", "username": "erin", "role": "admin",
        "instance_limit": "10", "node_limit": "2", "gpu_limit": ""}, csrf_from=f"/users/{uid}")
    assert r.status == 303 and r.headers["Location"] == f"/users/{uid}"
    u = await _user(client, "erin@example.org")
    assert u.role == "admin" and (u.instance_limit, u.node_limit, u.gpu_limit) == (10, 2, None)
    assert "Changes to erin have been saved" in await (await client.get(f"/users/{uid}")).text()
    async with client.app[DM].db.read() as conn:
        entry = (await audit.list_entries(conn, limit=1, action="user.update"))[0]
    assert entry["detail"]["changes"]["role"] == ["user", "admin"]
    assert entry["detail"]["changes"]["gpu_limit"] == [2, None]

    # Invalid edit: 422 with the input kept.
    r = await post_form(client, f"/users/{uid}", {
        "email": "erin@example.org", "username": "erin", "role": "admin",
        "instance_limit": "x", "node_limit": "", "gpu_limit": ""}, csrf_from=f"/users/{uid}")
    assert r.status == 422 and 'value="x"' in await r.text()

    # Disable, enable.
    r = await post_form(client, f"/users/{uid}/disable", {}, csrf_from=f"/users/{uid}")
    assert r.status == 303
    assert (await _user(client, "erin@example.org")).disabled
    html = await (await client.get(f"/users/{uid}")).text()
    assert "erin has been disabled" in html and f'action="/users/{uid}/enable"' in html
    r = await post_form(client, f"/users/{uid}/enable", {}, csrf_from=f"/users/{uid}")
    assert r.status == 303 and not (await _user(client, "erin@example.org")).disabled
    assert await _actions(client, "user.disable") == ["user.disable"]
    assert await _actions(client, "user.enable") == ["user.enable"]

    # Reset the password.
    r = await post_form(client, f"/users/{uid}/password",
                        {"password": "erins new password", "password2": "erins new password"},
                        csrf_from=f"/users/{uid}")
    assert r.status == 303
    r = await post_form(client, f"/users/{uid}/password", {"password": "short", "password2": "short"},
                        csrf_from=f"/users/{uid}")
    assert r.status == 422

    # Delete: a confirmation page first, then the POST.
    r = await client.get(f"/users/{uid}/delete")
    html = await r.text()
    assert r.status == 200 and "Delete erin?" in html and "cannot be undone" in html
    r = await post_form(client, f"/users/{uid}/delete", {}, csrf_from=f"/users/{uid}/delete")
    assert r.status == 303 and r.headers["Location"] == "/users"
    html = await (await client.get("/users")).text()
    assert "The user erin has been deleted" in html and "erin@example.org" not in html
    assert await _user(client, "erin@example.org") is None
    assert await _actions(client, "user.delete") == ["user.delete"]
    r = await client.get(f"/users/{uid}")
    assert r.status == 404


async def test_reset_password_lets_user_log_in(admin_client):
    client = admin_client
    uid = await add_user(client, "finn@example.org")
    await post_form(client, f"/users/{uid}/password",
                    {"password": "finns new password", "password2": "finns new password"},
                    csrf_from=f"/users/{uid}")
    await post_form(client, "/logout", {})
    await page_login(client, "finn@example.org", "finns new password")


async def test_last_admin_is_protected(admin_client):
    client = admin_client
    me = await _user(client, "admin@example.org")
    html = await (await client.get(f"/users/{me.id}")).text()
    assert "cannot disable or delete your own account" in html
    assert f'action="/users/{me.id}/disable"' not in html
    r = await post_form(client, f"/users/{me.id}", {
        "email": "admin@example.org", "username": "admin", "role": "user",
        "instance_limit": "", "node_limit": "", "gpu_limit": ""}, csrf_from=f"/users/{me.id}")
    assert r.status == 409 and "last enabled administrator" in await r.text()
    r = await post_form(client, f"/users/{me.id}/delete", {}, csrf_from=f"/users/{me.id}")
    assert r.status == 409
    assert (await _user(client, "admin@example.org")).role == "admin"


async def test_non_admins_get_403(user_client):
    client = user_client
    html = await (await client.get("/nodes")).text()
    assert 'href="/users"' not in html and 'href="/audit"' not in html
    for path in ("/users", "/users/new", "/users/1", "/users/1/delete", "/audit"):
        r = await client.get(path)
        assert r.status == 403, path
        assert "only for DM's administrators" in (await r.text()).replace("&#39;", "'")
    csrf = await get_csrf(client, "/account")
    r = await client.post("/users", data={"csrf_token": csrf, **NEW_USER})
    assert r.status == 403
    r = await client.post("/users/1/delete", data={"csrf_token": csrf})
    assert r.status == 403
    assert await _user(client, "dave@example.org") is None
    admin = await _user(client, "admin@example.org")
    assert admin is not None and (admin.role, admin.disabled) == ("admin", False)


async def test_audit_newest_first_with_cursor_pages_and_filter(admin_client):
    client = admin_client
    async with client.app[DM].db.begin() as conn:
        for i in range(120):
            await audit.record(conn, SYSTEM, "node.test" if i % 2 else "image.test", "node", i, n=i)
    r = await client.get("/audit")
    html = await r.text()
    assert r.status == 200
    rows = re.findall(r"<tr>\s*<td data-label=\"Time\"", html)
    assert len(rows) == 50
    # Newest first: the first row is the last one recorded.
    assert html.index("n=119") < html.index("n=118")
    nxt = re.search(r'rel="next" href="(/audit\?cursor=\d+)"', html)
    assert nxt
    html2 = await (await client.get(nxt.group(1).replace("&amp;", "&"))).text()
    assert len(re.findall(r"<tr>\s*<td data-label=\"Time\"", html2)) == 50
    assert "n=119" not in html2 and "Newest" in html2
    # Filter by a family (a bare word means the family), and keep the filter across pages.
    html = await (await client.get("/audit?action=node")).text()
    assert "image.test" not in html and "node.test" in html
    assert 'value="node."' in html
    nxt = re.search(r'rel="next" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert "action=node." in nxt
    html = await (await client.get(nxt)).text()
    assert "image.test" not in html
    # An exact action.
    html = await (await client.get("/audit?action=auth.login")).text()
    assert "auth.login" in html and "node.test" not in html
    # Nonsense is refused politely.
    r = await client.get("/audit?action=DROP%20TABLE")
    assert r.status == 422
    r = await client.get("/audit?cursor=abc&action=user.", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/audit?action=user."


async def test_new_users_start_without_nodes_and_admins_set_every_ceiling(admin_client):
    client = admin_client
    html = await (await client.get("/users/new")).text()
    for name, value in (("node_limit", "0"), ("port_map_limit", "20"), ("log_follow_limit", "4"),
                        ("transfer_limit", "2")):
        assert re.search(rf'name="{name}"[^>]*value="{value}"|value="{value}"[^>]*name="{name}"', html), name
    form = {**NEW_USER, "node_limit": "0", "port_map_limit": "20", "log_follow_limit": "4", "transfer_limit": "2"}
    r = await post_form(client, "/users", form, csrf_from="/users/new")
    assert r.status == 303, await r.text()
    u = await _user(client, "dave@example.org")
    assert (u.node_limit, u.port_map_limit, u.log_follow_limit, u.transfer_limit) == (0, 20, 4, 2)

    r = await post_form(client, f"/users/{u.id}", {
        "email": u.email, "username": u.username, "role": "user", "instance_limit": "", "node_limit": "1",
        "gpu_limit": "", "port_map_limit": "7", "log_follow_limit": "", "transfer_limit": "1"},
        csrf_from=f"/users/{u.id}")
    assert r.status == 303
    u = await _user(client, "dave@example.org")
    assert (u.node_limit, u.port_map_limit, u.log_follow_limit, u.transfer_limit) == (1, 7, None, 1)
    html = await (await client.get(f"/users/{u.id}")).text()
    assert "Port maps" in html and "Log follows" in html and "Pulls/imports" in html
    r = await post_form(client, f"/users/{u.id}", {
        "email": u.email, "username": u.username, "role": "user", "port_map_limit": "-1"}, csrf_from=f"/users/{u.id}")
    assert r.status == 422 and "port map ceiling must be a whole number" in await r.text()
