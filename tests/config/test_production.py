"""What APP_ENV=production refuses to run with: one problem per refusal, all named at once."""
from __future__ import annotations

from dataclasses import replace

import pytest

from integration.merchants import ConfigError, demo_merchant_config, parse_merchants
from integration.production import (
    RefusedToStart,
    merchant_problems,
    production_problems,
    refuse_to_run_wrong,
    settings_problems,
)
from integration.settings import load_settings

GOOD_ENV = {
    "APP_ENV": "production",
    "DATABASE_URL": "postgres://u:p@db.example.com:5432/app",
    "REDIS_URL": "rediss://:pw@redis.example.com:6380",
    "ADMIN_TOKEN": "a-long-random-admin-token",
    "LOOP_BASE_URL": "https://api.loopreturns.com",
    "LOOP_API_KEY": "loop-key-of-the-shop",
    "LOOP_WEBHOOK_SECRETS": "whsec-of-the-shop",
    "RLM_BASE_URL": "https://rlm.example.com",
    "RLM_KEY": "rlm-key-of-the-shop",
}


@pytest.fixture
def env(monkeypatch):
    """A production environment with nothing wrong; tests spoil one thing at a time."""
    for name in ("MERCHANTS_TOML", "MERCHANTS_FILE", "MERCHANT_NAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in GOOD_ENV.items():
        monkeypatch.setenv(name, value)

    def spoil(**changes):
        for name, value in changes.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        settings = load_settings()
        merchants = parse_merchants([demo_merchant_config()])
        return production_problems(settings, merchants, admin_token=settings.admin_token, from_env=True)

    return spoil


def test_a_correct_production_configuration_has_no_problem(env):
    assert env() == []


@pytest.mark.parametrize("changes, expected", [
    ({"REDIS_URL": None}, "REDIS_URL is not set (the embedded Valkey would start"),
    ({"DATABASE_URL": None}, "DATABASE_URL is unset or SQLite"),
    ({"DATABASE_URL": "sqlite:////data/x.db"}, "DATABASE_URL is unset or SQLite"),
    ({"ADMIN_TOKEN": None}, "ADMIN_TOKEN is not set"),
    ({"ADMIN_TOKEN": "demo-admin-token"}, "ADMIN_TOKEN is the local default"),
    ({"LOOP_API_KEY": None}, "merchant demo: LOOP_API_KEY is unset or the sandbox key"),
    ({"LOOP_API_KEY": "demo-loop-key"}, "merchant demo: LOOP_API_KEY is unset or the sandbox key"),
    ({"LOOP_WEBHOOK_SECRETS": None}, "merchant demo: LOOP_WEBHOOK_SECRETS is unset or holds the sandbox secret"),
    ({"LOOP_WEBHOOK_SECRETS": "new-one,demo-webhook-secret"},
     "merchant demo: LOOP_WEBHOOK_SECRETS is unset or holds the sandbox secret"),
    ({"RLM_KEY": None}, "merchant demo: RLM_KEY is unset or the sandbox key"),
    ({"LOOP_BASE_URL": None}, "merchant demo: LOOP_BASE_URL is unset or the sandbox URL http://127.0.0.1:8001"),
    ({"RLM_BASE_URL": None}, "merchant demo: RLM_BASE_URL is unset or the sandbox URL http://127.0.0.1:8002"),
    ({"LOOP_BASE_URL": "http://api.loopreturns.com"},
     "merchant demo: LOOP_BASE_URL http://api.loopreturns.com is not https"),
    ({"RLM_BASE_URL": "http://rlm.example.com"}, "merchant demo: RLM_BASE_URL http://rlm.example.com is not https"),
])
def test_each_refusal_is_named(env, changes, expected):
    problems = env(**changes)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


def test_the_merchant_is_named_by_merchant_name(env):
    assert env(MERCHANT_NAME="acme", RLM_KEY=None) == ["merchant acme: RLM_KEY is unset or the sandbox key"]


def test_a_merchant_without_any_webhook_secret_is_refused():
    merchant = parse_merchants([{**demo_merchant_config(), "loop_base_url": "https://x.example",
                                 "rlm_base_url": "https://y.example", "loop_api_key": "k", "rlm_key": "r",
                                 "webhook_secrets": ["s"]}])["demo"]
    found = merchant_problems(replace(merchant, webhook_secrets=()))
    assert [str(p) for p in found] == ["webhook_secrets is empty: no webhook could be verified"]


def test_a_merchant_from_toml_is_told_by_its_keys():
    merchant = parse_merchants([demo_merchant_config()])["demo"]
    names = {p.subject for p in merchant_problems(merchant, from_env=False)}
    assert names == {"loop_base_url", "rlm_base_url", "loop_api_key", "webhook_secrets", "rlm_key"}


def test_outside_production_nothing_is_refused(env, monkeypatch):
    monkeypatch.setenv("APP_ENV", "development")
    monkeypatch.delenv("REDIS_URL")
    refuse_to_run_wrong(load_settings(), lambda: parse_merchants([demo_merchant_config()]))


def test_one_message_names_every_problem(env, monkeypatch):
    for name in ("REDIS_URL", "DATABASE_URL", "LOOP_API_KEY", "LOOP_BASE_URL"):
        monkeypatch.delenv(name)
    with pytest.raises(RefusedToStart) as refused:
        refuse_to_run_wrong(load_settings(), lambda: parse_merchants([demo_merchant_config()]))
    message = str(refused.value)
    assert message.startswith("APP_ENV=production refuses to start: REDIS_URL is not set")
    for part in ("; DATABASE_URL is unset or SQLite", "; merchant demo: LOOP_API_KEY is unset",
                 "; merchant demo: LOOP_BASE_URL is unset or the sandbox URL"):
        assert part in message


def test_an_invalid_merchant_configuration_is_named_with_the_rest(env, monkeypatch):
    monkeypatch.delenv("REDIS_URL")

    def broken():
        raise ConfigError("merchant #1: rlm_company: Not a valid integer.")

    with pytest.raises(RefusedToStart, match=r"REDIS_URL is not set .*; merchant configuration: "
                                             r"merchant #1: rlm_company"):
        refuse_to_run_wrong(load_settings(), broken)


def test_no_secret_is_ever_printed(env):
    problems = env(LOOP_BASE_URL="http://api.loopreturns.com", ADMIN_TOKEN=None)
    text = "; ".join(problems)
    for secret in ("loop-key-of-the-shop", "whsec-of-the-shop", "rlm-key-of-the-shop", ":pw@", ":p@"):
        assert secret not in text


def test_settings_problems_are_subject_and_text_for_doctor(env):
    settings = replace(load_settings(), redis_url=None)
    assert [(p.subject, str(p).startswith(p.subject + " ")) for p in settings_problems(settings, "t")] == \
        [("REDIS_URL", True)]
