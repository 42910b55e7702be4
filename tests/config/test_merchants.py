"""Merchant configuration: validated at start-up, with messages that name the bad key."""
import pytest

from integration.merchants import ConfigError, load_merchants, parse_merchants

EXAMPLE = "merchants.example.toml"


def test_the_example_file_is_valid(monkeypatch):
    monkeypatch.setenv("MERCHANTS_FILE", EXAMPLE)
    merchant = load_merchants()["acme-apparel"]
    assert merchant.webhook_secrets == ("current-secret",)
    assert merchant.reason_code_for("Arrived damaged") == "DEFECTIVE"
    assert merchant.reason_code_for("too small") == "TOO_SMALL"
    assert merchant.criteria.partial_grace_s == 259200
    assert str(merchant.criteria.value_threshold) == "500.0"


def base():
    import tomllib

    with open(EXAMPLE, "rb") as fh:
        return tomllib.load(fh)["merchants"][0]


@pytest.mark.parametrize("change, message", [
    ({"criteria": {"on_missing": "shrug"}}, "criteria.on_missing: Must be one of: flag, remove_and_process."),
    ({"criteria": {"accepted_conditions": ["GOOD", "SHINY"]}}, "criteria.accepted_conditions.1"),
    ({"criteria": {"partial_grace_s": -1}}, "criteria.partial_grace_s"),
    ({"criteria": {"grace_period": 10}}, "criteria.grace_period: Unknown field."),
    ({"webhook_secrets": []}, "webhook_secrets"),
    ({"rlm_company": "ninety"}, "rlm_company: Not a valid integer."),
    ({"timezone": "Mars/Olympus"}, "timezone: unknown time zone"),
    ({"loop_base_url": "not a url"}, "loop_base_url"),
])
def test_a_bad_value_names_the_key(change, message):
    entry = base()
    for key, value in change.items():
        entry[key] = {**entry[key], **value} if isinstance(value, dict) else value
    with pytest.raises(ConfigError) as info:
        parse_merchants([entry])
    assert message in str(info.value)
    assert "merchant #1" in str(info.value)


def test_a_missing_key_is_named():
    entry = base()
    del entry["loop_api_key"]
    with pytest.raises(ConfigError, match="loop_api_key: Missing data"):
        parse_merchants([entry])


def test_two_merchants_cannot_share_a_name():
    with pytest.raises(ConfigError, match="used twice"):
        parse_merchants([base(), base()])


def test_an_unreadable_file_is_reported(monkeypatch, tmp_path):
    bad = tmp_path / "m.toml"
    bad.write_text("[[merchants]\nname = ")
    monkeypatch.setenv("MERCHANTS_FILE", str(bad))
    with pytest.raises(ConfigError, match="MERCHANTS_FILE"):
        load_merchants()


def test_the_configuration_can_come_from_a_config_var(monkeypatch):
    with open(EXAMPLE) as fh:
        monkeypatch.setenv("MERCHANTS_TOML", fh.read())
    monkeypatch.delenv("MERCHANTS_FILE", raising=False)
    assert list(load_merchants()) == ["acme-apparel"]
    monkeypatch.setenv("MERCHANTS_TOML", "merchants = 3")
    with pytest.raises(ConfigError, match="MERCHANTS_TOML"):
        load_merchants()
