"""Anthropic Messages API (`POST /v1/messages`) behind Codex's Responses API: pure translators.

How the gateway drives this package (everything here is pure; the addon does the I/O)::

    from codexgate.providers import anthropic
    from codexgate.providers.base import ResponseContext, TranslateOptions

    options = TranslateOptions(provider_name="anthropic-prod", default_max_tokens=8192)
    provider_body = anthropic.build_request(codex_body, upstream_model, options)
    # options.dropped_tools now names the tools Claude cannot serve (web_search, tool_search, ...)
    info = anthropic.request_info(codex_body, upstream_model)   # what the answer side must know
    stream = bool(provider_body.get("stream"))                    # mirrors the Codex body (always true)
    url, headers = anthropic.request_target(base_url, upstream_model, stream)
    headers.update(anthropic.auth_headers(secret))                # x-api-key; drop every client credential
    # POST json.dumps(provider_body) to url with headers.

    ctx = ResponseContext(response_id, model=codex_body["model"], provider_name=..., created_at=...)
    # 2xx, streamed (content-type text/event-stream):
    decoder, translator = anthropic.StreamDecoder(), anthropic.StreamTranslator(ctx, info)
    for chunk in body_chunks:                                     # arbitrary byte boundaries
        for event in decoder.feed(chunk):
            out_events.extend(translator.feed(event))             # Responses events, sequence-numbered
    out_events.extend(translator.finish())                       # at end of stream, always
    translator.usage, translator.outcome                         # for accounting
    # 2xx, not streamed (replayed as its stream events through the same StreamTranslator):
    response = anthropic.translate_response(json.loads(body), ctx, info)
    # non-2xx before the stream started:
    status, error_body = anthropic.translate_error(upstream_status, upstream_body_bytes)
    # copy the upstream `retry-after` header onto the 429/503 answer: Codex retries a 429 only with it.

`base_url` is the API root (`https://api.anthropic.com`); one ending in `/v1` also works.

Reasoning across turns: each Claude thinking block (with its signature) or redacted_thinking block
becomes a Responses `reasoning` item whose `encrypted_content` is a `seal_reasoning` envelope
scoped to (provider_name, upstream model). Codex replays it on the next turn and `build_request`
puts the blocks back, verbatim, in the assistant message before the tool_use they preceded.
Always pass `info` to the answer side: without it envelopes are sealed for `ctx.model` (so never
replayed) and calls of custom tools (apply_patch) come back as function_call, not custom_tool_call.

Thinking: Claude 4.6 and later (and the Fable/Mythos families) take adaptive thinking plus
`output_config.effort`; earlier models take `thinking.type=enabled` with a token budget
(minimal 1024, low 2048, medium 8192, high 24576, xhigh 28672), `max_tokens` raised above it.
Manual thinking is left off for a request where the API would refuse it: a forced tool choice, or
a tool loop whose assistant turn did not start with a replayable thinking block (for example
after a switch from another model).
"""

from __future__ import annotations

from codexgate.providers.anthropic.errors import translate_error
from codexgate.providers.anthropic.models import ANTHROPIC_VERSION, INTERLEAVED_THINKING_BETA
from codexgate.providers.anthropic.request import auth_headers, build_request, request_target
from codexgate.providers.anthropic.stream import StreamDecoder, StreamTranslator
from codexgate.providers.anthropic.tools import RequestInfo, ToolRef, request_info
from codexgate.providers.anthropic.whole import translate_response

__all__ = [
    "ANTHROPIC_VERSION",
    "INTERLEAVED_THINKING_BETA",
    "RequestInfo",
    "StreamDecoder",
    "StreamTranslator",
    "ToolRef",
    "auth_headers",
    "build_request",
    "request_info",
    "request_target",
    "translate_error",
    "translate_response",
]
