from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.settings import Settings
from streams.topics import TopicNames


def test_environment_configures_everything(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRISTMILL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GRISTMILL_HTTP_PORT", "7001")
    monkeypatch.setenv("GRISTMILL_BROKER_PORT", "19092")
    monkeypatch.setenv("GRISTMILL_NAMESPACE", "team-a")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    monkeypatch.setenv("QDRANT_URL", "http://qdrant:6333")
    settings = Settings()
    assert (settings.data_dir, settings.http_port, settings.broker_port) == (tmp_path, 7001, 19092)
    assert settings.kafka_bootstrap_servers == "kafka:9092" and settings.qdrant_url == "http://qdrant:6333"
    assert settings.models_dir == tmp_path / "models" and settings.app_id == "gristmill-team-a"


def test_defaults_are_local_and_unprefixed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "QDRANT_URL", "GRISTMILL_NAMESPACE", "GRISTMILL_HTTP_HOST"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.http_host == "127.0.0.1" and settings.kafka_bootstrap_servers is None
    assert TopicNames(settings.namespace).documents == "documents"
    assert TopicNames("ns").all()[0] == "ns.documents"


def test_blank_urls_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDRANT_URL", "  ")
    assert Settings().qdrant_url is None


@pytest.mark.parametrize(("name", "value"), [
    ("GRISTMILL_NAMESPACE", "has space"),
    ("GRISTMILL_HTTP_PORT", "70000"),
    ("GRISTMILL_CHUNK_OVERLAP", "500"),
])
def test_invalid_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_unknown_topic_is_an_error() -> None:
    with pytest.raises(KeyError, match="unknown topic"):
        TopicNames()["document"]
