"""Google Gemini API (generateContent): translate Codex's Responses API traffic to and from it.

Pure functions and small state machines, no I/O. How the gateway drives this module:

    from codexgate.providers import gemini

    tools = gemini.tool_map(body)                        # Codex's tool names, for the way back
    payload = gemini.build_request(body, upstream_model, options)
    url, headers = gemini.request_target(base_url, upstream_model, stream=True)
    headers |= gemini.auth_headers(secret)               # {"x-goog-api-key": secret}
    # POST json.dumps(payload) to url with headers (content-type: application/json).

    # 200, streamed (`:streamGenerateContent?alt=sse`, SSE of GenerateContentResponse chunks):
    decoder = gemini.StreamDecoder()
    translator = gemini.StreamTranslator(ctx, tools=tools, upstream_model=upstream_model)
    for chunk in response_bytes:                         # any chunk boundaries
        for event in decoder.feed(chunk):
            client_sse += encode_responses_stream(translator.feed(event))
    for event in decoder.close():                        # flush an unterminated last event
        client_sse += encode_responses_stream(translator.feed(event))
    client_sse += encode_responses_stream(translator.finish())
    translator.usage, translator.outcome                 # for accounting

    # 200, not streamed (`:generateContent`, one GenerateContentResponse JSON):
    response = gemini.translate_response(json.loads(body), ctx, tools=tools, upstream_model=upstream_model)

    # non-200 (both endpoints answer errors as plain JSON, not SSE):
    status, error_body = gemini.translate_error(upstream_status, upstream_body_bytes)
    retry = gemini.retry_after_seconds(upstream_body_bytes)   # → a Retry-After header on 429

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

Vertex AI would differ in: URL (`https://{location}-aiplatform.googleapis.com/v1/projects/{project}/
locations/{location}/publishers/google/models/{model}:generateContent`), auth (OAuth2 bearer token
of a service account, not an API key), schema (Vertex accepts `additionalProperties`, so less would
be stripped), and a few Vertex-only fields; the body and the responses are otherwise the same, so
`build_request`/`StreamTranslator` would serve it with a different `request_target`/`auth_headers`.
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
