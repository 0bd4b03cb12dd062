"""systemd/dmd.service and systemd/dmc.service pass `systemd-analyze verify` without a warning."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNITS = {"dmd.service": "/usr/local/bin/dmd", "dmc.service": "/usr/local/bin/dmc"}


def _analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze is not installed (Debian: apt-get install systemd); the unit files "
                    "cannot be verified", pytrace=False)
    return path


def _stage(tmp_path: Path, name: str, *, extra: str = "") -> Path:
    """The unit with its ExecStart binary replaced by an executable that exists here."""
    text = (REPO / "systemd" / name).read_text(encoding="utf-8")
    binary = UNITS[name]
    assert f"ExecStart={binary} " in text, f"{name} should start {binary}"
    stand_in = tmp_path / "bin" / Path(binary).name
    stand_in.parent.mkdir(exist_ok=True)
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text = text.replace(f"ExecStart={binary} ", f"ExecStart={stand_in} ")
    if extra:
        text = text.replace("[Install]", extra + "\n[Install]")
    unit = tmp_path / name
    unit.write_text(text, encoding="utf-8")
    return unit


def _verify(unit: Path) -> tuple[int, list[str]]:
    result = subprocess.run([_analyze(), "verify", "--man=no", str(unit)], cwd=unit.parent, capture_output=True,
                            text=True, timeout=60, check=False)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if unit.name in line]
    return result.returncode, lines


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_verifies_cleanly(tmp_path: Path, name: str) -> None:
    code, complaints = _verify(_stage(tmp_path, name))
    assert code == 0 and complaints == [], complaints


def test_verify_does_catch_mistakes(tmp_path: Path) -> None:
    """The check is not a no-op: an unknown key is reported."""
    code, complaints = _verify(_stage(tmp_path, "dmc.service", extra="RestartOnFullMoon=yes"))
    assert any("RestartOnFullMoon" in line for line in complaints), (code, complaints)


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_restarts_on_failure_and_is_hardened(name: str) -> None:
    keys = {}
    for line in (REPO / "systemd" / name).read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            keys[key.strip()] = value.strip()
    assert keys["Restart"] == "on-failure"
    assert keys["RestartPreventExitStatus"] == "2"  # an invalid config does not restart in a loop
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectKernelModules", "RestrictSUIDSGID", "LockPersonality"):
        assert keys.get(key) == "yes", key
    assert keys["ProtectSystem"] in ("full", "strict")
    assert "AF_UNIX" in keys["RestrictAddressFamilies"]


def test_agent_unit_can_rotate_its_credential() -> None:
    text = (REPO / "systemd" / "dmc.service").read_text(encoding="utf-8")
    assert "ExecStart=/usr/local/bin/dmc run --config /etc/dmc/config.json" in text
    assert "ReadWritePaths=/etc/dmc" in text  # ProtectSystem makes /etc read-only otherwise


def test_daemon_unit_runs_unprivileged() -> None:
    text = (REPO / "systemd" / "dmd.service").read_text(encoding="utf-8")
    assert "User=dmd" in text and "StateDirectory=dmd" in text and "CapabilityBoundingSet=\n" in text
