from integration.embedded_redis import with_tls_defaults


def test_heroku_tls_url_gets_a_certificate_policy():
    assert with_tls_defaults("rediss://:pw@host:6380") == "rediss://:pw@host:6380?ssl_cert_reqs=none"
    assert with_tls_defaults("rediss://h:1/0?a=b") == "rediss://h:1/0?a=b&ssl_cert_reqs=none"


def test_other_urls_are_left_alone():
    assert with_tls_defaults("redis://localhost:6379/0") == "redis://localhost:6379/0"
    url = "rediss://h:1?ssl_cert_reqs=required"
    assert with_tls_defaults(url) == url
