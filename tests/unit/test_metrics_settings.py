"""The metrics section of a party's configuration: loopback unless the endpoint has the party's mutual TLS."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from hpf.coordinator.config import load_coordinator_config
from hpf.federation.errors import ConfigError
from hpf.federation.metrics import MetricsSettings, RequestMetrics, serve_metrics

TLS = {"ca": "pki/ca.pem", "cert": "pki/coordinator.pem", "key": "pki/coordinator.key"}


def _load(tmp_path: Path, **fields: Any) -> Any:
    path = tmp_path / "coordinator.yaml"
    path.write_text(yaml.safe_dump({"catalog": "federation.yaml", **fields}))
    return load_coordinator_config(path)


@pytest.mark.parametrize("listen", ["0.0.0.0:9464", "10.1.2.3:9464", "[::]:9464", "metrics.example.org:9464"])
def test_an_endpoint_off_loopback_without_tls_is_refused_at_load(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, tls=TLS, metrics={"listen": listen})
    assert info.value.code == "CONFIG_METRICS_EXPOSED"
    assert listen in info.value.message and info.value.hint


@pytest.mark.parametrize("listen", ["127.0.0.1:9464", "[::1]:0", "localhost:9464", "127.8.9.10:1"])
def test_a_loopback_endpoint_loads(tmp_path: Path, listen: str) -> None:
    config = _load(tmp_path, insecure=True, metrics={"listen": listen})
    assert config.metrics == MetricsSettings(listen=listen)


def test_with_tls_an_endpoint_may_listen_anywhere_if_the_party_has_certificates(tmp_path: Path) -> None:
    config = _load(tmp_path, tls=TLS, metrics={"listen": "0.0.0.0:9464", "tls": True})
    assert config.metrics is not None and config.metrics.tls and config.metrics.port == 9464
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, insecure=True, metrics={"listen": "0.0.0.0:9464", "tls": True})
    assert info.value.code == "CONFIG_METRICS_TLS_MISSING"


def test_no_section_no_endpoint_and_a_bad_address_is_invalid(tmp_path: Path) -> None:
    assert _load(tmp_path, insecure=True).metrics is None
    assert _load(tmp_path, insecure=True, metrics={}).metrics == MetricsSettings(listen="127.0.0.1:9464")
    for listen in ("127.0.0.1", "127.0.0.1:http", ":9464", "127.0.0.1:70000"):
        with pytest.raises(ConfigError) as info:
            _load(tmp_path, insecure=True, metrics={"listen": listen})
        assert info.value.code == "CONFIG_INVALID" and "metrics.listen" in info.value.message
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, insecure=True, metrics={"listen": "127.0.0.1:0", "port": 1})
    assert info.value.code == "CONFIG_INVALID"


def test_a_model_built_in_code_is_held_to_the_same_rule() -> None:
    settings = MetricsSettings.model_construct(listen="0.0.0.0:0", tls=False)
    with pytest.raises(ConfigError) as info:
        serve_metrics(settings, None, CollectorRegistry(), "test")
    assert info.value.code == "CONFIG_METRICS_EXPOSED"
    with pytest.raises(ConfigError) as info:
        serve_metrics(MetricsSettings(listen="127.0.0.1:0", tls=True), None, CollectorRegistry(), "test")
    assert info.value.code == "CONFIG_METRICS_TLS_MISSING"


def test_each_registry_is_its_own_and_a_stopped_endpoint_is_closed() -> None:
    one, two = CollectorRegistry(), CollectorRegistry()
    RequestMetrics(one).observe("Query", "OK", 0.01)
    RequestMetrics(two).observe("Query", "POLICY_DENIED", 0.2)  # a second party in the same process
    server = serve_metrics(MetricsSettings(listen="127.0.0.1:0"), None, one, "test")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    finally:
        server.stop()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "hpf_requests_total"
    }
    assert samples == {("hpf_requests_total", (("code", "OK"), ("operation", "Query"))): 1.0}
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
    with pytest.raises(ConfigError) as info:  # a port another process holds
        busy = serve_metrics(MetricsSettings(listen="127.0.0.1:0"), None, one, "test")
        try:
            serve_metrics(MetricsSettings(listen=f"127.0.0.1:{busy.port}"), None, one, "test")
        finally:
            busy.stop()
    assert info.value.code == "SERVER_BIND_FAILED"
