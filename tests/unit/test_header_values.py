"""`header_values` reads what `Headers.get` reads, in one pass over the fields."""

from __future__ import annotations

from mitmproxy import http

from codexgate.headers import header_values

NAMES = frozenset({b"authorization", b"x-api-key", b"session-id", b"upgrade", b"absent"})


def test_same_as_headers_get() -> None:
    headers = http.Headers(
        [
            (b"Authorization", b"Bearer sk-cg-a"),
            (b"X-API-Key", b" spaced "),
            (b"x-api-key", b"second"),  # folded with ", " as Headers.get folds it
            (b"Session-ID", b"caf\xc3\xa9 \xff"),  # UTF-8 and an invalid byte (surrogateescape)
            (b"upgrade", b""),
            (b"other", b"x"),
        ]
    )
    values = header_values(headers, NAMES)
    for name in NAMES:
        assert values.get(name) == headers.get(name.decode()), name
    assert b"other" not in values and b"absent" not in values
