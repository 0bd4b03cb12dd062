"""The node's SSH host key (agent.access.hostkey): made once, kept, reported in the facts."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

from agent import protocol as p
from agent.access import hostkey


def test_host_key_is_made_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "dmc" / hostkey.HOST_KEY_NAME
    first = hostkey.load_or_create(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = hostkey.load_or_create(str(path))
    assert hostkey.public_line(first) == hostkey.public_line(again)
    assert hostkey.public_line(first).startswith("ssh-ed25519 ")
    listed = subprocess.run(["ssh-keygen", "-lf", str(path)], capture_output=True, text=True, timeout=30, check=True)
    assert "ED25519" in listed.stdout
    assert hostkey.host_key_path("/etc/dmc/config.json") == "/etc/dmc/ssh_host_ed25519_key"
    facts = p.codec.decode(p.NodeFacts, {"ssh_host_key": hostkey.public_line(first)})
    assert facts.ssh_host_key == hostkey.public_line(first)
