"""A virtual key never leaves the gateway for a host that is not governed.

Codex sends its API key to chatgpt.com, and the commands its shell tool runs inherit it (and
`HTTPS_PROXY`), so on every flow the gateway can see but does not govern, a virtual key is
removed wherever it sits: any header, the query string or path, and the body (buffered bodies,
gzip/deflate/br/zstd decoded within a bound). On guard hosts such a request is answered locally.
An un-intercepted tunnel is encrypted end to end: nothing in it can be checked (see README).
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Mapping

import brotli
import zstandard
from mitmproxy import http

from codexgate.addons.identify import key_from_proxy_authorization
from codexgate.addons.policy_source import PolicySource
from codexgate.errors import error_response
from codexgate.failsafe import fail_closed
from codexgate.flowstate import state_of
from codexgate.metrics import GatewayMetrics
from codexgate.policies.keys import KEY_PREFIX, hash_key

logger = logging.getLogger(__name__)

VIRTUAL_KEY_REMOVED = "codexgate.virtual_key_removed"  # where SecretMask already removed one
REMOVED = "sk-cg-REMOVED"
# A virtual key in free text (a path, a body): the prefix and its url-safe base64 secret.
KEY_TOKEN = re.compile(rb"sk-cg-[A-Za-z0-9_-]+")
MAX_SCANNED_BODY = 16 * 1024 * 1024  # decoded bytes scanned; a larger encoded body is refused


def carries_virtual_key(value: str, known_hashes: Mapping[str, object]) -> bool:
    if KEY_PREFIX in value:
        return True
    parts = value.split()
    token = parts[-1] if parts else ""
    if not token:
        return False
    if hash_key(token) in known_hashes:
        return True
    # Basic credentials (proxy or HTTP auth) carry the key base64-encoded.
    basic = key_from_proxy_authorization(value) if parts[0].lower() == "basic" else None
    return basic is not None and (KEY_PREFIX in basic or hash_key(basic) in known_hashes)


def scrub_request_head(request: http.Request, known_hashes: Mapping[str, object]) -> list[str]:
    """Removes every header, query parameter and path token carrying a virtual key from a request
    to an ungoverned host; returns where it found them (header names, `query:NAME`, `path`)."""
    removed = [
        name
        for name in dict.fromkeys(name.lower() for name in request.headers)
        if any(carries_virtual_key(value, known_hashes) for value in request.headers.get_all(name))
    ]
    for name in removed:
        request.headers.pop(name, None)
    path = request.path
    if "?" in path:
        fields = request.query.fields
        carrying = [carries_virtual_key(value, known_hashes) or KEY_PREFIX in name for name, value in fields]
        if any(carrying):
            removed += [f"query:{name}" for (name, _), hit in zip(fields, carrying, strict=True) if hit]
            request.query = [field for field, hit in zip(fields, carrying, strict=True) if not hit]
    if KEY_PREFIX in request.path.split("?", 1)[0]:
        base, sep, query = request.path.partition("?")
        request.path = KEY_TOKEN.sub(REMOVED.encode(), base.encode()).decode() + sep + query
        removed.append("path")
    return removed


def _decoded(raw: bytes, encoding: str) -> bytes | None:
    """The body as sent before `encoding`, at most MAX_SCANNED_BODY bytes; None when it cannot be
    checked within that bound (or the encoding is not one the gateway decodes). Decoding stops at
    the bound: a small body that would inflate to gigabytes costs no more than the bound."""
    if encoding in ("", "identity"):
        return raw
    try:
        if encoding in ("gzip", "x-gzip", "deflate"):
            try:
                inflater = zlib.decompressobj(wbits=47)  # gzip or zlib header, detected
                decoded = inflater.decompress(raw, MAX_SCANNED_BODY + 1)
            except zlib.error:
                inflater = zlib.decompressobj(wbits=-15)  # raw deflate
                decoded = inflater.decompress(raw, MAX_SCANNED_BODY + 1)
            return None if len(decoded) > MAX_SCANNED_BODY or not inflater.eof else decoded
        if encoding == "br":
            brotli_decoder = brotli.Decompressor()
            decoded = brotli_decoder.process(raw, output_buffer_limit=MAX_SCANNED_BODY + 1)
            return None if len(decoded) > MAX_SCANNED_BODY or not brotli_decoder.is_finished() else decoded
        if encoding == "zstd":
            parts, size = [], 0
            with zstandard.ZstdDecompressor().stream_reader(raw) as reader:
                while size <= MAX_SCANNED_BODY and (part := reader.read(1024 * 1024)):
                    parts.append(part)
                    size += len(part)
            return None if size > MAX_SCANNED_BODY else b"".join(parts)
    except (zlib.error, brotli.error, zstandard.ZstdError):
        return None
    return None


class KeyGuard:
    def __init__(self, policy: PolicySource, metrics: GatewayMetrics | None = None) -> None:
        self._policy = policy
        self._metrics = metrics

    def _count(self, where: str) -> None:
        if self._metrics is not None:
            self._metrics.keys_scrubbed.labels(where).inc()

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or state_of(flow) is not None:
            return
        policy = self._policy.current()
        removed = list(flow.metadata.get(VIRTUAL_KEY_REMOVED, ())) + scrub_request_head(
            flow.request, policy.keys_by_hash
        )
        if not removed:
            return
        for where in removed:
            self._count("query" if where.startswith("query:") else "path" if where == "path" else "header")
        host = flow.request.pretty_host.lower()
        logger.warning("virtual key removed from %s request to %s (%s)", flow.request.method, host, ", ".join(removed))
        flow.comment = f"codexgate: virtual key removed ({', '.join(removed)})"
        if policy.is_guard_host(host):
            flow.response = error_response(
                403,
                "virtual_key_not_forwarded",
                f"codexgate does not forward virtual keys to {host}; "
                "only model providers are reached through the gateway",
            )

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        """The body of an ungoverned request the gateway sees (plain HTTP, guard hosts)."""
        if flow.response or flow.error or state_of(flow) is not None:
            return
        raw = flow.request.raw_content
        if not raw:
            return
        encoding = flow.request.headers.get("content-encoding", "").strip().lower()
        if not encoding and KEY_PREFIX.encode() not in raw:
            return  # the common case: one C-speed scan
        decoded = _decoded(raw, encoding)
        if decoded is None:
            logger.warning("body of %s request to %s cannot be checked for virtual keys (%s, %d bytes); refused",
                           flow.request.method, flow.request.pretty_host, encoding, len(raw))  # fmt: skip
            flow.response = error_response(
                403,
                "body_not_checkable",
                f"codexgate cannot check this request body for virtual keys ({encoding}: larger than "
                f"{MAX_SCANNED_BODY // (1024 * 1024)} MB decoded, malformed, or not gzip/deflate/br/zstd)",
            )
            return
        if KEY_PREFIX.encode() not in decoded:
            return
        # (`content` is encoded again per the request's content-encoding.)
        flow.request.content = KEY_TOKEN.sub(REMOVED.encode(), decoded)
        self._count("body")
        logger.warning("virtual key removed from the body of %s request to %s",
                       flow.request.method, flow.request.pretty_host)  # fmt: skip
        flow.comment = f"{flow.comment}; body" if flow.comment else "codexgate: virtual key removed (body)"
        if self._policy.current().is_guard_host(flow.request.pretty_host):
            flow.response = error_response(
                403, "virtual_key_not_forwarded",
                f"codexgate does not forward virtual keys to {flow.request.pretty_host}",
            )  # fmt: skip
