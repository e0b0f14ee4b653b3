"""The compose stack validates offline (Debian's docker-compose, no engine) and is wired as documented."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"QDRANT_API_KEY": "test-qdrant-key", "GRAFANA_ADMIN_PASSWORD": "test-grafana"}


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: `make test` installs Debian's docker-compose"
    return subprocess.run([binary, "-f", str(ROOT / "docker-compose.yml"), *args], capture_output=True, text=True,
                          env={**os.environ, **(env if env is not None else SECRETS)}, cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    result = compose("--profile", "gpu", "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_validates() -> None:
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_secrets_are_required_not_defaulted() -> None:
    result = compose("config", "-q", env={k: v for k, v in os.environ.items() if k not in SECRETS})
    assert result.returncode != 0 and "QDRANT_API_KEY" in result.stderr


def test_services_and_wiring(config: dict[str, Any]) -> None:
    services = config["services"]
    assert {"kafka", "qdrant", "worker", "worker-gpu", "trainer", "prometheus", "grafana",
            "model-export"} <= set(services)
    worker = services["worker"]
    assert worker["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert worker["environment"]["QDRANT_URL"] == "http://qdrant:6333"
    assert worker["environment"]["GRISTMILL_QDRANT_API_KEY"] == "test-qdrant-key"
    assert services["qdrant"]["environment"]["QDRANT__SERVICE__API_KEY"] == "test-qdrant-key"
    assert "healthcheck" in services["kafka"] and "healthcheck" in services["qdrant"]
    assert worker["build"]["target"] == "serving" and services["model-export"]["build"]["target"] == "trainer"
    trainer = services["trainer"]
    assert trainer["build"]["target"] == "trainer" and trainer["environment"]["GRISTMILL_AGENTS"] == "trainer"
    assert "trainer" not in worker["environment"]["GRISTMILL_AGENTS"].split(",")
    assert "rollout" in worker["environment"]["GRISTMILL_AGENTS"].split(",")
    for name in ("worker", "trainer"):  # the registry and the training pairs are shared
        targets = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in services[name]["volumes"]}
        assert {"/models", "/shared"} <= targets
        assert services[name]["environment"]["GRISTMILL_SHARED_DIR"] == "/shared"
    reservation = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert reservation["capabilities"] == ["gpu"] and services["worker-gpu"]["profiles"] == ["gpu"]


def test_every_published_port_is_loopback_only(config: dict[str, Any]) -> None:
    published = [p for service in config["services"].values() for p in service.get("ports", [])]
    assert published
    for port in published:
        host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
        assert host_ip == "127.0.0.1", port


def test_prometheus_scrapes_every_worker_replica_and_the_trainer() -> None:
    scrapes = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())["scrape_configs"]
    for scrape, service in zip(scrapes, ("worker", "trainer"), strict=True):
        assert scrape["metrics_path"] == "/metrics"
        assert scrape["dns_sd_configs"][0]["names"] == [service] and scrape["dns_sd_configs"][0]["port"] == 6066


def test_grafana_provisioning_points_at_the_dashboards(config: dict[str, Any]) -> None:
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/gristmill.yml").read_text())
    volumes = config["services"]["grafana"]["volumes"]
    mounted = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in volumes}
    assert provider["providers"][0]["options"]["path"] in mounted
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/gristmill.json").read_text())
    assert all(t["datasource"]["uid"] == datasource["datasources"][0]["uid"]
               for panel in dashboard["panels"] for t in panel["targets"])
