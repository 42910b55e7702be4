"""`rediss://` with a self-signed certificate, as Heroku Redis serves it: every Redis client of
the service (redis-py for the limiter, locks, metrics and web checks; the Celery broker; RedBeat;
Flower's broker view; the CLI's publisher) gets its TLS policy from integration.infra.redis_tls and
reaches a real TLS endpoint; REDIS_SSL_CERT_REQS=required makes them all check the certificate."""
from __future__ import annotations

import asyncio
import importlib.util
import ssl
from pathlib import Path

import pytest
import redis
from celery import Celery

from integration.infra import redis_tls
from integration.infra.embedded_redis import start_valkey
from tests.tls_proxy import TlsProxy, self_signed_certificate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    """(rediss:// URL through the TLS proxy, a plain client of the server behind it)."""
    workdir = tmp_path_factory.mktemp("tls")
    proc, plain_url = start_valkey(workdir / "valkey", persistence=False)
    proxy = TlsProxy(int(plain_url.rsplit(":", 1)[1].split("/")[0]), *self_signed_certificate(workdir)).start()
    try:
        yield f"rediss://127.0.0.1:{proxy.port}/0", redis.Redis.from_url(plain_url)
    finally:
        proxy.stop()
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def celery_app(tls_redis, monkeypatch):
    """A Celery app configured from celeryconfig, as the worker, beat and Flower are (a fresh
    copy of the module: the one other tests import keeps its own URL)."""
    monkeypatch.setenv("REDIS_URL", tls_redis[0])
    spec = importlib.util.spec_from_file_location("celeryconfig_tls", ROOT / "celeryconfig.py")
    config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config)
    app = Celery("tls-test")
    app.config_from_object(config)
    yield app
    app.close()


@pytest.fixture(autouse=True)
def heroku_policy(monkeypatch):
    monkeypatch.delenv("REDIS_SSL_CERT_REQS", raising=False)  # the default: none


def test_a_client_without_the_policy_refuses_the_self_signed_certificate(tls_redis):
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        redis.Redis.from_url(tls_redis[0], socket_connect_timeout=2).ping()


def test_our_redis_client_pings_through_tls(tls_redis):
    assert redis_tls.client(tls_redis[0], socket_connect_timeout=2).ping()


def test_the_celery_broker_publishes_through_tls(tls_redis, celery_app):
    url, plain = tls_redis
    assert celery_app.conf.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_NONE}
    assert celery_app.conf.redis_backend_use_ssl == {"ssl_cert_reqs": ssl.CERT_NONE}
    plain.delete("tls-check")
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        assert conn.as_uri().startswith("rediss://")
    celery_app.send_task("tls.check", args=[1], queue="tls-check")
    assert plain.llen("tls-check") == 1  # arrived, and only TLS leads to this server


def test_redbeat_pings_through_tls(celery_app):
    from redbeat.schedulers import get_redis

    assert celery_app.conf.redbeat_redis_use_ssl == {"ssl_cert_reqs": ssl.CERT_NONE}
    assert get_redis(celery_app).ping()


def test_flowers_broker_view_reads_the_queues_through_tls(tls_redis, celery_app):
    from flower.utils.broker import Broker

    url, plain = tls_redis
    plain.delete("tls-flower")
    plain.rpush("tls-flower", "x")
    broker = Broker(url, broker_options=celery_app.conf.broker_transport_options,
                    broker_use_ssl=celery_app.conf.broker_use_ssl)
    assert asyncio.run(broker.queues(["tls-flower"])) == [{"name": "tls-flower", "messages": 1}]


def test_the_cli_publisher_connects_through_tls(tls_redis):
    from workers.names import publisher

    app = publisher(tls_redis[0])
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
    finally:
        app.close()


def test_the_web_health_check_reaches_the_broker_through_tls(tls_redis, tmp_path):
    from integration.store.db import get_engine, session_factory
    from integration.store.models import create_all
    from web import create_app

    db = f"sqlite:///{tmp_path / 'h.db'}"
    create_all(get_engine(db))
    app = create_app({"TESTING": True, "SESSIONS": session_factory(db), "MERCHANTS": {},
                      "REDIS_URL": tls_redis[0], "ADMIN_TOKEN": "t"})
    assert app.test_client().get("/healthz").get_json()["broker"] == "ok"


def test_required_certificates_make_every_client_check_them(tls_redis, monkeypatch):
    monkeypatch.setenv("REDIS_SSL_CERT_REQS", "required")
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        redis_tls.client(tls_redis[0], socket_connect_timeout=2).ping()
    app = Celery("tls-required", broker=tls_redis[0])
    app.conf.broker_use_ssl = redis_tls.ssl_options(tls_redis[0])
    with app.connection_for_write() as conn, pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        conn.ensure_connection(max_retries=0)
    app.close()


def test_the_policy_is_read_from_redis_ssl_cert_reqs(monkeypatch):
    assert redis_tls.ssl_options("redis://localhost:6379/0") is None
    assert redis_tls.ssl_options("rediss://:pw@h:6380") == {"ssl_cert_reqs": ssl.CERT_NONE}
    for value, expected in (("optional", ssl.CERT_OPTIONAL), ("REQUIRED", ssl.CERT_REQUIRED),
                            ("none", ssl.CERT_NONE)):
        monkeypatch.setenv("REDIS_SSL_CERT_REQS", value)
        assert redis_tls.ssl_options("rediss://h:1") == {"ssl_cert_reqs": expected}
    monkeypatch.setenv("REDIS_SSL_CERT_REQS", "sometimes")
    with pytest.raises(ValueError, match="REDIS_SSL_CERT_REQS='sometimes': use none, optional or required"):
        redis_tls.ssl_options("rediss://h:1")


def test_a_bad_policy_stops_the_web_app_at_start(monkeypatch, tmp_path):
    from integration.settings import load_settings
    from web import create_app

    monkeypatch.setenv("REDIS_URL", "rediss://:pw@redis.example.com:6380")
    monkeypatch.setenv("REDIS_SSL_CERT_REQS", "yes")
    with pytest.raises(ValueError, match="REDIS_SSL_CERT_REQS"):
        create_app({"TESTING": True, "SETTINGS": load_settings(), "MERCHANTS": {}, "SESSIONS": None})
