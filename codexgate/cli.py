"""The `codexgate` command: up, check, keys create, ca, codex."""

from __future__ import annotations

import argparse
import os
import sys
import urllib.parse
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from codexgate.datadir import default_data_dir, ensure_data_dir
from codexgate.policies.keys import add_key
from codexgate.policies.loader import PolicyError, load_policy, unreachable_key_problems
from codexgate.stores.factory import check_store_spec

DEMO_KEY_FILE = "demo-key"


def ca_cert_path(data_dir: Path) -> Path:
    """The gateway CA certificate, created (owner-only key) on first use."""
    from mitmproxy.certs import CertStore

    confdir = ensure_data_dir(data_dir / "mitmproxy")
    cert = confdir / "mitmproxy-ca-cert.pem"
    if not cert.exists():
        CertStore.from_store(str(confdir), "mitmproxy", 2048)
    for private in confdir.glob("mitmproxy-ca*.p12"):
        os.chmod(private, 0o600)
    for private in (confdir / "mitmproxy-ca.pem",):
        if private.exists():
            os.chmod(private, 0o600)
    return cert


def mitm_config() -> dict[str, Any]:
    text = resources.files("codexgate").joinpath("mitm_config.yaml").read_text(encoding="utf-8")
    config = yaml.safe_load(text)
    if not isinstance(config, dict):
        raise SystemExit("mitm_config.yaml must be a mapping")
    return config


def _embedded_policy(data_dir: Path) -> tuple[Path, str | None]:
    """The default policy in the data dir: the example policy plus a demo key, made once."""
    policy = data_dir / "policy.yaml"
    key_file = data_dir / DEMO_KEY_FILE
    if policy.exists():
        return policy, key_file.read_text().strip() if key_file.exists() else None
    example = resources.files("codexgate.policies").joinpath("example.yaml").read_text(encoding="utf-8")
    policy.write_text(example, encoding="utf-8")
    key = add_key(policy, "demo", "platform", ["mock-*", "gpt-5*"])
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return policy, key


