"""The deployment files in docker/ agree with the code and with each other.

No Docker engine or Kubernetes runs here, so every file is loaded and checked statically: each
environment variable it sets or reads is one the platform, Dagster, PostgreSQL or boto3 reads;
each command parses with the real command-line parsers; module names import; ports, host names
and paths agree across files; the Dockerfile installs the locked environment as a non-root
user; the production dagster.yaml passes Dagster's own config schema. The topology test runs
the compose services for real.
"""

import inspect
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import kubernetes
import pytest
import sqlalchemy
import yaml
from dagster._cli import cli as dagster_cli
from dagster._config import process_config
from dagster._core.instance.ref import InstanceRef
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._daemon.cli import cli as dagster_daemon_cli
from dagster._serdes import ConfigurableClassData, class_from_code_pointer
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict
from dagster_postgres.utils import get_conn_string
from dagster_webserver.cli import cli as dagster_webserver_cli

from lake_platform.cli import _parser
from lake_platform.settings import NUMBER_RULES, LakeSettings
from lake_platform.tables.catalog import catalog_uri

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
NATS_NODES = ("nats-1", "nats-2", "nats-3")
OUR_SERVICES = ("init", "code-server", "webserver", "daemon", "ingest", "simulator")
LAKE_CODE_SERVICES = ("init", "code-server", "webserver", "daemon")
"""Services that run (or load) the lake's code, which reads and writes the Iceberg catalog."""
CATALOG_DATABASE = "iceberg"
CODE_LOCATION_MODULE = "lake_platform.definitions"
CODE_SERVER_PORT = 4000
WEBSERVER_PORT = 3000
METRICS_PORT = 9100
S3_PORT = 8333
NATS_CLIENT_PORT = 4222
NATS_MONITOR_PORT = 8222
NATS_CLUSTER_PORT = 6222
# Variables read by software other than ours, as the deployment brief documents them.
BOTO3_CREDENTIALS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
POSTGRES_IMAGE_VARS = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
DAGSTER_INSTANCE_VARS = {
    "DAGSTER_POSTGRES_HOST",
    "DAGSTER_POSTGRES_PORT",
    "DAGSTER_POSTGRES_USER",
    "DAGSTER_POSTGRES_PASSWORD",
    "DAGSTER_POSTGRES_DB",
    "DAGSTER_COMPUTE_LOG_BUCKET",
    "DAGSTER_COMPUTE_LOG_PREFIX",
}
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-[^}]*)?\}")
SECRET_LITERAL = re.compile(r"--from-literal=([A-Z][A-Z0-9_]*)=")


def _yaml(name: str) -> Any:
    return yaml.safe_load((DOCKER / name).read_text())


def _env_file(path: Path) -> dict[str, str]:
    """`KEY=value` lines of a compose env file; comments and blank lines skipped."""
    lines = (line.strip() for line in path.read_text().splitlines())
    pairs = (line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return dict(pairs)


def _dagster_env_refs(node: object) -> Iterator[str]:
    """Names in Dagster's `{env: NAME}` config sources, at any depth."""
    if isinstance(node, Mapping):
        if set(node) == {"env"}:
            yield node["env"]
            return
        for value in node.values():
            yield from _dagster_env_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _dagster_env_refs(value)


def _settings_env_names() -> set[str]:
    """The variables `LakeSettings.from_env` reads (docs/contract.md §5): those it names, and
    the numeric ones of its range rules."""
    named = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', inspect.getsource(LakeSettings.from_env)))
    return named | {rule.variable for rule in NUMBER_RULES.values()}


def _contract_env_names() -> set[str]:
    text = (REPO / "docs" / "contract.md").read_text()
    section = text.split("## 5.", 1)[1].split("\n## ", 1)[0]
    rows = (line.split("|")[1] for line in section.splitlines() if line.startswith("| `"))
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row)}


def _dockerfile_copies() -> dict[str, Path]:
    """Image path -> repository file of the runtime stage's `COPY <src> <dest>` lines."""
    copies = re.findall(r"^COPY (?!--from)(\S+) (\S+)$", _dockerfile(), flags=re.MULTILINE)
    return {dest: REPO / src for src, dest in copies if not dest.endswith("/")}


