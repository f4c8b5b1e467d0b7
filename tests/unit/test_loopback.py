"""The relays' token table: a token is taken once, expires unused (calling back), and is unguessable."""

from __future__ import annotations

import asyncio

from codexgate.loopback import TokenTable


def test_token_is_taken_once_and_expires_unused() -> None:
    async def main() -> tuple[list[str], list[str | None], int]:
        expired: list[str] = []
        table: TokenTable[str] = TokenTable(on_expired=expired.append)
        used = table.register("plan-used", ttl=5)
        unused = table.register("plan-unused", ttl=0.01)
        taken = [table.take(used), table.take(used)]
        await asyncio.sleep(0.05)
        left = len(table)
        taken.append(table.take(unused))
        return expired, taken, left

    expired, taken, left = asyncio.run(main())
    assert taken == ["plan-used", None, None]
    assert expired == ["plan-unused"] and left == 0


def test_clear_ends_what_is_left_and_discard_does_not_call_back() -> None:
    async def main() -> tuple[list[str], str | None, int]:
        expired: list[str] = []
        table: TokenTable[str] = TokenTable(on_expired=expired.append)
        first = table.register("a", ttl=5)
        table.register("b", ttl=5)
        discarded = table.discard(first)
        table.clear()
        return expired, discarded, len(table)

    expired, discarded, left = asyncio.run(main())
    assert (expired, discarded, left) == (["b"], "a", 0)


def test_tokens_are_distinct_and_long() -> None:
    async def main() -> set[str]:
        table: TokenTable[int] = TokenTable()
        return {table.register(n, ttl=5) for n in range(200)}

    tokens = asyncio.run(main())
    assert len(tokens) == 200 and min(len(token) for token in tokens) >= 32
