"""Language, theme, empty states, error pages, static files, and the rules every page keeps."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markupsafe import escape

from dmd import i18n
from dmd.pages.render import safe_next, web_dir
from tests.conftest import add_user
from tests.pages.conftest import page_login

TEMPLATES = web_dir() / "templates"
# Each page of the main navigation, and the catalogue keys of what it says while it is empty.
MAIN_PAGES = {
    "/nodes": ("nodes", "nodes.empty.heading", "nodes.empty.user_text"),
    "/instances": ("instances", "instances.empty.heading", "instances.empty.text"),
    "/images": ("images", "images.no_nodes.heading", "images.no_nodes.text"),
    "/ssh-keys": ("ssh_keys", "sshkeys.empty.heading", "sshkeys.empty.text"),
    "/port-maps": ("port_maps", "portmaps.empty.heading", "portmaps.empty.text"),
}


def main_navigation() -> list[tuple[str, str]]:
    """(key, path) of each entry of the main navigation, as base.html lists them."""
    text = (TEMPLATES / "base.html").read_text()
    listed = re.search(r"{% for key, href in \[(.*?)\] %}", text)
    assert listed, "base.html no longer lists the main navigation in one for loop"
    return re.findall(r'\("(\w+)", "([^"]+)"\)', listed.group(1))


# --- language ---------------------------------------------------------------------------

@pytest.mark.parametrize(("cookie", "header", "want"), [
    (None, None, "en"),
    (None, "ja", "ja"),
    (None, "ja-JP,ja;q=0.9,en;q=0.8", "ja"),
    (None, "fr-FR,fr;q=0.9,ja;q=0.5,en;q=0.4", "ja"),
    (None, "en-US,en;q=0.9,ja;q=0.8", "en"),
    (None, "en;q=0.3, ja;q=0.7", "ja"),
    (None, "ja;q=0, en", "en"),
    (None, "de, fr", "en"),
    (None, "ja;q=bogus, en;q=0.1", "en"),
    ("ja", "en", "ja"),
    ("en", "ja", "en"),
    ("xx", "ja", "ja"),
])
def test_negotiate(cookie, header, want):
    assert i18n.negotiate(cookie, header) == want


def test_catalogue_is_complete():
    for key, (en, ja) in i18n.CATALOGUE.items():
        assert en.strip() and ja.strip(), key
        # The same parameters in both languages.
        assert set(re.findall(r"{(\w+)}", en)) == set(re.findall(r"{(\w+)}", ja)), key
    same = [k for k, (en, ja) in i18n.CATALOGUE.items() if en == ja]
    assert set(same) <= {"lang.en", "lang.ja", "quota.gpu_limit"}, same


def test_templates_use_only_known_keys():
    used: set[str] = set()
    for path in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"""_\(\s*["']([a-z0-9_.]+)["']""", path.read_text()))
    prefixes = {k for k in used if k.endswith(".")}
    missing = [k for k in used - prefixes if not i18n.has(k)]
    assert not missing
    # Keys built from a prefix: the navigation and the error pages.
    nav = main_navigation()
    assert [key for key, _ in nav] == ["nodes", "instances", "images", "ssh_keys", "port_maps"]
    for key, _ in nav:
        assert i18n.has(f"nav.{key}"), key
    for reason in ("400", "401", "403", "404", "405", "409", "413", "422", "429", "500", "502",
                   "503", "4xx", "5xx", "csrf", "admin_only"):
        assert i18n.has(f"error.{reason}.title") and i18n.has(f"error.{reason}.text")


async def test_accept_language_japanese(user_client):
    r = await user_client.get("/nodes", headers={"Accept-Language": "ja,en;q=0.5"})
    html = await r.text()
    assert '<html lang="ja"' in html
    for word in ("ノード", "インスタンス", "イメージ", "SSH 鍵", "ポートマップ", "ログアウト"):
        assert word in html
    assert "ユーザー</a>" not in html  # not an admin
    r = await user_client.get("/login", headers={"Accept-Language": "en"})
    assert '<html lang="en"' in await r.text()


async def test_switch_language_with_prefs(client):
    r = await client.get("/prefs", params={"lang": "ja", "next": "/login?next=/images"},
                         allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login?next=/images"
    cookie = next(h for h in r.headers.getall("Set-Cookie") if h.startswith("dm_lang="))
    assert "dm_lang=ja" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Max-Age=31536000" in cookie
    html = await (await client.get("/login", headers={"Accept-Language": "en"})).text()
    assert '<html lang="ja"' in html and "DM にログイン" in html
    # The switch on the page leads back here.
    assert 'href="/prefs?lang=en&amp;next=%2Flogin"' in html
    # Unknown values change nothing.
    r = await client.get("/prefs", params={"lang": "xx", "theme": "neon"}, allow_redirects=False)
    assert r.status == 303 and "Set-Cookie" not in r.headers
    await client.get("/prefs", params={"lang": "en"})
    assert '<html lang="en"' in await (await client.get("/login")).text()


async def test_switch_theme(client):
    html = await (await client.get("/login")).text()
    assert 'data-theme="auto"' in html
    r = await client.get("/prefs", params={"theme": "dark", "next": "/login"}, allow_redirects=False)
    cookie = next(h for h in r.headers.getall("Set-Cookie") if h.startswith("dm_theme="))
    assert "dm_theme=dark" in cookie and "SameSite=Lax" in cookie and "Max-Age=31536000" in cookie
    html = await (await client.get("/login")).text()
    assert 'data-theme="dark"' in html and 'name="color-scheme" content="dark"' in html
    await client.get("/prefs", params={"theme": "light"})
    assert 'data-theme="light"' in await (await client.get("/login")).text()


async def test_japanese_error_and_flash(user_client):
    user_client.session.cookie_jar.update_cookies({"dm_lang": "ja"})
    r = await user_client.get("/users")
    assert r.status == 403 and "管理者専用" in await r.text()
    r = await user_client.get("/no/such/page")
    assert r.status == 404 and "ページが見つかりません" in await r.text()


# --- empty states -----------------------------------------------------------------------

async def test_empty_states_say_what_will_appear(user_client):
    """Each page of the main navigation, for a user who has nothing yet, says what will appear
    there (in the page's own words), marks its own navigation entry, and lists nothing."""
    assert {path: key for key, path in main_navigation()} == {p: k for p, (k, _, _) in MAIN_PAGES.items()}
    for path, (key, heading, text) in MAIN_PAGES.items():
        r = await user_client.get(path)
        html = await r.text()
        assert r.status == 200, path
        main = html.split('<main id="main"', 1)[1].split("</main>", 1)[0]
        for words in (heading, text):
            assert str(escape(i18n.gettext("en", words))) in main, (path, words)
        assert "<table" not in main, path
        current = re.findall(r'<a href="([^"]+)" aria-current="page">([^<]+)</a>', html)
        assert current == [(path, i18n.gettext("en", f"nav.{key}"))], (path, current)


# --- errors -----------------------------------------------------------------------------

async def test_error_pages_are_friendly_html(client):
    r = await client.get("/definitely/not/here")
    html = await r.text()
    assert r.status == 404 and r.content_type == "text/html"
    assert "Page not found" in html and "Traceback" not in html
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]  # error pages too
    assert r.headers["X-Frame-Options"] == "DENY"
    r = await client.put("/login", data={})
    assert r.status == 405 and "Not possible here" in await r.text()
    await add_user(client, "alice@example.org")
    await page_login(client, "alice@example.org")
    r = await client.post("/nodes", data={})
    assert r.status == 403  # a logged-in write without the CSRF token is refused first
    # The API keeps its JSON errors.
    r = await client.get("/api/v1/definitely-not")
    assert r.status == 404 and r.content_type == "application/json"


async def test_oversized_form_gets_413_page(make_client):
    client = await make_client(max_body_bytes=2048)
    r = await client.post("/login", data={"email": "x" * 5000, "password": "y"})
    assert r.status == 413 and "Too large" in await r.text()


async def test_internal_error_page_hides_details(client, monkeypatch):
    from dmd.pages import auth_pages

    async def boom(request):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(auth_pages, "_setup_pending", boom)
    r = await client.get("/")
    html = await r.text()
    assert r.status == 500 and "Something went wrong" in html and "secret internals" not in html


# --- static files and the rules for every page ----------------------------------------------

async def test_static_files(client):
    html = await (await client.get("/login")).text()
    css = re.search(r'href="(/static/dm\.css\?v=[^"]+)"', html)
    js = re.search(r'src="(/static/dm\.js\?v=[^"]+)"', html)
    assert css and js
    r = await client.get(css.group(1).replace("&amp;", "&"))
    assert r.status == 200 and "prefers-color-scheme" in await r.text()
    r = await client.get(js.group(1))
    assert r.status == 200
    assert (await client.get("/static/../dmd/app.py")).status == 404


def test_no_inline_styles_or_scripts_in_templates():
    for path in TEMPLATES.glob("*.html"):
        text = path.read_text()
        assert not re.search(r"\sstyle\s*=", text), path.name
        assert "<style" not in text, path.name
        assert not re.search(r"\son[a-z]+\s*=", text), path.name
        for tag in re.findall(r"<script[^>]*>", text):
            assert "src=" in tag, path.name


def test_no_external_resources():
    for path in list(TEMPLATES.glob("*.html")) + list((web_dir() / "static").rglob("*.*")):
        text = path.read_text()
        assert not re.search(r"(src|href)=\"https?://", text), path
        assert "@import" not in text and "url(http" not in text, path


async def test_pages_send_security_headers(admin_client):
    for path in ("/login", "/nodes", "/account", "/users", "/audit"):
        r = await admin_client.get(path)
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        assert r.headers["X-Frame-Options"] == "DENY"
        html = await r.text()
        assert 'style="' not in html and "<script>" not in html


def test_safe_next():
    assert safe_next("/account") == "/account"
    assert safe_next("/audit?action=user.") == "/audit?action=user."
    for bad in ("", None, "//x", "/\\x", "http://x", "x", "/a\nb", "/a\\b", "/" + "a" * 3000):
        assert safe_next(bad) == "/nodes"


def test_web_dir_has_templates_and_static():
    d = web_dir()
    assert (d / "templates" / "base.html").is_file() and (d / "static" / "dm.css").is_file()
    assert Path(d).name == "web"


async def test_switch_links_on_a_rejected_form_lead_to_a_page(admin_client):
    from tests.pages.conftest import post_form

    r = await post_form(admin_client, "/account/password", {
        "current_password": "x", "new_password": "short", "new_password2": "short"})
    assert r.status == 422
    assert 'href="/prefs?lang=ja&amp;next=%2Faccount"' in await r.text()
    r = await post_form(admin_client, "/users", {"email": "bad"}, csrf_from="/users/new")
    assert 'href="/prefs?lang=ja&amp;next=%2Fusers%2Fnew"' in await r.text()
