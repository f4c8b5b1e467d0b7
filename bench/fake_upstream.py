"""A fake OpenAI upstream for benchmarks: `POST /v1/responses` answers a small, valid,
non-streamed Responses API object (with `usage`) at once; with `"stream": true`, a Responses
event stream of `--sse-events` events (default 50: created, text deltas, completed with the
usage), each event written on its own, as a provider sends them while it generates. `POST
/v1/messages` does the same in Anthropic's shape (the upstream of a translated request), with
the key in `x-api-key`.

Only `Authorization: Bearer $BENCH_UPSTREAM_KEY` is accepted (401 otherwise), so a benchmark
notices when a gateway forwards the client's virtual key instead of the provider key.

    python bench/fake_upstream.py --port 18000
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

from aiohttp import web

_ids = itertools.count(1)


def response_body(model: str, number: int) -> bytes:
    """A minimal but complete Responses API `response` object."""
    return json.dumps(
        {
            "id": f"resp_bench{number:012d}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "max_output_tokens": None,
            "model": model,
            "output": [
                {
                    "type": "message",
                    "id": f"msg_bench{number:012d}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hello from the bench upstream.", "annotations": []}],
                }
            ],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "store": False,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": {
                "input_tokens": 12,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": 7,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 19,
            },
            "user": None,
            "metadata": {},
        },
        separators=(",", ":"),
    ).encode()


def sse_events(model: str, number: int, count: int) -> list[bytes]:
    """`count` (>= 2) Responses stream events: response.created, text deltas, response.completed."""
    body = json.loads(response_body(model, number))
    created = dict(body, status="in_progress", output=[], usage=None)
    item_id = f"msg_bench{number:012d}"

    def event(kind: str, payload: dict[str, object], sequence: int) -> bytes:
        data = json.dumps({"type": kind, "sequence_number": sequence, **payload}, separators=(",", ":"))
        return f"event: {kind}\ndata: {data}\n\n".encode()

    events = [event("response.created", {"response": created}, 0)]
    for i in range(1, count - 1):
        delta = {"item_id": item_id, "output_index": 0, "content_index": 0, "delta": " token", "logprobs": []}
        events.append(event("response.output_text.delta", delta, i))
    events.append(event("response.completed", {"response": body}, count - 1))
    return events


def anthropic_message(model: str, number: int) -> dict[str, object]:
    """A minimal complete Anthropic Messages API `message` (what a translated request is answered)."""
    return {
        "id": f"msg_bench{number:012d}", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "Hello from the bench upstream."}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 7, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0},
    }  # fmt: skip


def anthropic_events(model: str, number: int, count: int) -> list[bytes]:
    """`count` (>= 6) Anthropic stream events: message_start, a text block of count - 5 deltas,
    message_delta with the usage, message_stop — each written on its own, as Anthropic sends them."""
    message = anthropic_message(model, number)
    start = dict(message, content=[], stop_reason=None, usage={"input_tokens": 12, "output_tokens": 1})
    events: list[dict[str, object]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    events += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " token"}}] * (
        count - 5
    )
    events += [
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": 7}},
        {"type": "message_stop"},
    ]  # fmt: skip
    return [
        f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode() for event in events
    ]


def make_app(api_key: str, sse_count: int = 50) -> web.Application:
    expected = f"Bearer {api_key}"
    unauthorized = json.dumps(
        {"error": {"message": "bench upstream: wrong API key", "type": "invalid_request_error", "code": "bad_key"}}
    ).encode()

    async def responses(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401, body=unauthorized, content_type="application/json")
        try:
            parsed = json.loads(raw)
            model, stream = parsed.get("model") or "unknown", parsed.get("stream") is True
        except (ValueError, AttributeError):
            model, stream = "unknown", False
        if not stream:
            return web.Response(body=response_body(str(model), next(_ids)), content_type="application/json")
        answer = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await answer.prepare(request)
        for chunk in sse_events(str(model), next(_ids), sse_count):
            await answer.write(chunk)  # one write (and, unless the socket is full, one segment) per event
        await answer.write_eof()
        return answer

    async def messages(request: web.Request) -> web.StreamResponse:
        """Anthropic's `POST /v1/messages` (key in `x-api-key`): the upstream of a translated request."""
        raw = await request.read()
        if request.headers.get("x-api-key") != api_key:
            return web.Response(status=401, body=unauthorized, content_type="application/json")
        try:
            parsed = json.loads(raw)
            model, stream = parsed.get("model") or "unknown", parsed.get("stream") is True
        except (ValueError, AttributeError):
            model, stream = "unknown", False
        if not stream:
            return web.json_response(anthropic_message(str(model), next(_ids)))
        answer = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await answer.prepare(request)
        for chunk in anthropic_events(str(model), next(_ids), max(6, sse_count)):
            await answer.write(chunk)
        await answer.write_eof()
        return answer

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/v1/messages", messages)
    app.router.add_get("/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sse-events", type=int, default=50, help="events per streamed answer (>= 2)")
    args = parser.parse_args()
    api_key = os.environ.get("BENCH_UPSTREAM_KEY", "")
    if not api_key:
        raise SystemExit("fake_upstream: set BENCH_UPSTREAM_KEY")
    web.run_app(make_app(api_key, max(2, args.sse_events)), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
