"""`rlm-loop merchants check|subscribe|backfill NAME` over a stored merchant, against both
sandboxes and a real broker: one line per item, exit 1 on a failure, the report kept for the
pages, no secret printed. SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
import redis
import requests
from click.testing import CliRunner
from cryptography.fernet import Fernet

from cli.main import main
from integration.infra.embedded_redis import start_valkey
from integration.ops import onboarding_record
from integration.store.db import session_factory
from tests.ops.test_onboarding import KNOWN, LOOP_KEY, RLM_KEY, servers  # noqa: F401  (the fixture)

HOOK = "onboard-hook-secret-0123"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    proc, url = start_valkey(tmp_path_factory.mktemp("broker") / "valkey", persistence=False)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def merchant_toml(loop_url: str, rlm_url: str, rlm_key: str = RLM_KEY) -> str:
    return f'''[[merchants]]
name = "acme"
loop_base_url = "{loop_url}"
loop_api_key = "{LOOP_KEY}"
webhook_secrets = ["{HOOK}"]
rlm_base_url = "{rlm_url}"
rlm_company = 90
rlm_username = "svc"
rlm_key = "{rlm_key}"
division_number = 10
warehouse_number = 1
'''


@pytest.fixture
def run(database_url, servers, broker, tmp_path):  # noqa: F811
    for server in servers.values():
        requests.post(f"{server.url}/_sim/reset", timeout=5).raise_for_status()
    env = {"DATABASE_URL": database_url, "MERCHANT_KEYS": Fernet.generate_key().decode(),
           "MERCHANTS_FILE": None, "MERCHANTS_TOML": None, "APP_ENV": None, "REDIS_URL": broker,
           "OPERATOR_NAME": None}

    def invoke(*args: str):
        return CliRunner().invoke(main, list(args), env=env)

    assert invoke("init-db").exit_code == 0
    file = tmp_path / "acme.toml"
    file.write_text(merchant_toml(servers["loop"].url, servers["rlm"].url))
    assert invoke("merchants", "import", str(file)).exit_code == 0
    invoke.file = file  # type: ignore[attr-defined]
    return invoke


def no_secret(output: str) -> None:
    for secret in (LOOP_KEY, RLM_KEY, HOOK):
        assert secret not in output


def kept(database_url: str) -> dict:
    with session_factory(database_url)() as s:
        return onboarding_record.last_reports(s).get("acme", {})


def test_check_prints_each_check_and_keeps_the_report(run, database_url):
    done = run("merchants", "check", "acme", "--operator", "alice")
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert lines[0].startswith("ok       Loop API key: accepted by http://127.0.0.1:")
    assert "ok       RLM company: company 90 answers" in lines
    assert lines[-1].startswith("all ") and lines[-1].endswith(" checks passed")
    no_secret(done.output)
    assert kept(database_url)["check"]["operator"] == "alice"


def test_a_failed_check_exits_1_and_the_page_sees_it(run, database_url, servers, tmp_path):  # noqa: F811
    bad = tmp_path / "bad.toml"
    bad.write_text(merchant_toml(servers["loop"].url, servers["rlm"].url, rlm_key="wrong-rlm-key-123456"))
    assert run("merchants", "import", str(bad)).exit_code == 0
    done = run("merchants", "check", "acme", "--operator", "bob")
    assert done.exit_code == 1
    assert "failed   RLM credentials:" in done.output and "wrong-rlm-key" not in done.output
    assert kept(database_url)["check"]["ok"] is False


def test_a_disabled_merchant_can_be_checked_but_not_subscribed_or_backfilled(run):
    assert run("merchants", "disable", "acme").exit_code == 0
    assert run("merchants", "check", "acme", "--operator", "alice").exit_code == 0
    for args in (("subscribe", "acme", "--url", "https://x.example.com"), ("backfill", "acme")):
        done = run("merchants", *args, "--operator", "alice")
        assert done.exit_code == 1 and "is disabled" in done.output
    assert "no merchant nobody" in run("merchants", "check", "nobody", "--operator", "a").output


def test_subscribe_reports_the_refused_topic_and_exits_1(run, servers):  # noqa: F811
    requests.post(f"{servers['loop'].url}/_sim/config", json={"refused_topics": ["return.processing"]},
                  timeout=5).raise_for_status()
    done = run("merchants", "subscribe", "acme", "--url", "https://x.example.com", "--operator", "alice")
    assert done.exit_code == 1
    assert "ok       topic return: return.created, return.updated, return.closed → " \
           "https://x.example.com/webhooks/loop/acme (3 created or re-activated)" in done.output
    assert "failed   topic return.processing: Loop refused it:" in done.output
    bad = run("merchants", "subscribe", "acme", "--url", "x.example.com", "--operator", "alice")
    assert bad.exit_code == 1 and "must be http(s)://" in bad.output


def test_backfill_twice_publishes_each_open_return_once(run, servers, broker, database_url):  # noqa: F811
    redis.Redis.from_url(broker).flushdb()
    ids = [requests.post(f"{servers['loop'].url}/_sim/returns", timeout=5,
                         json={"order_name": "#1", "line_items": [KNOWN]}).json()["id"]
           for _ in range(2)]
    first = run("merchants", "backfill", "acme", "--operator", "alice")
    assert first.exit_code == 0, first.output
    assert all(f"ok       Loop return {i}: recorded" in first.output for i in ids)
    assert redis.Redis.from_url(broker).llen("erp") == 2  # one create_rma each, on the workers' queue
    again = run("merchants", "backfill", "acme", "--operator", "alice")
    assert again.exit_code == 0 and again.output.startswith("nothing to do")
    assert redis.Redis.from_url(broker).llen("erp") == 2
    assert kept(database_url)["backfill"]["summary"].startswith("nothing to do")
