"""The compose stack validates offline (Debian's docker-compose, no engine) and is wired as documented; its state
lives in named volumes its images' users can write, workers and trainer share theirs in the postgres service, and no
secret has a default.

The checks that can be got wrong quietly are functions returning the problems they find, so each is also run on a
broken copy of the files (it must report it) as well as on the real ones (they must report nothing)."""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
DOCKERFILE_TEXT = (ROOT / "deploy/Dockerfile").read_text()
SECRETS = {"QDRANT_API_KEY": "test-qdrant-key", "GRAFANA_ADMIN_PASSWORD": "test-grafana",
           "GRISTMILL_POSTGRES_PASSWORD": "test-postgres", "GRISTMILL_API_KEYS_DIR": "/run/gristmill-test-keys"}


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`docker-compose -f docker-compose.yml ARGS` in `env` (default: this environment and `SECRETS`)."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: `make test` installs Debian's docker-compose"
    return subprocess.run([binary, "-f", str(ROOT / "docker-compose.yml"), *args], capture_output=True, text=True,
                          env=env if env is not None else {**os.environ, **SECRETS}, cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    result = compose("--profile", "gpu", "--profile", "migrate", "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_validates() -> None:
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_secrets_are_required_not_defaulted(missing: str) -> None:
    env = {**{k: v for k, v in os.environ.items() if k not in SECRETS}, **SECRETS}
    del env[missing]
    result = compose("config", "-q", env=env)
    assert result.returncode != 0 and missing in result.stderr


def test_services_and_wiring(config: dict[str, Any]) -> None:
    services = config["services"]
    assert {"kafka", "qdrant", "postgres", "worker", "worker-gpu", "trainer", "prometheus", "grafana",
            "model-export", "state-migrate"} <= set(services)
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
    for name in ("worker", "trainer"):  # the registry is shared on a volume; the state in PostgreSQL (below)
        targets = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in services[name]["volumes"]}
        assert "/models" in targets and "/shared" not in targets
    registry = services["schema-registry"]
    assert registry["environment"]["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"] == "PLAINTEXT://kafka:9092"
    assert worker["environment"]["GRISTMILL_SCHEMA_REGISTRY_URL"] == "http://schema-registry:8081"
    for name in ("worker", "worker-gpu"):  # the sources files, read-only
        (sources,) = [v for v in services[name]["volumes"] if isinstance(v, dict)
                      and v["target"] == "/etc/gristmill/sources"]
        assert sources["type"] == "bind" and sources["read_only"] and sources["source"].endswith("deploy/sources")
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


def test_the_worker_healthcheck_asks_the_open_health_route(config: dict[str, Any]) -> None:
    """`/health` answers its status without a key, so the healthcheck needs none (and sends none)."""
    check = " ".join(config["services"]["worker"]["healthcheck"]["test"])
    assert "http://127.0.0.1:6066/health" in check and "Authorization" not in check


def test_workers_and_trainer_read_the_api_keys_from_a_read_only_mount(config: dict[str, Any]) -> None:
    for name in ("worker", "worker-gpu", "trainer"):
        service = config["services"][name]
        keys_file = PurePosixPath(service["environment"]["GRISTMILL_API_KEYS_FILE"])
        (mount,) = [m for m in mounts(service) if keys_file.is_relative_to(m.target)]
        assert (mount.kind, mount.source, mount.read_only) == ("bind", SECRETS["GRISTMILL_API_KEYS_DIR"], True), name


# -- no secret has a default ---------------------------------------------------------------------------------------
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|KEY", re.IGNORECASE)
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>[^}]*)\}")
#: The password of a URL's `user:password@` (an interpolation's `:?` message may hold spaces).
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^\s:/@]+:(?P<password>\$\{[^}]*\}|[^\s@/]+)@", re.IGNORECASE)


