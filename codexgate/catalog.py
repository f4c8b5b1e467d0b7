"""Codex's model catalog for one virtual key: the models the key may use, as Codex's `ModelInfo`.

Codex (0.169) reads its model list — what `/model` offers, each model's context window, reasoning
levels and tool flavour — from a catalog: in ChatGPT/proxy mode from
`chatgpt.com/backend-api/codex/models`, otherwise from the file named by `model_catalog_json`.
Both take `{"models": [ModelInfo, ...]}` in the shape of `codex-rs/core/models.json` in
openai/codex, and Codex rejects the whole catalog if any field is missing, so every entry here
carries every field of that shape (measured against the catalog built into Codex 0.169).

What the policy does not say about a model comes from its provider family
(`ProviderFamily.codex_defaults`), so a bare policy still gives Codex the right context window for
GPT, Claude and Gemini models.
"""

from __future__ import annotations

from typing import Any

from codexgate.policies.loader import CompiledPolicy
from codexgate.policies.schema import CodexModelInfo, ModelEntry, VirtualKey
from codexgate.providers.registry import codex_defaults

REASONING_DESCRIPTIONS = {
    "none": "No reasoning",
    "minimal": "Least reasoning, fastest answers",
    "low": "Fast responses with lighter reasoning",
    "medium": "Balances speed and reasoning depth for everyday tasks",
    "high": "Greater reasoning depth for complex problems",
    "xhigh": "Extra high reasoning depth for complex problems",
}


# Codex requires instructions per catalog entry (`base_instructions` or a model_messages template);
# Codex's own prompts belong to its built-in models, so catalog models get these, written here.
BASE_INSTRUCTIONS = """\
You are a coding agent running in the Codex CLI on the user's computer, working in their workspace.

- Understand the request, inspect the relevant files, then act. Prefer `rg` / `rg --files` for searching.
- Run commands with the shell tool; edit files with the apply_patch tool. Keep changes minimal and focused,
  in the style of the surrounding code; never revert changes you did not make.
- Ask only when something is genuinely ambiguous. Before long or risky steps, say briefly what you will do.
- Validate your work (build, tests) when the project has a way to, and say what you could not check.
- Answer in concise plain text for a terminal: short paragraphs or flat bullet lists, paths and commands
  in backticks, no heavy formatting.
"""


def model_info(policy: CompiledPolicy, name: str, entry: ModelEntry, priority: int) -> dict[str, Any]:
    """One catalog entry, every field of Codex's ModelInfo present; what the policy leaves out comes
    from the family of the model's first route."""
    upstream = entry.routes[0].model or name
    defaults = codex_defaults(policy.policy.providers[entry.routes[0].provider], upstream)
    meta = entry.codex or CodexModelInfo()
    levels = list(meta.reasoning_levels or defaults.reasoning_levels)
    default_level = meta.default_reasoning_level or (
        defaults.default_reasoning_level if defaults.default_reasoning_level in levels else levels[len(levels) // 2]
    )
    context_window = meta.context_window or defaults.context_window
    return {
        "slug": name,
        "display_name": meta.display_name or name,
        "description": meta.description or f"{name} via codexgate ({entry.routes[0].provider})",
        "prefer_websockets": True,  # the gateway serves (and governs) Responses over WebSocket
        "support_verbosity": False,
        "default_verbosity": None,
        # Codex 0.169 knows only "freeform"; without it (null) the model patches through the shell tool.
        "apply_patch_tool_type": "freeform" if (meta.apply_patch or defaults.apply_patch) == "freeform" else None,
        "web_search_tool_type": "text",
        "input_modalities": list(meta.input_modalities or defaults.input_modalities),
        "supports_image_detail_original": False,
        "truncation_policy": {"mode": "tokens", "limit": 10000},
        "supports_parallel_tool_calls": True,
        "tool_mode": None,
        "multi_agent_version": None,
        "multi_agent_reasoning_effort": None,
        "use_responses_lite": False,
        "supports_reasoning_effort_updates": False,
        "include_skills_usage_instructions": True,
        "include_apps_usage_instructions": False,
        "include_plugin_usage_instructions": False,
        "guardian": None,
        "node_repl_auto_review_required": False,
        "node_repl_disabled": True,
        "requires_sandboxed_review": False,
        "auto_review_model_override": None,
        "model_specialty": None,
        "context_window": context_window,
        "max_context_window": context_window,
        "auto_compact_token_limit": None,
        "comp_hash": None,
        "default_reasoning_summary": "none",
        "default_reasoning_level": default_level,
        "supported_reasoning_levels": [
            {"effort": level, "description": REASONING_DESCRIPTIONS.get(level, level)} for level in levels
        ],
        "shell_type": "shell_command",
        "visibility": "list",
        "minimal_client_version": "0.0.1",
        "supported_in_api": True,
        "availability_nux": None,
        "upgrade": None,
        "priority": priority,
        "base_instructions": BASE_INSTRUCTIONS,
        "model_messages": None,
        "experimental_supported_tools": [],
        "available_in_plans": [],
        "supports_search_tool": False,
        "supports_experimental_context": False,
        "default_service_tier": None,
        "service_tiers": [],
        "additional_speed_tiers": [],
        "supports_reasoning_summary_parameter": False,
        "supports_reasoning_summaries": False,
    }


def visible_models(policy: CompiledPolicy, key: VirtualKey) -> list[tuple[str, ModelEntry]]:
    """The policy's models this key may use (by name or by one of its aliases), in policy order."""
    return [
        (name, entry)
        for name, entry in policy.policy.models.items()
        if key.allows_model(name) or any(key.allows_model(alias) for alias in entry.aliases)
    ]


def codex_catalog(policy: CompiledPolicy, key: VirtualKey) -> dict[str, Any]:
    """`{"models": [...]}` for Codex: the key's models, in policy order (Codex sorts by priority)."""
    models = visible_models(policy, key)
    return {"models": [model_info(policy, name, entry, priority) for priority, (name, entry) in enumerate(models)]}
