"""OpenAI-compatible Chat Completions hosts (Groq, Mistral, DeepSeek, xAI, OpenRouter, Together,
Fireworks, Cerebras, Perplexity, Ollama, vLLM, LM Studio, any generic host) and Azure OpenAI.

Codex speaks the Responses API only; these hosts speak `POST {base_url}/chat/completions`. This
module translates both ways, purely (no I/O). Each host's quirks live in a `Preset` (see `PRESETS`).

How the gateway drives it
-------------------------
Request (one Codex `POST /v1/responses` body `body`, routed to upstream model `upstream`)::

    preset = chat_compat.PRESETS["groq"]                      # or a Preset of your own
    base = policy_base_url or preset.base_url
    options = TranslateOptions(provider_name="groq-prod")
    chat_body = chat_compat.build_request(body, upstream, options, preset=preset)
    url, fixed = chat_compat.request_target(base, upstream, stream=chat_body["stream"])
    headers = {"content-type": "application/json", **fixed, **chat_compat.auth_headers(secret)}
    # options.dropped_tools now names the Codex tools the host cannot serve (say so in a header)
    tools = chat_compat.tool_map(body)        # chat function name -> Codex tool (custom/namespace)
    # Reasoning envelopes are scoped to (provider_name, upstream): pass the same `upstream` below.

Answer, not streamed (HTTP 200) — derived from the stream translator below (the completion is
read as the chunks its stream would have carried, `whole.completion_chunks`)::

    responses_body = chat_compat.translate_response(json.loads(raw), ctx, tools=tools, upstream_model=upstream)

Answer, streamed (HTTP 200, `text/event-stream`); chunk boundaries may fall anywhere::

    decoder = chat_compat.ChatStreamDecoder()
    translator = chat_compat.StreamTranslator(ctx, tools=tools, upstream_model=upstream)
    for chunk in upstream_bytes:                       # b"" at the end is fine too
        for event in decoder.feed(chunk):
            for out in translator.feed(event):
                send(codexgate.sse.encode_event(out))
    for out in translator.finish():                    # once, when the upstream stream ended
        send(codexgate.sse.encode_event(out))
    # translator.usage (Usage | None), translator.outcome ("completed"/"incomplete"/"failed")

Answer with an error status (any time before the stream started)::

    status, error_body = chat_compat.translate_error(upstream_status, raw_body)
    # keep the host's Retry-After header on a 429: Codex retries a 429 only when it is there

Azure OpenAI
------------
* Chat deployments: ``url, fixed = azure_target(endpoint, deployment, "2024-10-21", "chat")``,
  body from ``build_request(body, deployment, options, preset=PRESETS["azure"])``, credentials
  from ``azure_auth_headers(secret)`` (the `api-key` header); answers translate as above.
* v1 Responses API: ``url, fixed = azure_target(endpoint, deployment, None, "responses")`` and
  ``azure_responses_body(body, deployment)`` — a pass-through (the answer is already a Responses
  answer; nothing to translate back), with `api-key` credentials.

What is translated
------------------
instructions + developer/system messages → one leading system (or `developer`) message; user /
assistant messages (text, images as `image_url` parts); function_call / custom_tool_call →
assistant `tool_calls`, their outputs → `tool` messages (images in tool outputs follow as a user
message); reasoning items → only envelopes (`seal_reasoning`) made for the same provider and model,
replayed as `reasoning_content` (DeepSeek) or `reasoning_details` (OpenRouter) where the host wants
them (envelopes are scoped to the provider name and the upstream model); function tools →
`tools[].function`; custom tools (apply_patch) → a function with one string
parameter `input` whose calls come back as `custom_tool_call` items; namespaces (also inside
`additional_tools` input items) are flattened; hosted tools (web_search, tool_search, ...) are
dropped and named in `options.dropped_tools`; tool_choice; parallel_tool_calls; reasoning.effort →
`reasoning_effort` (only where the preset accepts it, mapped to the nearest accepted value);
text.format → `response_format`; a default `max_tokens` where the preset needs one; streams ask for
`stream_options.include_usage` where accepted.

Back: `content` → a `message`; `reasoning_content` / `reasoning` deltas, `<think>...</think>`
content and Mistral `thinking` parts → a `reasoning` item with a summary and a sealed envelope;
`tool_calls` (by index, argument fragments) → `function_call` / `custom_tool_call`; finish_reason
stop/tool_calls → completed, length → incomplete (`max_output_tokens`), content_filter → completed
(the answer is what the filter let through; `StreamTranslator.content_filtered` says so), an error
chunk or `finish_reason: "error"` → failed; usage from whichever chunk carries it.
"""

from __future__ import annotations

from codexgate.providers.chat.azure import azure_auth_headers, azure_responses_body, azure_target
from codexgate.providers.chat.errors import translate_error
from codexgate.providers.chat.presets import PRESETS, Preset, get_preset
from codexgate.providers.chat.request import auth_headers, build_request, request_target
from codexgate.providers.chat.stream import DONE, ChatStreamDecoder, StreamTranslator
from codexgate.providers.chat.tools import tool_map
from codexgate.providers.chat.whole import translate_response

__all__ = [
    "DONE",
    "PRESETS",
    "ChatStreamDecoder",
    "Preset",
    "StreamTranslator",
    "auth_headers",
    "azure_auth_headers",
    "azure_responses_body",
    "azure_target",
    "build_request",
    "get_preset",
    "request_target",
    "tool_map",
    "translate_error",
    "translate_response",
]
