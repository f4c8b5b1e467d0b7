"""codexgate: a governance gateway for the OpenAI Codex CLI, built as mitmproxy addons."""

__version__ = "0.1.0"
