"""Configuration: file < environment < command line, and one clear line for a bad value."""

import json

import pytest

from dmd.config import Config, ConfigError, load


def test_defaults(tmp_path):
    cfg = load(cli={"data_dir": str(tmp_path)}, environ={})
    assert (cfg.host, cfg.port) == ("0.0.0.0", 3150)
    assert cfg.database == f"sqlite:///{tmp_path}/dmd.sqlite3"
    assert cfg.sessions == "memory"
    assert cfg.base_url == "http://localhost:3150"


def test_precedence_file_env_cli(tmp_path):
    f = tmp_path / "config.json"
    f.write_text(json.dumps({"listen": "127.0.0.1:4000", "sessions": "redis://127.0.0.1:6379/1",
                             "data_dir": str(tmp_path), "trust_proxy": True}))
    cfg = load(str(f), environ={})
    # The old boolean still reads: true is loopback only.
    assert cfg.port == 4000 and cfg.sessions.startswith("redis") and cfg.trust_proxy == ["127.0.0.0/8", "::1/128"]
    cfg = load(str(f), environ={"DMD_LISTEN": "127.0.0.1:5000", "DMD_TRUST_PROXY": "false"})
    assert cfg.port == 5000 and cfg.trust_proxy == []
    cfg = load(str(f), cli={"listen": "[::1]:6000"}, environ={"DMD_LISTEN": "127.0.0.1:5000"})
    assert (cfg.host, cfg.port) == ("::1", 6000)
    assert cfg.base_url == "http://[::1]:6000"


@pytest.mark.parametrize("values, key", [
    ({"listen": "nonsense"}, "listen"),
    ({"listen": "0.0.0.0:70000"}, "listen"),
    ({"database": "oracle://x"}, "database"),
    ({"sessions": "mongodb://x"}, "sessions"),
    ({"session_secret": "short"}, "session_secret"),
    ({"public_url": "ftp://x"}, "public_url"),
    ({"trust_proxy": "perhaps"}, "trust_proxy"),
    ({"session_max_age": "soon"}, "session_max_age"),
    ({"lsiten": "0.0.0.0:1"}, "lsiten"),
    ({"log_level": "loud"}, "log_level"),
    ({"local_port_pool": "30000-20000"}, "local_port_pool"),
    ({"local_port_pool": "1-70000"}, "local_port_pool"),
    ({"local_port_forwarding": "magic"}, "local_port_forwarding"),
    ({"ssh_listen": "2222"}, "ssh_listen"),
    ({"ssh_listen": "0.0.0.0:70000"}, "ssh_listen"),
    ({"ssh_listen": "yes please"}, "ssh_listen"),
])
def test_invalid_settings_name_the_key(tmp_path, values, key):
    f = tmp_path / "config.json"
    f.write_text(json.dumps(values))
    with pytest.raises(ConfigError) as e:
        load(str(f), environ={})
    assert e.value.key == key
    assert str(e.value).startswith(f"{key}: ")


def test_local_port_pool_from_the_environment():
    cfg = load(environ={"DMD_LOCAL_PORT_POOL": "21000-21099,22000", "DMD_LOCAL_PORT_FORWARDING": "proxy"})
    assert (cfg.local_port_pool, cfg.local_port_forwarding) == ("21000-21099,22000", "proxy")


def test_env_values_are_checked_too():
    with pytest.raises(ConfigError, match="^agent_heartbeat_s: "):
        load(environ={"DMD_AGENT_HEARTBEAT_S": "0"})


def test_broken_config_file(tmp_path):
    f = tmp_path / "config.json"
    f.write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load(str(f), environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load(str(tmp_path / "missing.json"), environ={})


def test_password_is_redacted_in_errors():
    with pytest.raises(ConfigError) as e:
        Config(database="oracle://scott:tiger@db/x").validate()
    assert "tiger" not in str(e.value)


def test_the_ssh_gateway_listens_where_told_or_not_at_all(tmp_path):
    cfg = load(cli={"data_dir": str(tmp_path)}, environ={})
    assert (cfg.ssh_host, cfg.ssh_port) == ("0.0.0.0", 2222)  # on by default
    cfg = load(environ={"DMD_SSH_LISTEN": "127.0.0.1:0"})  # any free port (tests read it back)
    assert (cfg.ssh_host, cfg.ssh_port) == ("127.0.0.1", 0)
    cfg = load(cli={"ssh_listen": "[::1]:2022"}, environ={"DMD_SSH_LISTEN": "127.0.0.1:0"})
    assert (cfg.ssh_host, cfg.ssh_port) == ("::1", 2022)
    for off in ("", "off", "OFF"):
        assert load(environ={"DMD_SSH_LISTEN": off}).ssh_port is None


def test_every_setting_is_in_the_readme_table():
    """The README's settings table names every setting, with its environment variable."""
    import dataclasses
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    for f in dataclasses.fields(Config):
        if not f.init:
            continue  # derived from a setting (host and port from listen, ...)
        row = next((r for r in rows if r.startswith(f"| `{f.name}` |")), None)
        assert row is not None, f"{f.name} is missing from README.md's settings table"
        assert f"DMD_{f.name.upper()}" in row, row
