"""Typed upstream errors: the one distinction that matters is retry later vs. never retry."""
from __future__ import annotations


class UpstreamError(Exception):
    """A call to Loop or RLM did not succeed."""

    def __init__(self, system: str, message: str, *, status: int | None = None,
                 code: str | None = None, retry_after: float | None = None,
                 body: object = None):
        super().__init__(f"{system}: {message}")
        self.system = system
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.body = body  # the parsed error body, for callers that need more than the message


class RetryableError(UpstreamError):
    """5xx, timeout, connection error or 429: the same call may succeed later."""


class NotSent(RetryableError):
    """Refused before it could have any effect (our rate limiter, or the server's 429): sending
    it again cannot do the work twice."""


class FinalError(UpstreamError):
    """4xx, RLM `code: 0`, or a refusal in Loop's HTTP-200 error body: retrying cannot help."""


class NotFound(FinalError):
    pass


class StepFailed(Exception):
    """A workflow step cannot go on; the return is parked as needs_attention with this reason."""


class NoSlot(NotSent):
    """Our own per-merchant limit said no before anything was sent (no Loop token, or the
    merchant's RLM calls at their cap): the step is rescheduled for `retry_after`, not retried
    by backoff, and no worker slot waits for it."""