def _dockerfile() -> str:
    return (DOCKER / "Dockerfile").read_text()


def _runtime_stage() -> str:
    return re.split(r"^FROM ", _dockerfile(), flags=re.MULTILINE)[-1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _yaml("compose.yaml")


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return _env_file(DOCKER / ".env.example")


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    documents = list(yaml.safe_load_all((DOCKER / "k8s" / "ingest.yaml").read_text()))
    return {doc["kind"]: doc for doc in documents}


@pytest.fixture(scope="module")
def helm() -> dict[str, Any]:
    return _yaml("helm/values.yaml")


def _service_env(compose: dict[str, Any], name: str) -> dict[str, str]:
    return {key: str(value) for key, value in compose["services"][name]["environment"].items()}


def _interpolated(value: str, env: Mapping[str, str]) -> str:
    return INTERPOLATION.sub(lambda match: env[match.group(1)], value)


def _k8s_container(k8s: dict[str, dict[str, Any]], kind: str) -> dict[str, Any]:
    (container,) = k8s[kind]["spec"]["template"]["spec"]["containers"]
    return container


def _k8s_secret_keys() -> set[str]:
    """The keys of `lake-platform-secrets`, as the `kubectl create secret` line documents."""
    return set(SECRET_LITERAL.findall((DOCKER / "k8s" / "ingest.yaml").read_text()))


# --- compose: topology --------------------------------------------------------------------


def test_compose_declares_the_contract_services(compose):
    services = compose["services"]
    assert set(services) == {*NATS_NODES, "seaweedfs", "postgres", *OUR_SERVICES}
    for node in NATS_NODES:
        assert services[node]["image"].startswith("nats:")
        assert services[node]["command"] == ["-c", f"/etc/nats/{node}.conf"]
    assert services["seaweedfs"]["image"].startswith("chrislusf/seaweedfs:")
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["simulator"]["profiles"] == ["simulator"]
    assert services["ingest"]["deploy"]["replicas"] == 2


def test_compose_health_checks_and_start_order(compose):
    services = compose["services"]
    healthy = {"nats-1", "nats-2", "nats-3", "seaweedfs", "postgres", "code-server"}
    healthy |= {"webserver", "daemon", "ingest"}
    for name in healthy:
        assert services[name]["healthcheck"]["test"], name
    for name in ("code-server", "daemon", "ingest", "simulator"):
        conditions = services[name]["depends_on"]
        assert conditions["init"] == {"condition": "service_completed_successfully"}, name
    init_needs = services["init"]["depends_on"]
    assert init_needs == {
        name: {"condition": "service_healthy"} for name in (*NATS_NODES, "seaweedfs", "postgres")
    }
    assert services["webserver"]["depends_on"]["code-server"] == {"condition": "service_healthy"}
    assert services["daemon"]["depends_on"]["code-server"] == {"condition": "service_healthy"}


def test_compose_keeps_state_in_named_volumes(compose):
    data_mounts = {
        "postgres": "postgres-data:/var/lib/postgresql/data",
        "seaweedfs": "seaweedfs-data:/data",
        **{node: f"{node}-data:/data" for node in NATS_NODES},
    }
    for service, mount in data_mounts.items():
        assert mount in compose["services"][service]["volumes"], service
        assert mount.split(":")[0] in compose["volumes"]


def test_our_services_share_one_environment_from_the_env_file(compose):
    lake_env = compose["x-lake-env"]
    for name in OUR_SERVICES:
        service = compose["services"][name]
        assert service["env_file"] == ".env", name
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}, name
        assert (
            _service_env(compose, name).items()
            >= {key: str(value) for key, value in lake_env.items()}.items()
        ), name
    assert _service_env(compose, "ingest")["LAKE_METRICS_PORT"] == str(METRICS_PORT)


# --- environment variables ----------------------------------------------------------------


