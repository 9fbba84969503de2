"""The production stack (Dockerfile, docker-compose.yml, Prometheus, Grafana) agrees with the code.

No container engine runs here, so these checks read the files: a setting, a service, a port or a
metric renamed in the code fails a test instead of a deployment.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from pydantic import BaseModel

from eddy.cli import RUNNABLE
from services.core.metrics import REGISTRY
from services.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROMETHEUS_CONFIG = ROOT / "infra" / "prometheus" / "prometheus.yml"
GRAFANA_DATASOURCES = ROOT / "infra" / "grafana" / "provisioning" / "datasources"
GRAFANA_DASHBOARD_PROVIDERS = ROOT / "infra" / "grafana" / "provisioning" / "dashboards"
GRAFANA_DASHBOARDS = ROOT / "infra" / "grafana" / "dashboards"

SECRET_VARIABLES = (
    "EDDY_SIGNING_KEY",
    "GF_SECURITY_ADMIN_PASSWORD",
    "EDDY_OBJECT_STORE__SECRET_ACCESS_KEY",
)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|SIGNING_KEY|API_KEY")
REQUIRED_FROM_HOST = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}$")
EDDY_RUN = re.compile(r"^run\s+(\S+)$")
PROMQL_NOT_METRICS = re.compile(
    r'"(?:[^"\\]|\\.)*"'  # strings
    r"|\{[^}]*\}"  # label matchers
    r"|\[[^\]]*\]"  # range and subquery durations
    r"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"  # label lists
)
PROMQL_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)\b(?!\s*\()")
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "e"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return document


@pytest.fixture(scope="module")
def compose_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


@pytest.fixture(scope="module")
def scrape_configs() -> list[dict[str, Any]]:
    configs: list[dict[str, Any]] = load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]
    return configs


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment, whichever of the two forms (map or list) it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {name: "" if value is None else str(value) for name, value in env.items()}


def command_words(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def eddy_run_commands(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Compose service name -> the Eddy service it runs with `eddy run <service>`."""
    runs = {}
    for name, service in services.items():
        match = EDDY_RUN.match(command_words(service).strip())
        if match:
            runs[name] = match.group(1)
    return runs


def setting_variables() -> set[str]:
    """Every EDDY_* variable Settings reads, nested groups as EDDY_GROUP__FIELD."""
    prefix = Settings.model_config.get("env_prefix", "")
    delimiter = Settings.model_config.get("env_nested_delimiter") or "__"
    names = set()
    for field_name, field in Settings.model_fields.items():
        names.add(f"{prefix}{field_name}".upper())
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            for sub_name in group.model_fields:
                names.add(f"{prefix}{field_name}{delimiter}{sub_name}".upper())
    return names


