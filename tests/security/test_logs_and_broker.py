"""No shopper email, name or address and no secret in our logs or in any Celery message.

The demo's returns go through the real stack (the session's, which records every command the
broker sees into logs/broker.log); then every log is scanned for each sample shopper's email,
name and street address, and for the Loop API key, the RLM key, the webhook secret and the
admin token. Celery message bodies travel base64-encoded, so they are decoded and scanned too.

In scope: our service's processes (web, worker*, loopworker*, beat, and any other process log)
and the broker traffic. Out of scope: loop.log and rlm.log, the logs of the two sandboxes. They
stand in for Loop and RLM, the vendors' systems, which hold the shopper's data by nature; they
are not our code and do not run in production.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import time
import uuid
from pathlib import Path
from unittest import mock

import pytest
import redis
import requests

from integration.merchants import demo_merchant_config
from stack.demo import SCENARIOS, Demo

pytestmark = pytest.mark.stack

SANDBOX_LOGS = {"loop.log", "rlm.log"}
# A Celery message body as MONITOR prints it: "body": "<base64>", quotes escaped or not.
CELERY_BODY = re.compile(r'body\\?"\s*:\s*\\?"([A-Za-z0-9+/=]{8,})')


def decoded_bodies(text: str) -> list[str]:
    bodies = []
    for blob in CELERY_BODY.findall(text):
        try:
            bodies.append(base64.b64decode(blob, validate=True).decode("utf-8", "replace"))
        except ValueError:
            pass  # not base64 after all
    return bodies


def our_logs(logs: Path) -> dict[str, str]:
    """Each of our log files' text, broker traffic with its decoded message bodies appended."""
    texts = {}
    for path in sorted(logs.iterdir()):
        if path.is_file() and path.name not in SANDBOX_LOGS:
            text = path.read_text(encoding="utf-8", errors="replace")
            texts[path.name] = "\n".join([text, *decoded_bodies(text)])
    return texts


def find(texts: dict[str, str], needles: list[str]) -> dict[str, list[str]]:
    """{needle: [files it appears in]}, case-insensitively, for the needles that appear at all."""
    found = {}
    for needle in needles:
        where = [name for name, text in texts.items() if needle.lower() in text.lower()]
        if where:
            found[needle] = where
    return found


def shopper_data(stack, loop_ids: list[str]) -> list[str]:
    """Each sample shopper's email, name and street, as the Loop sandbox holds them."""
    data = []
    for loop_id in loop_ids:
        record = requests.get(f"{stack.url('loop')}/_sim/returns/{loop_id}", timeout=10).json()
        address = record["address"]
        data += [record["customer"], address["name"], address["address1"]]
    assert all(data) and len(data) == 3 * len(loop_ids)
    return data


def secrets_of(stack) -> list[str]:
    """The credentials the stack's processes run with, read the way they read them."""
    with mock.patch.dict(os.environ, stack.env, clear=True):
        config = demo_merchant_config()
    values = [config["loop_api_key"], config["rlm_key"], *config["webhook_secrets"],
              stack.env["ADMIN_TOKEN"]]
    assert all(len(v) >= 8 for v in values)  # short ones would match by chance
    return values


def plant_and_flush(stack, needle: str) -> None:
    """Send a Celery-shaped message holding `needle` through the broker, then wait until the
    capture has written it: everything the broker saw before it is on disk then too."""
    body = base64.b64encode(json.dumps([[needle], {}, {}]).encode()).decode()
    client = redis.Redis.from_url(stack.redis_url)
    client.lpush(f"security-probe-{uuid.uuid4().hex}", json.dumps({"body": body}))
    broker_log = stack.workdir / "logs" / "broker.log"
    deadline = time.monotonic() + 15
    while needle not in "".join(decoded_bodies(broker_log.read_text(errors="replace"))):
        assert time.monotonic() < deadline, "the broker capture never wrote the probe"
        client.echo("x" * 9000)  # more than the capture's write buffer: it flushes
        time.sleep(0.2)


@pytest.fixture(scope="module")
def scanned(stack):
    """The demo driven through the stack, then every log of ours read in full."""
    assert stack.capture_broker, "the session stack must record the broker's traffic"
    rows = Demo(stack, out=io.StringIO()).run(len(SCENARIOS), timeout=150)
    probe = f"probe-{uuid.uuid4().hex}@example.com"
    plant_and_flush(stack, probe)
    return {"texts": our_logs(stack.workdir / "logs"), "rows": rows, "probe": probe,
            "shoppers": shopper_data(stack, [r["loop_return_id"] for r in rows])}


def test_the_scan_reads_real_traffic_and_would_find_a_leak(scanned):
    texts = scanned["texts"]
    assert {"web.log", "worker1.log", "loopworker1.log", "beat.log", "broker.log"} <= set(texts)
    # Every sample return went through our service (whether the demo's outcome matched is
    # tests/stack's business).
    assert all(row["state"] != "(not yet seen)" for row in scanned["rows"])
    assert "POST /webhooks/loop/demo" in texts["web.log"]  # the shoppers' webhooks reached us
    bodies = decoded_bodies(texts["broker.log"])
    assert len(bodies) > len(scanned["rows"])  # Celery messages were captured and decoded
    # A planted message is found, decoded from base64; shoppers' data written plainly would be too.
    assert find(texts, [scanned["probe"]]) == {scanned["probe"]: ["broker.log"]}
    planted = {"planted.log": f"INFO ship_from={{'name': '{scanned['shoppers'][1].upper()}'}}"}
    assert find(planted, scanned["shoppers"])[scanned["shoppers"][1]] == ["planted.log"]


def test_no_shopper_email_name_or_address_in_our_logs_or_celery_messages(scanned):
    assert find(scanned["texts"], scanned["shoppers"]) == {}


def test_no_secret_or_api_key_in_our_logs_or_celery_messages(stack, scanned):
    assert find(scanned["texts"], secrets_of(stack)) == {}