def test_every_variable_our_services_get_is_read_by_something(compose):
    settings_names = _settings_env_names()
    instance_refs = set(_dagster_env_refs(_yaml("dagster.yaml")))
    for name in OUR_SERVICES:
        for variable in _service_env(compose, name):
            known = variable in settings_names | instance_refs | BOTO3_CREDENTIALS
            assert known, f"{name}: {variable} is read by neither LakeSettings nor dagster.yaml"


def test_platform_variables_are_the_contract_ones(compose, k8s):
    contract = _contract_env_names()
    settings_names = _settings_env_names()
    configured = set(_service_env(compose, "ingest"))
    configured |= set(k8s["ConfigMap"]["data"])
    configured |= {env["name"] for env in _k8s_container(k8s, "Deployment")["env"]}
    platform = {name for name in configured if not name.startswith(("DAGSTER_", "AWS_"))}
    assert "LAKE_METRICS_PORT" in platform
    assert platform <= contract, platform - contract
    assert platform <= settings_names, f"not read by LakeSettings: {platform - settings_names}"


def _referenced_env_names(compose, k8s, helm) -> dict[str, set[str]]:
    """Every variable name each deployment file sets or reads."""
    compose_text = (DOCKER / "compose.yaml").read_text()
    services = [name for name, spec in compose["services"].items() if "environment" in spec]
    container = _k8s_container(k8s, "Deployment")
    return {
        "compose.yaml": set(INTERPOLATION.findall(compose_text))
        | {key for name in services for key in _service_env(compose, name)},
        "dagster.yaml": set(_dagster_env_refs(_yaml("dagster.yaml"))),
        "helm/values.yaml": set(_dagster_env_refs(helm)),
        "k8s/ingest.yaml": set(k8s["ConfigMap"]["data"])
        | {env["name"] for env in container["env"]}
        | _k8s_secret_keys(),
    }


def test_every_referenced_variable_is_known(compose, k8s, helm, env_example):
    known = _settings_env_names() | _contract_env_names() | set(env_example)
    known |= DAGSTER_INSTANCE_VARS | BOTO3_CREDENTIALS | POSTGRES_IMAGE_VARS
    for path, names in _referenced_env_names(compose, k8s, helm).items():
        assert names <= known, f"{path} uses unknown variables {names - known}"


def test_dagster_instance_variables_are_set_everywhere_it_loads(compose, k8s):
    refs = set(_dagster_env_refs(_yaml("dagster.yaml")))
    assert refs >= {*DAGSTER_INSTANCE_VARS, "S3_ENDPOINT"}
    for name in OUR_SERVICES:
        assert refs <= set(_service_env(compose, name)), name
    k8s_env = set(k8s["ConfigMap"]["data"]) | _k8s_secret_keys()
    assert refs <= k8s_env, refs - k8s_env


def test_compose_interpolates_only_variables_of_the_env_example(compose, env_example):
    text = (DOCKER / "compose.yaml").read_text()
    interpolated = set(INTERPOLATION.findall(text))
    assert interpolated <= set(env_example), interpolated - set(env_example)
    unused = set(env_example) - interpolated - _settings_env_names()
    assert not unused, f".env.example sets variables nothing reads: {unused}"
    assert all("change-me" in env_example[key] for key in env_example if "PASSWORD" in key)
    assert "change-me" in env_example["S3_SECRET_KEY"]


def test_env_example_values_parse_as_platform_settings(env_example):
    settings = LakeSettings.from_env(env_example)
    assert settings.use_s3 and settings.data_root == "s3://lake/market"
    assert settings.nats_stream_replicas == len(NATS_NODES)
    assert settings.nats_servers == tuple(f"nats://{n}:{NATS_CLIENT_PORT}" for n in NATS_NODES)


def test_third_party_service_variables(compose):
    postgres = _service_env(compose, "postgres")
    assert set(postgres) == POSTGRES_IMAGE_VARS
    assert postgres["POSTGRES_PASSWORD"] == "${DAGSTER_POSTGRES_PASSWORD}"
    seaweedfs = compose["services"]["seaweedfs"]
    script = " ".join(seaweedfs["command"])
    for name in _service_env(compose, "seaweedfs"):
        assert f"$${name}" in script, f"seaweedfs sets {name} but its start script ignores it"


