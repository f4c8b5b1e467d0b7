"""`point_at` leaves a request exactly as mitmproxy's `Request.url` setter does (HTTP/1 Host header,
HTTP/2 authority), and refuses what the setter refuses."""

from __future__ import annotations

import pytest
from mitmproxy import http

from codexgate.request_target import point_at

URLS = [
    "https://api.openai.com/v1/responses",
    "http://127.0.0.1:9/v1/responses",
    "https://api.anthropic.com:8443/v1/messages?beta=true",
    "http://localhost:80/openai/deployments/x/responses?api-version=2025-04-01",
    "https://[::1]:4443/v1/chat/completions",
    "https://xn--bcher-kva.example/v1/responses",
    "HTTPS://API.Example.COM/v1/Responses",
]


def requests() -> list[http.Request]:
    h1 = http.Request.make("POST", "http://127.0.0.1:4000/v1/responses", b"{}", {"Host": "127.0.0.1:4000"})
    h1_no_host = http.Request.make("POST", "http://127.0.0.1:4000/v1/responses", b"{}", {"x-a": "1"})
    h2 = http.Request.make("POST", "https://gateway.local:4000/v1/responses", b"{}", {"x-a": "1"})
    h2.http_version = "HTTP/2.0"
    h2.authority = "gateway.local:4000"
    h2_with_host = http.Request.make("POST", "https://gateway.local/v1/responses", b"{}", {"host": "gateway.local"})
    h2_with_host.http_version = "HTTP/2.0"
    h2_with_host.authority = "gateway.local"
    return [h1, h1_no_host, h2, h2_with_host]


@pytest.mark.parametrize("url", URLS)
def test_same_as_the_url_setter(url: str) -> None:
    for index, (expected, pointed) in enumerate(zip(requests(), requests(), strict=True)):
        expected.url = url
        point_at(pointed, url)
        point_at(pointed, url)  # the second time from the cache: same again
        for field in ("scheme", "host", "port", "path", "authority"):
            assert getattr(pointed.data, field) == getattr(expected.data, field), (index, url, field)
        assert pointed.headers.fields == expected.headers.fields, (index, url)
        assert pointed.url == expected.url
        assert pointed.host_header == expected.host_header


@pytest.mark.parametrize(
    "url", ["no-scheme-or-host", "http://:80/x", "http://example.com:99999/x", "https://bücher.example/v1/responses"]
)
def test_refuses_what_the_setter_refuses(url: str) -> None:
    with pytest.raises(ValueError):
        http.Request.make("GET", "http://a/").url = url
    with pytest.raises(ValueError):
        point_at(http.Request.make("GET", "http://a/"), url)


def test_several_host_fields_end_as_the_setter_leaves_them() -> None:
    fields = [(b"HOST", b"a:1"), (b"x-a", b"1"), (b"host", b"b:2")]
    expected = http.Request.make("GET", "http://a:1/", b"", fields)
    pointed = http.Request.make("GET", "http://a:1/", b"", fields)
    expected.url = "https://api.openai.com/v1/responses"
    point_at(pointed, "https://api.openai.com/v1/responses")
    assert pointed.headers.fields == expected.headers.fields
    assert [field for field in pointed.headers.fields if field[0].lower() == b"host"] == [(b"HOST", b"api.openai.com")]
