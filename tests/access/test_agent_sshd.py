"""SSH served by the agent for an instance without an SSH server: real busybox, real OpenSSH clients.

A TCP listener of the test runs :meth:`SshServer.serve` per connection (the same code the
``ssh`` stream runs on one end of a socket pair); one test goes through real streams
(``Mux`` pair, ``serve_ssh_stream``). Every client checks the host key strictly against a
known_hosts file made from the node's key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import pytest
import pytest_asyncio

from agent import protocol as p
from agent.access import hostkey
from agent.access.agentssh import AgentSsh
from agent.access.sshserver import MAX_AUTH_FAILURES, MAX_SESSIONS, Grant, SshServer
from agent.protocol.types import ContainerInfo
from tests.access.conftest import Box, KeyPair, make_key, running_box
from tests.streams.test_mux import Pair

pytestmark = [pytest.mark.docker, pytest.mark.asyncio(loop_scope="module")]

CLIENT_TIMEOUT_S = 60.0


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


async def no_process(box: Box, pattern: str, timeout: float = 15) -> None:
    """Wait until no process of the container runs ``pattern`` (its command line)."""
    async with asyncio.timeout(timeout):
        while pattern in (await box.sh("ps -o args")).stdout_text:
            await asyncio.sleep(0.2)


@dataclass
class Sshd:
    """A TCP listener of the test: each connection is served by the agent's SSH server for ``box``
    (or, with ``pair``, carried over an ``ssh`` stream to the agent's stream handler)."""

    server: SshServer
    container: ContainerInfo
    grant: Grant
    known_hosts: Path
    port: int = 0
    pair: Pair | None = None
    ends: list[str] = field(default_factory=list)
    streams: list[p.Stream] = field(default_factory=list)  # dmd's side, with pair
    _listener: socket.socket | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        self._listener, self.port = listener, listener.getsockname()[1]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {hostkey.public_line(self.server.host_key)}\n")
        self._spawn(self._accept())

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        while True:
            sock, _ = await loop.sock_accept(self._listener)
            self._spawn(self._one(sock))

    async def _one(self, sock: socket.socket) -> None:
        if self.pair is None:
            self.ends.append(await self.server.serve(sock, self.container, self.grant))
            return
        params = p.SshParams(user=self.grant.user, login=self.grant.login, keys=list(self.grant.keys))
        opening = p.StreamOpen("ssh", self.container.instance_id or 0, ssh=params)
        stream = await self.pair.dmd.open(opening)
        self.streams.append(stream)
        reader, writer = await asyncio.open_connection(sock=sock)
        with contextlib.suppress(p.StreamClosed):  # dmd's side ended it (the revocation below)
            await p.bridge(stream, reader, writer)
        end = await asyncio.wait_for(stream.wait_closed(), 30)
        self.ends.append(end.reason)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()

    def options(self, key: KeyPair | Sequence[KeyPair], known_hosts: Path | None = None) -> list[str]:
        keys = [key] if isinstance(key, KeyPair) else list(key)
        identities = [arg for k in keys for arg in ("-i", str(k.path))]
        return ["-F", "/dev/null", "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", *identities]

    async def ssh(self, key: KeyPair | Sequence[KeyPair], *args: str, user: str = "root", input: bytes | None = None,
                  extra: Sequence[str] = (), known_hosts: Path | None = None) -> Result:
        # extra first: ssh keeps the first value it gets for an option
        return await run("ssh", *extra, *self.options(key, known_hosts), "-p", str(self.port), f"{user}@127.0.0.1",
                         *args, input=input)

    async def scp(self, key: KeyPair, *args: str) -> Result:
        return await run("scp", *self.options(key), "-P", str(self.port), *args)

    async def sftp(self, key: KeyPair, batch: str, user: str = "root") -> Result:
        return await run("sftp", *self.options(key), "-P", str(self.port), "-b", "-", f"{user}@127.0.0.1",
                         input=batch.encode())

    def remote(self, path: str, user: str = "root") -> str:
        return f"{user}@127.0.0.1:{path}"


async def run(*argv: str, input: bytes | None = None, env: dict[str, str] | None = None) -> Result:
    """A client in its own process (the loop is never blocked)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(input), CLIENT_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return Result(proc.returncode if proc.returncode is not None else -1, out, err.decode("utf-8", "replace"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def box(test_images: tuple[str, str]) -> AsyncIterator[Box]:
    async with running_box(test_images[1], command=["sleep", "3600"]) as made:
        yield made


@pytest.fixture(scope="module")
def host_key(tmp_path_factory: pytest.TempPathFactory) -> asyncssh.SSHKey:
    return hostkey.load_or_create(str(tmp_path_factory.mktemp("node") / hostkey.HOST_KEY_NAME))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sshd(box: Box, host_key: asyncssh.SSHKey, keys: dict[str, KeyPair],
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sshd]:
    made = Sshd(SshServer(box.driver, host_key), await box.info(), Grant(keys=[keys["A"].public], user="alice"),
                tmp_path_factory.mktemp("known") / "known_hosts")
    await made.start()
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
def grant(sshd: Sshd, keys: dict[str, KeyPair]) -> Sshd:
    """Each test starts from the default grant (key A, any login the instance takes)."""
    sshd.grant = Grant(keys=[keys["A"].public], user="alice")
    return sshd


# --------------------------------------------------------------------------- exec, shell, env


async def test_exec_gives_output_stderr_apart_and_exit_status(grant: Sshd, keys: dict[str, KeyPair], box: Box) -> None:
    done = await grant.ssh(keys["A"], "echo out; echo err >&2; exit 3")
    assert done.returncode == 3, done
    assert done.text == "out\n" and "err" in done.stderr and "out" not in done.stderr
    whoami = await grant.ssh(keys["A"], "id -u; echo $HOME; pwd; cat /etc/hostname")
    uid, home, cwd, name = whoami.text.split()
    assert (uid, home, cwd) == ("0", "/root", "/root")  # root's entry of the container's /etc/passwd
    assert name == (await box.sh("cat /etc/hostname")).stdout_text.strip()  # the container's, not the host's
    piped = await grant.ssh(keys["A"], "tr a-z A-Z", input=b"through stdin\n")
    assert (piped.returncode, piped.text) == (0, "THROUGH STDIN\n")


async def test_vscode_remote_ssh_needs_exec_of_probes(grant: Sshd, keys: dict[str, KeyPair], box: Box) -> None:
    """What VS Code's Remote-SSH runs first: uname, its shell, a script on stdin (the -L part is below)."""
    probe = await grant.ssh(keys["A"], "uname -sm; echo \"shell=$SHELL\"")
    assert probe.returncode == 0, probe
    machine = (await box.sh("uname -sm")).stdout_text
    assert probe.text.splitlines() == [machine.strip(), "shell=/bin/sh"]
    script = b"set -e\necho start\ncd /tmp\npwd\necho done-$((6*7))\n"
    ran = await grant.ssh(keys["A"], "sh", input=script)
    assert ran.text.splitlines() == ["start", "/tmp", "done-42"], ran


async def test_environment_from_the_client(grant: Sshd, keys: dict[str, KeyPair]) -> None:
    env = await grant.ssh(keys["A"], 'echo "$LANG|$LC_ALL|${FOO-unset}|${LD_PRELOAD-unset}"',
                          extra=["-o", "SetEnv=LANG=C.UTF-8 LC_ALL=POSIX FOO=bar LD_PRELOAD=/x.so"])
    assert env.text == "C.UTF-8|POSIX|unset|unset\n", env


async def test_pty_exec_is_on_a_terminal(grant: Sshd, keys: dict[str, KeyPair]) -> None:
    done = await grant.ssh(keys["A"], "tty; echo T=$TERM; exit 5", extra=["-tt", "-o", "SetEnv=TERM=vt220"])
    assert done.returncode == 5, done
    lines = done.text.replace("\r", "").splitlines()
    assert lines[0].startswith("/dev/pts/") and "T=vt220" in lines, lines
    plain = await grant.ssh(keys["A"], "tty")
    assert plain.text.strip() == "not a tty"


async def tmux(name: str, *args: str) -> str:
    done = await run("tmux", "-L", name, "-f", "/dev/null", *args)
    assert done.returncode == 0, done
    return done.text


async def screen_shows(name: str, text: str, timeout: float = 20) -> str:
    async with asyncio.timeout(timeout):
        while True:
            screen = await tmux(name, "capture-pane", "-p", "-t", "s")
            if text in screen:
                return screen
            await asyncio.sleep(0.1)


async def test_interactive_shell_follows_window_changes(grant: Sshd, keys: dict[str, KeyPair]) -> None:
    """A real terminal (tmux) running ssh: the login shell, its size, a window change, exit."""
    name = f"dmssh-{secrets.token_hex(4)}"
    command = " ".join(["ssh", *grant.options(keys["A"]), "-tt", "-p", str(grant.port), "root@127.0.0.1"])
    await tmux(name, "new-session", "-d", "-s", "s", "-x", "100", "-y", "30", command)
    try:
        await tmux(name, "send-keys", "-t", "s", "echo dm-$((6*7)) $0; stty size", "Enter")
        screen = await screen_shows(name, "30 100")
        assert "dm-42" in screen and "sh" in screen
        await tmux(name, "resize-window", "-t", "s", "-x", "120", "-y", "40")
        await tmux(name, "send-keys", "-t", "s", "stty size", "Enter")
        await screen_shows(name, "40 120")
        await tmux(name, "send-keys", "-t", "s", "exit 0", "Enter")
        async with asyncio.timeout(20):  # ssh ends with the shell: the session goes
            while (await run("tmux", "-L", name, "has-session", "-t", "s")).returncode == 0:
                await asyncio.sleep(0.1)
    finally:
        await run("tmux", "-L", name, "kill-server")


# --------------------------------------------------------------------------- keys and names


async def test_host_key_checking(grant: Sshd, keys: dict[str, KeyPair], tmp_path: Path) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519")
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{grant.port} {hostkey.public_line(other)}\n")
    refused = await grant.ssh(keys["A"], "true", known_hosts=wrong)
    assert refused.returncode == 255 and "host key" in refused.stderr.lower(), refused
    scanned = await run("ssh-keyscan", "-t", "ed25519", "-p", str(grant.port), "127.0.0.1")
    assert hostkey.public_line(grant.server.host_key).split()[1] in scanned.text


async def test_only_the_grants_keys_and_logins(grant: Sshd, keys: dict[str, KeyPair], box: Box) -> None:
    denied = await grant.ssh(keys["B"], "true")
    assert denied.returncode == 255 and "Permission denied (publickey)" in denied.stderr, denied
    # No password, no keyboard-interactive: publickey is all the server offers.
    asked = await grant.ssh(keys["B"], "true", extra=["-o", "PreferredAuthentications=password,keyboard-interactive"])
    assert asked.returncode == 255 and "(publickey)" in asked.stderr, asked
    wrong_name = await grant.ssh(keys["A"], "true", user="alice", extra=["-o", "LogLevel=INFO"])
    assert wrong_name.returncode == 255 and "takes the login root, not 'alice'" in wrong_name.stderr, wrong_name
    grant.grant = Grant(keys=[keys["B"].public, keys["C"].public], user="bob")  # the grant changes: A is out
    assert (await grant.ssh(keys["A"], "true")).returncode == 255
    assert (await grant.ssh(keys["C"], "echo c")).text == "c\n"
    grant.grant = Grant(keys=[keys["A"].public], user="alice", login="someone")  # the gateway was asked for another
    assert (await grant.ssh(keys["A"], "true")).returncode == 255
    assert (await box.info()).state == "running"


async def test_a_burst_of_wrong_keys_ends_the_connection(grant: Sshd, keys: dict[str, KeyPair],
                                                         tmp_path: Path) -> None:
    wrong = await asyncio.to_thread(lambda: [make_key(tmp_path, f"w{i}") for i in range(MAX_AUTH_FAILURES + 2)])
    before = len(grant.ends)
    burst = await grant.ssh([*wrong, keys["A"]], "echo in")  # the right key comes too late
    assert burst.returncode == 255 and burst.text == "", burst
    assert "Too many authentication failures" in burst.stderr or "Permission denied" in burst.stderr, burst
    async with asyncio.timeout(10):
        while len(grant.ends) == before:
            await asyncio.sleep(0.05)
    assert "too many authentication failures" in grant.ends[-1]
    assert (await grant.ssh(keys["A"], "echo in")).text == "in\n"  # the next connection is served as ever


# --------------------------------------------------------------------------- files


async def test_scp_and_sftp_in_the_container(grant: Sshd, keys: dict[str, KeyPair], box: Box,
                                             tmp_path: Path) -> None:
    payload = os.urandom(700_000)
    local = tmp_path / "payload.bin"
    local.write_bytes(payload)
    up = await grant.scp(keys["A"], str(local), grant.remote("/tmp/payload.bin"))
    assert up.returncode == 0, up
    inside = await box.sh("sha256sum /tmp/payload.bin")
    assert inside.stdout_text.split()[0] == hashlib.sha256(payload).hexdigest()
    back = tmp_path / "back.bin"
    down = await grant.scp(keys["A"], grant.remote("/tmp/payload.bin"), str(back))
    assert down.returncode == 0 and back.read_bytes() == payload, down
    legacy = await grant.scp(keys["A"], "-O", str(local), grant.remote("/tmp/legacy.bin"))  # the old protocol
    assert legacy.returncode == 0 and (await box.sh("cmp /tmp/payload.bin /tmp/legacy.bin")).exit_code == 0, legacy
    listing = await grant.sftp(keys["A"], "mkdir /tmp/d\nrename /tmp/legacy.bin /tmp/d/moved.bin\nls -l /tmp/d\n"
                                          "cd /tmp/d\npwd\nrm moved.bin\nrmdir /tmp/d\nls /tmp\n")
    assert listing.returncode == 0, listing
    assert "moved.bin" in listing.text and "Remote working directory: /tmp/d" in listing.text
    assert (await box.sh("ls /tmp/d")).exit_code != 0  # removed
    home = await grant.sftp(keys["A"], "pwd\n")
    assert "Remote working directory: /root" in home.text


async def test_symbolic_links_never_leave_the_container(grant: Sshd, keys: dict[str, KeyPair], box: Box,
                                                        tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("host only\n")
    marker = f"dm-escape-{secrets.token_hex(4)}"
    made = await box.sh(f"echo box > /etc/dm-where; ln -s /etc /tmp/etc-link; ln -s / /tmp/root-link; "
                        f"ln -s ../../../../../../../etc/dm-where /tmp/rel-link; ln -s {secret} /tmp/host-link; "
                        f"mknod /tmp/null-dev c 1 3; mkfifo /tmp/fifo")
    assert made.exit_code == 0, made.stderr_text
    fetched = tmp_path / "fetched"
    for link in ("/tmp/etc-link/dm-where", "/tmp/root-link/etc/dm-where", "/tmp/rel-link"):
        got = await grant.sftp(keys["A"], f"get {link} {fetched}\n")
        assert got.returncode == 0 and fetched.read_text() == "box\n", (link, got)  # the container's /etc
        fetched.unlink()
    for refused in ("/tmp/host-link", "/proc/1/root/etc/dm-where", "/tmp/null-dev"):
        got = await grant.sftp(keys["A"], f"get {refused} {fetched}\n")
        assert got.returncode != 0 and not fetched.exists(), (refused, got)
    # OpenSSH's client will not fetch a device; a client that asks anyway is refused before anything
    # opens it (a device made in the container, opened by the agent outside its device cgroup).
    async with client(grant, keys["A"]) as conn, conn.start_sftp_client() as sftp:
        for special in ("/tmp/null-dev", "/tmp/fifo"):
            for mode in ("rb", "wb"):
                with pytest.raises(asyncssh.SFTPPermissionDenied):
                    await asyncio.wait_for(sftp.open(special, mode), 10)
        with pytest.raises(asyncssh.SFTPError):
            await sftp.open("/tmp/etc-link", "rb")  # a directory
    local = tmp_path / "up.txt"
    local.write_text("written through a link\n")
    put = await grant.sftp(keys["A"], f"put {local} /tmp/root-link/{marker}\nput {local} /tmp/etc-link/{marker}\n")
    assert put.returncode == 0, put
    assert (await box.sh(f"cat /{marker} /etc/{marker}")).stdout_text == "written through a link\n" * 2
    assert not os.path.lexists(f"/{marker}") and not os.path.lexists(f"/etc/{marker}")  # nothing on the host
    assert secret.read_text() == "host only\n"


async def test_files_of_a_non_root_login(box: Box, host_key: asyncssh.SSHKey, keys: dict[str, KeyPair],
                                         test_images: tuple[str, str], tmp_path: Path) -> None:
    async with running_box(test_images[1], command=["sleep", "3600"], user="1000:1000") as other:
        setup = await other.sh("echo 'dev:x:1000:1000:dev:/home/dev:/bin/sh' >> /etc/passwd; "
                               "echo 'team:x:2000:dev' >> /etc/group; "
                               "mkdir -p /home/dev /team && chown 1000:1000 /home/dev && chown 0:2000 /team && "
                               "chmod 770 /team && echo root-only > /root-only && chmod 600 /root-only")
        assert setup.exit_code == 0, setup.stderr_text
        served = Sshd(SshServer(other.driver, host_key), await other.info(), Grant(keys=[keys["A"].public]),
                      tmp_path / "known_hosts")
        await served.start()
        try:
            who = await served.ssh(keys["A"], "id -u; pwd", user="dev")
            assert who.text.split() == ["1000", "/home/dev"], who
            assert (await served.ssh(keys["A"], "id -u", user="root")).text == "0\n"
            assert (await served.ssh(keys["A"], "true", user="nobody")).returncode == 255
            local = tmp_path / "mine.txt"
            local.write_text("mine\n")
            put = await served.sftp(keys["A"], f"put {local} mine.txt\nmkdir made\n", user="dev")
            assert put.returncode == 0, put
            owners = await other.sh("stat -c '%u:%g %n' /home/dev/mine.txt /home/dev/made")
            assert owners.stdout_text.split("\n")[:2] == ["1000:1000 /home/dev/mine.txt", "1000:1000 /home/dev/made"]
            # The kernel judges dev's file access as dev's: no root-only file, no /etc, its groups' folders.
            fetched = tmp_path / "got"
            denied = await served.sftp(keys["A"], f"get /root-only {fetched}\n", user="dev")
            assert denied.returncode != 0 and not fetched.exists() and "denied" in denied.stderr.lower(), denied
            for target in ("/etc/dm-by-dev", "/root-only"):
                refused = await served.sftp(keys["A"], f"put {local} {target}\n", user="dev")
                assert refused.returncode != 0, (target, refused)
            assert (await other.sh("cat /root-only; ls /etc/dm-by-dev")).stdout_text == "root-only\n"
            team = await served.sftp(keys["A"], f"put {local} /team/shared.txt\n", user="dev")
            assert team.returncode == 0, team  # a member of group team (2000)
            by_root = await served.sftp(keys["A"], f"get /root-only {fetched}\n", user="root")
            assert by_root.returncode == 0 and fetched.read_text() == "root-only\n"
            served.grant = Grant(keys=[keys["A"].public], login="dev")  # the gateway knows the name: only it
            assert (await served.ssh(keys["A"], "true", user="root")).returncode == 255
        finally:
            await served.close()


# --------------------------------------------------------------------------- forwarding


async def http_get(port: int) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    try:
        writer.write(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def tunnel(sshd: Sshd, key: KeyPair, spec: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        "ssh", *sshd.options(key), "-N", "-o", "ExitOnForwardFailure=yes", "-L", spec, "-p", str(sshd.port),
        "root@127.0.0.1", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def forwarded_get(sshd: Sshd, key: KeyPair, target: str) -> bytes:
    port = free_port()
    async with tunnel(sshd, key, f"127.0.0.1:{port}:{target}"):
        async with asyncio.timeout(20):
            while True:
                try:
                    return await http_get(port)
                except (ConnectionRefusedError, ConnectionResetError):
                    await asyncio.sleep(0.1)  # the client is not listening yet


async def test_local_forward_reaches_the_instance_only(grant: Sshd, keys: dict[str, KeyPair], box: Box) -> None:
    started = await box.sh("mkdir -p /www && echo dm-inside > /www/index.html && "
                           "httpd -p 127.0.0.1:8080 -h /www && httpd -p 8081 -h /www")
    assert started.exit_code == 0, started.stderr_text
    info = await box.info()
    # Its loopback only (as VS Code's server listens): reached inside its network namespace.
    assert b"dm-inside" in await forwarded_get(grant, keys["A"], "localhost:8080")
    assert b"dm-inside" in await forwarded_get(grant, keys["A"], f"{info.name}:8081")
    assert info.ip_address and b"dm-inside" in await forwarded_get(grant, keys["A"], f"{info.ip_address}:8081")
    # Anything else: refused with the reason (ssh -W opens the same direct-tcpip channel).
    for target in ("example.com:80", "10.255.255.1:22", "172.17.0.1:22", "dmd:80"):
        refused = await grant.ssh(keys["A"], extra=["-o", "LogLevel=INFO", "-W", target])
        assert refused.returncode == 255 and "forwarding goes only to this instance" in refused.stderr, refused
    closed = await grant.ssh(keys["A"], extra=["-o", "LogLevel=INFO", "-W", "localhost:1"])
    assert closed.returncode == 255 and "nothing listens there" in closed.stderr, closed


async def test_remote_forwarding_and_x11_are_refused(grant: Sshd, keys: dict[str, KeyPair]) -> None:
    remote = await grant.ssh(keys["A"], "true", extra=["-o", "ExitOnForwardFailure=yes", "-R", "0:localhost:22"])
    assert remote.returncode == 255 and "forwarding failed" in remote.stderr.lower(), remote
    x11 = await run("ssh", "-o", "ForwardX11=yes", "-o", "LogLevel=INFO", *grant.options(keys["A"]),
                    "-p", str(grant.port), "root@127.0.0.1", "echo display=${DISPLAY-none}",
                    env={**os.environ, "DISPLAY": "127.0.0.1:99"})
    assert x11.returncode == 0 and x11.text == "display=none\n", x11


# --------------------------------------------------------------------------- bad input


async def test_oversized_terminal_and_flooded_environment(grant: Sshd, keys: dict[str, KeyPair], box: Box) -> None:
    """What OpenSSH never sends, from asyncssh as a client: refused or ignored, the session unharmed."""
    async with client(grant, keys["A"]) as conn:
        with pytest.raises(asyncssh.ChannelOpenError):  # the PTY request is refused
            await conn.create_process("true", term_type="xterm", term_size=(100_000, 24))
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process("true", term_type="xterm; rm -rf /", term_size=(80, 24))
        env = {f"X_{i:04d}": "x" for i in range(500)} | {"LANG": "C.UTF-8", "BAD": "1", "LC_CTYPE": "\x1b[2J"}
        flooded = await conn.run("echo $LANG ${BAD-unset} ${X_0001-unset} ${LC_CTYPE-unset}", env=env, timeout=30)
        assert (flooded.exit_status, flooded.stdout) == (0, "C.UTF-8 unset unset unset\n")
        lc = {f"LC_X{chr(65 + i % 26)}{chr(65 + i // 26)}": "x" for i in range(500)}
        many = await conn.run("env | grep -c ^LC_X", env=lc, timeout=30)
        assert int(many.stdout) == 64  # at most that many are taken
        process = await conn.create_process("read a; stty size; read b; stty size", term_type="xterm",
                                            term_size=(90, 20))
        process.stdin.write("\n")
        assert await line_of(process.stdout) == "20 90"
        process.change_terminal_size(50_000, 50_000)  # ignored
        process.change_terminal_size(100, 33)
        await asyncio.sleep(0.3)
        process.stdin.write("\n")
        assert await line_of(process.stdout) == "33 100"
        await asyncio.wait_for(process.wait(), 10)
        # At most MAX_SESSIONS sessions at once on one connection; one more is refused, then served again.
        held = [await conn.create_process("sleep 612") for _ in range(MAX_SESSIONS)]
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process("true")
        for session in held:
            session.close()
        await asyncio.gather(*(session.wait_closed() for session in held))
        assert (await conn.run("echo again", timeout=30)).stdout == "again\n"
    await no_process(box, "sleep 612")  # the closed sessions' processes went with them


@contextlib.asynccontextmanager
async def client(sshd: Sshd, key: KeyPair) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """asyncssh as the client: for what OpenSSH's client never sends."""
    known = asyncssh.import_known_hosts(sshd.known_hosts.read_text())
    async with asyncssh.connect("127.0.0.1", sshd.port, username="root", client_keys=[str(key.path)],
                                known_hosts=known, agent_path=None, config=None) as conn:
        yield conn


async def line_of(stdout: asyncssh.SSHReader[str]) -> str:
    """The next line with something on it (the terminal echoes the empty lines typed)."""
    async with asyncio.timeout(10):
        while not (line := (await stdout.readline()).strip()):
            pass
    return line


# --------------------------------------------------------------------------- through a stream


async def test_through_an_ssh_stream(box: Box, host_key: asyncssh.SSHKey, keys: dict[str, KeyPair],
                                     tmp_path: Path) -> None:
    """dmd's side opens an ``ssh`` stream per client connection; the agent's stream handler serves it."""
    feature = AgentSsh(box.driver, host_key)
    container = await box.info()

    async def handler(stream: p.Stream) -> p.StreamEnd:
        return await feature.ssh_stream(stream, container)

    pair = Pair(handler)
    served = Sshd(feature.server, container, Grant(keys=[keys["A"].public], user="alice"), tmp_path / "known",
                  pair=pair)
    await served.start()
    try:
        done = await served.ssh(keys["A"], "echo via-stream; exit 4")
        assert (done.returncode, done.text) == (4, "via-stream\n"), done
        payload = os.urandom(300_000)
        local = tmp_path / "p.bin"
        local.write_bytes(payload)
        assert (await served.scp(keys["A"], str(local), served.remote("/tmp/stream.bin"))).returncode == 0
        digest = (await box.sh("sha256sum /tmp/stream.bin")).stdout_text.split()[0]
        assert digest == hashlib.sha256(payload).hexdigest()
        assert (await served.ssh(keys["B"], "true")).returncode == 255
        async with asyncio.timeout(10):
            while len(served.ends) < 3:
                await asyncio.sleep(0.05)
        assert not pair.errors and not pair.agent.streams
        # dmd ends the stream (a revoked key, a stopped instance): the session and its process end.
        running = asyncio.ensure_future(served.ssh(keys["A"], "sleep 611"))
        async with asyncio.timeout(20):
            while "sleep 611" not in (await box.sh("ps -o args")).stdout_text:
                await asyncio.sleep(0.1)
        await served.streams[-1].close(p.StreamEnd("revoked", "the key was deleted"))
        ended = await asyncio.wait_for(running, 20)
        assert ended.returncode == 255, ended
        await no_process(box, "sleep 611")
    finally:
        await served.close()
        await pair.close()
    assert feature.facts() == {"ssh_host_key": hostkey.public_line(host_key)}


async def test_a_stream_without_ssh_parameters_is_refused(box: Box, host_key: asyncssh.SSHKey) -> None:
    feature = AgentSsh(box.driver, host_key)
    container = await box.info()

    async def handler(stream: p.Stream) -> p.StreamEnd:
        try:
            return await feature.ssh_stream(stream, container)
        except Exception as exc:  # as the agent's StreamHandlers does
            return p.StreamEnd(getattr(exc, "code", "error"), getattr(exc, "message", str(exc)))

    pair = Pair(handler)
    try:
        with pytest.raises(p.StreamRefused) as excinfo:
            await pair.dmd.open(p.StreamOpen("ssh", container.instance_id or 0,
                                             ssh=p.SshParams(user="x", login="", keys=["a\nb"])))
        assert excinfo.value.end.code == "invalid"
    finally:
        await pair.close()