def test_helm_and_k8s_variables_and_sources_agree(helm, k8s):
    config_map = k8s["ConfigMap"]["metadata"]["name"]
    secret_keys = _k8s_secret_keys()
    assert secret_keys >= {"S3_ACCESS_KEY", "S3_SECRET_KEY", *BOTO3_CREDENTIALS}
    assert set(_dagster_env_refs(helm)) <= set(k8s["ConfigMap"]["data"])
    for container in (_k8s_container(k8s, "Deployment"), _k8s_container(k8s, "Job")):
        sources = container["envFrom"]
        assert {"configMapRef": {"name": config_map}} in sources
        assert {"secretRef": {"name": "lake-platform-secrets"}} in sources
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    launcher = helm["runLauncher"]["config"]["k8sRunLauncher"]
    for consumer in (deployment, launcher, helm["dagsterWebserver"], helm["dagsterDaemon"]):
        assert consumer["envConfigMaps"] == [{"name": config_map}]
        assert consumer["envSecrets"] == [{"name": "lake-platform-secrets"}]


# --- the Iceberg catalog ------------------------------------------------------------------


def _compose_catalog_uri(compose: dict[str, Any], service: str) -> str:
    return _service_env(compose, service)["LAKE_CATALOG_URI"]


def test_compose_gives_lake_code_the_catalog_on_the_dagster_postgres(compose, env_example):
    uris = {name: _compose_catalog_uri(compose, name) for name in LAKE_CODE_SERVICES}
    (uri,) = set(uris.values())
    # Built from the Dagster database's own variables: one password, never a second copy.
    for variable in ("USER", "PASSWORD", "HOST", "PORT"):
        assert f"${{DAGSTER_POSTGRES_{variable}}}" in uri, variable
    url = sqlalchemy.engine.make_url(_interpolated(uri, env_example))
    postgres = {
        key: _interpolated(v, env_example) for key, v in _service_env(compose, "postgres").items()
    }
    assert url.drivername == "postgresql+psycopg2"
    assert url.host == env_example["DAGSTER_POSTGRES_HOST"]
    assert url.port == int(env_example["DAGSTER_POSTGRES_PORT"])
    assert (url.username, url.password) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
    )
    assert url.database == CATALOG_DATABASE != postgres["POSTGRES_DB"]
    settings = LakeSettings.from_env({**env_example, "LAKE_CATALOG_URI": str(url)})
    assert catalog_uri(settings) == str(url)  # a lake on S3 has its catalog


