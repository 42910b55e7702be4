"""CLI commands that need no running stack, and the maintenance functions behind them."""
from __future__ import annotations

from integration.settings import load_settings
from integration.store.models import WebhookEvent
from integration.workflow.context import Context
from integration.workflow.maintenance import replay_event


def test_merchants_lists_the_configuration(cli):
    result = cli("merchants", env={"MERCHANTS_FILE": None, "APP_ENV": None})
    assert result.exit_code == 0
    assert result.output.startswith("demo\n")
    assert "company 90, division 10, returns warehouse 1" in result.output
    assert "demo-loop-key" not in result.output and "demo-webhook-secret" not in result.output


def test_merchants_names_the_bad_key_of_an_invalid_file(cli, tmp_path):
    bad = tmp_path / "merchants.toml"
    bad.write_text('[[merchants]]\nname = "acme"\nloop_base_url = "not a url"\n')
    result = cli("merchants", env={"MERCHANTS_FILE": str(bad)})
    assert result.exit_code == 1
    assert "merchant #1" in result.output and "loop_base_url" in result.output


def test_merchants_refuses_sandbox_defaults_in_production(cli):
    result = cli("merchants", env={"MERCHANTS_FILE": None, "APP_ENV": "production"})
    assert result.exit_code == 1
    assert "FAIL   LOOP_BASE_URL is unset or the sandbox URL http://127.0.0.1:8001" in result.output
    assert "FAIL   LOOP_API_KEY is unset or the sandbox key" in result.output
    assert "FAIL   LOOP_WEBHOOK_SECRETS is unset or holds the sandbox secret" in result.output


def test_replay_hands_a_stored_event_back_to_the_pipeline(sessions, merchants):
    published = []
    ctx = Context(settings=load_settings(), merchants=merchants, sessions=sessions,
                  enqueue=lambda step, i: published.append((step, i)))
    with sessions() as s:
        done = WebhookEvent(merchant="demo", dedupe_key="a", body_sha256="a", status="done", attempts=3,
                            topic="return", trigger="return.updated", loop_return_id="77",
                            payload={"topic": "return", "loop_return_id": "77"})
        invalid = WebhookEvent(merchant="demo", dedupe_key="b", body_sha256="b", status="invalid")
        label = WebhookEvent(merchant="demo", dedupe_key="c", body_sha256="c", status="ignored",
                             topic="label", payload={"topic": "label"})
        s.add_all([done, invalid, label])
        s.commit()
    assert "nothing to replay" in replay_event(ctx, invalid.id)
    assert "does not act on" in replay_event(ctx, label.id)
    assert published == []
    assert "replaying" in replay_event(ctx, done.id)
    assert published == [("handle_event", done.id)]
    with sessions() as s:
        again = s.get(WebhookEvent, done.id)
        assert (again.status, again.attempts) == ("received", 0)
