"""Where a lower layer keeps its own copy of something a higher layer also knows (policies cannot
import providers: .importlinter), the two copies agree."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from codexgate.policies.schema import CHAT_PRESET_URLS, ChatProvider

# The chat family's presets (moving to codexgate.providers.chat with the chat package).
from codexgate.providers.chat_compat import PRESETS


def test_chat_preset_names_and_addresses_agree_with_the_chat_family() -> None:
    assert sorted(CHAT_PRESET_URLS) == sorted(PRESETS)
    assert {name: preset.base_url for name, preset in PRESETS.items()} == CHAT_PRESET_URLS


def test_chat_provider_presets_from_the_policy_layer() -> None:
    assert ChatProvider(kind="chat", preset="groq").url == "https://api.groq.com/openai/v1"
    assert ChatProvider(kind="chat", preset="generic", base_url="http://host:1/v1/").url == "http://host:1/v1"
    with pytest.raises(ValidationError, match="unknown preset 'nope'; presets: azure, cerebras"):
        ChatProvider(kind="chat", preset="nope")
    with pytest.raises(ValidationError, match="the generic preset needs a base_url"):
        ChatProvider(kind="chat")
