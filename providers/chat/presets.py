"""Chat Completions hosts: each host's address and the parts of the API it accepts."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Literal

ReasoningReplay = Literal["reasoning_content", "reasoning_details"]


@dataclasses.dataclass(frozen=True)
class Preset:
    """One host's address and the parts of the Chat Completions API it accepts."""

    name: str
    base_url: str
    # `reasoning_effort` values the host accepts; empty = never send the field.
    reasoning_effort_values: tuple[str, ...] = ()
    # Hosts with a small default output limit get `default_max_tokens` in this field.
    needs_max_tokens: bool = False
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    developer_role: bool = False  # instructions as `developer` instead of `system`
    parallel_tool_calls: bool = True  # the field is accepted (sent when Codex sets it)
    stream_options: bool = True  # `stream_options: {include_usage: true}` accepted
    tools: bool = True  # the host can call functions at all
    structured_output: Literal["json_schema", "json_object"] | None = "json_schema"
    # How the host wants its own reasoning back on later turns (None: it does not).
    reasoning_replay: ReasoningReplay | None = None
    # Mistral accepts only tool call ids of exactly 9 letters/digits.
    alnum9_tool_call_ids: bool = False
    # Hosts that insist on alternating user/assistant turns (consecutive same roles merged).
    merge_consecutive_roles: bool = False
    # The provider id genai-prices lists the host's models under; None for self-hosted ones (the
    # policy sets a price, 0 is one too).
    price_id: str | None = None


_LOW_MED_HIGH = ("low", "medium", "high")

# Checked against each host's documentation (base URLs as documented; quirks as documented or,
# where the documentation is silent, the conservative choice: a field a strict host would reject
# with 400/422 is not sent). Hosts whose models differ (xAI's grok-4 rejects reasoning_effort,
# grok-3-mini wants it) get the safe default; a policy can pass its own `dataclasses.replace(...)`.
PRESETS: Mapping[str, Preset] = types.MappingProxyType(
    {
        "generic": Preset("generic", "", parallel_tool_calls=False),
        "groq": Preset(
            "groq", "https://api.groq.com/openai/v1", price_id="groq", reasoning_effort_values=_LOW_MED_HIGH
        ),
        # Mistral forbids unknown fields (422 extra_forbidden), `stream_options` among them; it
        # sends usage on the last chunk unasked. Tool call ids: [a-zA-Z0-9]{9}.
        "mistral": Preset(
            "mistral", "https://api.mistral.ai/v1", price_id="mistral", stream_options=False, alnum9_tool_call_ids=True
        ),
        # DeepSeek: thinking mode wants `reasoning_content` of tool-calling turns back (else 400);
        # structured output is json_object only.
        "deepseek": Preset(
            "deepseek",
            "https://api.deepseek.com",
            price_id="deepseek",
            reasoning_effort_values=("low", "high", "max"),
            parallel_tool_calls=False,
            structured_output="json_object",
            reasoning_replay="reasoning_content",
        ),
        "xai": Preset("xai", "https://api.x.ai/v1", price_id="x-ai"),
        "openrouter": Preset(
            "openrouter",
            "https://openrouter.ai/api/v1",
            price_id="openrouter",
            reasoning_effort_values=("none", "minimal", "low", "medium", "high", "xhigh"),
            reasoning_replay="reasoning_details",
        ),
        "together": Preset("together", "https://api.together.ai/v1", price_id="together", parallel_tool_calls=False),
        "fireworks": Preset(
            "fireworks",
            "https://api.fireworks.ai/inference/v1",
            price_id="fireworks",
            reasoning_effort_values=_LOW_MED_HIGH,
            needs_max_tokens=True,
            parallel_tool_calls=False,
        ),
        # Cerebras rejects parallel_tool_calls with 400.
        "cerebras": Preset(
            "cerebras",
            "https://api.cerebras.ai/v1",
            price_id="cerebras",
            reasoning_effort_values=_LOW_MED_HIGH,
            parallel_tool_calls=False,
        ),
        # Perplexity Sonar: no tool calling; turns must alternate.
        "perplexity": Preset(
            "perplexity",
            "https://api.perplexity.ai",
            price_id="perplexity",
            parallel_tool_calls=False,
            stream_options=False,
            tools=False,
            merge_consecutive_roles=True,
        ),
        # Ollama answers 400 to reasoning settings for models that cannot think, so none are sent.
        "ollama": Preset("ollama", "http://localhost:11434/v1", parallel_tool_calls=False),
        "vllm": Preset("vllm", "http://localhost:8000/v1", reasoning_effort_values=_LOW_MED_HIGH),
        "lmstudio": Preset("lmstudio", "http://localhost:1234/v1", parallel_tool_calls=False),
        # Azure OpenAI chat deployments: the OpenAI model family itself.
        "azure": Preset(
            "azure",
            "",
            reasoning_effort_values=("minimal", "low", "medium", "high"),
            max_tokens_field="max_completion_tokens",
            developer_role=True,
        ),
    }
)


def get_preset(preset: Preset | str | None) -> Preset:
    if isinstance(preset, Preset):
        return preset
    return PRESETS[preset or "generic"]
