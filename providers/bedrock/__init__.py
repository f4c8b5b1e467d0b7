"""AWS Bedrock Converse / ConverseStream: pure translators between the OpenAI Responses API (what
Codex speaks) and Bedrock's Converse wire format, SigV4 signing and the event-stream decoder.

The package, by concern:

    signing.py   Converse / ConverseStream URL, SigV4 (botocore) over the exact bytes sent, API key
    tools.py     Codex tools ↔ toolSpecs: names Bedrock accepts, toolUse ids, custom tools, toolChoice
    content.py   message content → text / image / document / toolResult blocks
    models.py    what differs per model: thinking / reasoning settings, prompt caching
    history.py   input items → system + messages, repaired (role order, tool pairs), reasoning replay
    request.py   build_request: history, tools, inference / reasoning settings, output, cache points
    decode.py    AWS event-stream frames → ConverseStream events; a whole answer → the same events
    stream.py    StreamTranslator (ConverseStream events → Responses events through the toolkit's
                 ResponseEmitter; usage, stop reasons), translate_response (a whole answer)
    errors.py    HTTP errors and mid-stream exception events → OpenAI-shaped errors
    family.py    BedrockFamily: the ProviderFamily contract (registered in providers/registry.py)

The gateway drives it through `BedrockFamily` (prepare, credentials, stream, whole, error); what
that does, spelled out (everything below is pure except `sign_request`, which reads the clock):

    from codexgate.providers import bedrock
    from codexgate.providers.base import TranslateOptions
    from codexgate.providers.responses import ResponseContext

    options = TranslateOptions(provider_name="bedrock-prod", default_max_tokens=8192)
    converse = bedrock.build_request(codex_body, upstream_model, options)
    # options.dropped_tools now names tools Bedrock cannot serve (web_search, tool_search, ...)
    raw = json.dumps(converse, separators=(",", ":")).encode()
    base = settings.endpoint                      # https://bedrock-runtime.{region}.amazonaws.com
    url, fixed = bedrock.request_target(base, upstream_model, stream=codex_body.get("stream", False))
    headers = dict(fixed)
    # either IAM credentials (SigV4: the policy's references, else botocore's default chain) ...
    headers |= bedrock.sign_request(url, raw, region, access_key, secret_key, session_token)
    # Send exactly `url` (the model id is percent-encoded in it and the signature covers that exact
    # path) and exactly `raw` (the signature covers the body hash); drop every client credential
    # header. Headers added after signing are fine as long as they are not in SignedHeaders
    # (host, content-type, x-amz-date, x-amz-security-token). Sign each attempt anew (the
    # signature is only valid for ~5 minutes and covers region and host).

    tools = bedrock.tool_names(codex_body)   # which Bedrock tool names are custom / namespaced
    ctx = ResponseContext(response_id, model=codex_body["model"], provider_name=..., created_at=...)

    # Non-streamed (POST .../converse): status 200 → JSON body; translated by the stream
    # translator, fed the ConverseStream events equivalent to the answer (decode.converse_events)
    response = bedrock.translate_response(json.loads(body), ctx, tools=tools, upstream_model=upstream_model)
    # Streamed (POST .../converse-stream): status 200 → content-type application/vnd.amazon.eventstream
    decoder = bedrock.EventStreamDecoder()
    translator = bedrock.StreamTranslator(ctx, tools=tools, upstream_model=upstream_model)
    for chunk in upstream_chunks:                   # arbitrary byte boundaries
        for event in decoder.feed(chunk):
            for out in translator.feed(event):
                send_sse(out)                       # codexgate.sse.encode_event(out)
    for out in translator.finish():                 # at the end of the upstream body (b"")
        send_sse(out)
    translator.usage, translator.outcome            # for accounting
    # Any non-200 status (streamed or not): the body is JSON {"message": ...}
    status, error_body = bedrock.translate_error(upstream_status, upstream_body_bytes)

`tools=` and `upstream_model=` are optional keywords beyond the shared interface: without
`tools`, only `apply_patch` is recognised as a custom (freeform) tool and namespaced tools come
back under their flat Bedrock name; without `upstream_model`, reasoning envelopes are sealed for
`ctx.model`, while `build_request` opens them for `upstream_model`, so thinking is replayed only
when the two names agree.

Decoded stream events are dicts shaped like botocore's parsed ConverseStream events:
`{"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "Hi"}}}`, exceptions as
`{"throttlingException": {"message": "..."}}`. Blobs (reasoning `redactedContent`) stay base64
text, exactly as they travel in Bedrock's JSON.
"""

from __future__ import annotations

from codexgate.providers.bedrock.decode import EventStreamDecoder
from codexgate.providers.bedrock.errors import translate_error
from codexgate.providers.bedrock.request import build_request
from codexgate.providers.bedrock.signing import auth_headers, request_target, sign_request
from codexgate.providers.bedrock.stream import StreamTranslator, translate_response
from codexgate.providers.bedrock.tools import ToolNames, tool_names
from codexgate.usage import Usage

__all__ = [
    "Usage",
    "EventStreamDecoder",
    "StreamTranslator",
    "ToolNames",
    "auth_headers",
    "build_request",
    "request_target",
    "sign_request",
    "tool_names",
    "translate_error",
    "translate_response",
]
