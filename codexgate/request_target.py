"""Points a request at a URL as `Request.url = ...` does, parsing each URL once.

mitmproxy's `Request.url` setter parses the URL with `urllib` on every call, then sets `host` and
`port`, each of which rewrites the Host header and the HTTP/2 authority (twice in all). A gateway
sends every request to one of a few provider URLs, so the parse is cached per URL (mitmproxy's
own `url.parse`, so it accepts and refuses exactly what the setter does), and the request's
fields are set once, with the Host header and authority updated once, to the values the setter
leaves (`Request._update_host_and_authority`, mitmproxy 12.2).
"""

from __future__ import annotations

import functools

from mitmproxy import http
from mitmproxy.net.http import url as mitm_url
from mitmproxy.utils.strutils import always_str


@functools.lru_cache(maxsize=256)
def _target(url: str) -> tuple[bytes, str, int, bytes, str]:
    """(scheme, host, port, path, host[:port] for the Host header) as the setter would store them."""
    scheme, host, port, path = mitm_url.parse(url)
    host_text = always_str(host, "idna", "strict")
    return scheme, host_text, port, path, mitm_url.hostport(scheme.decode("utf-8", "surrogateescape"), host_text, port)


def point_at(request: http.Request, url: str) -> None:
    """Same result as `request.url = url` (scheme, host, port, path, Host header, authority)."""
    text = url if isinstance(url, str) else always_str(url, "utf-8", "surrogateescape")  # (a frame less for a str)
    scheme, host, port, path, hostport = _target(text)
    data = request.data
    data.scheme, data.host, data.port, data.path = scheme, host, port, path
    fields = data.headers.fields
    has_host = False
    for name, _ in fields:  # (a loop, not `any(...)` over a generator: no frame resumed per field)
        if name.lower() == b"host":
            has_host = True
            break
    if has_host:
        # `headers["Host"] = hostport`: the first Host field keeps its place and name, others go.
        value: bytes | None = hostport.encode("utf-8", "surrogateescape")
        replaced: list[tuple[bytes, bytes]] = []
        for name, old in fields:
            if name.lower() != b"host":
                replaced.append((name, old))
            elif value is not None:
                replaced.append((name, value))
                value = None
        data.headers.fields = tuple(replaced)
    if data.authority:
        request.authority = hostport
