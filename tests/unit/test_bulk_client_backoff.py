"""The bulk client's wait between two tries of an image: exponential, but never hours; the service's Retry-After,
in seconds or as a date, where it asks for longer."""

from __future__ import annotations

import email.utils
import time

from serve_app.bulk.client import MAX_BACKOFF_S, MAX_RETRY_AFTER_S, Answer, ClientSettings, _retry_delay

SETTINGS = ClientSettings(url="http://127.0.0.1:8000", max_retries=20)


def busy(retry_after: str) -> Answer:
    return Answer(503, retry_after, b"")


def test_a_long_run_of_retries_waits_a_minute_or_so_between_tries_not_hours() -> None:
    delays = [_retry_delay(attempt, SETTINGS, None) for attempt in range(SETTINGS.max_retries)]
    assert delays[0] <= 1.0 and max(delays) <= MAX_BACKOFF_S * 1.5
    assert sum(delays) < 20 * MAX_BACKOFF_S * 1.5


def test_retry_after_in_seconds_or_as_a_date_is_waited() -> None:
    assert _retry_delay(0, SETTINGS, busy("30")) >= 30
    assert _retry_delay(0, SETTINGS, busy(" 30 ")) >= 30
    soon = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 15 <= _retry_delay(0, SETTINGS, busy(soon)) <= 21
    assert _retry_delay(0, SETTINGS, busy(email.utils.formatdate(time.time() - 60, usegmt=True))) <= 1.0
    assert _retry_delay(0, SETTINGS, busy("soon")) <= 1.0  # neither: the backoff alone
    assert _retry_delay(0, SETTINGS, busy("99999")) == MAX_RETRY_AFTER_S
