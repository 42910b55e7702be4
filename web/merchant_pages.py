"""The /ops merchants pages: list the merchants (stored and from TOML or the environment), show
one with every secret masked, add, update, disable and enable a stored merchant (validated by the
same schema as the TOML, through integration/store/merchant_store.py), and run the onboarding
actions (check, subscribe, backfill: integration/ops/onboarding.py) with their last reports.

Routes of the pages' blueprint, so they share its login and CSRF check; every action names the
operator (`g.operator`) in its log line and its kept report. A secret typed into a form is never
sent back: a refused form comes back with the secret fields empty.
"""
from __future__ import annotations

import logging
import tomllib
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from cryptography.fernet import MultiFernet
from flask import abort, current_app, flash, g, redirect, render_template, request, url_for
from sqlalchemy.orm import Session

from integration.merchants import ConfigError, Merchant, configured_from_environment
from integration.ops import onboarding, onboarding_record
from integration.ops.onboarding import Report
from integration.store import merchant_store
from integration.workflow.context import Context

from .pages import bp

log = logging.getLogger(__name__)

BACKFILL_DAYS = 90
# The add form's fields: (key, label, secret); the other keys go in "more settings".
FORM_FIELDS = [
    ("name", "Name (the webhook URL's last part)", False),
    ("loop_base_url", "Loop base URL", False),
    ("loop_api_key", "Loop API key", True),
    ("webhook_secrets", "Loop webhook secrets (comma-separated)", True),
    ("rlm_base_url", "RLM base URL", False),
    ("rlm_company", "RLM company", False),
    ("rlm_username", "RLM user", False),
    ("rlm_key", "RLM key", True),
    ("division_number", "RLM division", False),
    ("warehouse_number", "RLM returns warehouse", False),
]
NUMBERS = {"rlm_company", "division_number", "warehouse_number"}


def _keys() -> MultiFernet | None:
    given = current_app.config.get("MERCHANT_KEYS")
    return merchant_store.parse_keys(given) if given else merchant_store.keys_from_env()


def _sessions():
    return current_app.config["SESSIONS"]


def toml_value(text: str) -> object:
    """A TOML value (90, true, ["a", "b"], "text"), or the text itself (as `merchants update --set`)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignments(text: str) -> dict[str, object]:
    """`KEY = VALUE` lines (criteria.expiry_days = 14); blank lines and # comments skipped."""
    changes: dict[str, object] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"line {number}: expected KEY = VALUE")
        changes[key.strip()] = toml_value(value.strip())
    return changes


def config_from_form(form) -> dict:
    """The merchant configuration an add form describes (validated by merchant_store.save)."""
    config: dict[str, object] = {}
    for key, _, _ in FORM_FIELDS:
        text = (form.get(key) or "").strip()
        if not text:
            continue
        if key == "webhook_secrets":
            config[key] = [s.strip() for s in text.split(",") if s.strip()]
        elif key in NUMBERS:
            config[key] = toml_value(text)
        else:
            config[key] = text
    for path, value in parse_assignments(form.get("more") or "").items():
        *parents, last = path.split(".")
        target = config
        for part in parents:
            nested = target.setdefault(part, {})
            if not isinstance(nested, dict):
                raise ConfigError(f"{path}: {part} is not a table")
            target = nested
        target[last] = value
    return config


def _masked(merchant: Merchant) -> dict:
    """A merchant from TOML or the environment as the stored ones are shown: secrets masked."""
    view = asdict(merchant)
    view["loop_api_key"] = merchant_store.mask(merchant.loop_api_key)
    view["rlm_key"] = merchant_store.mask(merchant.rlm_key)
    view["webhook_secrets"] = [merchant_store.mask(s) for s in merchant.webhook_secrets]
    view.pop("reason_codes", None)  # the defaults merged in: long, and not what was configured
    return view


def _source_of_others() -> str:
    return "environment" if configured_from_environment() else "TOML"


