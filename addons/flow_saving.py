"""Saved flows (`--set save_stream_file=…`, mitmweb's dump) carry the request's final record.

mitmproxy's `Save` addon writes a flow in its own `response`/`error` hook. As one of mitmproxy's
default addons it runs before a script's addons, that is before `Charge`, `Accounting` and
`SecretMask` have settled, recorded and masked the flow. This moves it behind the chain once
mitmproxy is running (not while mitmproxy walks its addon list), so a saved flow holds the cost,
the decision and the flow comment, and no credential. What it saves of codexgate's state is
`GatewayRequest.as_record()` (see `codexgate.flowstate`), and the client's credentials that
`SecretMask` kept aside are saved masked (`addons/web_view.py`).
"""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import ctx

logger = logging.getLogger(__name__)


class SaveAfterChain:
    def running(self) -> None:
        master = ctx.master
        asyncio.get_running_loop().call_soon(self._move_save_last, master)

    @staticmethod
    def _move_save_last(master: object) -> None:
        addons = getattr(master, "addons", None)
        save = addons.get("save") if addons is not None else None
        if save is None or save not in addons.chain:  # type: ignore[union-attr]
            return
        addons.chain.remove(save)  # type: ignore[union-attr]
        addons.chain.append(save)  # type: ignore[union-attr]
        logger.debug("mitmproxy's save addon now runs after the codexgate chain")
