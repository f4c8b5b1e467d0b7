"""Anthropic Messages API (`POST /v1/messages`) behind Codex's Responses API: pure translators.

The gateway drives this package through `family.AnthropicFamily` (the `ProviderFamily` contract of
`providers/family.py`, registered in `providers/registry.py`); everything here is pure, the addons
do the I/O. The modules, by concern:

    models    Claude versions: budget or adaptive thinking, effort, the interleaved-thinking beta
    tools     Codex tools as Claude tool definitions, their names (the toolkit's ToolNameMap), tool_choice
    content   Responses message content as Anthropic blocks (text, images, documents, tool results)
    request   the request: URL and headers, conversation and history repair, thinking, cache breakpoints
    stream    StreamDecoder (SSE) and StreamTranslator (Claude events → Responses events, through the
              toolkit's ResponseEmitter in providers/responses)
    whole     a whole Message replayed as its stream events through the same StreamTranslator
    usage     Claude's token counts as the gateway's Usage
    errors    HTTP errors and in-stream error events as OpenAI-shaped errors
    family    AnthropicFamily

The functions below stay importable from the package itself::

    options = TranslateOptions(provider_name="anthropic-prod", default_max_tokens=8192)
    provider_body = anthropic.build_request(codex_body, upstream_model, options)
    # options.dropped_tools now names the tools Claude cannot serve (web_search, tool_search, ...)
    info = anthropic.request_info(codex_body, upstream_model)   # what the answer side must know
    url, headers = anthropic.request_target(base_url, upstream_model, stream)
    headers.update(anthropic.auth_headers(secret))                # x-api-key; drop every client credential

    # 2xx, streamed (content-type text/event-stream), any chunking:
    decoder, translator = anthropic.StreamDecoder(), anthropic.StreamTranslator(ctx, info)
    events = [e for chunk in body_chunks for p in decoder.feed(chunk) for e in translator.feed(p)]
    events += translator.finish()                                 # at end of stream, always
    translator.usage, translator.outcome, translator.response     # for accounting
    # 2xx, not streamed (replayed as its stream events through the same StreamTranslator):
    response = anthropic.translate_response(json.loads(body), ctx, info)
    # non-2xx before the stream started:
    status, error_body = anthropic.translate_error(upstream_status, upstream_body_bytes)

`base_url` is the API root (`https://api.anthropic.com`); one ending in `/v1` also works.

Reasoning across turns: each Claude thinking block (with its signature) or redacted_thinking block
becomes a Responses `reasoning` item whose `encrypted_content` is a `seal_reasoning` envelope
scoped to (provider_name, upstream model). Codex replays it on the next turn and `build_request`
puts the blocks back, verbatim, in the assistant message before the tool_use they preceded.
Always pass `info` to the answer side: without it envelopes are sealed for `ctx.model` (so never
replayed) and calls of custom tools other than apply_patch come back as function_call.

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
from codexgate.providers.anthropic.tools import RequestInfo, request_info
from codexgate.providers.anthropic.whole import translate_response

__all__ = [
    "ANTHROPIC_VERSION",
    "INTERLEAVED_THINKING_BETA",
    "RequestInfo",
    "StreamDecoder",
    "StreamTranslator",
    "auth_headers",
    "build_request",
    "request_info",
    "request_target",
    "translate_error",
    "translate_response",
]
