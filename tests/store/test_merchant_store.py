"""Merchants kept as data: secrets encrypted at rest, key rotation, idempotent import, masked
show, disable, and the refresh that picks a change up without a restart. SQLite and PostgreSQL."""
from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import text

from integration.merchants import ConfigError, demo_merchant_config
from integration.store import merchant_store as store

LOOP_KEY = "loop-api-key-0123456789-secret"
RLM_KEY = "rlm-key-abcdefghijkl-secret"
HOOK = "webhook-secret-zyxwvutsrq"


def config(name: str = "acme", **extra) -> dict:
    c = demo_merchant_config()
    c.update(name=name, loop_api_key=LOOP_KEY, rlm_key=RLM_KEY, webhook_secrets=[HOOK], **extra)
    return c


def toml(name: str = "acme", expiry: int = 30) -> str:
    return f'''[[merchants]]
name = "{name}"
loop_base_url = "https://api.loopreturns.com"
loop_api_key = "{LOOP_KEY}"
webhook_secrets = ["{HOOK}"]
rlm_base_url = "https://rlm.example.com"
rlm_company = 90
rlm_username = "svc"
rlm_key = "{RLM_KEY}"
division_number = 10
warehouse_number = 1
[merchants.criteria]
expiry_days = {expiry}
'''


@pytest.fixture
def keys():
    return MultiFernet([Fernet(Fernet.generate_key())])


def test_the_raw_row_holds_no_secret_in_clear(sessions, keys):
    with sessions() as s:
        assert store.save(s, config(), keys) == "added"
    with sessions() as s:
        raw = json.dumps([list(map(str, row)) for row in s.execute(text("SELECT * FROM merchants"))])
    for secret in (LOOP_KEY, RLM_KEY, HOOK):
        assert secret not in raw
    assert "acme" in raw and "127.0.0.1:8001" in raw  # the rest is plain JSON


def test_load_all_gives_validated_merchants_with_their_secrets(sessions, keys):
    with sessions() as s:
        store.save(s, config(), keys)
        m = store.load_all(s, keys)["acme"]
    assert (m.loop_api_key, m.rlm_key, m.webhook_secrets) == (LOOP_KEY, RLM_KEY, (HOOK,))


def test_without_merchant_keys_storing_is_refused_naming_the_variable(sessions):
    with sessions() as s, pytest.raises(ConfigError, match="MERCHANT_KEYS"):
        store.save(s, config(), None)


def test_a_bad_key_in_merchant_keys_is_named_not_printed(monkeypatch):
    monkeypatch.setenv("MERCHANT_KEYS", f"{Fernet.generate_key().decode()},not-a-key")
    with pytest.raises(ConfigError, match="MERCHANT_KEYS: key #2") as exc:
        store.keys_from_env()
    assert "not-a-key" not in str(exc.value)


def test_rotation_old_key_still_decrypts_and_rotate_re_encrypts_with_the_new(sessions):
    a, b = Fernet.generate_key(), Fernet.generate_key()
    with sessions() as s:
        store.save(s, config(), MultiFernet([Fernet(a)]))
    both = MultiFernet([Fernet(b), Fernet(a)])
    with sessions() as s:
        assert store.load_all(s, both)["acme"].loop_api_key == LOOP_KEY
        assert store.save(s, config(rlm_username="other"), both) == "updated"  # a re-save: under B
        token = s.scalar(text("SELECT secrets FROM merchants"))
    assert json.loads(Fernet(b).decrypt(token.encode()))["loop_api_key"] == LOOP_KEY
    with pytest.raises(InvalidToken):
        Fernet(a).decrypt(token.encode())


def test_rotate_keys_re_encrypts_unchanged_rows(sessions):
    a, b = Fernet.generate_key(), Fernet.generate_key()
    with sessions() as s:
        store.save(s, config(), MultiFernet([Fernet(a)]))
        assert store.rotate_keys(s, MultiFernet([Fernet(b), Fernet(a)])) == 1
    with sessions() as s:
        assert store.load_all(s, MultiFernet([Fernet(b)]))["acme"].rlm_key == RLM_KEY
        with pytest.raises(ConfigError, match="no key in MERCHANT_KEYS"):
            store.load_all(s, MultiFernet([Fernet(a)]))


