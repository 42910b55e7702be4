"""What `APP_ENV=production` refuses to run with.

One judgement of the settings and the merchants, used by every entry point (web, workers and
beat, the release phase) to refuse to start, and by `rlm-loop doctor` and `rlm-loop merchants`
to report. The checks are pure functions of the values they are given; only
`refuse_to_run_wrong` asks the environment whether the merchant came from LOOP_*/RLM_* variables.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from integration.merchants import ConfigError, Merchant, configured_from_environment
from integration.settings import Settings

# The built-in sandbox merchant's values (merchants.demo_merchant_config): public, so worthless.
SANDBOX_SECRETS = {"demo-loop-key", "demo-webhook-secret", "demo-rlm-key"}
SANDBOX_URLS = {"http://127.0.0.1:8001", "http://127.0.0.1:8002"}
LOCAL_ADMIN_TOKEN = "demo-admin-token"  # what `make up` uses

# A merchant field by the name an operator sets it under: the environment variable for the
# merchant built from the environment, the TOML key otherwise.
_ENV_NAMES = {"loop_base_url": "LOOP_BASE_URL", "loop_api_key": "LOOP_API_KEY",
              "webhook_secrets": "LOOP_WEBHOOK_SECRETS", "rlm_base_url": "RLM_BASE_URL",
              "rlm_key": "RLM_KEY"}


@dataclass(frozen=True)
class Problem:
    subject: str  # the variable or key at fault
    text: str  # what is wrong with it, read after the subject

    def __str__(self) -> str:
        return f"{self.subject} {self.text}"


class RefusedToStart(RuntimeError):
    """APP_ENV=production and the configuration is not fit for it; the message names every problem."""


def settings_problems(settings: Settings, admin_token: str | None) -> list[Problem]:
    """What the service-wide settings get wrong for production."""
    found = []
    if not settings.redis_url:
        found.append(Problem("REDIS_URL", "is not set (the embedded Valkey would start on this "
                             "dyno alone: production needs a Redis add-on)"))
    if settings.database_url.startswith("sqlite"):
        found.append(Problem("DATABASE_URL", "is unset or SQLite (production needs PostgreSQL: "
                             "dyno disks are neither shared nor kept)"))
    if not admin_token:
        found.append(Problem("ADMIN_TOKEN", "is not set (the operator API, pages and /metrics "
                             "would be off)"))
    elif admin_token == LOCAL_ADMIN_TOKEN:
        found.append(Problem("ADMIN_TOKEN", f"is the local default {LOCAL_ADMIN_TOKEN}"))
    return found


def merchant_problems(m: Merchant, from_env: bool = False) -> list[Problem]:
    """What a valid merchant configuration gets wrong for production (never printing a secret)."""
    def name(key: str) -> str:
        return _ENV_NAMES[key] if from_env else key

    found = []
    for key, url in (("loop_base_url", m.loop_base_url), ("rlm_base_url", m.rlm_base_url)):
        if url in SANDBOX_URLS:
            found.append(Problem(name(key), f"is unset or the sandbox URL {url}"))
        elif not url.startswith("https://"):
            found.append(Problem(name(key), f"{url} is not https"))
    if m.loop_api_key in SANDBOX_SECRETS:
        found.append(Problem(name("loop_api_key"), "is unset or the sandbox key"))
    if not [s for s in m.webhook_secrets if s]:
        found.append(Problem(name("webhook_secrets"), "is empty: no webhook could be verified"))
    elif set(m.webhook_secrets) & SANDBOX_SECRETS:
        found.append(Problem(name("webhook_secrets"), "is unset or holds the sandbox secret"))
    if m.rlm_key in SANDBOX_SECRETS:
        found.append(Problem(name("rlm_key"), "is unset or the sandbox key"))
    return found


def production_problems(settings: Settings, merchants: dict[str, Merchant], *,
                        admin_token: str | None, from_env: bool) -> list[str]:
    """Every problem, settings first, then each merchant's."""
    found = [str(p) for p in settings_problems(settings, admin_token)]
    for m in merchants.values():
        found += [f"merchant {m.name}: {p}" for p in merchant_problems(m, from_env)]
    return found


def refusal(problems: list[str]) -> str:
    return "APP_ENV=production refuses to start: " + "; ".join(problems)


def refuse_to_run_wrong(settings: Settings, load_merchants: Callable[[], dict[str, Merchant]], *,
                        admin_token: str | None = None) -> None:
    """Raise RefusedToStart naming every problem, if production and anything is wrong.

    Called before anything starts (an embedded Valkey, a SQLite file), so nothing half-runs.
    Outside production it does nothing: development keeps its embedded defaults.
    """
    if not settings.production:
        return
    try:
        merchants = load_merchants()
        config_errors = []
    except ConfigError as exc:  # named alongside the rest rather than alone
        merchants, config_errors = {}, [f"merchant configuration: {exc}"]
    problems = production_problems(settings, merchants, admin_token=admin_token or settings.admin_token,
                                   from_env=configured_from_environment())
    if problems or config_errors:
        raise RefusedToStart(refusal(problems + config_errors))
