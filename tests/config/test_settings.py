"""Service settings: YAML defaults, SLUICE_* environment on top, flags on top of that; clear errors."""

from __future__ import annotations

import pytest

from config.settings import SettingsError, load_settings


def test_precedence_defaults_env_flags():
    s = load_settings(env={})
    assert s.port == 8080 and s.rate_limit_enabled is False and s.dedup_window_seconds == 3600
    s = load_settings(env={"SLUICE_PORT": "9000", "SLUICE_RATE_LIMIT_ENABLED": "true"})
    assert s.port == 9000 and s.rate_limit_enabled is True
    s = load_settings({"port": 9100}, env={"SLUICE_PORT": "9000"})
    assert s.port == 9100, "a flag beats the environment"


def test_bad_values_name_the_variable():
    with pytest.raises(SettingsError, match="SLUICE_PORT: expected int, found 'eighty'"):
        load_settings(env={"SLUICE_PORT": "eighty"})
    with pytest.raises(SettingsError, match="SLUICE_DEDUP_ENABLED: expected a boolean"):
        load_settings(env={"SLUICE_DEDUP_ENABLED": "maybe"})
    with pytest.raises(SettingsError, match="unknown setting"):
        load_settings({"no_such_setting": 1}, env={})


def test_children_get_the_same_settings():
    s = load_settings({"port": 9200, "rate_limit_enabled": True}, env={})
    again = load_settings(env=s.env_for_children())
    assert again == s


def test_endpoint_overrides_must_be_a_json_object():
    assert load_settings(env={"SLUICE_ENDPOINT_OVERRIDES": '{"https://a": "http://b"}'}).endpoint_override_map == {
        "https://a": "http://b"}
    with pytest.raises(SettingsError, match="JSON object"):
        _ = load_settings(env={"SLUICE_ENDPOINT_OVERRIDES": "[1]"}).endpoint_override_map
