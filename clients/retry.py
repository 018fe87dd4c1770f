"""When and how long to wait before retrying: 429/503 honour Retry-After, bounded."""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass

import httpx

RETRY_STATUSES = frozenset({429, 503})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2
    backoff_base_s: float = 0.5  # used when the server gives no Retry-After: 0.5, 1, 2, ...
    max_wait_s: float = 30.0  # a Retry-After above this is clipped, so a client never sleeps for hours

    def wait_for_status(self, attempt: int, response: httpx.Response) -> float | None:
        """Seconds to sleep before retry number `attempt + 1`, or None when not to retry."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
            return None
        hinted = parse_retry_after(response.headers.get("retry-after"))
        return self._bounded(hinted if hinted is not None else self.backoff_base_s * 2**attempt)

    def wait_for_transport_error(
        self, attempt: int, method: str, error: httpx.TransportError
    ) -> float | None:
        """Retry GETs on any transport error; other methods only when nothing was sent (connect)."""
        if attempt >= self.max_retries:
            return None
        # A failed connect means the request never left: safe to resend even a POST.
        if method == "GET" or isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout)):
            return self._bounded(self.backoff_base_s * 2**attempt)
        return None

    def _bounded(self, seconds: float) -> float:
        return min(max(0.0, seconds), self.max_wait_s)
