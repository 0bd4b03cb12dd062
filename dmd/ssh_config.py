"""`dmd ssh-config`: on a user's own machine, fetch GET /api/v1/ssh/config with their API token,
save the host keys to trust where UserKnownHostsFile points, print the Host blocks.

    dmd ssh-config --url https://dm.example >> ~/.ssh/config   (DM_TOKEN in the environment)

A plain synchronous client (standard library only): it runs outside any event loop.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

KNOWN_HOSTS = "~/.ssh/dm_known_hosts"
TIMEOUT_S = 30


def fetch(url: str, token: str, known_hosts_path: str) -> dict[str, object]:
    """The API's reply, or SystemExit with a one-line reason."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise SystemExit(f"dmd ssh-config: expected an http(s):// URL, got {url!r}")
    query = urllib.parse.urlencode({"known_hosts_path": known_hosts_path})
    req = urllib.request.Request(  # noqa: S310 (http or https, checked above)
f"{url.rstrip('/')}/api/v1/ssh/config?{query}",
                                 headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:  # noqa: S310 (checked above)
            body: dict[str, object] = json.loads(r.read())
            return body
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = e.reason
        raise SystemExit(f"dmd ssh-config: {url}: {e.code} {message}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise SystemExit(f"dmd ssh-config: cannot reach {url}: {getattr(e, 'reason', e)}") from None


def save_known_hosts(path: Path, text: str) -> None:
    """Replace the file at once (DM's own file: its lines are the current truth)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(url: str | None, token: str | None, known_hosts: str) -> int:
    if not url:
        print("dmd ssh-config: give --url https://your-dm (or DM_URL)", file=sys.stderr)
        return 2
    if not token:
        print("dmd ssh-config: give an API token of yours in DM_TOKEN (make one on your account page)",
              file=sys.stderr)
        return 2
    try:
        got = fetch(url, token, KNOWN_HOSTS if known_hosts == "-" else known_hosts)
    except SystemExit as e:
        print(e.code, file=sys.stderr)
        return 1
    lines = str(got["known_hosts"])
    if known_hosts == "-":
        sys.stderr.write(lines)
    else:
        target = Path(known_hosts).expanduser()
        save_known_hosts(target, lines)
        print(f"dmd ssh-config: saved the host keys to trust in {target}", file=sys.stderr)
    sys.stdout.write(str(got["config"]))
    return 0