def strings(node: Any) -> Iterator[str]:
    """Every string of a parsed YAML document (keys and values; comments are not in it)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def secret_default_problems(text: str) -> list[str]:
    """Secrets given a default: a `${NAME...}` of a secret-looking NAME without `:?` (required), a secret-looking
    environment variable given a value that is not such a required interpolation (a literal, `${X:-...}`), or a URL
    whose `user:password@` password is not one (`GRISTMILL_DATABASE_URL`, whatever its name). A secret that is
    optional is passed through by name (no value), which has no default. `*_FILE`/`*_DIR` name paths."""
    problems = [f"${{{m['name']}{m['rest']}}} has a default: a secret must be required (`:?`) or passed through"
                for m in INTERPOLATION.finditer(text)
                if SECRET_NAME.search(m["name"]) and not m["rest"].startswith(":?")]
    raw = yaml.safe_load(text)
    environments = [("x-gristmill-env", raw.get("x-gristmill-env") or {})] + [
        (name, service.get("environment") or {}) for name, service in raw["services"].items()]
    for where, environment in environments:
        for key, value in environment.items():
            if not SECRET_NAME.search(key) or key.endswith(("_FILE", "_DIR")) or value is None:
                continue
            required = INTERPOLATION.fullmatch(str(value))
            if required is None or not required["rest"].startswith(":?"):
                problems.append(f"{where}: {key} is given {value!r}: a secret must be a required `${{...:?...}}`")
    for value in dict.fromkeys(strings(raw)):  # once each (anchors repeat a value)
        for url in URL_PASSWORD.finditer(value):
            required = INTERPOLATION.fullmatch(url["password"])
            if required is None or not required["rest"].startswith(":?"):
                problems.append(f"{url[0]!r} carries a password that is not a required `${{...:?...}}`")
    return problems


def test_no_secret_has_a_default() -> None:
    assert secret_default_problems(COMPOSE_TEXT) == []


POSTGRES_SECRET = "${GRISTMILL_POSTGRES_PASSWORD:?set GRISTMILL_POSTGRES_PASSWORD}"


@pytest.mark.parametrize(("secret", "defaulted"), [
    ("${QDRANT_API_KEY:?set QDRANT_API_KEY}", "${QDRANT_API_KEY:-changeme}"),
    ("${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD}", "${GRAFANA_ADMIN_PASSWORD-admin}"),
    ("${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD}", "admin"),
    ("GRISTMILL_ADMIN_TOKEN:  #", "GRISTMILL_ADMIN_TOKEN: ${GRISTMILL_ADMIN_TOKEN:-} #"),
    ("GRISTMILL_KAFKA_SASL_PASSWORD:  #", "GRISTMILL_KAFKA_SASL_PASSWORD: hunter2 #"),
    ("POSTGRES_PASSWORD: ${GRISTMILL_POSTGRES_PASSWORD:?", "POSTGRES_PASSWORD: ${GRISTMILL_POSTGRES_PASSWORD:-"),
    (f"POSTGRES_PASSWORD: {POSTGRES_SECRET}", "POSTGRES_PASSWORD: postgres"),
    (f"gristmill:{POSTGRES_SECRET}@", "gristmill:postgres@"),  # in GRISTMILL_DATABASE_URL
    (f"gristmill:{POSTGRES_SECRET}@", "gristmill:${PGPASS}@"),  # optional, and not named like a secret
], ids=["interpolation-default", "unset-default", "literal", "empty-default", "literal-pass-through",
        "postgres-default", "postgres-literal", "url-literal-password", "url-optional-password"])
def test_the_secret_check_finds_a_default(secret: str, defaulted: str) -> None:
    assert secret in COMPOSE_TEXT
    assert secret_default_problems(COMPOSE_TEXT.replace(secret, defaulted, 1))


# -- workers and the trainer keep their state in the postgres service --------------------------------------------------
DATABASE_URL = f"postgresql://gristmill:{SECRETS['GRISTMILL_POSTGRES_PASSWORD']}@postgres:5432/gristmill"


def gristmill_processes(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services running `gristmill up`: each opens the query log, feedback state and evaluation store."""
    return {name: service for name, service in config["services"].items()
            if "build" in service and service.get("command") == ["up"]}


def waits_for_healthy_postgres(service: dict[str, Any]) -> bool:
    depends_on = service.get("depends_on") or {}
    return isinstance(depends_on, dict) and (depends_on.get("postgres") or {}).get("condition") == "service_healthy"


