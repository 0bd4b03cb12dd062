"""The /ssh-keys page without JavaScript: add by paste or by file, rename, delete, CSRF, Japanese."""

from __future__ import annotations

import html as htmllib
import re

import sqlalchemy as sa
from aiohttp import FormData

from dmd.core import DM
from dmd.db.schema import ssh_keys
from tests.conftest import add_user
from tests.pages.conftest import csrf_of, get_csrf, page_login
from tests.sshkeys.conftest import keygen_l_async


async def _rows(client):
    async with client.app[DM].db.read() as conn:
        return [tuple(r) for r in (await conn.execute(sa.select(ssh_keys).order_by(ssh_keys.c.id))).all()]


async def _paste(client, public_key, name="", **extra):
    token = await get_csrf(client, "/ssh-keys")
    return await client.post("/ssh-keys", data={"csrf_token": token, "name": name, "public_key": public_key,
                                                **extra}, allow_redirects=False)


async def _upload(client, content: bytes, name="", pasted="", filename="id_ed25519.pub"):
    token = await get_csrf(client, "/ssh-keys")
    fd = FormData()
    fd.add_field("csrf_token", token)
    fd.add_field("public_key", pasted)
    fd.add_field("key_file", content, filename=filename, content_type="application/octet-stream")
    fd.add_field("name", name)
    return await client.post("/ssh-keys", data=fd, allow_redirects=False)


def _main(html: str) -> str:
    return html.split('<main id="main"', 1)[1].split("</main>", 1)[0]


async def test_empty_page_has_the_add_form(user_client):
    r = await user_client.get("/ssh-keys")
    html = await r.text()
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    assert "No SSH keys yet" in html and "ssh-keygen -t ed25519" in html
    assert 'enctype="multipart/form-data"' in html and '<textarea id="f-public_key" name="public_key"' in html
    assert 'type="file"' in html and 'name="key_file"' in html
    assert '<a href="/ssh-keys" aria-current="page">' in html
    assert "not available yet" not in html  # the placeholder is gone


async def test_add_by_paste_strips_options(user_client, keys):
    k = keys["ed25519"]
    r = await _paste(user_client, 'no-pty,command="rm -rf /" ' + k.pub_line + "\r\n", name="laptop")
    assert r.status == 303 and r.headers["Location"] == "/ssh-keys"
    html = await (await user_client.get("/ssh-keys")).text()
    fp = (await keygen_l_async(k.public))[1]
    assert "The key laptop has been added" in html and fp in html
    assert "The options before the key were removed (no-pty, command)" in html
    main = _main(html)
    assert f'<code class="fingerprint">{fp}</code>' in main
    assert "ED25519" in main and "256 bits" in main and "ed25519@test" in main
    rows = await _rows(user_client)
    assert len(rows) == 1 and rows[0][ssh_keys.c.keys().index("public_key")] == k.pub_line
    # The flash is shown once.
    assert "has been added" not in await (await user_client.get("/ssh-keys")).text()


async def test_add_by_file_upload(user_client, keys):
    for kind in ("rsa2048", "ecdsa384"):
        r = await _upload(user_client, keys[kind].public.read_bytes())
        assert r.status == 303, await r.text()
    main = _main(await (await user_client.get("/ssh-keys")).text())
    for kind in ("rsa2048", "ecdsa384"):
        assert (await keygen_l_async(keys[kind].public))[1] in main
        assert f"{kind}@test" in main  # the name defaults to the comment
    assert "RSA" in main and "2048 bits" in main and "ECDSA" in main and "384 bits" in main
    assert len(await _rows(user_client)) == 2


