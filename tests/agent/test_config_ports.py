"""The agent config's port keys: ``port_pools`` and ``port_forwarding`` (defaults, checks, saving)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent import cli
from agent.config import AgentConfig, ConfigError, load_config, save_config

GOOD = {"server": "http://dm:3150", "node_id": 1, "credential": "dmn_x"}


def test_defaults() -> None:
    config = AgentConfig.from_dict(GOOD)
    assert config.port_pools == {"tcp": "20000-29999", "udp": "20000-29999"}
    assert config.port_forwarding == "auto"
    assert config.pools.to_dict() == {"tcp": [[20000, 29999]], "udp": [[20000, 29999]]}
    assert AgentConfig.from_dict({**GOOD, "port_pools": None, "port_forwarding": None}) == config
    saved = config.to_dict()
    assert saved["port_pools"] == {"tcp": "20000-29999", "udp": "20000-29999"}
    assert saved["port_forwarding"] == "auto"


def test_port_keys_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    pools = {"tcp": "20000-20999,30000-30099", "udp": ""}
    path.write_text(json.dumps({**GOOD, "port_pools": pools, "port_forwarding": "proxy"}))
    config = load_config(str(path))
    assert config.port_pools == pools and config.port_forwarding == "proxy"
    assert config.pools.to_dict() == {"tcp": [[20000, 20999], [30000, 30099]], "udp": []}
    assert "port_pools" not in config.extra and "port_forwarding" not in config.extra
    save_config(config.replace(credential="dmn_y"))
    saved = json.loads(path.read_text())
    assert saved["port_pools"] == pools and saved["port_forwarding"] == "proxy"
    assert load_config(str(path)) == config.replace(credential="dmn_y")


@pytest.mark.parametrize(("changes", "words"), [
    ({"port_pools": "20000-29999"}, "must be an object"),
    ({"port_pools": {"tcp": "0-10"}}, "outside 1-65535"),
    ({"port_pools": {"tcp": "30000-20000"}}, "ends before it starts"),
    ({"port_pools": {"tcp": "20000-29999", "icmp": "1"}}, "unknown protocol"),
    ({"port_pools": {"udp": 5}}, "must be a text"),
    ({"port_forwarding": "iptables"}, "\"auto\", \"kernel\" or \"proxy\""),
    ({"port_forwarding": 1}, "port_forwarding"),
])
def test_bad_port_keys(changes: dict[str, Any], words: str) -> None:
    key = next(iter(changes))
    with pytest.raises(ConfigError) as info:
        AgentConfig.from_dict({**GOOD, **changes})
    assert info.value.key == key and key in str(info.value) and words in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("changes", [{"port_pools": {"tcp": "1-99999"}}, {"port_forwarding": "fast"}])
def test_bad_port_keys_stop_dmc_run_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                changes: dict[str, Any]) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**GOOD, **changes}))
    assert cli.main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dmc: ") and next(iter(changes)) in err, err
