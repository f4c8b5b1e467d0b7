"""`codexgate codex`: launch the Codex CLI through the gateway, interactive or not.

Codex's terminal UI ignores `CODEX_API_KEY`: without a stored API-key sign-in it opens its
sign-in screen, and a developer signed in with ChatGPT talks to chatgpt.com instead of the
gateway. So Codex runs with its own home, an *overlay* of the developer's `CODEX_HOME`
(`DATA_DIR/codex-home`): the developer's `AGENTS.md`, history, sessions, prompts, skills and
rules are linked into it (Codex writes through the links, so they stay one), their `config.toml`
is copied (again whenever it changes), and its `auth.json` is the overlay's own, made by
`codex login --with-api-key` with the virtual key.
The developer's own sign-in is never read or changed.

Per launch the launcher also
- checks gateway and key (`GET /v1/models` with the key, through the proxy in proxy mode),
  asking for them on first use and remembering them in a 0600 profile (`DATA_DIR/profile.json`);
- in base-URL mode points a `codexgate` model provider (not `openai_base_url`, with which /model
  warns) at the gateway and fetches the key's model catalog (`GET /v1/codex/models`) into a file
  for Codex's `model_catalog_json` (in proxy mode Codex fetches it from chatgpt.com, answered by
  the gateway); starts Codex on the key's first model when nothing names one the key may use;
- keeps the key out of the commands Codex runs: the key is not in Codex's environment at all,
  and `shell_environment_policy.exclude` drops every variable holding it or another gateway
  credential, while `HTTPS_PROXY` and the CA stay so package managers work through the gateway;
- in proxy mode, when the gateway answers the check `407` (`gateway.proxy_auth: required`), gives
  Codex the key as proxy credentials (`HTTPS_PROXY=http://codex:KEY@host:port`) — the one place
  the key is in Codex's environment — and hands the commands Codex runs the proxy URL *without*
  them (`shell_environment_policy.set`, applied after every exclude): a tool's request through the
  proxy is then refused `407` with the gateway's reason instead of carrying the developer's key
  (dropping `HTTPS_PROXY` for the tools instead would send them around the gateway's egress policy);
- runs Codex with `--no-daemon`: a shared background server would keep another launch's settings.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import getpass
import hashlib
import json
import os
import shlex
import shutil
import ssl
import subprocess
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

CODEX_NPM_PACKAGE = "@openai/codex@0.169.0"
DEMO_KEY_FILE = "demo-key"
PROFILE_FILE = "profile.json"
OVERLAY_DIR = "codex-home"
CATALOG_FILE = "codexgate-models.json"
DEFAULT_GATEWAY = {"base-url": "http://127.0.0.1:4000", "proxy": "http://127.0.0.1:8080"}
# What of the developer's CODEX_HOME Codex shares with the overlay (never auth.json, logs or caches).
SHARED_ENTRIES = (
    "AGENTS.md", "AGENTS.override.md", "history.jsonl", "sessions", "archived_sessions",
    "prompts", "skills", "rules", "memories",
)  # fmt: skip
CREATED_IF_MISSING = {"sessions": "dir", "archived_sessions": "dir", "history.jsonl": "file"}
# Gateway credentials never handed to the commands Codex runs (besides any variable holding the key).
CREDENTIAL_VARIABLES = ("CODEX_API_KEY", "OPENAI_API_KEY", "CODEXGATE_KEY", "CODEXGATE_WEB_PASSWORD")
CHECK_TIMEOUT = 15.0


class LaunchError(Exception):
    """Something the developer must fix before Codex can run through the gateway; the message says what."""


@dataclasses.dataclass
class Profile:
    """What the launcher remembers between runs (owner-only file: it holds the virtual key)."""

    key: str | None = None
    gateways: dict[str, str] = dataclasses.field(default_factory=dict)  # mode -> URL
    ca: str | None = None

    @classmethod
    def load(cls, path: Path) -> Profile:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except ValueError as exc:
            raise LaunchError(f"{path}: not valid JSON ({exc}); fix or delete it") from None
        if not isinstance(raw, dict):
            raise LaunchError(f"{path}: must be a JSON object; fix or delete it")
        gateways = raw.get("gateways")
        gateways = gateways if isinstance(gateways, dict) else {}
        return cls(
            key=raw.get("key") if isinstance(raw.get("key"), str) else None,
            gateways={str(k): str(v) for k, v in gateways.items()},
            ca=raw.get("ca") if isinstance(raw.get("ca"), str) else None,
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(dataclasses.asdict(self), handle, indent=2)
            handle.write("\n")


@dataclasses.dataclass(frozen=True)
class Target:
    mode: str  # "proxy" or "base-url"
    gateway: str  # proxy URL, or the base URL ending in /v1
    key: str
    ca: Path | None  # proxy mode: the gateway CA
    proxy_auth: bool = False  # proxy mode: the gateway wants the key as proxy credentials (it answered 407)

    @property
    def check_url(self) -> str:
        return "https://api.openai.com/v1/models" if self.mode == "proxy" else f"{self.gateway}/models"

    @property
    def proxy_url(self) -> str:
        """The proxy URL Codex (and the check) use: with the key as credentials when the gateway asks for them."""
        if not self.proxy_auth:
            return self.gateway
        parts = urllib.parse.urlsplit(self.gateway)
        credentials = f"codex:{urllib.parse.quote(self.key, safe='')}"
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{credentials}@{parts.netloc}"))


class ProxyAuthRequired(LaunchError):
    """The proxy answered 407: it serves only clients giving a virtual key as proxy credentials."""


def normalise_gateway(mode: str, url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    if mode == "base-url" and not url.endswith("/v1"):
        url += "/v1"
    return url


def opener(target: Target) -> urllib.request.OpenerDirector:
    """An HTTP client that reaches the gateway as Codex will: through the proxy with the CA, or directly."""
    if target.mode == "proxy":
        context = ssl.create_default_context(cafile=str(target.ca) if target.ca else None)
        return urllib.request.build_opener(
            urllib.request.ProxyHandler({"https": target.proxy_url, "http": target.proxy_url}),
            urllib.request.HTTPSHandler(context=context),
        )
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _error_message(body: bytes) -> str:
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        return str(json.loads(body)["error"]["message"])
    return body[:200].decode("utf-8", "replace")


def gateway_get(target: Target, url: str) -> bytes:
    """GET `url` with the key; a LaunchError saying what is wrong otherwise."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {target.key}"})
    try:
        with opener(target).open(request, timeout=CHECK_TIMEOUT) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        message = _error_message(exc.read())
        if exc.code == 407 and target.mode == "proxy":
            raise ProxyAuthRequired(f"the gateway refused the key as proxy credentials (407): {message}") from None
        if exc.code in (401, 403):
            raise LaunchError(f"the gateway refused the key ({exc.code}): {message}") from None
        raise LaunchError(f"the gateway answered {exc.code} to GET {url}: {message}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if target.mode == "proxy" and "Tunnel connection failed: 407" in str(reason):  # (http.client's words)
            raise ProxyAuthRequired(
                "the gateway refused the key as proxy credentials (407 to CONNECT)"
                if target.proxy_auth
                else "the gateway's proxy asks for proxy credentials (407 to CONNECT)"
            ) from None
        if isinstance(reason, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(reason):
            raise LaunchError(
                f"the gateway's certificate is not signed by the CA {target.ca}: use the CA of the gateway you "
                "connect to (`codexgate ca` on the gateway host prints its path) with --ca"
            ) from None
        raise LaunchError(
            f"cannot reach the gateway at {target.gateway} ({reason}); is `codexgate up` running there?"
        ) from None
    except (OSError, ValueError) as exc:
        raise LaunchError(f"cannot reach the gateway at {target.gateway} ({exc})") from None


def check_target(target: Target) -> tuple[Target, list[str]]:
    """The target as it reaches the gateway (with proxy credentials if the proxy asks for them)
    and the model ids the key may use, from `GET /v1/models` through the gateway."""
    try:
        body = gateway_get(target, target.check_url)
    except ProxyAuthRequired:
        if target.proxy_auth:
            raise
        # The CONNECT was refused before the key in Authorization was seen; once more, as Codex will.
        target = dataclasses.replace(target, proxy_auth=True)
        body = gateway_get(target, target.check_url)
    try:
        return target, [str(model["id"]) for model in json.loads(body)["data"]]
    except (ValueError, KeyError, TypeError):
        raise LaunchError(f"{target.check_url} did not answer like codexgate (no model list)") from None


def _ask(prompt: str, secret: bool = False) -> str:
    if secret:
        return getpass.getpass(prompt, stream=sys.stderr).strip()
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise LaunchError("no answer (end of input)")
    return line.strip()


def resolve_target(args: argparse.Namespace, data_dir: Path, env: dict[str, str], interactive: bool) -> Target:
    """Gateway, key and CA from flags, environment, the profile or the local demo set-up; what is
    still unknown is asked for (on a terminal), checked against the gateway, and remembered."""
    mode = args.mode
    profile_path = data_dir / PROFILE_FILE
    profile = Profile.load(profile_path)
    demo = data_dir / DEMO_KEY_FILE
    demo_key = demo.read_text().strip() if demo.exists() else None
    key = args.key or env.get("CODEXGATE_KEY") or profile.key or demo_key
    gateway = args.gateway or env.get("CODEXGATE_GATEWAY") or profile.gateways.get(mode)
    if gateway is None and demo_key is not None:
        gateway = DEFAULT_GATEWAY[mode]  # the gateway of this data dir runs here
    ca = _ca_path(args, data_dir, profile, mode)
    if key and gateway:
        return Target(mode, normalise_gateway(mode, gateway), key, ca)
    if not interactive:
        missing = " and ".join(
            what for what, known in (("gateway URL (--gateway)", gateway), ("virtual key (--key)", key)) if not known
        )
        raise LaunchError(f"no {missing}: pass it, set CODEXGATE_GATEWAY / CODEXGATE_KEY, or run on a terminal once")
    sys.stderr.write(f"codexgate: first run — where is your gateway, and what is your key? (saved in {profile_path})\n")
    for attempt in range(3):
        if not gateway or attempt:
            answer = _ask(f"Gateway URL for {mode} mode [{gateway or DEFAULT_GATEWAY[mode]}]: ")
            gateway = answer or gateway or DEFAULT_GATEWAY[mode]
        if not key or attempt:
            key = _ask("Virtual key (sk-cg-…, from your platform team): ", secret=True) or key
        if not key:
            continue
        target = Target(mode, normalise_gateway(mode, gateway), key, ca)
        try:
            target, models = check_target(target)
        except LaunchError as exc:
            sys.stderr.write(f"codexgate: {exc}\n")
            continue
        sys.stderr.write(f"codexgate: OK — {len(models)} models for this key: {', '.join(models[:8])}\n")
        profile.key = key
        profile.gateways[mode] = gateway
        if ca is not None:
            profile.ca = str(ca)
        profile.save(profile_path)
        return target
    raise LaunchError("gateway and key could not be checked; nothing was saved")


def _ca_path(args: argparse.Namespace, data_dir: Path, profile: Profile, mode: str) -> Path | None:
    if mode != "proxy":
        return None
    given = args.ca or os.environ.get("CODEXGATE_CA") or profile.ca
    if given:
        path = Path(given).expanduser().resolve()
        if not path.is_file():
            raise LaunchError(
                f"CA certificate {path} does not exist: `codexgate ca` on the gateway host prints the right path"
            )
        return path
    local = data_dir / "mitmproxy" / "mitmproxy-ca-cert.pem"
    if local.is_file():
        return local
    raise LaunchError(
        f"proxy mode needs the gateway's CA certificate: pass --ca FILE (`codexgate ca` on the gateway host prints "
        f"its path); none in {local.parent}"
    )


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
        raise LaunchError("codex not found")
    npm = shutil.which("npm")
    if not npm:
        raise LaunchError("codex is not installed and npm is missing: install Node.js, then rerun")
    print(f"codexgate: installing {CODEX_NPM_PACKAGE} into {data_dir / 'codex-cli'}", file=sys.stderr)
    # npm's progress and summary go to stderr: stdout belongs to Codex (`codex exec` output).
    subprocess.run(
        [npm, "install", "--prefix", str(data_dir / "codex-cli"), CODEX_NPM_PACKAGE], check=True, stdout=sys.stderr
    )
    return str(local)


def developer_codex_home(env: dict[str, str]) -> Path:
    return Path(env.get("CODEX_HOME") or Path.home() / ".codex").expanduser()


def _stored_api_key(auth_file: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        value = json.loads(auth_file.read_text(encoding="utf-8")).get("OPENAI_API_KEY")
        return value if isinstance(value, str) else None
    return None


def _refresh_config_copy(overlay: Path, developer_home: Path) -> None:
    """The overlay's config.toml is a copy of the developer's, made again whenever theirs changes.
    A copy, not a link: what Codex writes during a gateway session (the model picked with /model,
    trusted projects) must not end up in the developer's own config, where their ChatGPT sign-in
    would meet a model only the gateway serves."""
    source = developer_home / "config.toml"
    copy = overlay / "config.toml"
    stamp = overlay / ".codexgate-config-source"
    content = source.read_bytes() if source.is_file() else None
    digest = hashlib.sha256(content).hexdigest() if content is not None else "absent"
    if copy.is_symlink() or not stamp.is_file() or stamp.read_text().strip() != digest:
        copy.unlink(missing_ok=True)
        if content is not None:
            copy.write_bytes(content)
        stamp.write_text(digest + "\n")


def prepare_overlay(overlay: Path, developer_home: Path, key: str, codex: str) -> None:
    """The overlay CODEX_HOME: the developer's shared files linked in, an API-key sign-in of its own."""
    overlay.mkdir(parents=True, exist_ok=True)
    os.chmod(overlay, 0o700)
    if developer_home.resolve() == overlay.resolve():
        raise LaunchError(f"CODEX_HOME is codexgate's own overlay ({overlay}); unset it")
    developer_home.mkdir(parents=True, exist_ok=True)
    for name in SHARED_ENTRIES:
        source = developer_home / name
        if not source.exists() and not source.is_symlink() and name in CREATED_IF_MISSING:
            if CREATED_IF_MISSING[name] == "dir":
                source.mkdir()
            else:
                source.touch(mode=0o600)
        link = overlay / name
        if not (source.exists() or source.is_symlink()):
            if link.is_symlink():
                link.unlink()
            continue
        if link.is_symlink() and Path(os.readlink(link)) == source:
            continue
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.is_dir():
            continue  # a directory Codex made before the developer had one: left as it is
        link.symlink_to(source)
    _refresh_config_copy(overlay, developer_home)
    # The catalog Codex cached from the last gateway it saw may be stale (policy changes, other key).
    (overlay / "models_cache.json").unlink(missing_ok=True)
    if _stored_api_key(overlay / "auth.json") != key:
        login = subprocess.run(
            [codex, "login", "--with-api-key"],
            input=key,
            text=True,
            capture_output=True,
            env={**os.environ, "CODEX_HOME": str(overlay)},
            timeout=60,
        )
        if login.returncode != 0 or _stored_api_key(overlay / "auth.json") != key:
            raise LaunchError(f"`codex login --with-api-key` failed in {overlay}: {login.stderr.strip()[-400:]}")


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _developer_excludes(developer_home: Path) -> list[str]:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        config = tomllib.loads((developer_home / "config.toml").read_text(encoding="utf-8"))
        excludes = (config.get("shell_environment_policy") or {}).get("exclude") or []
        return [str(pattern) for pattern in excludes]
    return []


def credential_excludes(env: dict[str, str], key: str, developer_home: Path) -> list[str]:
    """Variables the commands Codex runs must not get: the gateway's credential variables and any
    variable whose value holds the key; plus the developer's own excludes."""
    names = list(CREDENTIAL_VARIABLES) + sorted(name for name, value in env.items() if key in value)
    merged = _developer_excludes(developer_home) + names
    return list(dict.fromkeys(merged))


def codex_launch(
    target: Target,
    base_env: dict[str, str],
    codex_args: list[str],
    overlay: Path | None = None,
    catalog_file: Path | None = None,
    developer_home: Path | None = None,
) -> tuple[list[str], dict[str, str]]:
    """(Codex arguments, environment) that send Codex through the gateway as `target` says."""
    env = {
        name: value for name, value in base_env.items() if name not in CREDENTIAL_VARIABLES and target.key not in value
    }
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    if overlay is not None:
        env["CODEX_HOME"] = str(overlay)
    else:
        env["CODEX_API_KEY"] = target.key  # no overlay sign-in: `codex exec` reads the key from here
    home = developer_home or developer_codex_home(base_env)
    excludes = credential_excludes(base_env, target.key, home)
    # Only these names: Codex's default excludes (*KEY*, *SECRET*, *TOKEN*) would also take the
    # developer's own tokens (NPM_TOKEN, GITHUB_TOKEN) from the commands that need them.
    config = ["-c", f"shell_environment_policy.exclude=[{', '.join(_toml_string(name) for name in excludes)}]"]
    if target.mode == "proxy":
        env["HTTPS_PROXY"] = target.proxy_url
        if target.proxy_auth:
            # Codex needs the credentials; the commands it runs get the bare proxy URL (`set` comes
            # after the excludes in Codex's env policy, so it replaces the inherited value).
            config += ["-c", f"shell_environment_policy.set.HTTPS_PROXY={_toml_string(target.gateway)}"]
        if target.ca is not None:
            env["CODEX_CA_CERTIFICATE"] = str(target.ca)
    else:
        # A provider entry of its own rather than `openai_base_url`: with the OpenAI provider's URL
        # overridden, Codex's /model warns that selecting models may not work. It signs in with the
        # overlay's API key (requires_openai_auth), so the key is in no environment variable.
        provider = "model_providers.codexgate"
        config += [
            "-c", f'{provider}.name="codexgate"',
            "-c", f"{provider}.base_url={_toml_string(target.gateway)}",
            "-c", f'{provider}.wire_api="responses"',
            "-c", f"{provider}.requires_openai_auth=true",
            # Responses over WebSocket, Codex's first choice, is served (and governed) by the gateway.
            "-c", f"{provider}.supports_websockets=true",
            "-c", 'model_provider="codexgate"',
        ]  # fmt: skip
        if catalog_file is not None:
            config += ["-c", f"model_catalog_json={_toml_string(str(catalog_file))}"]
    # The terminal UI otherwise hands the session to a shared background server, which keeps the
    # environment of whichever launch started it (another gateway, another key). A top-level flag
    # every subcommand accepts.
    return ["--no-daemon", *config, *codex_args], env


def default_model(codex_args: list[str], overlay: Path, models: list[str]) -> str | None:
    """The key's first model, when neither the arguments nor the config name one the key may use
    (Codex's own default is a model the gateway may not serve, refused on the first prompt)."""
    if any(arg in ("-m", "--model") or arg.startswith(("--model=", "model=")) for arg in codex_args):
        return None
    configured = None
    with contextlib.suppress(OSError, ValueError):
        configured = tomllib.loads((overlay / "config.toml").read_text(encoding="utf-8")).get("model")
    if configured in models or not models:
        return None
    return models[0]


def _catalog_for(target: Target, overlay: Path) -> Path | None:
    if target.mode != "base-url":
        return None  # Codex fetches it itself, from chatgpt.com through the gateway
    try:
        body = gateway_get(target, f"{target.gateway}/codex/models")
        if not isinstance(json.loads(body).get("models"), list):
            raise ValueError("no models")
    except (LaunchError, ValueError, AttributeError) as exc:
        # An older gateway: Codex still works, with its built-in model list in /model.
        print(
            f"codexgate codex: warning: the gateway serves no Codex model catalog ({exc}); "
            "/model will list Codex's built-in models",
            file=sys.stderr,
        )
        return None
    path = overlay / CATALOG_FILE
    path.write_bytes(body)
    return path


def cmd_codex(args: argparse.Namespace) -> int:
    from codexgate.datadir import default_data_dir, ensure_data_dir

    data_dir = ensure_data_dir(Path(args.data_dir).expanduser() if args.data_dir else default_data_dir())
    env = dict(os.environ)
    codex_args = list(args.codex_args)
    if codex_args[:1] == ["--"]:
        codex_args = codex_args[1:]
    try:
        target = resolve_target(args, data_dir, env, interactive=sys.stdin.isatty() and sys.stderr.isatty())
        # Gateway, key (and CA) checked before Codex starts: otherwise Codex loops on "Reconnecting…".
        target, models = check_target(target)
        codex = find_codex(data_dir)
        overlay = data_dir / OVERLAY_DIR
        developer_home = developer_codex_home(env)
        prepare_overlay(overlay, developer_home, target.key, codex)
        catalog = _catalog_for(target, overlay)
    except LaunchError as exc:
        print(f"codexgate codex: {exc}", file=sys.stderr)
        return 2
    model = default_model(codex_args, overlay, models)
    if model is not None:
        codex_args = ["-c", f"model={_toml_string(model)}", *codex_args]
    argv, launch_env = codex_launch(target, env, codex_args, overlay, catalog, developer_home)
    os.execve(codex, [codex, *argv], launch_env)
    return 0  # not reached


def codexgate_program() -> list[str]:
    """How to run this codexgate from a shell: `codexgate` if that is on PATH and is this one,
    else its absolute path (a venv's bin), else this Python with `-m codexgate.cli`."""
    on_path = shutil.which("codexgate")
    here = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if on_path and here is not None and Path(on_path).resolve() == here:
        return ["codexgate"]
    if here is not None and here.name == "codexgate" and os.access(here, os.X_OK):
        return [str(here)]
    if on_path:
        return ["codexgate"]
    return [sys.executable, "-m", "codexgate.cli"]


def banner_commands(
    host: str, proxy_port: int, gateway_port: int, ca_cert: Path, data_dir: Path, key: str | None, model: str
) -> list[str]:
    """The banner's ways to point Codex at this gateway, each working as pasted."""
    from codexgate.datadir import default_data_dir

    program = shlex.join(codexgate_program())
    data = [] if data_dir == default_data_dir() else ["--data-dir", str(data_dir)]
    base_url = f"http://{host}:{gateway_port}/v1"
    proxy = f"http://{host}:{proxy_port}"
    lines = [
        "Start Codex through it (interactive; asks for a key on first use if none is known):",
        f"  {program} {shlex.join(['codex', '--gateway', base_url, *data, '--', '-m', model])}",
        f"  {program} {shlex.join(['codex', '--mode', 'proxy', '--gateway', proxy, *data, '--', '-m', model])}",
    ]
    if key:
        # Not installed here yet: npx fetches the version the launcher would install.
        codex = (
            shlex.quote(find_codex(data_dir, install=False))
            if _codex_installed(data_dir)
            else f"npx -y {CODEX_NPM_PACKAGE}"
        )
        # --skip-git-repo-check: `codex exec` otherwise refuses to run outside a git repository.
        exec_ = f"{codex} exec --skip-git-repo-check"
        lines += [
            "Or without the launcher (`codex exec`; the terminal UI needs `codex login --with-api-key`):",
            f"  CODEX_API_KEY={key} {exec_} -c {shlex.quote(f'openai_base_url={json.dumps(base_url)}')}"
            f" -m {model} 'say hello'",
            f"  HTTPS_PROXY={proxy} CODEX_CA_CERTIFICATE={shlex.quote(str(ca_cert))} CODEX_API_KEY={key}"
            f" {exec_} -m {model} 'say hello'",
        ]
    return lines


def _codex_installed(data_dir: Path) -> bool:
    try:
        find_codex(data_dir, install=False)
    except LaunchError:
        return False
    return True


def add_codex_command(sub: Any) -> None:
    codex = sub.add_parser("codex", help="launch Codex CLI through the gateway (asks for gateway and key once)")
    codex.add_argument(
        "--gateway",
        help="gateway URL (default: the profile's, or http://127.0.0.1:4000 / :8080 next to a local gateway)",
    )
    codex.add_argument("--key", help="virtual key (default: $CODEXGATE_KEY, the profile's, or the local demo key)")
    codex.add_argument("--mode", choices=["proxy", "base-url"], default="base-url")
    codex.add_argument("--ca", help="gateway CA certificate for proxy mode (default: the profile's or the data dir's)")
    codex.add_argument("--data-dir", help="profile, overlay CODEX_HOME (default: $CODEXGATE_HOME or ~/.codexgate)")
    codex.add_argument("codex_args", nargs=argparse.REMAINDER, help="arguments for codex, after --")
    codex.set_defaults(func=cmd_codex)
