"""POST/GET/PATCH/DELETE /api/v1/ssh-keys: ownership, duplicates, audit, and bad input that
changes nothing."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from dmd.core import DM
from dmd.db.schema import audit_log, ssh_keys
from tests.conftest import add_user, login, make_token
from tests.sshkeys.conftest import keygen_l_async

URL = "/api/v1/ssh-keys"


async def _state(client):
    async with client.app[DM].db.read() as conn:
        rows = (await conn.execute(sa.select(ssh_keys).order_by(ssh_keys.c.id))).all()
        audits = (await conn.execute(
            sa.select(sa.func.count()).select_from(audit_log).where(audit_log.c.action.startswith("ssh_key."))
        )).scalar_one()
    return [tuple(r) for r in rows], audits


@pytest.fixture
async def alice(client, admin):
    await add_user(client, "alice@example.org", username="alice")
    return await make_token(client, "alice@example.org")


@pytest.fixture
async def bob(client, admin):
    await add_user(client, "bob@example.org", username="bob")
    return await make_token(client, "bob@example.org")


async def test_create_get_list_rename_delete(client, alice, keys):
    k = keys["ed25519"]
    r = await client.post(URL, json={"name": "laptop", "public_key": 'no-pty,command="rm -rf /" ' + k.pub_text},
                          headers=alice)
    assert r.status == 201, await r.text()
    created = await r.json()
    bits, fingerprint, _ = await keygen_l_async(k.public)
    assert created["fingerprint"] == fingerprint and created["bits"] == bits
    assert created["type"] == "ssh-ed25519" and created["name"] == "laptop"
    assert created["comment"] == "ed25519@test"
    assert created["public_key"] == k.pub_line  # the options are gone
    assert created["options_removed"] == ["no-pty", "command"]
    assert {"id", "user_id", "created_at", "updated_at"} <= set(created)
    kid = created["id"]

    got = await (await client.get(f"{URL}/{kid}", headers=alice)).json()
    assert got["fingerprint"] == fingerprint and "options_removed" not in got
    listed = await (await client.get(URL, headers=alice)).json()
    assert [i["id"] for i in listed["items"]] == [kid] and listed["next_cursor"] is None

    r = await client.patch(f"{URL}/{kid}", json={"name": "  desk  "}, headers=alice)
    assert r.status == 200 and (await r.json())["name"] == "desk"
    assert (await client.delete(f"{URL}/{kid}", headers=alice)).status == 204
    assert (await client.get(f"{URL}/{kid}", headers=alice)).status == 404
    assert (await client.delete(f"{URL}/{kid}", headers=alice)).status == 404


@pytest.mark.parametrize("kind", ["ecdsa256", "ecdsa384", "ecdsa521", "rsa2048", "rsa3072"])
async def test_each_type_fingerprint_matches_ssh_keygen(client, alice, keys, kind):
    r = await client.post(URL, json={"public_key": keys[kind].pub_text}, headers=alice)
    assert r.status == 201, await r.text()
    body = await r.json()
    bits, fingerprint, _ = await keygen_l_async(keys[kind].public)
    assert (body["bits"], body["fingerprint"]) == (bits, fingerprint)
    assert body["name"] == f"{kind}@test"  # no name given: the comment


async def test_duplicates_and_two_users(client, alice, bob, keys):
    line = keys["ed25519"].pub_line
    assert (await client.post(URL, json={"name": "a", "public_key": line}, headers=alice)).status == 201
    before = await _state(client)
    r = await client.post(URL, json={"name": "a2", "public_key": "restrict " + line}, headers=alice)
    assert r.status == 409
    err = (await r.json())["error"]
    assert err["code"] == "key_exists" and err["fingerprint"] == (await keygen_l_async(keys["ed25519"].public))[1]
    assert await _state(client) == before
    r = await client.post(URL, json={"name": "b", "public_key": line}, headers=bob)
    assert r.status == 201
    a_items = (await (await client.get(URL, headers=alice)).json())["items"]
    b_items = (await (await client.get(URL, headers=bob)).json())["items"]
    assert [i["name"] for i in a_items] == ["a"] and [i["name"] for i in b_items] == ["b"]
    assert a_items[0]["fingerprint"] == b_items[0]["fingerprint"]


async def test_other_users_keys_are_not_found(client, admin, alice, bob, keys):
    kid = (await (await client.post(URL, json={"name": "a", "public_key": keys["ed25519"].pub_line},
                                    headers=alice)).json())["id"]
    before = await _state(client)
    for who in (bob, admin):
        assert (await client.get(f"{URL}/{kid}", headers=who)).status == 404
        assert (await client.patch(f"{URL}/{kid}", json={"name": "x"}, headers=who)).status == 404
        assert (await client.delete(f"{URL}/{kid}", headers=who)).status == 404
    for bad in ("0", "abc", "9" * 30, "-1"):
        assert (await client.get(f"{URL}/{bad}", headers=alice)).status == 404
    assert await _state(client) == before


async def test_admin_lists_someones_keys(client, admin, alice, bob, keys):
    await client.post(URL, json={"name": "a", "public_key": keys["ed25519"].pub_line}, headers=alice)
    me = await (await client.get("/api/v1/me", headers=alice)).json()
    r = await client.get(URL, params={"user_id": str(me["id"])}, headers=admin)
    assert r.status == 200 and [i["name"] for i in (await r.json())["items"]] == ["a"]
    assert (await (await client.get(URL, headers=admin)).json())["items"] == []  # their own
    assert (await client.get(URL, params={"user_id": "99999"}, headers=admin)).status == 404
    r = await client.get(URL, params={"user_id": str(me["id"])}, headers=bob)
    assert r.status == 403
    r = await client.get(URL, params={"user_id": str(me["id"])}, headers=alice)
    assert r.status == 200
    assert (await client.get(URL, params={"user_id": "x"}, headers=admin)).status == 422


async def test_pagination(client, alice, keys):
    for kind in ("ed25519", "ecdsa256", "rsa2048"):
        await client.post(URL, json={"public_key": keys[kind].pub_line}, headers=alice)
    page = await (await client.get(URL, params={"limit": "2"}, headers=alice)).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = await (await client.get(URL, params={"limit": "2", "cursor": page["next_cursor"]},
                                   headers=alice)).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None


async def test_audit_entries(client, admin, alice, keys):
    fp = (await keygen_l_async(keys["ed25519"].public))[1]
    kid = (await (await client.post(URL, json={"name": "a", "public_key": keys["ed25519"].pub_line},
                                    headers=alice)).json())["id"]
    await client.patch(f"{URL}/{kid}", json={"name": "b"}, headers=alice)
    await client.delete(f"{URL}/{kid}", headers=alice)
    r = await client.get("/api/v1/audit", params={"action": "ssh_key."}, headers=admin)
    items = (await r.json())["items"]
    assert [i["action"] for i in items] == ["ssh_key.delete", "ssh_key.rename", "ssh_key.create"]
    assert all(i["detail"]["fingerprint"] == fp and i["actor"] == "alice" and i["target_id"] == str(kid)
               for i in items)
    assert items[1]["detail"]["before"] == "a" and items[1]["detail"]["after"] == "b"


async def test_cookie_writes_need_csrf_and_anonymous_is_401(client, keys):
    await add_user(client, "carol@example.org")
    h = await login(client, "carol@example.org")
    r = await client.post(URL, json={"public_key": keys["ed25519"].pub_line})
    assert r.status == 403 and (await r.json())["error"]["code"] == "csrf"
    assert (await client.post(URL, json={"public_key": keys["ed25519"].pub_line}, headers=h)).status == 201
    client.session.cookie_jar.clear()
    assert (await client.get(URL)).status == 401
    assert (await client.post(URL, json={"public_key": keys["ed25519"].pub_line})).status == 401


def _bad_bodies(keys):
    ed = keys["ed25519"].pub_line
    t, d, c = ed.split()
    return [
        ({"public_key": keys["ed25519"].private.read_text()}, 422, "private_key"),
        ({"public_key": keys["rsa2048"].private.read_text()}, 422, "private_key"),
        ({"public_key": keys["rsa1024"].pub_text}, 422, "weak_key"),
        ({"public_key": keys["dsa"].pub_text if "dsa" in keys else "ssh-dss AAAAB3NzaC1kc3M="}, 422, None),
        ({"public_key": f"{t} {d[:40]}"}, 422, "damaged"),
        ({"public_key": f"{t} {d[:-12]} {c}"}, 422, "damaged"),
        ({"public_key": f"{t} {d[:30]}\n{d[30:]} {c}"}, 422, "line_break"),
        ({"public_key": f"{t} {d} {c}\nssh-ed25519 {d} evil"}, 422, "multiple_keys"),
        ({"public_key": f"{t} {d} {c}\ncommand=\"rm -rf /\" {t} {d}"}, 422, "multiple_keys"),
        ({"public_key": f"{t} {d} a\x00b"}, 422, "control_characters"),
        ({"public_key": f"{t} {d} a\u2028b"}, 422, "line_break"),
        ({"public_key": f'command="rm -rf / {t} {d}'}, 422, "bad_options"),
        ({"public_key": "garbage"}, 422, "not_a_key"),
        ({"public_key": "   "}, 422, "empty"),
        ({"public_key": f"{t} {d} " + "x" * 20000}, 422, "too_large"),
        ({"public_key": "x" * 70000}, 422, "invalid"),
        ({"public_key": ""}, 422, "invalid"),
        ({"public_key": 123}, 422, "invalid"),
        ({"public_key": None}, 422, "invalid"),
        ({"public_key": [ed]}, 422, "invalid"),
        ({}, 422, "invalid"),
        ({"public_key": ed, "user_id": 1}, 422, "invalid"),
        ({"public_key": ed, "name": "x" * 101}, 422, "invalid"),
        ({"public_key": ed, "name": "a\nb"}, 422, "invalid"),
        ({"public_key": ed, "name": ""}, 422, "invalid"),
        ({"public_key": ed, "name": 5}, 422, "invalid"),
    ]


async def test_bad_input_is_4xx_and_changes_nothing(client, alice, keys):
    assert (await client.post(URL, json={"name": "keep", "public_key": keys["ecdsa256"].pub_line},
                              headers=alice)).status == 201
    before = await _state(client)
    for body, status, code in _bad_bodies(keys):
        r = await client.post(URL, json=body, headers=alice)
        text = await r.text()
        assert r.status == status, (body, text)
        assert "Traceback" not in text
        err = json.loads(text)["error"]
        if code is not None:
            assert err["code"] == code, (body, err)
        assert err["message"]
        if err["code"] == "private_key":
            assert "PRIVATE KEY" not in text and "AAAA" not in text  # the secret is not echoed
        assert await _state(client) == before
    for raw in (b"{not json", b"[]", b"\xff"):
        r = await client.post(URL, data=raw, headers={**alice, "Content-Type": "application/json"})
        assert r.status == 400
    r = await client.post(URL, data=b"public_key=x", headers={**alice, "Content-Type": "text/plain"})
    assert r.status == 415
    assert await _state(client) == before


async def test_bad_renames_change_nothing(client, alice, keys):
    kid = (await (await client.post(URL, json={"name": "keep", "public_key": keys["ed25519"].pub_line},
                                    headers=alice)).json())["id"]
    before = await _state(client)
    for body in ({}, {"name": ""}, {"name": "   "}, {"name": "x" * 101}, {"name": "a\rb"}, {"name": None},
                 {"name": "ok", "public_key": keys["rsa2048"].pub_line}, {"fingerprint": "x"}):
        r = await client.patch(f"{URL}/{kid}", json=body, headers=alice)
        assert r.status == 422, (body, await r.text())
    assert await _state(client) == before


async def test_openapi_documents_ssh_keys(client):
    doc = await (await client.get("/api/v1/openapi.json")).json()
    assert {"get", "post"} <= set(doc["paths"][URL])
    assert {"get", "patch", "delete"} <= set(doc["paths"][URL + "/{id}"])
    schema = doc["components"]["schemas"]["SshKeyCreateIn"]
    assert schema["additionalProperties"] is False and schema["required"] == ["public_key"]
    assert "options_removed" in doc["components"]["schemas"]["SshKeyCreatedOut"]["properties"]
