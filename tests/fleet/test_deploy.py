"""deploy/ checked without a container runtime or a cluster: the Kubernetes manifests against the
Kubernetes OpenAPI schemas (kubernetes-validate, bundled schemas, strict), the compose file
against the Compose specification (check-jsonschema's bundled copy), the HAProxy configuration
with `haproxy -c`, and the image's entrypoint and health check run as plain processes."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fakes.gateway import ALICE_KEY, free_port, policy_text

from codexgate.policies.loader import load_policy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.37.0"


def _manifests() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


def test_kubernetes_manifests_are_valid_against_the_openapi_schemas() -> None:
    manifests = _manifests()
    assert set(manifests) == {
        "ConfigMap/codexgate-policy", "Secret/codexgate-ca", "Secret/codexgate-provider-keys",
        "Deployment/codexgate", "Service/codexgate", "PodDisruptionBudget/codexgate",
        "HorizontalPodAutoscaler/codexgate",
    }  # fmt: skip
    for doc in manifests.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    # The validator does reject what Kubernetes would: a misspelt field, a wrong type.
    broken = copy.deepcopy(manifests["Deployment/codexgate"])
    broken["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    broken = copy.deepcopy(manifests["Deployment/codexgate"])
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_deployment_probes_security_and_wiring() -> None:
    manifests = _manifests()
    pod = manifests["Deployment/codexgate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["policy"]["configMap"]["name"] == "codexgate-policy"
    assert volumes["ca"]["secret"]["secretName"] == "codexgate-ca"
    assert {"secretRef": {"name": "codexgate-provider-keys"}} in container["envFrom"]
    selector = manifests["Deployment/codexgate"]["spec"]["selector"]["matchLabels"]
    assert manifests["Service/codexgate"]["spec"]["selector"] == selector
    assert manifests["PodDisruptionBudget/codexgate"]["spec"]["selector"]["matchLabels"] == selector
    assert manifests["HorizontalPodAutoscaler/codexgate"]["spec"]["scaleTargetRef"]["name"] == "codexgate"


def test_configmap_policy_is_a_valid_policy(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(_manifests()["ConfigMap/codexgate-policy"]["data"]["policy.yaml"])
    compiled = load_policy(policy)
    assert "gpt-5-codex" in compiled.policy.models


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    compose = DEPLOY / "compose" / "compose.yaml"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(compose)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    spec = yaml.safe_load(compose.read_text())
    services = spec["services"]
    assert {
        "redis",
        "redis-replica",
        "sentinel-1",
        "codexgate-1",
        "codexgate-2",
        "haproxy",
        "prometheus",
        "grafana",
    } <= set(services)
    for gateway in ("codexgate-1", "codexgate-2"):
        environment = services[gateway]["environment"]
        assert environment["CODEXGATE_STORE"].startswith("redis+sentinel://")
        assert environment["CODEXGATE_CA_FILE"] == "/run/secrets/codexgate_ca"
        assert services[gateway]["read_only"] is True
    # Prometheus scrapes both, Grafana gets the shipped dashboard.
    scrape = yaml.safe_load((DEPLOY / "compose" / "prometheus" / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["codexgate-1:9090", "codexgate-2:9090"]
    mounts = services["grafana"]["volumes"]
    dashboards = next(m.split(":")[0] for m in mounts if m.endswith("/var/lib/grafana/dashboards:ro"))
    assert json.loads(((compose.parent / dashboards) / "codexgate.json").read_text())["uid"]
    # A broken compose file is refused by the same check.
    broken = compose.with_name("broken.test.yaml")
    try:
        broken.write_text(compose.read_text().replace('    ports: ["4000:4000"', '    portz: ["4000:4000"'))
        result = subprocess.run(
            [str(checker), "--builtin-schema", "vendor.compose-spec", str(broken)], capture_output=True, text=True
        )
        assert result.returncode != 0
    finally:
        broken.unlink()


def test_haproxy_configuration_is_valid() -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        if os.environ.get("CI"):
            pytest.fail("haproxy is required in CI (./dev test installs it)")
        pytest.skip("haproxy not installed: ./dev test installs it")
    result = subprocess.run(
        [haproxy, "-c", "-f", str(DEPLOY / "haproxy" / "haproxy.cfg")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr


def _dockerfile() -> tuple[list[str], list[str], str, dict[str, str]]:
    """(entrypoint, health check command, user, COPY destination -> source) of the final stage."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    final = text.split("\nFROM ")[-1]
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", final, re.M).group(1))  # type: ignore[union-attr]
    health = json.loads(re.search(r"^HEALTHCHECK .*CMD (\[.*\])$", final, re.M).group(1))  # type: ignore[union-attr]
    user = re.search(r"^USER (\S+)$", final, re.M).group(1)  # type: ignore[union-attr]
    copies = {dst: src for src, dst in re.findall(r"^COPY (?!--from)(\S+) (\S+)$", final, re.M)}
    return entrypoint, health, user, copies


def test_image_entrypoint_and_healthcheck_run_as_plain_processes(tmp_path: Path) -> None:
    entrypoint, health, user, copies = _dockerfile()
    assert user.split(":")[0] not in ("0", "root")
    # The entrypoint is the script the image copies to that name.
    script = ROOT / next(src for dst, src in copies.items() if Path(dst).name == entrypoint[0])
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text("http://127.0.0.1:9/v1"))
    bundle = tmp_path / "ca.pem"
    codexgate = str(Path(sys.executable).with_name("codexgate"))
    subprocess.run([codexgate, "ca", "--data-dir", str(tmp_path / "ca")], check=True, capture_output=True)
    subprocess.run([codexgate, "ca", "--data-dir", str(tmp_path / "ca"), "export", "--out", str(bundle)], check=True)
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path / "data"), "CODEXGATE_HOME": str(tmp_path / "data"), "CODEXGATE_POLICY": str(policy),
        "CODEXGATE_LISTEN_HOST": "127.0.0.1", "CODEXGATE_METRICS_HOST": "127.0.0.1",
        "CODEXGATE_PROXY_PORT": str(free_port()), "CODEXGATE_GATEWAY_PORT": str(free_port()),
        "CODEXGATE_METRICS_PORT": str(free_port()), "CODEXGATE_CA_FILE": str(bundle), "PYTHONDONTWRITEBYTECODE": "1",
    }  # fmt: skip
    # The health check's `python` is the image's venv interpreter: here, this one.
    check = [sys.executable if health[0] == "python" else health[0], *health[1:]]
    assert subprocess.run(check, env=env, capture_output=True).returncode == 1  # nothing listening yet
    log = tmp_path / "entrypoint.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(script)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(check, env=env, capture_output=True).returncode != 0:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        ready = subprocess.run([sys.executable, "-m", "codexgate.probe", "/readyz"], env=env, capture_output=True)
        assert ready.returncode == 0, ready.stderr
        assert "CA installed from" in log.read_text()
        import openai

        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{env['CODEXGATE_GATEWAY_PORT']}/v1", api_key=ALICE_KEY, max_retries=0
        )
        assert client.responses.create(model="mock-model", input="hi").status == "completed"
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0, log.read_text()  # SIGTERM drained and stopped cleanly
