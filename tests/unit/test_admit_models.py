"""Admit (key state, model rules) and ModelsEndpoint (what a key may see)."""

from __future__ import annotations

import json

import pytest
from mitmproxy.test import taddons
from unit_support import error_of, governed, make_flow

from codexgate.addons.admit import Admit
from codexgate.addons.models_endpoint import ModelsEndpoint

pytest_plugins = ["unit_support"]


@pytest.fixture
def admit():
    addon = Admit()
    with taddons.context(addon):
        yield addon


@pytest.fixture
def models():
    addon = ModelsEndpoint()
    with taddons.context(addon):
        yield addon


def admitted(admit, compiled, key, model, endpoint="responses"):
    flow = make_flow(body={"model": model})
    state = governed(flow, compiled, key=key, body={"model": model}, endpoint=endpoint)
    admit.request(flow)
    return flow, state


def test_allowed_model_admitted(admit, compiled):
    flow, state = admitted(admit, compiled, "alice", "gpt-5.5")
    assert flow.response is None
    assert state.model == "gpt-5.5"


def test_disabled_key_is_401(admit, compiled):
    flow, state = admitted(admit, compiled, "bob", "gpt-5.5")
    assert flow.response.status_code == 401
    error = error_of(flow)
    assert error["code"] == "key_disabled"
    assert "bob" in error["message"]
    assert state.decision == "key_disabled"
    assert state.model is None


def test_expired_key_is_401_with_expiry(admit, compiled):
    flow, state = admitted(admit, compiled, "carol", "gpt-5.5")
    assert flow.response.status_code == 401
    error = error_of(flow)
    assert error["code"] == "key_expired"
    assert "carol" in error["message"]
    assert "2020-01-01T00:00" in error["message"]
    assert state.model is None


def test_disabled_key_refused_even_for_models_list(admit, compiled):
    flow, _ = admitted(admit, compiled, "bob", None, endpoint="models")
    assert flow.response.status_code == 401


def test_unknown_model_is_404(admit, compiled):
    flow, state = admitted(admit, compiled, "alice", "gpt-6-astra")
    assert flow.response.status_code == 404
    error = error_of(flow)
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert "gpt-6-astra" in error["message"]
    assert "/v1/models" in error["message"]
    assert state.decision == "unknown_model"


def test_model_not_allowed_is_403_naming_key_and_patterns(admit, compiled):
    flow, state = admitted(admit, compiled, "alice", "o9-secret")
    assert flow.response.status_code == 403
    error = error_of(flow)
    assert error["code"] == "model_not_allowed"
    assert error["type"] == "permission_denied"
    assert error["message"] == "model o9-secret is not allowed for key alice; allowed: gpt-5*, mock"
    assert state.decision == "model_not_allowed"
    assert state.model is None


def test_alias_allowed_by_alias_pattern(admit, compiled):
    # alice may use "mock" (the alias) -> admitted, canonical name recorded
    flow, state = admitted(admit, compiled, "alice", "mock")
    assert flow.response is None
    assert state.model == "mock-model"


def test_alias_allowed_by_canonical_pattern(admit, compiled):
    # dave may use mock-model -> its alias "mock" as well
    flow, state = admitted(admit, compiled, "dave", "mock")
    assert flow.response is None
    assert state.model == "mock-model"


def test_canonical_not_allowed_when_only_alias_pattern_matches_other_name(admit, compiled):
    flow, _ = admitted(admit, compiled, "dave", "gpt-5.5")
    assert flow.response.status_code == 403
    assert "allowed: mock-model" in error_of(flow)["message"]


def test_admit_without_key_fails_closed(admit, compiled):
    flow = make_flow(body={"model": "gpt-5.5"})
    governed(flow, compiled, body={"model": "gpt-5.5"})
    admit.request(flow)
    assert flow.response.status_code == 500
    assert error_of(flow)["code"] == "gateway_internal_error"


def list_models(models, compiled, key, path="/v1/models"):
    flow = make_flow("GET", "http://127.0.0.1:4000" + path)
    state = governed(flow, compiled, key=key, endpoint="models")
    models.request(flow)
    return flow, state


def test_models_lists_only_allowed(models, compiled):
    flow, state = list_models(models, compiled, "alice")
    assert flow.response.status_code == 200
    payload = json.loads(flow.response.content)
    assert payload["object"] == "list"
    ids = sorted(model["id"] for model in payload["data"])
    assert ids == ["gpt-5.4-mini", "gpt-5.5", "mock"]
    owners = {model["id"]: model["owned_by"] for model in payload["data"]}
    assert owners == {"gpt-5.5": "openai", "gpt-5.4-mini": "openai", "mock": "local"}
    assert all(model["object"] == "model" and isinstance(model["created"], int) for model in payload["data"])
    assert state.answered_locally


def test_models_list_for_canonical_pattern_includes_aliases(models, compiled):
    flow, _ = list_models(models, compiled, "dave")
    ids = sorted(model["id"] for model in json.loads(flow.response.content)["data"])
    assert ids == ["mock", "mock-model"]


def test_single_model(models, compiled):
    flow, _ = list_models(models, compiled, "alice", "/v1/models/gpt-5.5")
    assert flow.response.status_code == 200
    payload = json.loads(flow.response.content)
    assert payload["id"] == "gpt-5.5"
    assert payload["object"] == "model"


def test_single_model_not_visible_is_404(models, compiled):
    for path in ("/v1/models/o9-secret", "/v1/models/nope"):
        flow, state = list_models(models, compiled, "alice", path)
        assert flow.response.status_code == 404
        error = error_of(flow)
        assert error["code"] == "model_not_found"
        assert "alice" in error["message"]
        assert state.decision == "unknown_model"


def test_models_endpoint_ignores_other_endpoints(models, compiled):
    flow = make_flow(body={"model": "gpt-5.5"})
    governed(flow, compiled, key="alice", endpoint="responses")
    models.request(flow)
    assert flow.response is None


def test_key_usable_until_its_expiry_instant(compiled):
    """The one reading of "usable now" that every door (proxy credentials, the Codex backend, the
    WebSocket upgrade, Admit) asks: usable before `expires_at`, expired from it on."""
    import datetime as dt

    carol = next(key for key in compiled.policy.keys if key.name == "carol")
    expiry = carol.expires_at
    assert expiry is not None
    assert carol.unusable(expiry - dt.timedelta(seconds=1)) is None
    assert carol.unusable(expiry) == (
        "key_expired",
        f"virtual key carol expired at {expiry.isoformat(timespec='minutes')}",
    )
    bob = next(key for key in compiled.policy.keys if key.name == "bob")
    assert bob.unusable(expiry - dt.timedelta(days=1)) == ("key_disabled", "virtual key bob is disabled")
