"""OpenAI-compatible Chat Completions hosts (Groq, Mistral, DeepSeek, xAI, OpenRouter, Together,
Fireworks, Cerebras, Perplexity, Ollama, vLLM, LM Studio, any generic host) and Azure OpenAI.

Codex speaks the Responses API only; these hosts speak `POST {base_url}/chat/completions`. This
package translates both ways, purely (no I/O). Each host's quirks live in a `Preset` (`PRESETS`).

The gateway drives it through the `chat` and `azure` families (`family.py`, registered in
`providers/registry.py`); the modules, in the order a request meets them:

- `presets`: each host's base URL, the Chat fields it accepts, its genai-prices id.
- `tools`: Codex tools → chat functions (the toolkit's `ToolNameMap` under Chat's naming rule),
  custom tools as a function taking one string `input`, `tool_choice`.
- `messages`: Responses input items → `messages`, repaired for strict hosts (no blank text, every
  tool call answered, roles alternating where a host insists).
- `request`: `build_request` (the whole chat body), `request_target`, `auth_headers`.
- `azure`: Azure OpenAI's URLs and `api-key`, the body of its v1 Responses API (passed through).
- `stream`: `ChatStreamDecoder` (SSE → chunk dicts) and `StreamTranslator` (chunks → Responses
  events through the toolkit's `ResponseEmitter`); `answer`: what chunks carry, read.
- `whole`: a whole completion read as the chunks its stream would have been, through the same
  translator — one translation, streamed or not.
- `errors`: a host's errors → OpenAI-shaped errors with the codes Codex understands.

Used directly (as the tests do)::

    options = TranslateOptions(provider_name="groq-prod")
    chat_body = chat.build_request(body, upstream, options, preset=chat.PRESETS["groq"])
    tools = chat.tool_map(body)     # wire name -> Codex tool; envelopes are scoped to `upstream`
    translator = chat.StreamTranslator(ctx, tools=tools, upstream_model=upstream)
    decoder = chat.ChatStreamDecoder()
    for piece in upstream_bytes:    # chunk boundaries anywhere
        for chunk in decoder.feed(piece):
            send(translator.feed(chunk))
    send(translator.finish())       # the terminal event unless one was sent; then .usage, .outcome
    whole = chat.translate_response(json.loads(raw), ctx, tools=tools, upstream_model=upstream)
    status, error_body = chat.translate_error(upstream_status, raw_body)

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