def test_the_catalog_database_is_made_by_init_before_lake_code_starts(compose):
    """No init script of the postgres image (those run only on an empty volume): `lake-platform
    init` creates `iceberg` when missing (test_init does it on a real PostgreSQL; the topology
    test runs this init service), as the image's superuser (POSTGRES_USER, the URL's user),
    and the lake code starts after init."""
    services = compose["services"]
    assert services["init"]["command"] == ["lake-platform", "init"]
    assert services["init"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert _service_env(compose, "postgres")["POSTGRES_USER"] == "${DAGSTER_POSTGRES_USER}"
    assert "${DAGSTER_POSTGRES_USER}:" in _compose_catalog_uri(compose, "init")
    init_done = {"condition": "service_completed_successfully"}
    assert services["code-server"]["depends_on"]["init"] == init_done
    for name in ("webserver", "daemon"):  # after the code server, itself after init
        assert services[name]["depends_on"]["code-server"] == {"condition": "service_healthy"}


def test_k8s_catalog_uri_is_a_secret_on_the_dagster_database(k8s, helm):
    text = (DOCKER / "k8s" / "ingest.yaml").read_text()
    assert "LAKE_CATALOG_URI" in _k8s_secret_keys()
    assert "LAKE_CATALOG_URI" not in k8s["ConfigMap"]["data"]  # it holds the password
    (uri,) = re.findall(r'--from-literal=LAKE_CATALOG_URI="([^"]+)"', text)
    (password,) = re.findall(r'--from-literal=DAGSTER_POSTGRES_PASSWORD="([^"]+)"', text)
    url = sqlalchemy.engine.make_url(uri)
    config = k8s["ConfigMap"]["data"]
    assert url.drivername == "postgresql+psycopg2"
    assert (url.host, str(url.port)) == (
        config["DAGSTER_POSTGRES_HOST"],
        config["DAGSTER_POSTGRES_PORT"],
    )
    assert url.username == config["DAGSTER_POSTGRES_USER"]
    assert url.password == password  # the same shell variable fills both
    assert url.database == CATALOG_DATABASE
    chart_db = helm["postgresql"]
    assert (chart_db["postgresqlHost"], chart_db["postgresqlUsername"]) == (url.host, url.username)
    # Who reads the Secret (init Job, ingest, code server, run pods, webserver, daemon):
    # test_helm_and_k8s_variables_and_sources_agree.


def test_the_image_has_the_catalog_driver(compose, env_example):
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    packages = {package["name"]: package for package in lock["package"]}
    # A dependency of the project itself (not of an extra), through pyiceberg[sql-postgres].
    (pyiceberg,) = [
        d for d in packages["lake-platform"]["dependencies"] if d["name"] == "pyiceberg"
    ]
    assert "sql-postgres" in pyiceberg["extra"]
    assert {"name": "psycopg2-binary"} in packages["pyiceberg"]["optional-dependencies"][
        "sql-postgres"
    ]
    uri = _interpolated(_compose_catalog_uri(compose, "code-server"), env_example)
    engine = sqlalchemy.create_engine(uri)  # imports the driver without connecting
    assert engine.dialect.driver == "psycopg2"
    engine.dispose()


# --- commands, modules, ports -------------------------------------------------------------


def _lake_platform_commands(compose, k8s) -> list[list[str]]:
    commands = [compose["services"][name]["command"] for name in OUR_SERVICES]
    commands += [_k8s_container(k8s, kind)["command"] for kind in ("Deployment", "Job")]
    return [command for command in commands if command[0] == "lake-platform"]


def test_lake_platform_commands_parse(compose, k8s):
    commands = _lake_platform_commands(compose, k8s)
    assert {command[1] for command in commands} == {"init", "ingest", "publish"}
    for command in commands:
        try:
            _parser().parse_args(command[1:])
        except SystemExit:
            pytest.fail(f"`{shlex.join(command)}` is not a valid lake-platform command")


def _parse_click(group: click.Command, argv: list[str]) -> dict[str, Any]:
    """Options of `argv` parsed by the real Dagster CLI, without running it.

    Image paths are mapped to the repository files the Dockerfile copies there.
    """
    image_files = _dockerfile_copies()
    args = [str(image_files.get(arg, arg)) for arg in argv]
    command = group
    while isinstance(command, click.Group):
        command = command.get_command(click.Context(command), args.pop(0))
        assert command is not None, f"unknown command in {argv}"
    return command.make_context(argv[0], args).params


def test_dagster_commands_parse_with_the_contract_ports(compose, helm):
    services = compose["services"]
    code_server = _parse_click(dagster_cli, services["code-server"]["command"][1:])
    assert code_server["module_name"] == CODE_LOCATION_MODULE
    assert (code_server["host"], code_server["port"]) == ("0.0.0.0", CODE_SERVER_PORT)
    health = _parse_click(dagster_cli, services["code-server"]["healthcheck"]["test"][2:])
    assert health["port"] == CODE_SERVER_PORT
    webserver = _parse_click(dagster_webserver_cli, services["webserver"]["command"][1:])
    assert webserver["port"] == WEBSERVER_PORT
    daemon = _parse_click(dagster_daemon_cli, services["daemon"]["command"][1:])
    _parse_click(dagster_daemon_cli, services["daemon"]["healthcheck"]["test"][2:])
    assert webserver["workspace"] == daemon["workspace"] == (str(DOCKER / "workspace.yaml"),)
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    grpc_args = ["api", "grpc", *deployment["dagsterApiGrpcArgs"], "-p", str(deployment["port"])]
    grpc = _parse_click(dagster_cli, grpc_args)
    assert (grpc["module_name"], grpc["port"]) == (CODE_LOCATION_MODULE, CODE_SERVER_PORT)


def test_code_location_module_loads():
    module = __import__(CODE_LOCATION_MODULE, fromlist=["defs"])
    assert module.defs.resolve_asset_graph().get_all_asset_keys()


def test_workspace_points_at_the_code_server(compose):
    (entry,) = _yaml("workspace.yaml")["load_from"]
    assert entry == {
        "grpc_server": {
            "host": "code-server",
            "port": CODE_SERVER_PORT,
            "location_name": "lake_platform",
        }
    }
    assert "code-server" in compose["services"]
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["tool"]["dagster"]["code_location_name"] == "lake_platform"


def _health_url(service: dict[str, Any]) -> str:
    (url,) = re.findall(r"https?://[^\s'\"]+", " ".join(service["healthcheck"]["test"]))
    return url


def test_health_checks_probe_the_service_ports(compose):
    services = compose["services"]
    assert _health_url(services["webserver"]) == f"http://127.0.0.1:{WEBSERVER_PORT}/server_info"
    assert _health_url(services["ingest"]) == f"http://127.0.0.1:{METRICS_PORT}/healthz"
    assert _health_url(services["seaweedfs"]) == f"http://127.0.0.1:{S3_PORT}/healthz"
    for node in NATS_NODES:
        expected = f"http://127.0.0.1:{NATS_MONITOR_PORT}/healthz?js-enabled-only=true"
        assert _health_url(services[node]) == expected
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert f"-s3.port={S3_PORT}" in " ".join(services["seaweedfs"]["command"])
    assert services["webserver"]["ports"] == [f"127.0.0.1:{WEBSERVER_PORT}:{WEBSERVER_PORT}"]


def test_service_urls_name_compose_services_and_ports(compose, env_example):
    s3 = urlsplit(env_example["S3_ENDPOINT"])
    assert (s3.hostname, s3.port) == ("seaweedfs", S3_PORT)
    nats = [urlsplit(url) for url in env_example["NATS_URL"].split(",")]
    assert [(url.hostname, url.port) for url in nats] == [
        (node, NATS_CLIENT_PORT) for node in NATS_NODES
    ]
    assert env_example["DAGSTER_POSTGRES_HOST"] in compose["services"]
    assert int(env_example["DAGSTER_POSTGRES_PORT"]) == 5432


@pytest.mark.parametrize("node", NATS_NODES)
def test_nats_configs_form_one_jetstream_cluster(compose, node):
    text = (DOCKER / "nats" / f"{node}.conf").read_text()
    assert re.search(rf"^server_name: {node}$", text, flags=re.MULTILINE)
    assert f"listen: 0.0.0.0:{NATS_CLIENT_PORT}" in text
    assert f"http: 0.0.0.0:{NATS_MONITOR_PORT}" in text
    assert f"listen: 0.0.0.0:{NATS_CLUSTER_PORT}" in text
    routes = set(re.findall(r"nats-route://([\w-]+):(\d+)", text))
    assert routes == {(name, str(NATS_CLUSTER_PORT)) for name in NATS_NODES}
    assert "store_dir: /data/jetstream" in text
    assert f"./nats/{node}.conf:/etc/nats/{node}.conf:ro" in compose["services"][node]["volumes"]


def test_k8s_ingest_probes_and_scrapes_the_metrics_port(k8s):
    deployment = k8s["Deployment"]
    container = _k8s_container(k8s, "Deployment")
    assert container["command"] == ["lake-platform", "ingest"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = {item["name"]: item["value"] for item in container["env"]}
    assert ports["metrics"] == int(env["LAKE_METRICS_PORT"]) == METRICS_PORT
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}, probe
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
    }
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def _k8s_model(kind: str, manifest: Mapping[str, Any]) -> object:
    """``manifest`` as the Kubernetes client's model: unknown fields or wrong types raise."""
    model_class = getattr(kubernetes.client, f"V1{kind}")
    return k8s_model_from_dict(model_class, k8s_snake_case_dict(model_class, manifest))