async def test_refusals_rerender_with_422_and_change_nothing(user_client, keys):
    await _paste(user_client, keys["ecdsa256"].pub_line, name="keep")
    before = await _rows(user_client)
    private = keys["ed25519"].private.read_text()

    r = await _paste(user_client, private, name="oops")
    html = await r.text()
    assert r.status == 422 and "This is a private key" in html
    assert "PRIVATE KEY" not in html and private.splitlines()[1] not in html  # never echoed back
    assert 'value="oops"' in html

    r = await _upload(user_client, keys["ed25519"].private.read_bytes())
    assert r.status == 422 and "This is a private key" in await r.text()
    r = await _upload(user_client, keys["ed25519"].public.read_bytes(), pasted=private)
    html = await r.text()
    assert r.status == 422 and "not both" in html and "PRIVATE KEY" not in html

    r = await _upload(user_client, keys["rsa1024"].public.read_bytes())
    html = await r.text()
    assert r.status == 422 and "RSA keys need at least 2048 bits; this one has 1024" in html
    assert re.search(r'id="f-key_file"[^>]*aria-invalid="true"', html)

    t, d, c = keys["ed25519"].pub_line.split()
    for bad, words in ((f"{t} {d[:40]}", "incomplete or damaged"),
                       (f"{t} {d[:30]}\n{d[30:]} {c}", "has line breaks inside"),
                       (f"{t} {d} {c}\nssh-rsa {d} more", "more than one key"),
                       ("hello <b>there</b>", "not an SSH public key")):
        r = await _paste(user_client, bad)
        html = await r.text()
        assert r.status == 422 and words in html, bad
        assert 'aria-invalid="true"' in html
    assert "hello &lt;b&gt;there&lt;/b&gt;</textarea>" in html  # kept, escaped

    r = await _upload(user_client, keys["ed25519"].public.read_bytes(), pasted=keys["ed25519"].pub_line)
    assert r.status == 422 and "not both" in await r.text()
    r = await _upload(user_client, b"x" * (20 * 1024))
    assert r.status == 422 and "too long for a public key" in await r.text()
    r = await _upload(user_client, b"")  # no file and nothing pasted
    assert r.status == 422 and "Paste a public key or choose" in await r.text()
    r = await _paste(user_client, keys["ed25519"].pub_line, name="x" * 101)
    assert r.status == 422 and "1 to 100 characters" in await r.text()

    r = await _paste(user_client, "restrict " + keys["ecdsa256"].pub_line)
    html = await r.text()
    assert r.status == 409 and "You have added this key already" in html
    assert (await keygen_l_async(keys["ecdsa256"].public))[1] in html
    assert await _rows(user_client) == before


async def test_two_users_may_add_the_same_key(client, keys):
    await add_user(client, "alice@example.org")
    await add_user(client, "bob@example.org")
    await page_login(client, "alice@example.org")
    assert (await _paste(client, keys["ed25519"].pub_line)).status == 303
    client.session.cookie_jar.clear()
    await page_login(client, "bob@example.org")
    assert (await _paste(client, keys["ed25519"].pub_line)).status == 303
    assert len(await _rows(client)) == 2


async def test_rename(user_client, keys):
    await _paste(user_client, keys["ed25519"].pub_line, name="old")
    kid = (await _rows(user_client))[0][0]
    token = await get_csrf(user_client, "/ssh-keys")
    r = await user_client.post(f"/ssh-keys/{kid}/rename", data={"csrf_token": token, "name": "new name"},
                               allow_redirects=False)
    assert r.status == 303
    html = await (await user_client.get("/ssh-keys")).text()
    assert "The key is now called new name." in html and "new name" in _main(html)
    r = await user_client.post(f"/ssh-keys/{kid}/rename", data={"csrf_token": token, "name": "  "},
                               allow_redirects=False)
    html = await r.text()
    assert r.status == 422 and "1 to 100 characters" in html
    assert '<details class="key-rename" open>' in html
    r = await user_client.post("/ssh-keys/99999/rename", data={"csrf_token": token, "name": "x"},
                               allow_redirects=False)
    assert r.status == 404
    assert (await _rows(user_client))[0][2] == "new name"


