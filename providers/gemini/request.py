"""A Responses request → a generateContent request: thinking, tool choice, generation config, target URL."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from codexgate.providers.base import (
    TranslateOptions,
    sampling_params,
    stop_sequences,
)
from codexgate.providers.base import input_items as _input_items
from codexgate.providers.gemini.history import History, ensure_current_turn_signatures, repair_turns
from codexgate.providers.gemini.schema import gemini_schema
from codexgate.providers.gemini.tools import collect_tools
from codexgate.providers.responses.tools import ToolNameMap

log = logging.getLogger(__name__)

API_VERSION = "v1beta"

# --- reasoning effort ↔ thinking ------------------------------------------------------------------
# Gemini 3+ takes a level; its Pro models know only LOW and HIGH (and cannot stop thinking), its
# Flash models MINIMAL..HIGH. Codex's default "medium" maps to HIGH on Pro, Gemini's own default.
_LEVEL_PRO = {"none": "LOW", "minimal": "LOW", "low": "LOW", "medium": "HIGH", "high": "HIGH", "xhigh": "HIGH"}
_LEVEL_FLASH = {
    "none": "MINIMAL",
    "minimal": "MINIMAL",
    "low": "LOW",
    "medium": "MEDIUM",
    "high": "HIGH",
    "xhigh": "HIGH",
}
# Gemini 2.5 takes a token budget: Pro 128..32768 (cannot be 0), Flash 0..24576, Flash-Lite 0 or
# 512..24576. Unknown model names (aliases such as gemini-flash-latest) also get a budget: Gemini 3
# still accepts one, Gemini 2.5 does not accept a level.
_BUDGET = {"none": 0, "minimal": 512, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32768}
# Under an output cap this small, Gemini 3 thinks at its lowest level (its levels have no token cap).
_SMALL_CAP = 2048
# A thinking budget below this (Gemini 2.5 Pro's own minimum) is not worth spending a capped output on.
_MIN_USEFUL_BUDGET = 128

# ==================================================================================================
# Responses request → generateContent request
# ==================================================================================================


def _model_family(upstream_model: str) -> tuple[str, bool]:
    """("level" | "budget" | "none", is_pro) for a Gemini model name."""
    name = upstream_model.rsplit("/", 1)[-1].lower()
    is_pro = "-pro" in name
    match = re.match(r"gemini-(\d+)(?:\.(\d+))?", name)
    if match is None:
        return "budget", is_pro
    major, minor = int(match.group(1)), int(match.group(2) or 0)
    if major >= 3:
        return "level", is_pro
    if major == 2 and minor >= 5:
        return "budget", is_pro
    return "none", is_pro  # 1.x and 2.0 do not think


def _thinking_config(body: Mapping[str, Any], upstream_model: str) -> dict[str, Any] | None:
    reasoning = body.get("reasoning")
    if not isinstance(reasoning, dict):
        return None
    effort = reasoning.get("effort")
    family, is_pro = _model_family(upstream_model)
    if family == "none" or effort not in _BUDGET:
        return None
    # Summaries are on unless Codex asked for none: Codex shows them while the model thinks.
    include = reasoning.get("summary") != "none"
    config: dict[str, Any]
    # Thinking tokens count against maxOutputTokens: with a cap, thinking gets at most half of it
    # (the answer the other half), and a level model thinks at its lowest level under a small cap.
    cap = body.get("max_output_tokens")
    cap = cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else None
    if family == "level":
        levels = _LEVEL_PRO if is_pro else _LEVEL_FLASH
        config = {"thinkingLevel": levels["minimal" if cap is not None and cap < _SMALL_CAP else effort]}
    else:
        budget = _BUDGET[effort]
        name = upstream_model.lower()
        if cap is not None:
            budget = min(budget, cap // 2)
            if budget < _MIN_USEFUL_BUDGET and not is_pro:
                budget = 0  # too little room to think usefully: the cap goes to the answer
        budget = min(max(budget, 128), 32768) if is_pro else min(budget, 24576)
        if budget and "lite" in name:
            # Flash-Lite takes 0 or 512..24576: under a cap too small for 512, it does not think.
            budget = 0 if cap is not None and cap // 2 < 512 else max(budget, 512)
        config = {"thinkingBudget": budget}
        include = include and budget > 0
    if include:
        config["includeThoughts"] = True
    return config


def _tool_config(choice: Any, tools: ToolNameMap, declared: set[str]) -> dict[str, Any] | None:
    mode: str | None = None
    allowed: list[str] = []
    if choice == "none":
        mode = "NONE"
    elif choice == "required":
        mode = "ANY"
    elif isinstance(choice, dict):
        kind = choice.get("type")
        if kind in ("function", "custom") and isinstance(choice.get("name"), str):
            mode = "ANY"
            namespace = choice.get("namespace") if isinstance(choice.get("namespace"), str) else None
            allowed = [tools.wire_name(choice["name"], namespace)]
        elif kind == "allowed_tools" and choice.get("mode") == "required":
            # Gemini restricts names only in mode ANY; with "auto" the restriction is lost.
            mode = "ANY"
            allowed = [
                tools.wire_name(t["name"], t.get("namespace") if isinstance(t.get("namespace"), str) else None)
                for t in choice.get("tools") or []
                if isinstance(t, dict) and isinstance(t.get("name"), str)
            ]
    if mode is None:
        return None  # AUTO is Gemini's default
    config: dict[str, Any] = {"mode": mode}
    allowed = [name for name in dict.fromkeys(allowed) if name in declared]
    if mode == "ANY" and allowed:
        config["allowedFunctionNames"] = allowed
    return {"functionCallingConfig": config}


def build_request(body: dict[str, Any], upstream_model: str, options: TranslateOptions) -> dict[str, Any]:
    """A Responses API request (as Codex sends it) → a generateContent request body."""
    return build(body, upstream_model, options)[0]


def build(body: dict[str, Any], upstream_model: str, options: TranslateOptions) -> tuple[dict[str, Any], ToolNameMap]:
    """The generateContent request body, and the tool names its answer is read with."""
    tools, declarations, dropped = collect_tools(body)
    options.dropped_tools.extend(dropped)

    history = History(tools, options.provider_name, upstream_model)
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        history.system.append(body["instructions"])
    history.build(_input_items(body))
    history.contents = repair_turns(history.contents)
    family, _ = _model_family(upstream_model)
    if not re.match(r"(?:.*/)?gemini-[12]\.", upstream_model.lower()):
        # Gemini 3 and names we cannot date (aliases) may insist; 1.x/2.x never do, so they
        # never see a stand-in signature.
        ensure_current_turn_signatures(history.contents)

    request: dict[str, Any] = {"contents": history.contents}
    if history.system:
        request["systemInstruction"] = {"parts": [{"text": text} for text in history.system]}
    if declarations:
        request["tools"] = [{"functionDeclarations": declarations}]
        tool_config = _tool_config(body.get("tool_choice"), tools, {d["name"] for d in declarations})
        if tool_config is not None:
            request["toolConfig"] = tool_config

    generation: dict[str, Any] = {}
    if isinstance(body.get("max_output_tokens"), int):
        generation["maxOutputTokens"] = body["max_output_tokens"]
    for source, target in (("temperature", "temperature"), ("top_p", "topP")):
        if isinstance(body.get(source), int | float) and not isinstance(body.get(source), bool):
            generation[target] = body[source]
    thinking = _thinking_config(body, upstream_model)
    if thinking is not None:
        generation["thinkingConfig"] = thinking
    # Chat clients' sampling parameters; Gemini's penalties are refused by several models, so
    # they are reported as dropped rather than sent.
    sampling = sampling_params(body, options, ("stop", "seed"))
    if stop_sequences(sampling.get("stop")):
        generation["stopSequences"] = stop_sequences(sampling["stop"])
    if isinstance(sampling.get("seed"), int) and not isinstance(sampling.get("seed"), bool):
        generation["seed"] = sampling["seed"]
    text_format = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(text_format, dict) and text_format.get("type") in ("json_schema", "json_object"):
        if declarations and family != "level":
            # Gemini before 3 refuses JSON mode together with function calling; tools win.
            log.info("gemini: structured output dropped for %s because tools are present", upstream_model)
        else:
            generation["responseMimeType"] = "application/json"
            if text_format.get("type") == "json_schema" and isinstance(text_format.get("schema"), dict):
                generation["responseSchema"] = gemini_schema(text_format["schema"])
    if generation:
        request["generationConfig"] = generation
    return request, tools


def request_target(base_url: str, upstream_model: str, stream: bool) -> tuple[str, dict[str, str]]:
    """The URL to POST to (streaming: SSE via `alt=sse`) and the fixed headers."""
    root = base_url.rstrip("/")
    if not re.search(r"/v1(?:beta\d*|alpha\d*)?$", root):
        root += f"/{API_VERSION}"
    # A tuned model is addressed by its own resource name, a base model under models/.
    resource = upstream_model if upstream_model.startswith(("models/", "tunedModels/")) else f"models/{upstream_model}"
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"{root}/{resource}:{method}", {"content-type": "application/json"}


def auth_headers(secret: str) -> dict[str, str]:
    return {"x-goog-api-key": secret}