def test_k8s_manifests_match_the_kubernetes_api(k8s, helm):
    assert set(k8s) == {"ConfigMap", "Job", "Deployment"}
    for kind, manifest in k8s.items():
        _k8s_model(kind, manifest)
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    _k8s_model("SecurityContext", deployment["securityContext"])


def test_helm_values_for_the_official_chart(helm, k8s):
    assert helm["postgresql"]["enabled"] is False
    assert helm["postgresql"]["postgresqlHost"]
    assert helm["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert helm["generatePostgresqlPasswordSecret"] is False
    assert helm["runLauncher"]["type"] == "K8sRunLauncher"
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", CODE_LOCATION_MODULE]
    assert deployment["port"] == CODE_SERVER_PORT
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert helm["computeLogManager"]["type"] == "S3ComputeLogManager"
    assert isinstance(helm["computeLogManager"]["config"]["s3ComputeLogManager"]["region"], str)
    image = deployment["image"]
    for container in (_k8s_container(k8s, "Deployment"), _k8s_container(k8s, "Job")):
        assert container["image"] == f"{image['repository']}:{image['tag']}"
    limits = helm["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    instance = _yaml("dagster.yaml")["run_coordinator"]["config"]
    assert limits["tagConcurrencyLimits"] == instance["tag_concurrency_limits"]
    assert limits["maxConcurrentRuns"] == instance["max_concurrent_runs"]


# --- image ---------------------------------------------------------------------------------


def test_dockerfile_installs_the_locked_environment_as_non_root():
    dockerfile = _dockerfile()
    syncs = re.findall(r"^RUN uv sync (.*)$", dockerfile, flags=re.MULTILINE)
    assert syncs
    for flags in syncs:
        assert {"--frozen", "--no-dev", "--extra"} <= set(flags.split()), flags
        assert "--extra deploy" in flags
    assert re.search(r"^RUN pip install --no-cache-dir uv==[\d.]+$", dockerfile, re.MULTILINE)
    assert "curl" not in dockerfile and "astral.sh" not in dockerfile
    users = re.findall(r"^USER (\S+)$", _runtime_stage(), flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert "DAGSTER_HOME=/opt/dagster/home" in _runtime_stage()
    copies = _dockerfile_copies()
    assert copies["/opt/dagster/home/dagster.yaml"] == DOCKER / "dagster.yaml"
    assert copies["/opt/dagster/workspace.yaml"] == DOCKER / "workspace.yaml"
    exposed = set(re.findall(r"^EXPOSE (.*)$", dockerfile, flags=re.MULTILINE)[0].split())
    assert exposed == {str(port) for port in (WEBSERVER_PORT, CODE_SERVER_PORT, METRICS_PORT)}


def test_build_context_keeps_what_the_image_copies():
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore  # everything excluded, then re-included
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    sources = re.findall(r"^COPY (?!--from)(.+) \S+$", _dockerfile(), flags=re.MULTILINE)
    assert {source for line in sources for source in line.split()} == kept


def test_lock_pairs_the_dagster_integrations_with_dagster():
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    versions = {package["name"]: package["version"] for package in lock["package"]}
    major, minor, patch = versions["dagster"].split(".")
    assert (major, minor) == ("1", "13")
    for core in ("dagster-webserver", "dagster-graphql", "dagster-pipes"):
        assert versions[core] == versions["dagster"], core
    for integration in ("dagster-postgres", "dagster-aws", "dagster-k8s", "dagster-duckdb"):
        assert versions[integration] == f"0.29.{patch}", integration
    helm_text = (DOCKER / "helm" / "values.yaml").read_text()
    assert f"--version {versions['dagster']}" in helm_text


# --- the production Dagster instance -------------------------------------------------------

INSTANCE_ENV = {
    "DAGSTER_POSTGRES_HOST": "postgres",
    "DAGSTER_POSTGRES_PORT": "5432",
    "DAGSTER_POSTGRES_USER": "dagster",
    "DAGSTER_POSTGRES_PASSWORD": "secret",
    "DAGSTER_POSTGRES_DB": "dagster",
    "DAGSTER_COMPUTE_LOG_BUCKET": "dagster-logs",
    "DAGSTER_COMPUTE_LOG_PREFIX": "compute-logs",
    "S3_ENDPOINT": "http://seaweedfs:8333",
    "S3_REGION": "us-east-1",
}


@pytest.fixture
def instance_ref(tmp_path, monkeypatch) -> InstanceRef:
    """docker/dagster.yaml loaded as Dagster loads an instance, short of connecting to it.

    `InstanceRef.from_dir` validates the file against Dagster's instance schema and resolves
    every configurable class (storage, run coordinator, compute log manager).
    """
    for name, value in INSTANCE_ENV.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "dagster.yaml").write_text((DOCKER / "dagster.yaml").read_text())
    return InstanceRef.from_dir(str(tmp_path))


def _class_config(data: ConfigurableClassData) -> Mapping[str, Any]:
    """A configurable class's config validated by the class's own schema, env vars resolved."""
    klass = class_from_code_pointer(data.module_name, data.class_name)
    result = process_config(klass.config_type(), data.config_dict)
    assert result.success, result.errors
    return result.value


def test_instance_uses_postgres_through_psycopg2(instance_ref):
    storage = instance_ref.storage_data
    assert (storage.module_name, storage.class_name) == (
        "lake_platform.instance_storage",
        "PooledPostgresStorage",
    )
    db = _class_config(instance_ref.storage_data)["postgres_db"]
    assert (db["hostname"], db["port"]) == ("postgres", 5432)
    url = get_conn_string(
        db["username"],
        db["password"],
        db["hostname"],
        db["db_name"],
        str(db["port"]),
        scheme=db["scheme"],
    )
    # Creating the engine imports the DB-API driver without connecting: the plain
    # `postgresql://` scheme fails here under SQLAlchemy 2.1 (psycopg 3 is not installed).
    engine = sqlalchemy.create_engine(url)
    assert engine.dialect.driver == "psycopg2"
    engine.dispose()


def test_instance_queues_runs_one_per_partition(instance_ref):
    coordinator = instance_ref.run_coordinator_data
    assert isinstance(coordinator.rehydrate(), QueuedRunCoordinator)
    config = _class_config(coordinator)
    assert config["max_concurrent_runs"] > 0
    limits = {limit["key"]: limit for limit in config["tag_concurrency_limits"]}
    assert limits["dagster/partition"] == {
        "key": "dagster/partition",
        "value": {"applyLimitPerUniqueValue": True},
        "limit": 1,
    }
    assert 0 < limits["dagster/backfill"]["limit"] < config["max_concurrent_runs"]


def test_instance_monitors_and_retries_runs(instance_ref):
    settings = instance_ref.settings
    monitoring = settings["run_monitoring"]
    assert monitoring["enabled"] is True
    assert monitoring["start_timeout_seconds"] > 0 and monitoring["cancel_timeout_seconds"] > 0
    assert monitoring["max_runtime_seconds"] > 0
    assert settings["run_retries"] == {
        "enabled": True,
        "max_retries": 2,
        "retry_on_asset_or_op_failure": True,
    }
    assert settings["telemetry"] == {"enabled": False}
    for kind in ("schedule", "sensor"):
        assert settings["retention"][kind]["purge_after_days"], kind


def test_instance_writes_compute_logs_to_s3(instance_ref):
    manager = instance_ref.compute_logs_data.rehydrate()
    assert isinstance(manager, S3ComputeLogManager)
    config = _class_config(instance_ref.compute_logs_data)
    assert (config["bucket"], config["prefix"]) == ("dagster-logs", "compute-logs")
    assert config["endpoint_url"] == "http://seaweedfs:8333"
