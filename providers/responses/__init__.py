"""The shared Responses toolkit: what every translating family needs to answer Codex.

- `objects`: the `response` object, the request fields it echoes, the `usage` block.
- `emitter`: `ResponseEmitter`, sequence-numbered stream events and the final response;
  `EmittingTranslator`, a base for a family's stream translator built on it.
- `tools`: `ToolNameMap`, Codex tools under provider-safe names and back.
- `jsonstring`: the `{"input": "..."}` string of a custom tool call, decoded as it streams.
"""

from codexgate.providers.responses.emitter import (
    CustomToolCallItem,
    EmittingTranslator,
    FunctionCallItem,
    MessageItem,
    ReasoningItem,
    ResponseEmitter,
)
from codexgate.providers.responses.jsonstring import (
    InputStringStream,
    custom_input,
    decode_input,
    without_lone_surrogates,
)
from codexgate.providers.responses.objects import (
    ResponseContext,
    echoed_fields,
    request_echo,
    response_object,
    usage_block,
)
from codexgate.providers.responses.tools import CodexTool, OfferedTool, ToolNameMap, WireNames, codex_tools

__all__ = [
    "CodexTool",
    "CustomToolCallItem",
    "EmittingTranslator",
    "FunctionCallItem",
    "InputStringStream",
    "MessageItem",
    "OfferedTool",
    "ReasoningItem",
    "ResponseContext",
    "ResponseEmitter",
    "ToolNameMap",
    "WireNames",
    "codex_tools",
    "custom_input",
    "decode_input",
    "echoed_fields",
    "request_echo",
    "response_object",
    "usage_block",
    "without_lone_surrogates",
]
