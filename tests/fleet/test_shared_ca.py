"""One CA for a fleet: `codexgate ca export|import` and `up --ca-file`; gateways started with the
same CA present certificates a client trusting that one CA accepts."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from fakes.gateway import ALICE_KEY, Gateway, policy_text

from codexgate.cli import main


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "codexgate.cli", *args], capture_output=True, text=True, timeout=60)


def _proxy_client(gateway: Gateway, trusted: Path) -> openai.OpenAI:
    context = ssl.create_default_context(cafile=str(trusted))
    http_client = openai.DefaultHttpxClient(proxy=gateway.proxy_url, verify=context)
    return openai.OpenAI(api_key=ALICE_KEY, max_retries=0, timeout=20, http_client=http_client)


def test_gateways_sharing_one_ca_are_trusted_through_it(tmp_path: Path) -> None:
    first, second, third = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    made = _cli("ca", "--data-dir", str(first))
    assert made.returncode == 0, made.stderr
    shared_cert = Path(made.stdout.strip())
    bundle = tmp_path / "fleet-ca.pem"
    exported = _cli("ca", "--data-dir", str(first), "export", "--out", str(bundle))
    assert exported.returncode == 0, exported.stderr
    assert stat.S_IMODE(os.stat(bundle).st_mode) == 0o600  # it holds the CA's private key
    imported = _cli("ca", "--data-dir", str(second), "import", str(bundle))
    assert imported.returncode == 0, imported.stderr
    assert (second / "mitmproxy" / "mitmproxy-ca-cert.pem").read_bytes() == shared_cert.read_bytes()
    # A data dir left alone makes a CA of its own: the one the check below must not accept.
    other = Path(_cli("ca", "--data-dir", str(tmp_path / "d")).stdout.strip())
    assert other.read_bytes() != shared_cert.read_bytes()

    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text("http://127.0.0.1:9/v1"))
    from_import = Gateway(policy, second)
    from_file = Gateway(policy, third)
    from_file.extra_args = ["--ca-file", str(bundle)]
    stranger = Gateway(policy, tmp_path / "d")
    try:
        for gateway in (from_import.start(), from_file.start()):
            answer = _proxy_client(gateway, shared_cert).responses.create(model="mock-model", input="hi")
            assert answer.status == "completed"
        assert "CA installed from" in from_file.log_text()
        stranger.start()
        with pytest.raises(openai.APIConnectionError):
            _proxy_client(stranger, shared_cert).responses.create(model="mock-model", input="hi")
    finally:
        for gateway in (from_import, from_file, stranger):
            gateway.stop()


def test_import_refuses_what_is_not_a_ca_bundle_and_another_ca_without_replace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = tmp_path / "a", tmp_path / "b"
    assert main(["ca", "--data-dir", str(source)]) == 0
    cert_only = source / "mitmproxy" / "mitmproxy-ca-cert.pem"
    assert main(["ca", "--data-dir", str(target), "import", str(cert_only)]) == 1
    assert "no unencrypted PEM private key" in capsys.readouterr().err
    assert main(["ca", "--data-dir", str(target)]) == 0  # target now has its own CA
    bundle = source / "mitmproxy" / "mitmproxy-ca.pem"
    assert main(["ca", "--data-dir", str(target), "import", str(bundle)]) == 1
    assert "already has another CA" in capsys.readouterr().err
    assert main(["ca", "--data-dir", str(target), "import", "--replace", str(bundle)]) == 0
    assert (target / "mitmproxy" / "mitmproxy-ca-cert.pem").read_bytes() == cert_only.read_bytes()
    mismatched = tmp_path / "mismatched.pem"
    key = bundle.read_bytes().split(b"-----END RSA PRIVATE KEY-----")[0] + b"-----END RSA PRIVATE KEY-----\n"
    assert main(["ca", "--data-dir", str(tmp_path / "c")]) == 0
    other_cert = tmp_path / "c" / "mitmproxy" / "mitmproxy-ca-cert.pem"
    mismatched.write_bytes(key + other_cert.read_bytes())
    assert main(["ca", "--data-dir", str(tmp_path / "e"), "import", str(mismatched)]) == 1
    assert "does not belong" in capsys.readouterr().err