def declared_metric_names() -> set[str]:
    """Every series name the registry can export, suffixes included."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    names = set()
    for family in REGISTRY.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    stripped = PROMQL_NOT_METRICS.sub(" ", expr)
    return {
        name
        for name in PROMQL_IDENTIFIER.findall(stripped)
        if name.lower() not in PROMQL_KEYWORDS and not name[0].isdigit()
    }


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def dashboards() -> list[Path]:
    return sorted(GRAFANA_DASHBOARDS.glob("*.json"))


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerfile_copied_sources() -> set[str]:
    """Paths the Dockerfile copies from the build context (not from other stages)."""
    sources = set()
    for keyword, arguments in dockerfile_instructions():
        if keyword not in {"COPY", "ADD"}:
            continue
        words = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
        if any(word.startswith("--from") for word in words):
            continue
        paths = [word for word in words if not word.startswith("--")]
        sources.update(path.removeprefix("./").rstrip("/") for path in paths[:-1])
    return sources


def test_every_eddy_run_command_in_compose_is_a_runnable_service(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    runs = eddy_run_commands(compose_services)
    unknown = {name: run for name, run in runs.items() if run not in RUNNABLE}
    assert not unknown, (
        f"compose runs services `eddy run` does not know: {unknown}; RUNNABLE is {RUNNABLE}"
    )


def test_every_runnable_service_has_a_compose_service(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    missing = set(RUNNABLE) - set(eddy_run_commands(compose_services).values())
    assert not missing, (
        f"eddy.cli.RUNNABLE has {sorted(missing)} but docker-compose.yml runs none of "
        "them: add a service with `command: [run, <name>]` on the x-eddy-service block"
    )


def test_every_eddy_variable_in_compose_is_a_setting(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    known = setting_variables()
    unknown = {
        f"{service_name}: {variable}"
        for service_name, service in compose_services.items()
        for variable in environment(service)
        if variable.upper().startswith("EDDY_") and variable.upper() not in known
    }
    assert not unknown, (
        f"docker-compose.yml sets variables no Settings field reads (silently ignored): "
        f"{sorted(unknown)}; known: {sorted(known)}"
    )


def test_eddy_services_get_the_endpoints_and_key_they_require(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    required = {"EDDY_KAFKA_BOOTSTRAP", "EDDY_REDIS_URL", "EDDY_SIGNING_KEY", "EDDY_METRICS_PORT"}
    for name in eddy_run_commands(compose_services):
        missing = required - set(environment(compose_services[name]))
        assert not missing, f"compose service {name!r} lacks {sorted(missing)}"


def test_prometheus_scrapes_the_metrics_port_the_services_listen_on(
    compose_services: dict[str, dict[str, Any]], scrape_configs: list[dict[str, Any]]
) -> None:
    targets = {
        target
        for config in scrape_configs
        for static in config.get("static_configs", [])
        for target in static["targets"]
    }
    for name in eddy_run_commands(compose_services):
        port = environment(compose_services[name]).get("EDDY_METRICS_PORT")
        assert port and port != "0", (
            f"compose service {name!r} needs a fixed EDDY_METRICS_PORT for Prometheus to scrape"
        )
        assert f"{name}:{port}" in targets, (
            f"Prometheus does not scrape {name}:{port} (EDDY_METRICS_PORT of {name!r}); "
            f"it scrapes {sorted(targets)}"
        )


def test_prometheus_has_one_eddy_job_per_runnable_service(
    scrape_configs: list[dict[str, Any]],
) -> None:
    jobs = {config["job_name"] for config in scrape_configs}
    expected = {f"eddy-{service}" for service in RUNNABLE}
    assert expected <= jobs, f"Prometheus jobs {sorted(jobs)} lack {sorted(expected - jobs)}"


def test_every_prometheus_scrape_target_is_a_compose_service(
    compose_services: dict[str, dict[str, Any]], scrape_configs: list[dict[str, Any]]
) -> None:
    for config in scrape_configs:
        for static in config.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                assert host in compose_services, (
                    f"job {config['job_name']!r} scrapes {target!r}, but {host!r} is not a "
                    f"compose service ({sorted(compose_services)})"
                )
                assert port.isdigit(), f"target {target!r} has no numeric port"


def test_dockerfile_copies_every_wheel_package_and_infra(pyproject: dict[str, Any]) -> None:
    wheel = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {*wheel["packages"], *wheel.get("force-include", {}), "pyproject.toml"}
    readme = pyproject["project"].get("readme")
    if readme:
        needed.add(readme)  # hatchling fails the build when the declared readme is missing
    missing = needed - dockerfile_copied_sources()
    assert not missing, (
        f"the Dockerfile does not COPY {sorted(missing)}, which `pip install .` needs "
        "(packages and force-include of [tool.hatch.build.targets.wheel], the readme)"
    )


def test_dockerignore_keeps_dev_files_out_but_not_what_the_image_copies() -> None:
    patterns = [
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for excluded in (".venv", ".git", "tests", "bench"):
        assert excluded in patterns, f".dockerignore should exclude {excluded!r}"
    hidden = {
        source
        for source in dockerfile_copied_sources()
        if any(fnmatch.fnmatch(source, pattern) for pattern in patterns)
    }
    assert not hidden, f".dockerignore excludes {sorted(hidden)}, which the Dockerfile copies"


def test_image_runs_the_eddy_script_as_a_non_root_user(pyproject: dict[str, Any]) -> None:
    instructions = dockerfile_instructions()
    entrypoints = [json.loads(args) for keyword, args in instructions if keyword == "ENTRYPOINT"]
    assert entrypoints and entrypoints[-1] == ["eddy"], (
        f"the image's ENTRYPOINT should be ['eddy'], found {entrypoints}"
    )
    assert "eddy" in pyproject["project"]["scripts"], "pyproject declares no `eddy` script"
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, (
        f"the image should end with a non-root USER, found {users}"
    )
    installs = [args for keyword, args in instructions if keyword == "RUN" and "install" in args]
    assert not any("[" in args for args in installs if "pip" in args), (
        f"the image installs an extra ({installs}); production uses real Kafka and Redis"
    )


def test_secrets_come_from_the_host_environment_with_no_default(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    seen = set()
    for service_name, service in compose_services.items():
        for variable, value in environment(service).items():
            if variable in SECRET_VARIABLES or SECRET_NAME.search(variable):
                seen.add(variable)
                assert REQUIRED_FROM_HOST.match(value), (
                    f"{service_name}: {variable}={value!r} must be a required reference like "
                    f"${{{variable}:?set {variable}}}, never a literal or a default"
                )
    assert set(SECRET_VARIABLES) <= seen, (
        f"compose should pass {sorted(set(SECRET_VARIABLES) - seen)} from the host environment"
    )


def test_eddy_services_start_after_topics_exist_and_redis_is_healthy(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    for name in eddy_run_commands(compose_services):
        depends_on = compose_services[name].get("depends_on", {})
        conditions = {dep: spec.get("condition") for dep, spec in dict(depends_on).items()}
        assert conditions.get("topics") == "service_completed_successfully", (
            f"{name!r} must wait for the topics service to complete, found {conditions}"
        )
        assert conditions.get("redis") == "service_healthy", (
            f"{name!r} must wait for a healthy Redis, found {conditions}"
        )
        assert "healthcheck" in compose_services[name], f"{name!r} has no healthcheck"
    assert command_words(compose_services["topics"]) == "topics create", (
        "the topics service should run `eddy topics create`"
    )


def test_broker_never_auto_creates_topics(compose_services: dict[str, dict[str, Any]]) -> None:
    value = environment(compose_services["kafka"]).get("KAFKA_AUTO_CREATE_TOPICS_ENABLE")
    assert value == "false", (
        f"KAFKA_AUTO_CREATE_TOPICS_ENABLE is {value!r}: topics come only from infra/topics.toml"
    )


def test_artifacts_live_in_the_object_store_of_compose(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("serving", "training"):
        env = environment(services[name])
        assert env["EDDY_REGISTRY_URI"].startswith("s3://"), f"{name} keeps artifacts on a disk"
        endpoint = urlparse(env["EDDY_OBJECT_STORE__ENDPOINT"])
        assert endpoint.hostname in services, f"{name}'s object store is not a compose service"
        assert "volumes" not in services[name], f"{name} should need no shared disk"
    bucket = urlparse(environment(services["serving"])["EDDY_REGISTRY_URI"]).netloc
    assert bucket in " ".join(services["bucket"]["command"]), "the bucket service creates it"


def test_every_file_compose_mounts_from_the_repository_exists(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    for name, service in compose_services.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name!r} mounts {source}, which does not exist"


def test_grafana_provisions_the_prometheus_of_compose_and_its_dashboards_folder(
    compose_services: dict[str, dict[str, Any]],
) -> None:
    datasources = [
        source
        for path in sorted(GRAFANA_DATASOURCES.glob("*.yml"))
        for source in load_yaml(path)["datasources"]
    ]
    urls = {source["url"] for source in datasources}
    assert "http://prometheus:9090" in urls, f"no datasource points at Prometheus: {urls}"
    providers = [
        provider
        for path in sorted(GRAFANA_DASHBOARD_PROVIDERS.glob("*.yml"))
        for provider in load_yaml(path)["providers"]
    ]
    mount_targets = {
        str(volume).split(":")[1] for volume in compose_services["grafana"].get("volumes", [])
    }
    for provider in providers:
        assert provider["options"]["path"] in mount_targets, (
            f"provider {provider['name']!r} reads {provider['options']['path']}, "
            f"which compose does not mount (mounts: {sorted(mount_targets)})"
        )
    assert providers, "no Grafana dashboard provider is provisioned"


@pytest.mark.parametrize("path", dashboards(), ids=lambda path: path.name)
def test_dashboard_queries_only_metrics_eddy_declares(path: Path) -> None:
    declared = declared_metric_names()
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    expressions = [
        target["expr"]
        for panel in dashboard_panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert expressions, f"{path.name} has no PromQL queries"
    for expr in expressions:
        used = metric_names_in(expr)
        assert used, f"found no metric name in {expr!r}"
        unknown = used - declared
        assert not unknown, (
            f"{path.name} queries {sorted(unknown)} in {expr!r}; services/core/metrics.py "
            f"declares {sorted(declared)}"
        )


@pytest.mark.parametrize("path", dashboards(), ids=lambda path: path.name)
def test_dashboard_panels_use_a_provisioned_datasource(path: Path) -> None:
    uids = {
        source.get("uid")
        for file in sorted(GRAFANA_DATASOURCES.glob("*.yml"))
        for source in load_yaml(file)["datasources"]
    }
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    assert dashboard.get("uid"), f"{path.name} has no uid, so its links break on every import"
    for panel in dashboard_panels(dashboard["panels"]):
        for holder in (panel, *panel.get("targets", [])):
            datasource = holder.get("datasource")
            if isinstance(datasource, dict) and datasource.get("type") == "prometheus":
                assert datasource.get("uid") in uids, (
                    f"panel {panel.get('title')!r} of {path.name} uses datasource uid "
                    f"{datasource.get('uid')!r}; provisioned uids are {sorted(uids)}"
                )


def test_starter_dashboard_keeps_the_uid_and_schema_version_links_rely_on() -> None:
    dashboard = json.loads((GRAFANA_DASHBOARDS / "eddy-loop.json").read_text(encoding="utf-8"))
    assert dashboard["uid"] == "eddy-loop", "links and the home dashboard use uid eddy-loop"
    assert dashboard["schemaVersion"] == 39, f"schemaVersion is {dashboard['schemaVersion']}"
