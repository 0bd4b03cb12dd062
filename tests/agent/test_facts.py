"""Host facts and metrics, on this machine and on a fake /proc tree."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent.facts import (
    collect_facts,
    local_addresses,
    parse_meminfo,
    parse_os_release,
)
from agent.metrics import MetricsSampler, parse_proc_stat

REPO = Path(__file__).resolve().parents[2]


async def test_facts_on_this_machine() -> None:
    facts = await collect_facts(gpu_timeout=5)
    assert facts["hostname"] == socket.gethostname()
    assert facts["cpu_count"] >= 1
    assert facts["memory_total_mb"] > 0
    assert facts["disk_total_mb"] > 0
    assert facts["disk_free_mb"] >= 0
    assert isinstance(facts["kernel"], str) and facts["kernel"]
    assert isinstance(facts["arch"], str) and facts["arch"]
    assert facts["os"]["name"]
    assert set(facts["addresses"]) == {"ipv4", "ipv6"}
    assert all(isinstance(a, str) for a in facts["addresses"]["ipv4"] + facts["addresses"]["ipv6"])
    assert "127.0.0.1" not in facts["addresses"]["ipv4"]
    assert "::1" not in facts["addresses"]["ipv6"]
    assert isinstance(facts["gpus"], list)
    assert "public_address" not in facts
    assert "runtime" not in facts  # the container runtime driver adds its own facts
    if sys.platform.startswith("linux"):
        assert facts["memory_available_mb"] > 0
    assert json.loads(json.dumps(facts)) == facts


async def test_facts_options(tmp_path: Path) -> None:
    facts = await collect_facts(
        docker_data_root=str(tmp_path), public_address="203.0.113.7", gpu_timeout=5
    )
    assert facts["public_address"] == "203.0.113.7"
    assert facts["disk_path"] == str(tmp_path)
    missing = await collect_facts(docker_data_root=str(tmp_path / "nope"), gpu_timeout=5)
    assert missing["disk_path"] == "/"


async def test_facts_from_a_fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no GPU tools
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text(
        'PRETTY_NAME="Ubuntu 22.04.5 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\n'
    )
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text(
        "MemTotal:       65536000 kB\nMemFree:         1000000 kB\nMemAvailable:   32768000 kB\n"
    )
    (proc / "cpuinfo").write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 7763 64-Core Processor\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 7763 64-Core Processor\n\n"
    )
    (proc / "net").mkdir()
    (proc / "net" / "if_inet6").write_text(
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "fe80000000000000021122fffe334455 02 40 20 80     eth0\n"
        "20010db8000000000000000000000002 02 40 00 80     eth0\n"
    )
    facts = await collect_facts(root=str(tmp_path), gpu_timeout=5)
    assert facts["os"] == {
        "id": "ubuntu",
        "name": "Ubuntu",
        "version": "22.04",
        "pretty_name": "Ubuntu 22.04.5 LTS",
    }
    assert facts["cpu_model"] == "AMD EPYC 7763 64-Core Processor"
    assert facts["cpu_count"] == 2
    assert (facts["memory_total_mb"], facts["memory_available_mb"]) == (64000, 32000)
    assert facts["addresses"]["ipv6"] == ["2001:db8::2"]  # link-local dropped
    assert facts["gpus"] == []


def test_local_addresses_real() -> None:
    addresses = local_addresses()
    assert set(addresses) == {"ipv4", "ipv6"}
    for a in addresses["ipv4"]:
        socket.inet_pton(socket.AF_INET, a)


def test_parse_os_release_quoting() -> None:
    parsed = parse_os_release("# c\nNAME=\"Debian GNU/Linux\"\nVERSION_ID='12'\nID=debian\n\nX\n")
    assert parsed == {"NAME": "Debian GNU/Linux", "VERSION_ID": "12", "ID": "debian"}


def test_parse_meminfo() -> None:
    assert parse_meminfo("MemTotal:  100 kB\nHugePages_Total:  0\n") == {
        "MemTotal": 100,
        "HugePages_Total": 0,
    }


def test_parse_proc_stat() -> None:
    times = parse_proc_stat("cpu  100 0 50 800 50 0 0 0 10 0\ncpu0 1 2 3 4\n")
    assert times is not None
    assert (times.busy, times.total) == (150, 1000)
    assert parse_proc_stat("intr 1 2 3\n") is None


def test_metrics_cpu_pct_from_deltas(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text("MemTotal: 2048000 kB\nMemAvailable: 1024000 kB\n")
    (proc / "loadavg").write_text("0.50 0.25 0.10 1/100 4242\n")
    (proc / "stat").write_text("cpu  100 0 100 800 0 0 0 0 0 0\n")
    sampler = MetricsSampler(root=str(tmp_path))
    (proc / "stat").write_text("cpu  175 0 125 900 0 0 0 0 0 0\n")  # +100 busy, +100 idle
    sample = sampler.sample()
    assert sample["cpu_pct"] == 50.0
    assert (sample["memory_total_mb"], sample["memory_available_mb"]) == (2000, 1000)
    assert sample["memory_used_mb"] == 1000
    assert (sample["load_1"], sample["load_5"], sample["load_15"]) == (0.5, 0.25, 0.1)
    assert sampler.sample()["cpu_pct"] is None  # no time passed since the last call


async def test_metrics_on_this_machine() -> None:
    sampler = MetricsSampler()
    await asyncio.sleep(0.2)
    sample = sampler.sample()
    json.dumps(sample)
    if sys.platform.startswith("linux"):
        assert sample["cpu_pct"] is None or 0.0 <= sample["cpu_pct"] <= 100.0
        assert sample["memory_total_mb"] > 0
    assert isinstance(await sampler.sample_gpus(timeout=5), list)


def test_agent_modules_use_only_the_standard_library() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import agent.facts, agent.metrics, agent.gpu, agent.gpu.nvidia, agent.gpu.amd,"
        " agent.gpu.jetson\n"
        "new = set(sys.modules) - before\n"
        "bad = sorted({m.split('.')[0] for m in new} - set(sys.stdlib_module_names) - {'agent'})\n"
        "print(','.join(bad))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "", f"non-stdlib modules imported: {out.stdout}"
