"""HTTP with retries: exponential backoff with jitter, honouring `Retry-After`.

Retried: 429 (queue full) and 503 (not ready) answers, and connection failures (the request
never reached the server). Read timeouts are retried only for requests that are safe to repeat
(`idempotent=True`): identification is, creating a fine-tune job is not.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from raman_client.errors import RamanAPIError, RamanConnectionError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 503})
CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
TIMEOUT_ERRORS = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait between attempts."""

    retries: int = 4
    """Further attempts after the first (0: never retry)."""
    backoff_s: float = 0.5
    """Base delay; attempt n waits about `backoff_s * 2**n` (with jitter)."""
    max_backoff_s: float = 30.0
    """Longest single wait, also the cap on a server's Retry-After."""

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempt counts from 0)."""
        if retry_after is not None:
            # The server said when; a little jitter keeps many clients from returning at once.
            return min(self.max_backoff_s, retry_after) + rng.uniform(0.0, 0.1 * self.backoff_s)
        ceiling = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        return ceiling / 2 + rng.uniform(0.0, ceiling / 2)  # "equal jitter"


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date; None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Transport:
    """Sends requests through an `httpx.Client` and applies the retry policy."""

    def __init__(
        self,
        http: httpx.Client,
        policy: RetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
    ) -> None:
        self.http = http
        self.policy = policy
        self.sleep = sleep
        self.rng = random.Random(seed)

    def request(self, method: str, path: str, *, idempotent: bool = True, **kwargs: Any) -> Any:
        """Send, retrying as the policy allows; the decoded JSON body, or `RamanAPIError`."""
        response = self.send(method, path, idempotent=idempotent, **kwargs)
        return decode(response)

    def send(
        self, method: str, path: str, *, idempotent: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """The final response (any status) after retries; `RamanConnectionError` if none came."""
        attempt = 0
        while True:
            try:
                response = self.http.request(method, path, **kwargs)
            except CONNECT_ERRORS + TIMEOUT_ERRORS as exc:
                retryable = isinstance(exc, CONNECT_ERRORS) or idempotent
                if not retryable or attempt >= self.policy.retries:
                    raise RamanConnectionError(f"{method} {path}: {_describe(exc)}") from exc
                self._wait(attempt, None, f"{type(exc).__name__}")
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self.policy.retries:
                    return response
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                self._wait(attempt, retry_after, f"HTTP {response.status_code}")
            attempt += 1

    def _wait(self, attempt: int, retry_after: float | None, why: str) -> None:
        delay = self.policy.delay(attempt, retry_after, self.rng)
        log.info("%s; retry %d of %d in %.2f s", why, attempt + 1, self.policy.retries, delay)
        self.sleep(delay)


def decode(response: httpx.Response) -> Any:
    """The JSON body of a success; `RamanAPIError` (with the problem's fields) otherwise."""
    if response.is_success:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    raise RamanAPIError.from_body(response.status_code, body, response.reason_phrase, retry_after)


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
