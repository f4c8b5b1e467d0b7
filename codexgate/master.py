"""The process `codexgate up` runs: mitmproxy's proxy core, the few mitmproxy addons a gateway
uses, and the codexgate chain.

mitmdump loads ~35 addons (replay, export, cut, map-local, sticky cookies, the flow dumper, ...)
and dispatches every event of every request to each of them, whether it implements the hook or
not. Measured here, that dispatch is about a third of bare mitmdump's CPU per request
(docs/benchmarks.md). A gateway needs none of those tools on its request path, so this master
keeps only what the proxy core and a safe deployment need. `codexgate up --web` still runs
mitmweb, and `codexgate up --mitmdump` stock mitmdump, with all of mitmproxy's addons.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from mitmproxy import master, options
from mitmproxy.addons import block, core, disable_h2c, errorcheck, next_layer, proxyserver, termlog, tlsconfig
from mitmproxy.tools import cmdline
from mitmproxy.tools.main import run

from codexgate.hook_dispatch import HookDispatch


def proxy_core_addons() -> list[Any]:
    """mitmproxy's addons the gateway keeps, and why each."""
    return [
        core.Core(),  # core options and commands (`set`, `flow.resume`, ...)
        block.Block(),  # refuses clients from public addresses unless asked (`block_global`): no open proxy
        disable_h2c.DisableH2C(),  # plain-http h2c upgrades, which mitmproxy cannot proxy, are stripped
        proxyserver.Proxyserver(),  # the listeners and connection handling
        next_layer.NextLayer(),  # which protocol layer a connection gets (and ignore_hosts tunnelling)
        tlsconfig.TlsConfig(),  # the CA and certificates for intercepted provider hosts
        errorcheck.ErrorCheck(),  # an error while starting up stops the process instead of serving half-configured
    ]


class GatewayMaster(master.Master):
    def __init__(self, opts: options.Options, with_chain: bool = True) -> None:
        super().__init__(opts)
        # Events straight to the functions that take them (`HookDispatch`), in place of the manager
        # `Master` made, which is still empty: the terminal log is added to the new one, as
        # `with_termlog=True` would have added it to the old.
        opts.changed.disconnect(self.addons._configure_all)
        self.addons = HookDispatch(self)
        self._termlog_addon = termlog.TermLog()
        self.addons.add(self._termlog_addon)
        # mitmproxy rolls options back after an OptionsError and reports what the rollback raised,
        # at start often an unrelated complaint (no policy file): the first error is the cause.
        opts.errored.connect(_report_option_error)
        self.addons.add(*proxy_core_addons())
        if with_chain:
            from codexgate.addons import chain

            self.addons.add(*chain(shown=False))  # no View here: see SecretMask


def _report_option_error(exc: Exception) -> None:
    print(f"codexgate: {exc}", file=sys.stderr, flush=True)


class ProxyCoreMaster(GatewayMaster):
    """The same master without the codexgate chain: the benchmark's reference for what the
    chain itself costs (bench/bench_overhead.py, path `mitmproxy-core`)."""

    def __init__(self, opts: options.Options) -> None:
        super().__init__(opts, with_chain=False)


def main(argv: Sequence[str] | None = None, with_chain: bool = True) -> None:
    """mitmdump's command line (`--mode`, `--set`, ...) on the gateway master."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    run(GatewayMaster if with_chain else ProxyCoreMaster, cmdline.mitmdump, arguments)


if __name__ == "__main__":
    main()