def database_problems(config: dict[str, Any]) -> list[str]:
    """The postgres service answers a pg_isready healthcheck; every gristmill process has GRISTMILL_DATABASE_URL
    naming it with its user, password and database, waits for it to be healthy, and mounts no `shared` volume (the
    SQLite files PostgreSQL replaces); state-migrate moves that volume's files into the same database and namespace.
    (Its data in a named volume postgres can write: THIRD_PARTY_STATE.)"""
    services = config["services"]
    postgres = services.get("postgres")
    if postgres is None:
        return ["no postgres service: the workers' state would be SQLite files on one host"]
    problems = []
    if "pg_isready" not in " ".join((postgres.get("healthcheck") or {}).get("test") or []):
        problems.append("postgres: no pg_isready healthcheck: `service_healthy` would not mean it takes connections")
    env = postgres.get("environment") or {}
    user = env.get("POSTGRES_USER", "postgres")
    expected = (user, env.get("POSTGRES_PASSWORD"), env.get("POSTGRES_DB", user))

    def url_problems(where: str, url: str | None) -> list[str]:
        if not url:
            return [f"{where}: no GRISTMILL_DATABASE_URL: its state would be SQLite files of its own"]
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres") or (parts.hostname, parts.port or 5432) != ("postgres", 5432):
            return [f"{where}: {url} is not the postgres service (postgres:5432)"]
        found = (parts.username, unquote(parts.password or ""), parts.path.lstrip("/"))
        return [] if found == expected else [f"{where}: {url} does not carry the postgres service's user, "
                                             f"password and database"]

    processes = gristmill_processes(config)
    if not processes:
        problems.append("no service runs `gristmill up`")
    for name, service in processes.items():
        problems += url_problems(name, (service.get("environment") or {}).get("GRISTMILL_DATABASE_URL"))
        if not waits_for_healthy_postgres(service):
            problems.append(f"{name}: does not wait for postgres to be healthy (condition: service_healthy)")
        if any(m.kind == "volume" and m.source == "shared" for m in mounts(service)):
            problems.append(f"{name}: mounts `shared`, whose SQLite state PostgreSQL replaces")
    migrate = services.get("state-migrate")
    if migrate is None:
        return [*problems, "no state-migrate service: a stack upgraded from SQLite cannot move its state over"]
    command, env = migrate.get("command") or [], migrate.get("environment") or {}
    flags = dict(zip(command[2::2], command[3::2], strict=False)) if command[:2] == ["state", "migrate"] else {}
    problems += url_problems("state-migrate --to", flags.get("--to", env.get("GRISTMILL_DATABASE_URL")))
    # --from defaults to GRISTMILL_SHARED_DIR, else the data directory (a relative one: never a volume here)
    source = holding(migrate, flags.get("--from", env.get("GRISTMILL_SHARED_DIR", env.get("GRISTMILL_DATA_DIR", "-"))))
    if source is None or (source.kind, source.source) != ("volume", "shared"):
        problems.append("state-migrate: --from is not in the `shared` volume")
    if not waits_for_healthy_postgres(migrate):
        problems.append("state-migrate: does not wait for postgres to be healthy (condition: service_healthy)")
    namespaces = {(s.get("environment") or {}).get("GRISTMILL_NAMESPACE") for s in [migrate, *processes.values()]}
    if len(namespaces) != 1:
        problems.append(f"state-migrate: not the workers' GRISTMILL_NAMESPACE (it names the schemas): {namespaces}")
    return problems


def test_workers_and_trainer_share_their_state_in_the_postgres_service(config: dict[str, Any]) -> None:
    assert set(gristmill_processes(config)) == {"worker", "worker-gpu", "trainer"}
    assert database_problems(config) == []
    for service in gristmill_processes(config).values():
        assert service["environment"]["GRISTMILL_DATABASE_URL"] == DATABASE_URL
    postgres = config["services"]["postgres"]
    assert postgres["image"].split(":")[0] == "postgres" and postgres["environment"]["POSTGRES_PASSWORD"] == \
        SECRETS["GRISTMILL_POSTGRES_PASSWORD"]
    assert holding(postgres, postgres["environment"]["PGDATA"]) == Mount("volume", "postgres-data",
                                                                          "/var/lib/postgresql/data")
    assert "postgres-data" in config["volumes"] and "shared" in config["volumes"]
    assert config["services"]["state-migrate"]["profiles"] == ["migrate"]  # never started by a plain `up`


@pytest.mark.parametrize("change", [
    lambda s: s.pop("postgres"),
    lambda s: s["postgres"].pop("healthcheck"),
    lambda s: s["worker"]["environment"].update(
        GRISTMILL_DATABASE_URL=DATABASE_URL.replace("@postgres:", "@localhost:")),
    lambda s: s["trainer"]["environment"].pop("GRISTMILL_DATABASE_URL"),
    lambda s: s["postgres"]["environment"].update(POSTGRES_PASSWORD="another"),  # the URLs' password is refused
    lambda s: s["worker-gpu"]["environment"].update(GRISTMILL_DATABASE_URL=DATABASE_URL + "-other"),  # another db
    lambda s: s["trainer"]["depends_on"].pop("postgres"),
    lambda s: s["worker"]["depends_on"].update(postgres={"condition": "service_started"}),
    lambda s: s["worker"].update(volumes=[*s["worker"]["volumes"], "shared:/shared:rw"]),
    lambda s: s["state-migrate"]["environment"].update(GRISTMILL_DATABASE_URL=DATABASE_URL + "-other"),
    lambda s: s["state-migrate"].update(command=["state", "migrate", "--to", DATABASE_URL + "-other", "--from",
                                                 "/shared"]),
    lambda s: s["state-migrate"].update(command=["state", "migrate", "--from", "/tmp"]),
    lambda s: (s["state-migrate"].update(command=["state", "migrate"]),  # the default: the data directory
               s["state-migrate"]["environment"].pop("GRISTMILL_SHARED_DIR")),
    lambda s: s["state-migrate"]["environment"].update(GRISTMILL_NAMESPACE="other"),
    lambda s: s["state-migrate"].pop("depends_on"),
], ids=["no-postgres", "no-healthcheck", "url-elsewhere", "trainer-no-url", "password-mismatch", "other-database",
        "trainer-no-depends", "worker-started-not-healthy", "worker-mounts-shared", "migrate-url-elsewhere",
        "migrate-to-elsewhere", "migrate-from-elsewhere", "migrate-from-data-dir", "migrate-other-namespace",
        "migrate-no-depends"])
