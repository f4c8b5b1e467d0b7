"""Google Gemini (`kind: gemini`) and Gemini on Vertex AI (`kind: vertex`): Codex's Responses API
traffic translated to and from `generateContent` / `streamGenerateContent?alt=sse`.

The gateway drives both through `family.py` (`GeminiFamily`, `VertexFamily`, registered in
providers/registry.py); the modules are pure functions and small state machines, no I/O except
Vertex's token fetch:

    schema.py    JSON Schema → Gemini's OpenAPI-subset `Schema` (tool parameters, structured output)
    tools.py     Codex's tools ↔ function declarations and names (the shared `ToolNameMap`)
    content.py   message content → parts: text, images and files
    history.py   input items → `contents`: roles, tool calls/outputs, thought signatures, repairs
    request.py   thinking config, tool choice, generation config, `build_request`, the Gemini URL
    stream.py    SSE decoder and the stream translator (through the shared `ResponseEmitter`);
                 a whole answer is fed through the same translator
    errors.py    Google errors → OpenAI-shaped errors and Codex's codes; RetryInfo → Retry-After
    vertex.py    Vertex URLs; OAuth2 tokens from a service-account key, refreshed ahead of expiry

Used directly (tests, benchmarks):

    payload = gemini.build_request(body, upstream_model, options)
    url, headers = gemini.request_target(base_url, upstream_model, stream=True)
    headers |= gemini.auth_headers(secret)               # {"x-goog-api-key": secret}
    decoder, translator = gemini.StreamDecoder(), gemini.StreamTranslator(ctx, tools=gemini.tool_map(body))
    for chunk in response_bytes:                         # any chunk boundaries
        for event in decoder.feed(chunk):
            events += translator.feed(event)
    events += translator.finish()                        # translator.usage, .outcome, .response
    response = gemini.translate_response(json.loads(body), ctx, tools=...)   # a whole answer
    status, error_body = gemini.translate_error(upstream_status, upstream_body_bytes)

`base_url` is the API root, e.g. `https://generativelanguage.googleapis.com` (a trailing
`/v1beta` or `/v1` is kept as given). `tools` and `upstream_model` are optional: without `tools`
only Codex's freeform `apply_patch` is recognised as a custom tool and namespaced tools come back
without their namespace; without `upstream_model` the reasoning envelopes are sealed for
`ctx.model`, which must then equal the `upstream_model` given to `build_request` or the thought
signatures will never be replayed (Gemini 3 then gets the documented dummy signature instead).

Reasoning state. Gemini returns opaque `thoughtSignature`s on parts (function calls, text, thoughts)
that must come back on the same parts in later requests (Gemini 3 rejects function calls in the
current turn without one). Each signature is recorded as an "anchor" naming the part it came with
(`call_id` of a function call, message item id + character span of a text part, or the thought
text) and handed to Codex in a `reasoning` item's `encrypted_content`, sealed with
`seal_reasoning(provider, upstream_model, {"anchors": [...]})`. Thought text (`thought: true`
parts, Gemini's thought summaries) becomes the reasoning item's summary. On replay, the anchors of
all reasoning items in one model turn are put back onto the rebuilt parts; envelopes for another
provider or model, and OpenAI's own blobs, are dropped.
"""

from __future__ import annotations

from codexgate.providers.gemini.errors import retry_after_seconds, translate_error
from codexgate.providers.gemini.history import DUMMY_THOUGHT_SIGNATURE
from codexgate.providers.gemini.request import API_VERSION, auth_headers, build_request, request_target
from codexgate.providers.gemini.schema import SCHEMA_KEYS_KEPT, SCHEMA_KEYS_STRIPPED, _any_value, gemini_schema
from codexgate.providers.gemini.stream import StreamDecoder, StreamTranslator, translate_response
from codexgate.providers.gemini.tools import GEMINI_NAMES, tool_map

__all__ = [
    "GEMINI_NAMES",
    "API_VERSION",
    "DUMMY_THOUGHT_SIGNATURE",
    "SCHEMA_KEYS_KEPT",
    "SCHEMA_KEYS_STRIPPED",
    "StreamDecoder",
    "StreamTranslator",
    "_any_value",
    "auth_headers",
    "build_request",
    "gemini_schema",
    "request_target",
    "retry_after_seconds",
    "tool_map",
    "translate_error",
    "translate_response",
]
