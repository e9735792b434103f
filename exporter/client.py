"""Asynchronous client for the two Synthbrew public endpoints.

Every failure surfaces as an :class:`UpstreamError` whose ``reason`` is one of the contract's
``poll_errors_total`` reasons, so the poller never has to interpret httpx exceptions. Retries
live here too, because only the client knows which failures are worth repeating, and so does
the pacing of each API key (:mod:`exporter.budget`), which every attempt goes through.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Literal, get_args
from uuid import UUID

import httpx
from pydantic import SecretStr, ValidationError

from exporter import __version__
from exporter.budget import Budgets, KeyHeld
from exporter.config import ApiConfig, RetryConfig
from exporter.errors import ExporterError
from exporter.models import (
    EventPage,
    PageFormatError,
    RegenerateRequest,
    RegenerateResponse,
    parse_event_page,
)

log = logging.getLogger(__name__)

Reason = Literal[
    "timeout", "connect", "http_4xx", "http_5xx", "rate_limited", "invalid_response", "auth"
]
REASONS: tuple[Reason, ...] = get_args(Reason)
MAX_LIMIT = 200


class UpstreamError(ExporterError):
    """A request that did not yield a usable answer. The text never contains the API key."""

    reason: Reason = "invalid_response"
    retryable = False

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class UpstreamTimeout(UpstreamError):
    reason = "timeout"
    retryable = True


class ConnectError(UpstreamError):
    reason = "connect"
    retryable = True


class ClientHttpError(UpstreamError):
    reason = "http_4xx"


class ServerHttpError(UpstreamError):
    reason = "http_5xx"
    retryable = True


class RateLimitedError(UpstreamError):
    reason = "rate_limited"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None, status_code: int = 429) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class InvalidResponseError(UpstreamError):
    reason = "invalid_response"


class AuthError(UpstreamError):
    reason = "auth"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, policy: RetryConfig, rng: random.Random) -> float:
    """Exponential backoff with full jitter (AWS architecture blog): spreads retrying pollers."""
    cap = min(policy.max_backoff_seconds, policy.backoff_seconds * 2 ** (attempt - 1))
    return rng.uniform(0, cap)


class SynthbrewClient:
    """One shared ``httpx.AsyncClient`` with a concurrency cap across every source.

    The semaphore bounds requests in flight, not polls: a request waiting out a backoff gives its
    slot to someone else.
    """

    def __init__(
        self,
        api: ApiConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        budgets: Budgets | None = None,
    ) -> None:
        """``budgets``: every key's request budget (``Config.budgets()``); by default one
        shared, unlimited until a 429, paced with ``sleep``."""
        self._api = api
        self.budgets = budgets or Budgets(
            api.requests_per_minute, window=api.rate_window_seconds, sleep=sleep
        )
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._limit = asyncio.Semaphore(api.max_concurrency)
        self._http = httpx.AsyncClient(
            base_url=api.base_url.rstrip("/") + "/public/v1",
            timeout=httpx.Timeout(api.timeout_seconds),
            transport=transport,
            headers={"user-agent": f"synthbrew-exporter/{__version__}"},
            limits=httpx.Limits(max_connections=api.max_concurrency * 2),
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"SynthbrewClient(base_url={self._api.base_url!r})"

    async def __aenter__(self) -> SynthbrewClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def list_generation_events(
        self, project_id: UUID, source_id: UUID, *, api_key: SecretStr, limit: int = MAX_LIMIT
    ) -> EventPage:
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be within 1..{MAX_LIMIT}, got {limit}")
        path = f"/projects/{project_id}/sources/{source_id}/generation-events"
        response = await self._request("GET", path, api_key, params={"limit": limit})
        try:
            return parse_event_page(response.content)
        except PageFormatError as exc:
            raise InvalidResponseError(f"GET {path}: {exc}", status_code=200) from None

    async def regenerate(
        self,
        project_id: UUID,
        source_id: UUID,
        *,
        api_key: SecretStr,
        request: RegenerateRequest | None = None,
    ) -> RegenerateResponse:
        """Not retried on 5xx or timeouts: a lost answer may still have started a run."""
        path = f"/projects/{project_id}/sources/{source_id}/regenerate"
        body = (request or RegenerateRequest()).to_body()
        response = await self._request("POST", path, api_key, json=body, idempotent=False)
        try:
            return RegenerateResponse.model_validate_json(response.content)
        except ValidationError as exc:
            raise InvalidResponseError(
                f"POST {path}: response does not match the documented shape: "
                f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}",
                status_code=response.status_code,
            ) from None

    async def _request(
        self,
        method: str,
        path: str,
        api_key: SecretStr,
        *,
        idempotent: bool = True,
        **kwargs: object,
    ) -> httpx.Response:
        policy = self._api.retry
        budget = self.budgets.for_key(api_key.get_secret_value())
        attempt = 0
        while True:
            attempt += 1
            try:
                # Every attempt, retries included, takes a token of its key: the key's budget
                # is what the upstream limits.
                await budget.take(max_hold=policy.max_retry_after_seconds)
            except KeyHeld as exc:
                raise RateLimitedError(
                    f"{method} {path}: not sent: {exc}", retry_after=exc.seconds
                ) from None
            try:
                response = await self._once(method, path, api_key, **kwargs)
            except UpstreamError as exc:
                budget.answered(exc.status_code, getattr(exc, "retry_after", None))
                delay = self._retry_delay(exc, attempt, idempotent)
                if delay is None:
                    raise
                log.info(
                    "%s %s failed (%s: %s); retry %d/%d %s",
                    method,
                    path,
                    exc.reason,
                    exc,
                    attempt,
                    policy.attempts - 1,
                    f"in {delay:.2f}s" if delay else "when the key's hold ends",
                )
                if delay:
                    await self._sleep(delay)
                continue
            budget.answered(response.status_code)
            return response

    def _retry_delay(self, exc: UpstreamError, attempt: int, idempotent: bool) -> float | None:
        """Seconds to sleep before the next attempt, or None for no retry. A 429's wait is the
        key's hold, which the next attempt's token waits out (see :mod:`exporter.budget`)."""
        policy = self._api.retry
        if not exc.retryable or attempt >= policy.attempts:
            return None
        if isinstance(exc, RateLimitedError):
            if exc.retry_after is not None and exc.retry_after > policy.max_retry_after_seconds:
                return None
            return 0.0
        if not idempotent and not isinstance(exc, ConnectError):
            return None
        return backoff_delay(attempt, policy, self._rng)

    async def _once(
        self, method: str, path: str, api_key: SecretStr, **kwargs: object
    ) -> httpx.Response:
        headers = {"x-api-key": api_key.get_secret_value(), "accept": "application/json"}
        where = f"{method} {path}"
        async with self._limit:
            try:
                response = await self._http.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
            except httpx.TimeoutException as exc:
                raise UpstreamTimeout(f"{where}: timed out ({type(exc).__name__})") from None
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                raise ConnectError(f"{where}: connection failed ({type(exc).__name__})") from None
            except httpx.HTTPError as exc:
                raise ConnectError(f"{where}: transport error ({type(exc).__name__})") from None
        return _check_status(where, response)


def _check_status(where: str, response: httpx.Response) -> httpx.Response:
    code = response.status_code
    if code < 300:
        return response
    detail = f"{where}: HTTP {code}{_short_detail(response)}"
    if code in (401, 403):
        raise AuthError(detail, status_code=code)
    if code == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise RateLimitedError(detail, retry_after=retry_after)
    if code >= 500:
        raise ServerHttpError(detail, status_code=code)
    if code >= 400:
        raise ClientHttpError(detail, status_code=code)
    raise InvalidResponseError(f"{where}: unexpected HTTP {code}", status_code=code)


def _short_detail(response: httpx.Response) -> str:
    """A sliver of the error body helps the operator; the whole body could be huge or hostile."""
    text = response.text.strip().replace("\n", " ")
    return f": {text[:200]}" if text else ""