def test_the_database_check_finds_state_outside_the_postgres_service(
        config: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> None:
    assert database_problems(broken(config, change))


# -- the postgres server: byte-order text, partitioned sessions ended -------------------------------------------------
#: Within this many seconds a session whose peer is cut off (a worker behind a network partition, and the advisory
#: lock it may hold) must be ended by the server.
PARTITIONED_SESSION_S = 60


def server_settings(service: dict[str, Any]) -> dict[str, str]:
    """The `-c name=value` (and `--name=value`) settings of a postgres service's command."""
    command = [str(arg) for arg in service.get("command") or []]
    settings = [value for flag, value in itertools.pairwise(command) if flag == "-c"]
    settings += [arg[2:] for arg in command if arg.startswith("--") and "=" in arg]
    return dict(setting.split("=", 1) for setting in settings if "=" in setting)


def postgres_server_problems(config: dict[str, Any]) -> list[str]:
    """The postgres service initialises its cluster with the C.UTF-8 locale and UTF8 (text ordered by code point, as
    on SQLite and in the tests, not by the image's en_US.utf8), runs `postgres` (the entrypoint initialises PGDATA
    only for that command), and ends a session whose client stopped answering within PARTITIONED_SESSION_S: TCP
    keepalives (idle + interval x count), and a session left idle inside a transaction."""
    postgres = config["services"].get("postgres")
    if postgres is None:
        return ["no postgres service"]
    problems = []
    initdb = shlex.split(str((postgres.get("environment") or {}).get("POSTGRES_INITDB_ARGS") or ""))
    if "--locale=C.UTF-8" not in initdb:
        problems.append(f"postgres: POSTGRES_INITDB_ARGS {initdb} lacks --locale=C.UTF-8: the image's en_US.utf8 "
                        "collation orders text unlike SQLite")
    if "--encoding=UTF8" not in initdb:
        problems.append(f"postgres: POSTGRES_INITDB_ARGS {initdb} lacks --encoding=UTF8")
    command = [str(arg) for arg in postgres.get("command") or []]
    if not command or (command[0] != "postgres" and not command[0].startswith("-")):  # flags: `postgres` is implied
        problems.append(f"postgres: command {command} is not the server's: the entrypoint would neither initialise "
                        "PGDATA nor run the server")
    settings = server_settings(postgres)

    def seconds(name: str, unit_s: float = 1.0) -> float | None:
        value = settings.get(name)
        return float(value) * unit_s if value is not None and value.isdigit() and int(value) > 0 else None

    idle_s, interval_s, count = (seconds(f"tcp_keepalives_{name}") for name in ("idle", "interval", "count"))
    if idle_s is None or interval_s is None or count is None:
        problems.append(f"postgres: tcp_keepalives_idle/_interval/_count not all set (the kernel's default waits "
                        f"2 h): {settings}")
    elif idle_s + interval_s * count > PARTITIONED_SESSION_S:
        problems.append(f"postgres: keepalives end a dead peer's session only after "
                        f"{idle_s + interval_s * count:.0f} s")
    idle = seconds("idle_in_transaction_session_timeout", 0.001)
    if idle is None or idle > PARTITIONED_SESSION_S:
        problems.append(f"postgres: idle_in_transaction_session_timeout is "
                        f"{settings.get('idle_in_transaction_session_timeout')} (ms): a session idle inside a "
                        "transaction keeps its locks")
    user_timeout = seconds("tcp_user_timeout", 0.001)
    if user_timeout is None or user_timeout > PARTITIONED_SESSION_S:
        problems.append(f"postgres: tcp_user_timeout is {settings.get('tcp_user_timeout')} (ms): a connection "
                        "with unacknowledged data outlives a partition")
    return problems


def test_the_postgres_server_orders_text_by_code_point_and_ends_partitioned_sessions(config: dict[str, Any]) -> None:
    assert postgres_server_problems(config) == []
    postgres = config["services"]["postgres"]
    assert postgres["environment"]["POSTGRES_INITDB_ARGS"] == "--locale=C.UTF-8 --encoding=UTF8"
    assert server_settings(postgres) == {
        "tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3",
        "tcp_user_timeout": "30000", "idle_in_transaction_session_timeout": "60000"}


def without_setting(service: dict[str, Any], name: str) -> None:
    command = service["command"]
    at = next(i for i, arg in enumerate(command) if str(arg).startswith(f"{name}="))
    del command[at - 1:at + 1]


@pytest.mark.parametrize("change", [
    lambda s: s["postgres"]["environment"].pop("POSTGRES_INITDB_ARGS"),
    lambda s: s["postgres"]["environment"].update(POSTGRES_INITDB_ARGS="--locale=en_US.utf8 --encoding=UTF8"),
    lambda s: s["postgres"]["environment"].update(POSTGRES_INITDB_ARGS="--locale=C.UTF-8"),
    lambda s: s["postgres"].pop("command"),
    lambda s: s["postgres"].update(command=["bash", "-c", "postgres " + " ".join(s["postgres"]["command"][1:])]),
    lambda s: without_setting(s["postgres"], "tcp_keepalives_idle"),
    lambda s: s["postgres"]["command"].__setitem__(s["postgres"]["command"].index("tcp_keepalives_count=3"),
                                                    "tcp_keepalives_count=20"),
    lambda s: without_setting(s["postgres"], "idle_in_transaction_session_timeout"),
    lambda s: s["postgres"]["command"].__setitem__(
        s["postgres"]["command"].index("idle_in_transaction_session_timeout=60000"),
        "idle_in_transaction_session_timeout=0"),  # 0 disables it
    lambda s: without_setting(s["postgres"], "tcp_user_timeout"),
], ids=["no-initdb-args", "initdb-en-us", "initdb-no-encoding", "no-command", "command-not-postgres",
        "no-keepalive-idle", "keepalive-too-long", "no-idle-in-transaction-timeout",
        "idle-in-transaction-timeout-off", "no-user-timeout"])
def test_the_postgres_server_check_finds_a_setting_missing(config: dict[str, Any],
                                                           change: Callable[[dict[str, Any]], None]) -> None:
    assert postgres_server_problems(broken(config, change))


# -- state lives in named volumes its image's user can write ---------------------------------------------------------
@dataclass(frozen=True)
class Mount:
    kind: str  # volume (named), bind or tmpfs
    source: str | None
    target: str
    read_only: bool = False
    options: str = ""  # tmpfs mount options


def mounts(service: dict[str, Any]) -> list[Mount]:
    """A service's mounts, from `docker-compose config`'s normalized form."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found.append(Mount(volume["type"], volume.get("source"), volume["target"], bool(volume.get("read_only"))))
        else:
            source, target, *mode = volume.split(":")
            kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
            found.append(Mount(kind, source, target, mode == ["ro"]))
    tmpfs = service.get("tmpfs", [])
    for entry in [tmpfs] if isinstance(tmpfs, str) else tmpfs:
        target, _, options = entry.partition(":")
        found.append(Mount("tmpfs", None, target, options=options))
    return found


def holding(service: dict[str, Any], path: str) -> Mount | None:
    """The mount `path` lies in (the deepest one), if any."""
    inside = [m for m in mounts(service) if PurePosixPath(path).is_relative_to(m.target)]
    return max(inside, key=lambda m: len(PurePosixPath(m.target).parts), default=None)


def command_flag(service: dict[str, Any], flag: str, default: str) -> str:
    return next((arg.split("=", 1)[1] for arg in service.get("command", []) if arg.startswith(f"{flag}=")), default)


@dataclass(frozen=True)
class ImageState:
    """Who an image runs as, a directory of the image that user owns (a fresh named volume mounted there starts
    with that owner and mode: Docker copies them into an empty volume), and where the service's state goes."""

    user: str
    owned: str
    state: Callable[[dict[str, Any]], list[str]]


#: Read from each image's Dockerfile (apache/kafka docker/jvm/Dockerfile; qdrant Dockerfile, USER_ID=0 unless the
#: -unprivileged tag; prometheus Dockerfile; grafana Dockerfile; docker-library/postgres 16/*/Dockerfile, which makes
#: /var/lib/postgresql/data owned by postgres, uid 999, as a VOLUME, and whose entrypoint steps down from root to
#: postgres after making PGDATA). Root writes any volume; the others need the mount at the directory they own, and
#: the state inside it.
THIRD_PARTY_STATE: dict[str, ImageState] = {
    "apache/kafka": ImageState("appuser (uid 1000)", "/var/lib/kafka/data",
                               lambda s: s["environment"].get("KAFKA_LOG_DIRS", "/tmp/kraft-combined-logs").split(",")),
    "qdrant/qdrant": ImageState("root (uid 0)", "/qdrant/storage",
                                lambda s: [s["environment"].get("QDRANT__STORAGE__STORAGE_PATH", "/qdrant/storage")]),
    "prom/prometheus": ImageState("nobody (uid 65534)", "/prometheus",
                                  lambda s: [command_flag(s, "--storage.tsdb.path", "/prometheus/data")]),
    "grafana/grafana": ImageState("grafana (uid 472)", "/var/lib/grafana",
                                  lambda s: [s.get("environment", {}).get("GF_PATHS_DATA", "/var/lib/grafana")]),
    "postgres": ImageState("postgres (uid 999)", "/var/lib/postgresql/data",
                           lambda s: [s.get("environment", {}).get("PGDATA", "/var/lib/postgresql/data")]),
    # schemas are kept in Kafka's _schemas topic (so in kafka-data): nothing of its own
    "confluentinc/cp-schema-registry": ImageState("appuser (uid 1000)", "/", lambda s: []),
}


def third_party_state_problems(config: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in config["services"].items():
        if "image" not in service:
            continue
        image = THIRD_PARTY_STATE.get(service["image"].split(":")[0])
        if image is None:
            problems.append(f"{name}: {service['image']} is not in THIRD_PARTY_STATE (who runs it, where its state is)")
            continue
        if "user" in service:
            problems.append(f"{name}: `user:` overrides {image.user}, whom the volume ownership is reasoned for")
        for path in image.state(service):
            mount = holding(service, path)
            if mount is None or mount.kind != "volume":
                problems.append(f"{name}: its state {path} is not in a named volume: lost with the container")
            elif not image.user.startswith("root") and mount.target != image.owned:
                problems.append(f"{name}: the volume holding {path} is mounted at {mount.target}, not at {image.owned} "
                                f"(owned by {image.user}): a fresh one is root's and {image.user} cannot write it")
    return problems


#: The state of each gristmill service: where a setting points, and the mount it must be. Workers scale, so their
#: data dir (one process's run file) is a tmpfs per replica: a shared volume would hand a replica another's run file.
#: The query log, feedback state and evaluation store are in PostgreSQL (`database_problems`); `shared` holds the
#: SQLite files of a stack from before, which only state-migrate reads.
GRISTMILL_STATE: dict[str, dict[str, tuple[str, str]]] = {
    "worker": {"/models": ("GRISTMILL_REGISTRY_DIR", "volume"), "/data": ("GRISTMILL_DATA_DIR", "tmpfs")},
    "worker-gpu": {"/models": ("GRISTMILL_REGISTRY_DIR", "volume"), "/data": ("GRISTMILL_DATA_DIR", "tmpfs")},
    "trainer": {"/models": ("GRISTMILL_REGISTRY_DIR", "volume"), "/data": ("GRISTMILL_DATA_DIR", "volume")},
    "model-export": {"/models": ("GRISTMILL_REGISTRY_DIR", "volume")},
    "state-migrate": {"/shared": ("GRISTMILL_SHARED_DIR", "volume")},
}


def gristmill_state_problems(config: dict[str, Any], dockerfile: str) -> list[str]:
    problems = []
    stages = parse_dockerfile(dockerfile)
    built = {name: service for name, service in config["services"].items() if "build" in service}
    problems += [f"{name}: a gristmill service missing from GRISTMILL_STATE" for name in built.keys() - GRISTMILL_STATE]
    for name, expected in GRISTMILL_STATE.items():
        service = built.get(name)
        if service is None:
            problems.append(f"{name}: no such gristmill service")
            continue
        image = image_facts(stages, service["build"]["target"])
        for path, (setting, kind) in expected.items():
            if service["environment"].get(setting, image.env.get(setting)) != path:
                problems.append(f"{name}: {setting} does not point at {path}")
            mount = next((m for m in mounts(service) if m.target == path), None)
            if mount is None or mount.kind != kind:
                problems.append(f"{name}: {path} is {mount.kind if mount else 'not mounted'}, not a {kind}")
            elif kind == "tmpfs" and f"uid={image.uid}" not in mount.options.split(","):
                problems.append(f"{name}: the tmpfs at {path} is not owned by the image's user (uid {image.uid})")
    return problems


def test_every_stateful_service_keeps_its_state_in_a_volume_its_user_can_write(config: dict[str, Any]) -> None:
    assert third_party_state_problems(config) == []
    assert gristmill_state_problems(config, DOCKERFILE_TEXT) == []


def broken(config: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    copied = copy.deepcopy(config)
    change(copied["services"])
    return copied


@pytest.mark.parametrize("change", [
    lambda s: s["kafka"]["environment"].pop("KAFKA_LOG_DIRS"),  # the image's /tmp default
    lambda s: s["kafka"]["environment"].update(KAFKA_LOG_DIRS="/var/lib/kafka/logs"),  # beside the volume
    lambda s: (s["kafka"].update(volumes=["kafka-data:/srv/kafka:rw"]),  # not in the image: a fresh volume is root's
               s["kafka"]["environment"].update(KAFKA_LOG_DIRS="/srv/kafka/logs")),
    lambda s: s["qdrant"].update(volumes=[]),
    lambda s: s["prometheus"].update(command=["--storage.tsdb.path=/tmp/tsdb"]),
    lambda s: s["grafana"]["environment"].update(GF_PATHS_DATA="/srv/grafana"),
    lambda s: s["grafana"].update(user="0"),
    lambda s: s["postgres"]["environment"].update(PGDATA="/var/lib/postgresql/pgdata"),  # beside the volume
    lambda s: s["postgres"].update(volumes=[]),  # the image's anonymous VOLUME: gone with `down`/`rm -v`
    lambda s: s["postgres"].update(user="999"),  # the entrypoint can no longer chown PGDATA
    lambda s: s.update(redis={"image": "redis:7"}),  # an image nobody reasoned about
], ids=["kafka-default-log-dir", "kafka-log-dir-outside", "kafka-volume-not-in-image", "qdrant-no-volume",
        "prometheus-tsdb-outside", "grafana-data-outside", "grafana-user-override", "postgres-data-outside",
        "postgres-no-volume", "postgres-user-override", "unknown-image"])
def test_the_third_party_state_check_finds_state_outside_a_writable_volume(
        config: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> None:
    assert third_party_state_problems(broken(config, change))


@pytest.mark.parametrize("change", [
    lambda s: s["trainer"].update(volumes=[v for v in s["trainer"]["volumes"] if "models" not in str(v)]),
    lambda s: s["trainer"].update(volumes=[v for v in s["trainer"]["volumes"] if "trainer-data" not in str(v)]),
    lambda s: s["worker"].update(tmpfs=[], volumes=[*s["worker"]["volumes"], "worker-data:/data:rw"]),  # shared
    lambda s: s["worker"].update(tmpfs=["/data:mode=0700"]),  # root's tmpfs
    lambda s: s["state-migrate"].update(volumes=[]),
    lambda s: s["state-migrate"]["environment"].update(GRISTMILL_SHARED_DIR="/data/shared"),
    lambda s: s["model-export"].update(volumes=[]),
], ids=["trainer-models-missing", "trainer-data-missing", "worker-data-shared", "worker-tmpfs-root",
        "migrate-shared-missing", "shared-dir-elsewhere", "model-export-no-models"])
def test_the_gristmill_state_check_finds_state_outside_its_volumes(
        config: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> None:
    assert gristmill_state_problems(broken(config, change), DOCKERFILE_TEXT)


# -- the gristmill images create what is mounted, owned by their user ------------------------------------------------
@dataclass
class Stage:
    parent: str | None  # the stage it is built FROM, when that is a stage of this file
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(text: str) -> dict[str, Stage]:
    """The stages of a Dockerfile by name, each with its instructions (continuation lines joined)."""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            base, *alias = re.split(r"\s+as\s+", arguments.strip(), flags=re.IGNORECASE)
            current = Stage(base if base in stages else None)
            stages[alias[0] if alias else f"stage-{len(stages)}"] = current
        elif current is not None:
            current.instructions.append((instruction.upper(), arguments.strip()))
    return stages


def shell_commands(script: str) -> Iterator[list[str]]:
    """The simple commands of a RUN line (split at `&&`, `||`, `;`)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    command: list[str] = []
    for token in lexer:
        if token in ("&&", "||", ";"):
            yield command
            command = []
        else:
            command.append(token)
    yield command


@dataclass
class ImageFacts:
    """What a build target's stages (its own and those it is built from) do, in order."""

    user: str | None = None
    uid: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def image_facts(stages: dict[str, Stage], target: str, needed: frozenset[str] = frozenset()) -> ImageFacts:
    """Follow `target`'s stages from the first: users created, directories made and chowned, VOLUMEs, ENV, USER.
    `problems`: a path of `needed` the image does not create owned by its final user before it is a VOLUME."""
    chain: list[Stage] = []
    name: str | None = target
    while name is not None:
        chain.insert(0, stages[name])
        name = stages[name].parent
    facts, uids, made, owner = ImageFacts(), {}, set(), {}
    volumes: list[str] = []
    for instruction, arguments in (i for stage in chain for i in stage.instructions):
        if instruction == "RUN":
            for argv in shell_commands(arguments):
                plain = [a for a in argv[1:] if not a.startswith("-")]
                if argv[:1] == ["useradd"] and "--uid" in argv:
                    uids[plain[-1]] = int(argv[argv.index("--uid") + 1])
                elif argv[:1] == ["mkdir"]:
                    made.update(plain)
                elif argv[:1] == ["chown"]:
                    owner.update(dict.fromkeys(plain[1:], plain[0].split(":")[0]))
        elif instruction == "ENV":
            facts.env.update(pair.split("=", 1) for pair in shlex.split(arguments))
        elif instruction == "USER":
            facts.user = arguments
        elif instruction == "VOLUME":
            declared = json.loads(arguments) if arguments.startswith("[") else arguments.split()
            volumes += declared
            facts.problems += [f"{target}: VOLUME {path} before it is made and chowned (later changes are lost)"
                               for path in declared if path in needed and (path not in made or path not in owner)]
    facts.uid = uids.get(facts.user or "")
    if facts.user is None or facts.uid in (None, 0):
        facts.problems.append(f"{target}: runs as {facts.user or 'root'}, not as a user it creates with a uid")
    for path in sorted(needed):
        if path not in made or owner.get(path) != facts.user:
            facts.problems.append(f"{target}: {path} is not made and owned by {facts.user} in the image: a fresh "
                                  f"named volume mounted there is root's, and {facts.user} cannot write it")
    return facts


def image_problems(config: dict[str, Any], dockerfile: str) -> list[str]:
    """For every build target a service uses: each path mounted into it (named volumes, tmpfs) is made in the image
    and owned by the user it runs as."""
    stages = parse_dockerfile(dockerfile)
    needed: dict[str, set[str]] = {}
    for service in config["services"].values():
        if "build" in service:
            needed.setdefault(service["build"]["target"], set()).update(
                m.target for m in mounts(service) if m.kind in ("volume", "tmpfs"))
    return [problem for target, paths in sorted(needed.items())
            for problem in image_facts(stages, target, frozenset(paths)).problems]


def test_the_images_create_every_mounted_path_owned_by_their_user(config: dict[str, Any]) -> None:
    targets = {s["build"]["target"] for s in config["services"].values() if "build" in s}
    assert targets == {"serving", "serving-gpu", "trainer"}
    assert image_problems(config, DOCKERFILE_TEXT) == []
    assert {image_facts(parse_dockerfile(DOCKERFILE_TEXT), t).uid for t in targets} == {10001}  # as README and tmpfs


@pytest.mark.parametrize(("original", "changed"), [
    ("mkdir -p /data /models /shared", "mkdir -p /data /models"),
    ("chown gristmill:gristmill /data /models /shared", "chown gristmill:gristmill /data /shared"),
    ("chown gristmill:gristmill /data /models /shared", "chown root /data /models /shared"),
    ("FROM base AS trainer\n", "FROM python:3.11-slim-bookworm AS trainer\n"),  # the trainer without base's setup
    ("RUN pip install \".[quality]\"\nUSER gristmill\n", "RUN pip install \".[quality]\"\n"),  # serving as root
], ids=["models-not-made", "models-not-chowned", "owned-by-root", "trainer-not-from-base", "serving-as-root"])
def test_the_image_check_finds_a_path_the_user_cannot_write(config: dict[str, Any], original: str,
                                                            changed: str) -> None:
    assert original in DOCKERFILE_TEXT
    assert image_problems(config, DOCKERFILE_TEXT.replace(original, changed, 1))


def test_the_image_check_finds_a_volume_declared_before_it_is_made(config: dict[str, Any]) -> None:
    moved = DOCKERFILE_TEXT.replace("RUN groupadd", 'VOLUME ["/models"]\nRUN groupadd', 1)
    assert moved != DOCKERFILE_TEXT
    assert any("before it is made" in problem for problem in image_problems(config, moved))
