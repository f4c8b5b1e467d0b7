"""Moved to `codexgate.providers.responses.jsonstring`; this name stays until every family imports
from there."""

from codexgate.providers.responses.jsonstring import (
    InputStringStream,
    custom_input,
    decode_input,
    without_lone_surrogates,
)

__all__ = ["InputStringStream", "custom_input", "decode_input", "without_lone_surrogates"]
