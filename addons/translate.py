"""Translates answers of providers that speak another API back into the Responses API Codex
expects: streams event by event as they pass (nothing waits for the end), whole answers and
error bodies in the response hook. Usage comes from the translator."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from mitmproxy import http

from codexgate.addons.upstream_watch import UpstreamWatch, counted_watch
from codexgate.errors import error_object, error_response
from codexgate.flowstate import GatewayRequest, Translation, state_of
from codexgate.mitm_seams import FAILED_EVENT, LiveCallable
from codexgate.usage import usage_from_responses

logger = logging.getLogger(__name__)

KEPT_HEADER_PREFIXES = ("date", "x-codexgate-", "x-ratelimit-")
# A translated stream's headers: the provider's framing ones replaced by these.
_STREAM_REPLACED = frozenset({b"content-length", b"content-encoding", b"content-type", b"transfer-encoding",
                              b"cache-control"})  # fmt: skip
_STREAM_HEADERS = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"))
_STREAM_HEADERS_HTTP1 = (*_STREAM_HEADERS, (b"transfer-encoding", b"chunked"))


def _bridge_stream(
    state: GatewayRequest, translation: Translation, watch: UpstreamWatch | None
) -> tuple[Callable[[bytes], bytes | list[bytes]], Callable[[http.HTTPFlow, str], bytes]]:
    """The stream callable for mitmproxy, and what to send when the provider's connection breaks
    mid-stream (`codexgate.mitm_seams.FAILED_EVENT`): the translator's own `response.failed`,
    numbered after what it emitted, with its response id, items and input usage. The idle
    timeout reads the number of chunks so far (`watch`, when the request is watched: see
    `counted_watch`), not a clock per chunk."""
    import time

    bridge = translation.bridge
    assert bridge is not None  # set by Translate.responseheaders before this is made
    chat = None
    if translation.chat_model is not None:
        from codexgate.providers.chat_ingress import ChatSSERelay

        chat = ChatSSERelay(translation.chat_model, translation.chat_usage)
    chunks = 0

    def translate(chunk: bytes) -> bytes | list[bytes]:
        nonlocal chunks
        chunks += 1
        if state.first_byte is None and chunk:
            state.first_byte = time.time()
        try:
            if chat is None:
                out = bridge.feed(chunk) if chunk else bridge.feed(b"") + bridge.finish()
            elif chunk:
                out = chat.feed_events(bridge.feed_events(chunk))
            else:
                out = chat.feed_events(bridge.feed_events(b"") + bridge.finish_events()) + chat.finish()
        except Exception:
            logger.exception("stream translation failed for request %s", state.request_id)
            out = bridge.finish() if not chunk else b""
        # An empty chunk would end a chunked HTTP/1 body early: send nothing instead.
        return [out] if out else []

    def progress() -> int:
        return chunks

    if watch is not None:
        watch.progress = progress

    def broken(flow: http.HTTPFlow, detail: str) -> bytes:
        if chat is None:
            return bridge.finish()  # nothing once the translator has emitted its terminal event
        return chat.feed_events(bridge.finish_events()) + chat.finish()

    return translate, broken


def hide_credential_refusal(flow: http.HTTPFlow, provider: str) -> None:
    """A provider refusing the gateway's credentials is the gateway's problem, not the client's,
    and its message may quote part of the provider key ("Incorrect API key provided: sk-...")."""
    assert flow.response is not None
    logger.error("provider %s refused the gateway's credentials (HTTP %s)", provider, flow.response.status_code)
    flow.response = error_response(
        502, "upstream_auth_failed", f"provider {provider} refused the gateway's credentials; tell your platform team"
    )


class Translate:
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        translation = state.translation if state else None
        if state is None or translation is None or flow.response is None or state.answered_locally:
            return
        if translation.prepared.dropped_tools:
            flow.response.headers["x-codexgate-dropped-tools"] = ",".join(translation.prepared.dropped_tools)
        if translation.prepared.dropped_params:
            flow.response.headers["x-codexgate-dropped-params"] = ",".join(translation.prepared.dropped_params)
        if not translation.prepared.translate:
            return
        if flow.response.status_code == 200 and translation.prepared.stream:
            translation.bridge = translation.family.stream(translation.prepared, translation.context)
            # The provider's framing headers describe its body, not ours. One pass over the raw
            # fields (per request; the Headers methods take a dozen calls per name).
            headers = flow.response.headers
            fields = tuple([field for field in headers.fields if field[0].lower() not in _STREAM_REPLACED])
            # (`request.http_version` decodes the raw bytes compared here: two calls)
            headers.fields = fields + (
                _STREAM_HEADERS_HTTP1 if flow.request.data.http_version == b"HTTP/1.1" else _STREAM_HEADERS
            )
            flow.response.stream, broken = _bridge_stream(state, translation, counted_watch(flow))
            flow.metadata[FAILED_EVENT] = LiveCallable(broken)

    def response(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        translation = state.translation if state else None
        if state is None or flow.response is None or state.answered_locally:
            return
        status_code = flow.response.status_code  # (a property: read once)
        if translation is not None and status_code in (401, 403):
            # credentials it cached and the provider refused (Vertex's token) are not sent again
            raw = flow.response.get_content(strict=False) or b""
            translation.family.on_auth_error(translation.prepared, status_code, raw)
        if translation is None or not translation.prepared.translate:
            if status_code in (401, 403) and state.provider:
                hide_credential_refusal(flow, state.provider)
            return
        if translation.bridge is not None:
            state.usage = translation.bridge.usage
            return
        raw = flow.response.get_content(strict=False) or b""
        try:
            if flow.response.status_code == 200:
                body = translation.family.whole(translation.prepared, translation.context, raw)
                state.usage = usage_from_responses(body.get("usage"))
                status = 200
                if translation.chat_model is not None:
                    from codexgate.providers import chat_ingress

                    try:
                        body = chat_ingress.responses_to_chat(body, model=translation.chat_model)
                    except chat_ingress.UpstreamFailed as failed:
                        status, body = failed.status, failed.body()
            else:
                status, body = translation.family.error(flow.response.status_code, raw)
        except Exception:
            logger.exception("cannot translate the answer of %s (status %s)", state.provider, flow.response.status_code)
            status = 502
            message = f"codexgate could not translate the answer of provider {state.provider}"
            body = {"error": error_object(502, "translation_failed", message)}
        retry_after = flow.response.headers.get("retry-after")
        if status == 429 and not retry_after:
            seconds = translation.family.retry_after(raw)
            retry_after = str(seconds) if seconds else None
        flow.response.status_code = status
        # The provider's own headers describe its body, not ours (and may name its internals).
        for name in list(flow.response.headers.keys()):
            if not name.lower().startswith(KEPT_HEADER_PREFIXES):
                del flow.response.headers[name]
        flow.response.headers["content-type"] = "application/json"
        if retry_after:
            flow.response.headers["retry-after"] = retry_after  # Codex retries a 429 only with it
        flow.response.content = json.dumps(body).encode()

    def error(self, flow: http.HTTPFlow) -> None:
        state = state_of(flow)
        if state is not None and state.translation is not None and state.translation.bridge is not None:
            bridge = state.translation.bridge
            # The provider's connection broke. Its usage counts only if the answer had ended before;
            # a translator failed by the break counted input only, so Limits charges the estimate.
            if bridge.outcome in ("completed", "incomplete"):
                state.usage = bridge.usage