def _merchants(s: Session) -> tuple[dict[str, Merchant], dict[str, bool]]:
    """Every merchant by name (stored ones, disabled too, win over the others) and the stored
    names with whether each is enabled."""
    stored_names = merchant_store.stored_names(s)
    stored = merchant_store.load_all(s, _keys(), include_disabled=True) if stored_names else {}
    others = {n: m for n, m in current_app.config["MERCHANTS"].items() if n not in stored_names}
    return {**others, **stored}, stored_names


def _find(s: Session, name: str) -> tuple[Merchant, dict[str, bool]]:
    try:
        merchants, stored = _merchants(s)
    except ConfigError as exc:
        abort(500, description=str(exc))
    if name not in merchants:
        abort(404)
    return merchants[name], stored


def _context(s: Session) -> Context:
    """The pages' Context with the stored enabled merchants as they are now (the app's list is
    refreshed only every MERCHANTS_REFRESH_S)."""
    merchants, stored = _merchants(s)
    running = {n: m for n, m in merchants.items() if stored.get(n, True)}
    config = current_app.config
    return Context(settings=config["SETTINGS"], merchants=running, sessions=config["SESSIONS"],
                   enqueue=config["ENQUEUE_STEP"])


def _logged(action: str, name: str, outcome: str) -> None:
    """Who changed which merchant, and how (names only: never a value, which may be a secret)."""
    log.info("merchants.%s by %s: %s", action, g.operator, outcome,
             extra={"operator": g.operator, "action": f"merchants.{action}", "merchant": name,
                    "outcome": outcome})


def _keep_change(s: Session, name: str, summary: str) -> None:
    onboarding_record.keep_change(s, name, g.operator, summary)


def _reason(exc: ConfigError) -> str:
    """The schema's message for the one merchant a form is about, without "merchant #1: "."""
    return str(exc).removeprefix("merchant #1: ")


def _back(name: str):
    return redirect(url_for("pages.merchant_page", name=name), code=303)


def _receiver_url() -> str:
    """This app as the browser reached it, to prefill the subscribe form: behind Heroku's router
    the browser speaks https and we see http, which X-Forwarded-Proto tells (only a suggestion)."""
    scheme = (request.headers.get("X-Forwarded-Proto") or request.scheme).split(",")[0].strip()
    return f"{scheme if scheme in ('http', 'https') else request.scheme}://{request.host}"


# --- list and show --------------------------------------------------------------------------------
@bp.get("/merchants")
def merchants_list():
    with _sessions()() as s:
        try:
            merchants, stored = _merchants(s)
            error = None
        except ConfigError as exc:
            merchants, stored, error = {}, merchant_store.stored_names(s), str(exc)
        reports = onboarding_record.last_reports(s)
    rows = [{"name": name, "mode": getattr(merchants.get(name), "mode", None),
             "enabled": stored.get(name, True), "source": "table" if name in stored else _source_of_others(),
             "check": reports.get(name, {}).get("check")}
            for name in sorted(set(merchants) | set(stored))]
    return render_template("merchants.html", rows=rows, error=error)


@bp.get("/merchants/<name>")
def merchant_page(name: str):
    with _sessions()() as s:
        merchant, stored = _find(s, name)
        view = (merchant_store.show(s, name, _keys())["config"] if name in stored else _masked(merchant))
        reports = onboarding_record.last_reports(s, name).get(name, {})
    return render_template("merchant.html", name=name, view=view, stored=name in stored,
                           enabled=stored.get(name, True), mode=getattr(merchant, "mode", None),
                           source="table" if name in stored else _source_of_others(), reports=reports,
                           receiver=_receiver_url(),
                           since=(datetime.now(UTC) - timedelta(days=BACKFILL_DAYS)).strftime("%Y-%m-%d"))


# --- add, update, disable, enable ------------------------------------------------------------------
@bp.get("/merchants/new")
def merchant_new():
    return render_template("merchant_new.html", fields=FORM_FIELDS, values={}, error=None)


