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


def test_kafka_security_reaches_librdkafka_and_faust(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import faust

    from streams.topics import faust_credentials, kafka_config

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9093")
    monkeypatch.setenv("GRISTMILL_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("GRISTMILL_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("GRISTMILL_KAFKA_SASL_USERNAME", "svc-gristmill")
    monkeypatch.setenv("GRISTMILL_KAFKA_SASL_PASSWORD", "s3cret-pass")
    settings = Settings()
    config = kafka_config(settings)
    assert config["security.protocol"] == "sasl_ssl" and config["sasl.mechanisms"] == "SCRAM-SHA-512"
    assert (config["sasl.username"], config["sasl.password"]) == ("svc-gristmill", "s3cret-pass")
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials) and credentials.password == "s3cret-pass"
    assert credentials.ssl_context is not None
    assert faust_credentials(Settings(kafka_bootstrap_servers="k:9092", kafka_security_protocol="PLAINTEXT")) is None


def test_secrets_never_show_in_settings_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRISTMILL_KAFKA_SASL_PASSWORD", "s3cret-pass")
    monkeypatch.setenv("GRISTMILL_QDRANT_API_KEY", "qdrant-key-123")
    monkeypatch.setenv("GRISTMILL_ADMIN_TOKEN", "admin-token-456")
    settings = Settings()
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    for secret in ("s3cret-pass", "qdrant-key-123", "admin-token-456"):
        assert secret not in shown
    assert settings.admin_token is not None and settings.admin_token.get_secret_value() == "admin-token-456"
