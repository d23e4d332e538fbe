from __future__ import annotations

import pytest

from power.errors import InvalidRequest
from power.runner import parse_keep_alive


@pytest.mark.parametrize("value,expected", [
    ("5m", 300.0), ("1h30m", 5400.0), ("1h", 3600.0), ("0", 0.0), ("-1m", None), ("-1s", None), ("10s", 10.0),
    ("1.5h", 5400.0), ("300ms", 0.3), (0, 0.0), (30, 30.0), (2.5, 2.5), (-1, None), (-0.5, None),
    ("'5m'", 300.0), (" 2m ", 120.0),
])
def test_forms(value: object, expected: float | None) -> None:
    assert parse_keep_alive(value) == expected


@pytest.mark.parametrize("value", ["5", "-1", "10 m", "abc", "m", "5x", True, [], {}, float("nan"), "-"])
def test_refused(value: object) -> None:
    with pytest.raises(InvalidRequest):
        parse_keep_alive(value)


def test_default_applies_when_absent() -> None:
    assert parse_keep_alive(None, "1h") == 3600.0
    assert parse_keep_alive("", "-1") is None  # the environment may say -1; a request may not
    assert parse_keep_alive(None, "30") == 30.0
    assert parse_keep_alive(None, None) == 300.0
    assert parse_keep_alive("2m", "1h") == 120.0