def test_import_is_idempotent_and_bumps_the_version_only_on_change(sessions, keys):
    with sessions() as s:
        assert store.import_toml(s, toml(), keys) == store.ImportResult(added=["acme"])
        assert store.import_toml(s, toml(), keys) == store.ImportResult(unchanged=["acme"])
        assert store.show(s, "acme", keys)["version"] == 1
        assert store.import_toml(s, toml(expiry=10), keys) == store.ImportResult(updated=["acme"])
        assert store.show(s, "acme", keys)["version"] == 2


def test_import_validates_every_entry_first_and_names_the_key(sessions, keys):
    bad = toml() + toml("beta").replace('rlm_company = 90', 'rlm_company = "ninety"')
    with sessions() as s:
        with pytest.raises(ConfigError, match="rlm_company"):
            store.import_toml(s, bad, keys)
        assert store.stored_names(s) == {}


def test_update_validates_by_the_schema(sessions, keys):
    with sessions() as s:
        store.save(s, config(), keys)
        with pytest.raises(ConfigError, match=r"criteria\.expiry_days"):
            store.update(s, "acme", {"criteria.expiry_days": "soon"}, keys)
        assert store.update(s, "acme", {"criteria.expiry_days": 7}, keys) == "updated"
        assert store.load_all(s, keys)["acme"].criteria.expiry_days == 7
        with pytest.raises(store.UnknownMerchant):
            store.update(s, "nobody", {"rlm_company": 1}, keys)


def test_show_masks_every_secret(sessions, keys):
    with sessions() as s:
        store.save(s, config(), keys)
        shown = store.show(s, "acme", keys)
    out = json.dumps(shown)
    for secret in (LOOP_KEY, RLM_KEY, HOOK):
        assert secret not in out
    assert shown["config"]["loop_api_key"] == "****" + LOOP_KEY[-4:]
    assert shown["config"]["webhook_secrets"] == ["****" + HOOK[-4:]]
    assert store.mask("short") == "****"


def test_in_effect_is_todays_merchants_with_an_empty_table_then_the_table_wins(
        sessions, database_url, keys, monkeypatch, tmp_path):
    file = tmp_path / "m.toml"
    file.write_text(toml("acme").replace("rlm_username = \"svc\"", "rlm_username = \"from-file\"")
                    + toml("beta"))
    monkeypatch.setenv("MERCHANTS_FILE", str(file))
    monkeypatch.delenv("MERCHANTS_TOML", raising=False)
    assert set(store.in_effect(database_url, keys)) == {"acme", "beta"}
    with sessions() as s:
        store.save(s, config("acme", rlm_username="from-table"), keys)
        store.save(s, config("gamma"), keys)
    found = store.in_effect(database_url, keys)
    assert set(found) == {"acme", "beta", "gamma"} and found["acme"].rlm_username == "from-table"
    with sessions() as s:
        store.disable(s, "acme")
    assert set(store.in_effect(database_url, keys)) == {"beta", "gamma"}  # not the file's acme either


def test_refreshing_picks_up_a_change_without_a_restart(sessions, database_url, keys, monkeypatch):
    monkeypatch.delenv("MERCHANTS_FILE", raising=False)
    monkeypatch.delenv("MERCHANTS_TOML", raising=False)
    now = [0.0]
    live = store.Refreshing(lambda: store.signature(database_url),
                            lambda: store.in_effect(database_url, keys), refresh_s=5, clock=lambda: now[0])
    assert set(live.get()) == {"demo"}  # empty table: today's environment merchant
    with sessions() as s:
        store.save(s, config(), keys)
    now[0] = 1.0
    assert set(live.get()) == {"demo"}  # not asked again before MERCHANTS_REFRESH_S
    now[0] = 6.0
    first = live.get()
    assert set(first) == {"acme"}
    now[0] = 12.0
    assert live.get() is first  # unchanged table: the same dict, nothing re-read
    with sessions() as s:
        store.disable(s, "acme")
    now[0] = 18.0
    assert live.get() == {}


def test_stored_rows_without_merchant_keys_stop_the_process_naming_the_variable(sessions, database_url, keys,
                                                                               monkeypatch):
    monkeypatch.delenv("MERCHANT_KEYS", raising=False)
    with sessions() as s:
        store.save(s, config(), keys)
    with pytest.raises(ConfigError, match="MERCHANT_KEYS is not set"):
        store.in_effect(database_url)
