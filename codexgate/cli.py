"""The `codexgate` command: up, check, keys create, ca, codex."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from codexgate.policies.keys import add_key
from codexgate.policies.loader import PolicyError, load_policy
from codexgate.stores.factory import check_store_spec

CODEX_NPM_PACKAGE = "@openai/codex@0.169.0"
DEMO_KEY_FILE = "demo-key"


def default_data_dir() -> Path:
    return Path(os.environ.get("CODEXGATE_HOME") or Path.home() / ".codexgate")


def ensure_data_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


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
    os.set_inheritable(lock_fd, True)
    os.environ[datadir.LOCK_FD_ENV] = str(lock_fd)
    demo_key = None
    if args.policy:
        policy = Path(args.policy).resolve()
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
    cert = ca_cert_path(data_dir)
    host = args.listen_host or config.get("listen_host", "127.0.0.1")
    proxy_port = args.proxy_port or int(config.get("proxy_port", 8080))
    gateway_port = args.gateway_port or int(config.get("gateway_port", 4000))
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    print(f"codexgate: policy {policy} ({len(compiled.policy.keys)} keys, {len(compiled.policy.models)} models)")
    print(f"codexgate: data dir {data_dir}; CA certificate {cert}")
    if demo_key:
        print(f"codexgate: demo virtual key (team platform, models mock-*/gpt-5*): {demo_key}")
    print("Point Codex at it, either way:")
    print(
        f"  base URL: CODEX_API_KEY=<key> codex -c openai_base_url='\"http://{shown}:{gateway_port}/v1\"' -m mock-model"
    )
    print(
        f"  proxy:    HTTPS_PROXY=http://{shown}:{proxy_port} CODEX_CA_CERTIFICATE={cert}"
        " CODEX_API_KEY=<key> codex -m mock-model"
    )
    print("  or simply: codexgate codex -- -m mock-model")
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
        store=store,
        metrics_port=metrics_port,
        with_script=args.web or args.mitmdump,
    )
    if args.web:
        argv += ["--set", "web_open_browser=false", "--set", f"web_host={host}", "--set", f"web_port={args.web_port}"]
        if os.environ.get("CODEXGATE_WEB_PASSWORD"):
            argv += ["--set", f"web_password={os.environ['CODEXGATE_WEB_PASSWORD']}"]
        print(f"codexgate: mitmweb at http://{shown}:{args.web_port}/ (provider and virtual keys are masked)")
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
    os.execv(sys.executable, [sys.executable, "-c", entry, *argv])
    return 0  # not reached


def cmd_check(args: argparse.Namespace) -> int:
    try:
        compiled = load_policy(args.file)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
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


def cmd_ca(args: argparse.Namespace) -> int:
    data_dir = ensure_data_dir(Path(args.data_dir).expanduser() if args.data_dir else default_data_dir())
    print(ca_cert_path(data_dir))
    return 0


def find_codex(data_dir: Path, install: bool = True) -> str:
    """The Codex CLI: $CODEXGATE_CODEX_BIN, on PATH, or installed with npm into the data dir."""
    configured = os.environ.get("CODEXGATE_CODEX_BIN")
    if configured and os.access(configured, os.X_OK):
        return configured
    found = shutil.which("codex")
    if found:
        return found
    local = data_dir / "codex-cli" / "node_modules" / ".bin" / "codex"
    if local.exists():
        return str(local)
    if not install:
        raise SystemExit("codex not found")
    npm = shutil.which("npm")
    if not npm:
        raise SystemExit("codex is not installed and npm is missing: install Node.js, then rerun")
    print(f"codexgate: installing {CODEX_NPM_PACKAGE} into {local.parent.parent.parent}", file=sys.stderr)
    subprocess.run([npm, "install", "--prefix", str(data_dir / "codex-cli"), CODEX_NPM_PACKAGE], check=True)
    return str(local)


def codex_launch(
    mode: str, gateway: str, key: str, ca_cert: Path | None, base_env: dict[str, str], codex_args: list[str]
) -> tuple[list[str], dict[str, str]]:
    """(extra Codex arguments, environment) that send Codex through the gateway in `mode`."""
    env = dict(base_env)
    env["CODEX_API_KEY"] = key
    gateway = gateway.rstrip("/")
    if mode == "proxy":
        for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            env.pop(name, None)
        env["HTTPS_PROXY"] = gateway
        if ca_cert is not None:
            env["CODEX_CA_CERTIFICATE"] = str(ca_cert)
        return list(codex_args), env
    base_url = gateway if gateway.endswith("/v1") else gateway + "/v1"
    return ["-c", f'openai_base_url="{base_url}"', *codex_args], env


def cmd_codex(args: argparse.Namespace) -> int:
    data_dir = ensure_data_dir(Path(args.data_dir).expanduser() if args.data_dir else default_data_dir())
    key = args.key or os.environ.get("CODEXGATE_KEY")
    if not key and (data_dir / DEMO_KEY_FILE).exists():
        key = (data_dir / DEMO_KEY_FILE).read_text().strip()
    if not key:
        print("codexgate codex: no virtual key: pass --key or set CODEXGATE_KEY", file=sys.stderr)
        return 2
    gateway = args.gateway or ("http://127.0.0.1:8080" if args.mode == "proxy" else "http://127.0.0.1:4000")
    ca_cert = Path(args.ca).expanduser() if args.ca else (ca_cert_path(data_dir) if args.mode == "proxy" else None)
    codex_args = [a for a in args.codex_args if a != "--"]
    extra, env = codex_launch(args.mode, gateway, key, ca_cert, dict(os.environ), codex_args)
    codex = find_codex(data_dir)
    os.execve(codex, [codex, *extra], env)
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codexgate", description="Governance gateway for the OpenAI Codex CLI")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the gateway (proxy and base-URL listeners)")
    up.add_argument("--policy", help="policy YAML (default: DATA_DIR/policy.yaml, made from the example)")
    up.add_argument("--data-dir", help="state directory (default: $CODEXGATE_HOME or ~/.codexgate)")
    up.add_argument("--listen-host", help="address to listen on (default from mitm_config.yaml: 127.0.0.1)")
    up.add_argument("--proxy-port", type=int, help="HTTPS_PROXY listener port (default 8080)")
    up.add_argument("--gateway-port", type=int, help="base-URL listener port (default 4000)")
    up.add_argument("--store", help="counter store: embedded (default) or redis://HOST:PORT/DB for several instances")
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

    ca = sub.add_parser("ca", help="print the gateway CA certificate path (CODEX_CA_CERTIFICATE)")
    ca.add_argument("--data-dir")
    ca.set_defaults(func=cmd_ca)

    codex = sub.add_parser("codex", help="launch Codex CLI through the gateway")
    codex.add_argument("--gateway", help="gateway URL (default http://127.0.0.1:4000, or :8080 in proxy mode)")
    codex.add_argument("--key", help="virtual key (default: $CODEXGATE_KEY, or the demo key of the data dir)")
    codex.add_argument("--mode", choices=["proxy", "base-url"], default="base-url")
    codex.add_argument("--ca", help="gateway CA certificate for proxy mode (default: the data dir's)")
    codex.add_argument("--data-dir")
    codex.add_argument("codex_args", nargs=argparse.REMAINDER, help="arguments for codex, after --")
    codex.set_defaults(func=cmd_codex)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