async def test_delete_with_confirmation(user_client, keys):
    await _paste(user_client, keys["rsa2048"].pub_line, name="to go")
    kid = (await _rows(user_client))[0][0]
    r = await user_client.get(f"/ssh-keys/{kid}/delete")
    html = await r.text()
    assert r.status == 200 and "Delete the SSH key to go?" in html
    assert (await keygen_l_async(keys["rsa2048"].public))[1] in html
    assert f'action="/ssh-keys/{kid}/delete"' in html
    assert len(await _rows(user_client)) == 1  # looking changes nothing
    token = csrf_of(html)
    r = await user_client.post(f"/ssh-keys/{kid}/delete", data={"csrf_token": token}, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/ssh-keys"
    assert "The key to go has been deleted." in await (await user_client.get("/ssh-keys")).text()
    assert await _rows(user_client) == []
    r = await user_client.post(f"/ssh-keys/{kid}/delete", data={"csrf_token": token}, allow_redirects=False)
    assert r.status == 404
    assert (await user_client.get(f"/ssh-keys/{kid}/delete")).status == 404


async def test_other_users_keys_are_404(client, keys):
    await add_user(client, "alice@example.org")
    await add_user(client, "mallory@example.org")
    await page_login(client, "alice@example.org")
    await _paste(client, keys["ed25519"].pub_line, name="alices")
    kid = (await _rows(client))[0][0]
    client.session.cookie_jar.clear()
    await page_login(client, "mallory@example.org")
    assert "alices" not in await (await client.get("/ssh-keys")).text()
    token = await get_csrf(client, "/ssh-keys")
    assert (await client.get(f"/ssh-keys/{kid}/delete")).status == 404
    for path, data in ((f"/ssh-keys/{kid}/delete", {}), (f"/ssh-keys/{kid}/rename", {"name": "mine"})):
        r = await client.post(path, data={"csrf_token": token, **data}, allow_redirects=False)
        assert r.status == 404
    assert (await _rows(client))[0][2] == "alices"


async def test_csrf_is_required(user_client, keys):
    await _paste(user_client, keys["ecdsa256"].pub_line, name="keep")
    before = await _rows(user_client)
    kid = before[0][0]
    r = await user_client.post("/ssh-keys", data={"public_key": keys["ed25519"].pub_line}, allow_redirects=False)
    assert r.status == 403
    fd = FormData()
    fd.add_field("csrf_token", "wrong")
    fd.add_field("key_file", keys["ed25519"].public.read_bytes(), filename="k.pub")
    assert (await user_client.post("/ssh-keys", data=fd, allow_redirects=False)).status == 403
    for path in (f"/ssh-keys/{kid}/delete", f"/ssh-keys/{kid}/rename"):
        r = await user_client.post(path, data={"name": "x"}, allow_redirects=False)
        assert r.status == 403
    assert await _rows(user_client) == before


async def test_login_required(client):
    r = await client.get("/ssh-keys", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"].startswith("/login")
    r = await client.post("/ssh-keys", data={"public_key": "x"}, allow_redirects=False)
    assert r.status == 303


async def test_japanese(user_client, keys):
    user_client.session.cookie_jar.update_cookies({"dm_lang": "ja"})
    html = await (await user_client.get("/ssh-keys")).text()
    assert '<html lang="ja"' in html and "SSH 鍵はまだありません" in html and "鍵を追加" in html
    r = await _paste(user_client, keys["ed25519"].private.read_text())
    assert r.status == 422 and "これは秘密鍵です" in await r.text()
    r = await _upload(user_client, keys["rsa1024"].public.read_bytes())
    assert r.status == 422 and "RSA 鍵は 2048 ビット以上が必要です。この鍵は 1024 ビットです。" in await r.text()
    assert (await _paste(user_client, "restrict " + keys["ed25519"].pub_line, name="ノート")).status == 303
    html = await (await user_client.get("/ssh-keys")).text()
    assert "鍵 ノート を追加しました" in html and "オプション (restrict) は取り除きました" in html
    assert "フィンガープリント" in html and "256 ビット" in html


async def test_comment_is_escaped(user_client, keys):
    t, d = keys["ed25519"].pub_line.split()[:2]
    assert (await _paste(user_client, f"{t} {d} <script>alert(1)</script>")).status == 303
    html = await (await user_client.get("/ssh-keys")).text()
    assert "<script>alert(1)</script>" not in html
    assert htmllib.escape("<script>alert(1)</script>") in html or "&lt;script&gt;" in html
