"""Configuration: the shipped config.toml states every default; env and files override."""

from __future__ import annotations

from pathlib import Path

import pytest

from order_engine.config import ConfigError, Settings, load_settings
from order_engine.venues.profiles import PROFILES

REPO = Path(__file__).resolve().parents[2]


def test_config_toml_states_exactly_the_defaults() -> None:
    assert load_settings(REPO / "config.toml", env={}) == Settings()


def test_no_file_means_defaults() -> None:
    assert load_settings(None, env={}) == Settings()


def test_environment_overrides_any_key() -> None:
    s = load_settings(
        None, env={"ORDER_ENGINE_ENGINE_WORKERS": "4", "ORDER_ENGINE_VENUES_PROFILE": "instant"}
    )
    assert s.engine.workers == 4
    assert s.profile == PROFILES["instant"]


def test_seed_variables_keep_their_meaning() -> None:
    s = load_settings(
        None,
        env={"PORT": "8080", "DATABASE_URL": "postgresql://u@h/db", "REDIS_URL": "redis://r:6379"},
    )
    assert (s.server.port, s.store.url, s.hub.redis_url) == (
        8080,
        "postgresql://u@h/db",
        "redis://r:6379",
    )


def test_a_profile_can_be_tuned_and_a_new_one_defined(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "[venues]\nprofile = 'slow'\n"
        "[profiles.slow]\nland_latency_ms = [5000, 9000]\ndrop_rate = 0.1\n"
        "[profiles.realistic]\ndrop_rate = 0.05\n"
    )
    s = load_settings(path, env={})
    assert s.profile.land_latency_ms == (5000.0, 9000.0)
    assert s.profile.drop_rate == 0.1
    assert s.profiles["realistic"].drop_rate == 0.05
    assert s.profiles["realistic"].quote_latency_ms == PROFILES["realistic"].quote_latency_ms


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[nope]\n", {}, "unknown config section"),
        ("[engine]\nworkerz = 3\n", {}, "unknown key"),
        ("", {"ORDER_ENGINE_ENGINE_WORKERS": "many"}, "engine.workers"),
        ("[venues]\nprofile = 'fast'\n", {}, "venues.profile"),
        ("[profiles.instant]\nland_latency_ms = [10, 1]\n", {}, "land_latency_ms"),
        ("[profiles.instant]\ndrop_rate = 1.5\n", {}, "drop_rate"),
        ("[engine\n", {}, "not valid TOML"),
        ("[limits]\nconnections_exempt = ['nginx']\n", {}, "limits.connections_exempt"),
        ("", {"ORDER_ENGINE_SERVER_HEADER_TIMEOUT_S": "0"}, "server.header_timeout_s"),
        ("[server]\nbacklog = 0\n", {}, "server.backlog"),
    ],
)
def test_bad_configuration_is_one_clear_error(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, env=env)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml", env={})
