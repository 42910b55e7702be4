"""OPERATOR_TOKENS ("name:token,name2:token2"): parsed once with the settings; a malformed value
is a SettingError naming the variable and the entry, never quoting a token."""
from __future__ import annotations

import pytest

from integration.settings import SettingError, load_settings, parse_operator_tokens

A = "a" * 16
B = "b-token-0123456789"


def test_names_and_tokens_are_parsed(monkeypatch):
    assert parse_operator_tokens(None) == parse_operator_tokens("") == ()
    assert parse_operator_tokens(f" alice:{A} , bob.smith_2-x:{B}, ") == (("alice", A), ("bob.smith_2-x", B))
    assert parse_operator_tokens(f"carol:{A}:more") == (("carol", f"{A}:more"),)  # the first colon splits
    monkeypatch.setenv("OPERATOR_TOKENS", f"alice:{A}")
    settings = load_settings()
    assert settings.operator_tokens == (("alice", A),)
    assert A not in repr(settings)


@pytest.mark.parametrize("raw, message", [
    (f"alice{A}", "entry 1 is not name:token"),
    (f"alice:{A},Bob:{B}", "entry 2: the name must be 1 to 40 of a-z 0-9 . _ -"),
    (f":{A}", "entry 1: the name must be"),
    (f"{'x' * 41}:{A}", "entry 1: the name must be"),
    (f"admin:{A}", "entry 1: the name admin is ADMIN_TOKEN's"),
    ("alice:short", "entry 1 (alice): the token must be at least 16 characters"),
    ("alice:", "entry 1 (alice): the token must be at least 16 characters"),
    (f"alice:{A} {A}", "entry 1 (alice): the token must be at least 16 characters without spaces"),
    (f"alice:{A},alice:{B}", "entry 2: alice is listed twice"),
    (f"alice:{A},bob:{A}", "entry 2 (bob): the token is already ADMIN_TOKEN's or another operator's"),
    (f"alice:{B}", "entry 1 (alice): the token is already ADMIN_TOKEN's"),
])
def test_a_malformed_value_names_the_variable_and_never_the_token(monkeypatch, raw, message):
    monkeypatch.setenv("OPERATOR_TOKENS", raw)
    monkeypatch.setenv("ADMIN_TOKEN", B)
    with pytest.raises(SettingError, match=r"^OPERATOR_TOKENS ") as caught:
        load_settings()
    assert message in str(caught.value)
    assert A not in str(caught.value) and B not in str(caught.value) and "short" not in str(caught.value)