def _write_private(path: Path, text: str) -> None:
    """Write an owner-only file (atomically: no moment where it is readable or half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def store_option(store: str, data_dir: Path) -> str:
    """The `codexgate_store` value for the command line: a store URL that carries credentials goes
    into an owner-only file, and the option names the file (`ps` and mitmweb show only the path)."""
    parsed = urllib.parse.urlsplit(store)
    query = urllib.parse.parse_qs(parsed.query)
    if parsed.password is None and parsed.username is None and "password" not in query:
        return store
    path = data_dir / "store.url"
    _write_private(path, store + "\n")
    return f"file:{path}"


def write_mitmproxy_secrets(confdir: Path, web_password: str) -> None:
    """mitmproxy reads `confdir/config.yaml` at start: the console password goes there as an
    argon2 hash (mitmweb verifies tokens against it), never as an argument. Other settings in the
    file are kept."""
    path = confdir / "config.yaml"
    try:
        current = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, yaml.YAMLError):
        current = {}
    settings = current if isinstance(current, dict) else {}
    if web_password:
        import argon2

        # OWASP's smallest argon2id setting: mitmweb verifies the token on each API call.
        hasher = argon2.PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
        settings["web_password"] = hasher.hash(web_password)
    else:
        settings.pop("web_password", None)
    if settings or path.exists():
        _write_private(path, yaml.safe_dump(settings, default_flow_style=False))


def mitm_arguments(
    config: dict[str, Any],
    *,
    policy: Path,
    data_dir: Path,
    listen_host: str,
    proxy_port: int,
    gateway_port: int,
    store: str = "embedded",
    metrics_port: int = 0,
    with_script: bool = False,
) -> list[str]:
    """mitmproxy arguments for the two listeners and the chain's options. `with_script` loads the
    chain as a mitmproxy script, for mitmweb and stock mitmdump; the gateway master
    (`codexgate.master`) has it built in."""
    args = [
        "--mode",
        f"regular@{listen_host}:{proxy_port}",
        "--mode",
        f"reverse:{config.get('gateway_upstream', 'https://api.openai.com')}@{listen_host}:{gateway_port}",
        "--set",
        f"confdir={data_dir / 'mitmproxy'}",
        "--set",
        f"codexgate_policy={policy}",
        "--set",
        f"codexgate_data_dir={data_dir}",
        "--set",
        f"codexgate_store={store}",
        "--set",
        f"codexgate_metrics_port={metrics_port}",
    ]
    if with_script:
        args += ["-s", str(resources.files("codexgate.scripts").joinpath("codexgate_chain.py"))]
    for name, value in (config.get("options") or {}).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        args += ["--set", f"{name}={value}"]
    return args


def cmd_up(args: argparse.Namespace) -> int:
    from codexgate import datadir

    config = mitm_config()
    data_dir = ensure_data_dir(Path(args.data_dir).expanduser() if args.data_dir else default_data_dir())
    try:
        # Before anything in the data dir is touched; kept across the exec below (codexgate/datadir.py).
        lock_fd = datadir.acquire(data_dir)
    except datadir.DataDirBusy as exc:
        print(f"codexgate up: {exc}", file=sys.stderr)
        return 1
    try:
        return _up_locked(args, config, data_dir, lock_fd)
    finally:
        # Reached only when `up` stops before the exec into mitmproxy (a bad option, a broken
        # policy): the next `up` in this process, or any other, must find the data dir free.
        os.environ.pop(datadir.LOCK_FD_ENV, None)
        datadir.release(lock_fd)


def _up_locked(args: argparse.Namespace, config: dict[str, Any], data_dir: Path, lock_fd: int) -> int:
    from codexgate import datadir

    os.set_inheritable(lock_fd, True)
    os.environ[datadir.LOCK_FD_ENV] = str(lock_fd)
    demo_key = None
    if args.policy:
        # Absolute, not resolved: a ConfigMap mount swaps the symlinks under the path on each update
        # and deletes the directory it resolved to before.
        policy = Path(args.policy).absolute()
    else:
        policy, demo_key = _embedded_policy(data_dir)
    try:
        compiled = load_policy(policy)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    store = args.store or str(config.get("store", "embedded"))
    try:
        # Checked here, not only by the addon: mitmproxy rolls options back after an OptionsError
        # at start, and the rollback's own complaint (no policy) would be printed instead.
        check_store_spec(store)
    except ValueError as exc:
        print(f"codexgate up: --store: {exc}", file=sys.stderr)
        return 2
    ca_file = args.ca_file or os.environ.get("CODEXGATE_CA_FILE")
    if ca_file and not _install_ca_file(Path(ca_file).expanduser(), data_dir):
        return 1
    cert = ca_cert_path(data_dir)
    host = args.listen_host or config.get("listen_host", "127.0.0.1")
    proxy_port = args.proxy_port or int(config.get("proxy_port", 8080))
    gateway_port = args.gateway_port or int(config.get("gateway_port", 4000))
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    print(f"codexgate: policy {policy} ({len(compiled.policy.keys)} keys, {len(compiled.policy.models)} models)")
    print(f"codexgate: data dir {data_dir}; CA certificate {cert}")
    if demo_key:
        print(f"codexgate: demo virtual key (team platform, models mock-*/gpt-5*): {demo_key}")
    from codexgate.launcher import banner_commands

    for line in banner_commands(shown, proxy_port, gateway_port, cert, data_dir, demo_key, "mock-model"):
        print(line)
    sys.stdout.flush()
    metrics_port = args.metrics_port if args.metrics_port is not None else int(config.get("metrics_port", 0))
    if metrics_port:
        print(f"codexgate: Prometheus metrics at http://{shown}:{metrics_port}/metrics")
    argv = mitm_arguments(
        config,
        policy=policy,
        data_dir=data_dir,
        listen_host=host,
        proxy_port=proxy_port,
        gateway_port=gateway_port,
        store=store_option(store, data_dir),
        metrics_port=metrics_port,
        with_script=args.web or args.mitmdump,
    )
    if args.web:
        argv += ["--set", "web_open_browser=false", "--set", f"web_host={host}", "--set", f"web_port={args.web_port}"]
        write_mitmproxy_secrets(data_dir / "mitmproxy", os.environ.get("CODEXGATE_WEB_PASSWORD", ""))
        print(f"codexgate: mitmweb at http://{shown}:{args.web_port}/ (provider and virtual keys are masked)")
    else:
        write_mitmproxy_secrets(data_dir / "mitmproxy", "")  # no stale console password from a --web run
    if args.web or args.mitmdump:
        # Their flow log would repeat the accounting line codexgate writes per request (--set
        # flow_detail=1.. brings it back). The gateway master has no flow log at all.
        argv += ["--set", "flow_detail=0"]
    for setting in args.set or []:
        argv += ["--set", setting]
    # mitmweb for inspection, or stock mitmdump (all of mitmproxy's addons: -w flow files, map
    # remote, ...); otherwise the lean gateway master (codexgate/master.py, docs/benchmarks.md).
    if args.web:
        entry = "from mitmproxy.tools.main import mitmweb; mitmweb()"
    elif args.mitmdump:
        entry = "from mitmproxy.tools.main import mitmdump; mitmdump()"
    else:
        entry = "from codexgate.master import main; main()"
    # -P: `-c` would put the current directory first on the import path, and a folder named
    # codexgate there (the parent of a clone, say) would shadow the installed package.
    flags = ["-P"]
    if not (args.web or args.mitmdump or args.python_checks):
        # -O drops mitmproxy's `if __debug__` type checks of every Request, Response and layer event,
        # which it is written to run without (mitmproxy/proxy/utils.py, `expect`), and the asserts that
        # narrow types: a request cannot reach either, only an addon bug can. mitmweb and stock
        # mitmdump, the inspection modes, keep them.
        flags.append("-O")
    workers = args.workers if args.workers is not None else 1 if args.web or args.mitmdump else None
    if workers is None:
        from codexgate.workers import default_workers

        workers = default_workers()
    if workers < 1:
        print(f"codexgate up: --workers {workers}: at least 1", file=sys.stderr)
        return 2
    if workers > 1:
        if args.web or args.mitmdump:
            print("codexgate up: --workers: --web and --mitmdump run one process", file=sys.stderr)
            return 2
        from codexgate.workers import supervise  # N gateway processes on the same ports (codexgate/workers.py)

        return supervise(workers, argv, data_dir, lock_fd, host, [proxy_port, gateway_port], flags)
    os.execv(sys.executable, [sys.executable, *flags, "-c", entry, *argv])
    return 0  # not reached


def cmd_check(args: argparse.Namespace) -> int:
    try:
        compiled = load_policy(args.file)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    unreachable = unreachable_key_problems(compiled)
    for problem in unreachable:
        print(problem, file=sys.stderr)
    if unreachable:
        return 1
    policy = compiled.policy
    print(
        f"{args.file}: OK — {len(policy.providers)} providers, {len(policy.models)} models, "
        f"{len(policy.teams)} teams, {len(policy.keys)} keys"
    )
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    try:
        secret = add_key(args.policy, args.name, args.team, args.models)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    print(secret)
    print(
        f"# key {args.name} (team {args.team}) added to {args.policy}; only its hash is stored, "
        "so this is the one time it is shown",
        file=sys.stderr,
    )
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    from codexgate.usage_report import report

    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    try:
        print(report(data_dir, args.by, args.since, "json" if args.json else "csv" if args.csv else "table"))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from codexgate.audit import verify_command

    return verify_command(args.paths, args.data_dir, args.hmac_key, args.public_key)


def cmd_audit_keygen(args: argparse.Namespace) -> int:
    from codexgate.audit_signing import write_key_pair

    private, public = Path(args.private).expanduser(), Path(args.public).expanduser()
    try:
        key_id = write_key_pair(private, public)
    except FileExistsError:
        print(f"codexgate audit keygen: {private} exists; not overwriting a signing key", file=sys.stderr)
        return 1
    print(f"key {key_id}: private {private} (0600: keep it with the gateway or in a secret store), public {public}")
    print(f"  gateway:  codexgate up --set codexgate_audit_signing_key=file:{private}")
    print(f"  auditor:  codexgate audit verify --public-key {public} [--data-dir DIR]")
    return 0


def _install_ca_file(path: Path, data_dir: Path) -> bool:
    """`up --ca-file`: the fleet's CA (a file or a mounted secret) is the one this instance uses."""
    from codexgate.ca_bundle import BundleError, import_bundle

    try:
        if import_bundle(path.read_bytes(), data_dir, str(path), replace=True):
            print(f"codexgate: CA installed from {path}")
    except (OSError, BundleError) as exc:
        print(f"codexgate up: --ca-file: {exc}", file=sys.stderr)
        return False
    return True