@bp.post("/merchants")
def merchant_add():
    form = request.form
    name = (form.get("name") or "").strip()
    try:
        config = config_from_form(form)
        with _sessions()() as s:
            if name and name in merchant_store.stored_names(s):
                raise ConfigError(f"already stored: {name} (update it on its page)")
            merchant_store.save(s, config, _keys())
            _keep_change(s, name, "added")
    except ConfigError as exc:
        # Back to the form with what was typed, except the secrets: a page never shows one.
        values = {k: form.get(k, "") for k, _, secret in FORM_FIELDS if not secret}
        values["more"] = form.get("more", "")
        return render_template("merchant_new.html", fields=FORM_FIELDS, values=values, error=_reason(exc)), 400
    _logged("add", name, "added")
    flash(f"{name}: added by {g.operator}; check it next")
    return _back(name)


@bp.post("/merchants/<name>/update")
def merchant_update(name: str):
    with _sessions()() as s:
        _find(s, name)
        try:
            changes = parse_assignments(request.form.get("changes") or "")
            if not changes:
                raise ConfigError("nothing to change: give KEY = VALUE lines")
            outcome = merchant_store.update(s, name, changes, _keys())
        except merchant_store.UnknownMerchant:
            flash(f"{name} comes from {_source_of_others()}: change it there, or import it to manage it here")
            return _back(name)
        except ConfigError as exc:
            flash(f"{name}: not changed: {_reason(exc)}")
            return _back(name)
        if outcome != "unchanged":
            _keep_change(s, name, f"{outcome}: {', '.join(sorted(changes))}")
    _logged("update", name, outcome)
    flash(f"{name}: {outcome} by {g.operator} ({', '.join(sorted(changes))})")
    return _back(name)


@bp.post("/merchants/<name>/<any(disable, enable):action>")
def merchant_enabled(name: str, action: str):
    with _sessions()() as s:
        _find(s, name)
        try:
            changed = merchant_store.set_enabled(s, name, action == "enable")
        except merchant_store.UnknownMerchant:
            flash(f"{name} comes from {_source_of_others()}: only a stored merchant can be {action}d here")
            return _back(name)
        if changed:
            _keep_change(s, name, f"{action}d")
    _logged(action, name, f"{action}d" if changed else "unchanged")
    flash(f"{name}: {action}d by {g.operator}" if changed else f"{name}: already {action}d")
    return _back(name)


# --- onboarding: check, subscribe, backfill --------------------------------------------------------
def _kept(report: Report, name: str):
    with _sessions()() as s:
        onboarding_record.keep(s, report)
    flash(f"{name}: {report.action} by {g.operator}: {report.summary}")
    return _back(name)


@bp.post("/merchants/<name>/check")
def merchant_check(name: str):
    with _sessions()() as s:
        merchant, _ = _find(s, name)
        ctx = _context(s)
    return _kept(onboarding.check_merchant(ctx, merchant, operator=g.operator), name)


def _running(s: Session, name: str) -> tuple[Merchant, Context] | None:
    merchant, stored = _find(s, name)
    if not stored.get(name, True):
        flash(f"{name} is disabled: enable it first")
        return None
    return merchant, _context(s)


@bp.post("/merchants/<name>/subscribe")
def merchant_subscribe(name: str):
    with _sessions()() as s:
        found = _running(s, name)
    if found is None:
        return _back(name)
    base_url = request.form.get("url") or ""
    try:
        onboarding.webhook_url(base_url, name)
    except ValueError as exc:
        flash(f"{name}: not subscribed: {exc}")
        return _back(name)
    return _kept(onboarding.subscribe(found[1], found[0], base_url, operator=g.operator), name)


@bp.post("/merchants/<name>/backfill")
def merchant_backfill(name: str):
    with _sessions()() as s:
        found = _running(s, name)
    if found is None:
        return _back(name)
    try:
        since = datetime.strptime(request.form.get("since") or "", "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        flash(f"{name}: not backfilled: since must be a day as YYYY-MM-DD")
        return _back(name)
    return _kept(onboarding.backfill(found[1], name, since, operator=g.operator), name)

