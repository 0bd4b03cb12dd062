"""Real keys made by ssh-keygen (once per test session), and what ssh-keygen says about them."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import add_user
from tests.databases import every_database  # noqa: F401 (fixture: each test on all three databases)
from tests.pages.conftest import page_login


def ssh_keygen() -> str:
    path = shutil.which("ssh-keygen")
    if path is None:
        pytest.fail("ssh-keygen is not installed: these tests compare against it (apt-get install openssh-client)")
    return path


@dataclass(frozen=True)
class KeyFiles:
    private: Path
    public: Path

    @property
    def pub_text(self) -> str:
        return self.public.read_text()

    @property
    def pub_line(self) -> str:
        return self.pub_text.strip()


def make_key(directory: Path, name: str, key_type: str, bits: int | None = None,
             comment: str = "") -> KeyFiles:
    args = [ssh_keygen(), "-q", "-t", key_type]
    if bits is not None:
        args += ["-b", str(bits)]
    args += ["-N", "", "-C", comment or f"{name}@test", "-f", str(directory / name)]
    subprocess.run(args, check=True, capture_output=True, timeout=120)
    return KeyFiles(directory / name, directory / f"{name}.pub")


def keygen_l(path: Path) -> tuple[int, str, str]:
    """(bits, fingerprint, type label) as `ssh-keygen -l -f` prints them."""
    out = subprocess.run([ssh_keygen(), "-l", "-f", str(path)], check=True, capture_output=True, text=True,
                         timeout=30).stdout.strip()
    bits, fingerprint, rest = out.split(" ", 2)
    label = rest.rsplit("(", 1)[1].rstrip(")")
    return int(bits), fingerprint, label


async def keygen_l_async(path: Path) -> tuple[int, str, str]:
    """keygen_l from a coroutine (waiting for ssh-keygen in a thread, off the event loop)."""
    return await asyncio.to_thread(keygen_l, path)


# name -> (ssh-keygen -t, -b)
KINDS: dict[str, tuple[str, int | None]] = {
    "ed25519": ("ed25519", None),
    "ecdsa256": ("ecdsa", 256),
    "ecdsa384": ("ecdsa", 384),
    "ecdsa521": ("ecdsa", 521),
    "rsa2048": ("rsa", 2048),
    "rsa3072": ("rsa", 3072),
    "rsa1024": ("rsa", 1024),
}


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyFiles]:
    d = tmp_path_factory.mktemp("sshkeys")
    made = {name: make_key(d, name, t, b) for name, (t, b) in KINDS.items()}
    made["ed25519_b"] = make_key(d, "ed25519_b", "ed25519")
    # An OpenSSH built without DSA cannot make one; the DSA test then builds the key itself.
    with contextlib.suppress(subprocess.CalledProcessError):
        made["dsa"] = make_key(d, "dsa", "dsa")
    return made


@pytest.fixture
async def user_client(client: TestClient) -> TestClient:  # type: ignore[type-arg]
    """The client, logged in through the pages as the plain user alice (an admin exists too)."""
    await add_user(client, "admin@example.org", role="admin", username="admin")
    await add_user(client, "alice@example.org", username="alice")
    await page_login(client, "alice@example.org")
    return client