def cmd_ca(args: argparse.Namespace) -> int:
    from codexgate.ca_bundle import BundleError, export_bundle, import_bundle

    data_dir = ensure_data_dir(Path(args.data_dir).expanduser() if args.data_dir else default_data_dir())
    try:
        if getattr(args, "ca_command", None) == "export":
            bundle = export_bundle(data_dir)
            if args.out in (None, "-"):
                sys.stdout.buffer.write(bundle)
            else:
                fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the private key
                with os.fdopen(fd, "wb") as handle:
                    handle.write(bundle)
                print(f"codexgate: CA key and certificate written to {args.out} (keep it secret)", file=sys.stderr)
            return 0
        if getattr(args, "ca_command", None) == "import":
            raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
            changed = import_bundle(raw, data_dir, args.file, replace=args.replace)
            print(
                f"codexgate: CA {'imported into' if changed else 'already in'} {data_dir / 'mitmproxy'}",
                file=sys.stderr,
            )
    except (OSError, BundleError) as exc:
        print(f"codexgate ca: {exc}", file=sys.stderr)
        return 1
    print(ca_cert_path(data_dir))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codexgate", description="Governance gateway for the OpenAI Codex CLI")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the gateway (proxy and base-URL listeners)")
    up.add_argument("--policy", help="policy YAML (default: DATA_DIR/policy.yaml, made from the example)")
    up.add_argument("--data-dir", help="state directory (default: $CODEXGATE_HOME or ~/.codexgate)")
    up.add_argument("--listen-host", help="address to listen on (default from mitm_config.yaml: 127.0.0.1)")
    up.add_argument("--proxy-port", type=int, help="HTTPS_PROXY listener port (default 8080)")
    up.add_argument("--gateway-port", type=int, help="base-URL listener port (default 4000)")
    up.add_argument(
        "--ca-file", help="CA bundle (PEM key and certificate, `codexgate ca export`) shared by a fleet; "
        "installed into the data dir at start (default: $CODEXGATE_CA_FILE)",
    )  # fmt: skip
    up.add_argument(
        "--store",
        help="counter store: embedded (default), or for several instances redis://HOST:PORT/DB, "
        "redis+sentinel://HOST:PORT[,...]/SERVICE/DB or redis+cluster://HOST:PORT[,...]",
    )
    up.add_argument(
        "--metrics-port", type=int, help="Prometheus /metrics port (default from mitm_config.yaml; 0 = off)"
    )
    modes = up.add_mutually_exclusive_group()
    modes.add_argument("--web", action="store_true", help="run under mitmweb to inspect live traffic")
    modes.add_argument(
        "--mitmdump",
        action="store_true",
        help="run under stock mitmdump with all of mitmproxy's addons (~0.7 ms slower a request)",
    )
    up.add_argument(
        "--workers", type=int, metavar="N",
        help="gateway processes sharing the listeners, the data dir and the store (default: $CODEXGATE_WORKERS, "
        "else the cores available; 1 = one process, as with --web and --mitmdump)",
    )  # fmt: skip
    up.add_argument(
        "--python-checks", action="store_true",
        help="run the gateway master with Python's assertions and mitmproxy's per-object type checks, which "
        "catch a bug in an addon, not a bad request (off by default: ~15%% of a non-streamed request's CPU; "
        "docs/benchmarks.md)",
    )  # fmt: skip
    up.add_argument("--web-port", type=int, default=8081, help="mitmweb port (password: $CODEXGATE_WEB_PASSWORD)")
    up.add_argument(
        "--set",
        action="append",
        metavar="OPTION=VALUE",
        help="any mitmproxy or codexgate option, e.g. codexgate_web_max_flows=500",
    )
    up.set_defaults(func=cmd_up)

    check = sub.add_parser("check", help="validate a policy file (exit 1 on error)")
    check.add_argument("file")
    check.set_defaults(func=cmd_check)

    keys = sub.add_parser("keys", help="manage virtual keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a virtual key; prints it once, stores its hash")
    create.add_argument("--policy", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--team", required=True)
    create.add_argument("--models", nargs="+", help="model patterns the key may use (default: all)")
    create.set_defaults(func=cmd_keys_create)

    usage = sub.add_parser("usage", help="spend, requests and tokens from the accounting log")
    usage.add_argument("--data-dir")
    usage.add_argument("--by", choices=["key", "team", "org", "model", "provider", "session"], default="key")
    usage.add_argument("--since", default="30d", help="how far back: 30m, 12h, 7d, 4w (default 30d)")
    output = usage.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true")
    output.add_argument("--csv", action="store_true")
    usage.set_defaults(func=cmd_usage)

    audit = sub.add_parser("audit", help="the tamper-evident audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the hash chain; exit 1 at the first tampered record")
    verify.add_argument("--data-dir", help="verify DATA_DIR/audit (default: $CODEXGATE_HOME or ~/.codexgate)")
    verify.add_argument("--hmac-key", help="env:NAME or file:PATH of the HMAC key, if the log is keyed")
    verify.add_argument(
        "--public-key", help="PEM public key of the signed checkpoints: proves the log without any secret"
    )
    verify.add_argument("paths", nargs="*", help="audit files or directories, in order")
    verify.set_defaults(func=cmd_audit_verify)
    keygen = audit_sub.add_parser("keygen", help="make the Ed25519 key pair that signs audit checkpoints")
    keygen.add_argument("--private", default="audit-signing.key", help="private key file to create (0600)")
    keygen.add_argument("--public", default="audit-signing.pub", help="public key file for auditors")
    keygen.set_defaults(func=cmd_audit_keygen)

    ca = sub.add_parser("ca", help="print the gateway CA certificate path (CODEX_CA_CERTIFICATE); export/import")
    ca.add_argument("--data-dir")
    ca.set_defaults(func=cmd_ca)
    ca_sub = ca.add_subparsers(dest="ca_command")
    ca_export = ca_sub.add_parser("export", help="write the CA's key and certificate (PEM) for other instances")
    ca_export.add_argument("--out", help="file to write, owner-only (default: standard output)")
    ca_export.add_argument("--data-dir", default=argparse.SUPPRESS)
    ca_import = ca_sub.add_parser("import", help="use a CA bundle (PEM key and certificate) from another instance")
    ca_import.add_argument("file", help="the bundle `codexgate ca export` wrote, or - for standard input")
    ca_import.add_argument("--replace", action="store_true", help="replace a different CA already in the data dir")
    ca_import.add_argument("--data-dir", default=argparse.SUPPRESS)

    from codexgate.launcher import add_codex_command  # `codexgate codex` lives in codexgate/launcher.py

    add_codex_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
