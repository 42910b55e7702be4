"""Everything a workflow step needs, handed in rather than imported (no Celery here)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from integration.loop.client import LoopClient
from integration.merchants import Merchant
from integration.rlm.client import JsonTransport, RlmClient
from integration.settings import Settings
from integration.store.models import utcnow

# enqueue(step_name, target_id): publish a task for a step; called only after a commit.
Enqueue = Callable[[str, object], None]


@dataclass
class Context:
    settings: Settings
    merchants: dict[str, Merchant]
    sessions: sessionmaker[Session]
    enqueue: Enqueue
    now: Callable[[], datetime] = utcnow
    loop_limiter_for: Callable[[Merchant], object] | None = None
    # How many Loop actions wait in the broker for a rate-limit slot (None: unknown).
    loop_backlog: Callable[[], int | None] = lambda: None
    _loop: dict[str, LoopClient] = field(default_factory=dict)
    _rlm: dict[str, RlmClient] = field(default_factory=dict)

    def merchant(self, name: str) -> Merchant:
        return self.merchants[name]

    def loop(self, merchant: Merchant) -> LoopClient:
        client = self._loop.get(merchant.name)
        if client is None:
            limiter = self.loop_limiter_for(merchant) if self.loop_limiter_for else None
            client = LoopClient(merchant.loop_base_url, merchant.loop_api_key,
                                merchant.loop_api_version, limiter=limiter,
                                timeout=self.settings.loop_timeout)
            self._loop[merchant.name] = client
        return client

    def rlm(self, merchant: Merchant) -> RlmClient:
        client = self._rlm.get(merchant.name)
        if client is None:
            transport = JsonTransport(merchant.rlm_base_url, merchant.rlm_company,
                                      merchant.rlm_username, merchant.rlm_key,
                                      timeout=self.settings.rlm_timeout)
            client = self._rlm[merchant.name] = RlmClient(transport)
        return client
