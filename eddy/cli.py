"""The ``eddy`` command: run services, provision topics, manage models, run the demo."""

from __future__ import annotations

import importlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, get_args

import click
from pydantic import BaseModel, ValidationError

from schemas.events import RejectReason
from services.core.datasets import (
    BINARY_DATASETS,
    BUNDLED,
    CLASSIFICATION_STREAMS,
    rows_available,
)
from services.core.exceptions import EddyError, MessageTooLargeError
from services.core.settings import Settings
from services.core.topics import TopicRole

if TYPE_CHECKING:
    from datetime import datetime

    from services.core.embedded import EmbeddedStack

F = TypeVar("F", bound=Callable[..., Any])
RUNNABLE = ("ingest", "serving", "labeling", "training", "monitoring")
#: Topics ``eddy tail`` reads, by role (every topic of ``infra/topics.toml``).
TAILABLE = get_args(TopicRole)


#: The nested groups of Settings (EDDY_<GROUP>__...).
_GROUPS = {
    name
    for name, f in Settings.model_fields.items()
    if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)
}


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        raise click.ClickException(f"invalid EDDY_* settings:\n{error}") from None


def _positive(_ctx: click.Context, param: click.Parameter, value: float) -> float:
    """A finite number above zero (a rate or a timeout; NaN and infinity pass a FloatRange)."""
    if not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"{value} is not a finite number above 0", param=param)
    return value


def _count_option(name: str, default: int, help: str) -> Callable[[F], F]:
    """An option taking a whole number of at least 0, shown with its default."""
    return click.option(
        name, type=click.IntRange(min=0), default=default, show_default=True, help=help
    )


class _EddyGroup(click.Group):
    """Turns Eddy's own errors into a one-line message and exit code 1, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EddyError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=_EddyGroup)
@click.version_option(package_name="eddy")
def main() -> None:
    """Eddy: continuous-learning ML on event streams.

    Settings come from EDDY_* environment variables (docs/configuration.md). With no
    EDDY_KAFKA_BOOTSTRAP / EDDY_REDIS_URL, `eddy demo` and `eddy stack up` start an
    embedded broker and Redis; the other commands need endpoints.
    """


@main.command()
@click.option(
    "--stream",
    type=click.Choice(CLASSIFICATION_STREAMS),
    default="sea",
    show_default=True,
    help="SEA or Agrawal (synthetic, drift halfway) or a bundled real dataset (no drift).",
)
@click.option("--events", type=int, help="Events streamed [8000, or all rows of a dataset].")
@click.option(
    "--rate", default=400.0, show_default=True, callback=_positive, help="Events per second."
)
@_count_option("--label-delay", 100, "Events each label lags.")
@_count_option("--drift-width", 0, "0: abrupt; else gradual over this many events.")
@click.option("--no-drift", is_flag=True, help="A stationary stream (no concept drift).")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=Path("eddy-report.html"),
    show_default=True,
    help="Where the HTML report goes at the end.",
)
def demo(
    stream: str,
    events: int | None,
    rate: float,
    label_delay: int,
    drift_width: int,
    no_drift: bool,
    report_path: Path,
) -> None:
    """Run the whole loop on a stream and show what happens."""
    from eddy.demo import Scenario, run_demo

    available = rows_available(stream)
    if events is None:
        events = available or 8000
    if available is not None and events > available:
        raise click.BadParameter(f"{stream} has {available} rows", param_hint="--events")
    if events < 1000:
        raise click.BadParameter(
            "at least 1000 events, to see the loop learn", param_hint="--events"
        )
    drifts = available is None and not no_drift
    scenario = Scenario(
        events=events,
        drift_at=events // 2 if drifts else None,
        drift_width=drift_width,
        stream=stream,
        rate=rate,
        label_delay=label_delay,
    )
    run_demo(_settings(), click.echo, scenario, report_path)


@main.command("settings")
@click.option("--json", "as_json", is_flag=True, help="As JSON, for scripts.")
def show_settings(as_json: bool) -> None:
    """The settings in force here, from EDDY_* variables and files; secrets show as stars."""
    import json

    values = _settings().model_dump(mode="json")
    if as_json:
        click.echo(json.dumps(values, indent=2))
        return

    def lines(group: dict[str, object], prefix: str) -> None:
        for name, value in group.items():
            variable = f"{prefix}{name.upper()}"
            if isinstance(value, dict) and variable[5:].lower() in _GROUPS:
                lines(value, f"{variable}__")
            else:
                click.echo(
                    f"{variable}={json.dumps(value) if not isinstance(value, str) else value}"
                )

    lines(values, "EDDY_")


@main.command("run")
@click.argument("service", type=click.Choice(RUNNABLE))
def run_service(service: str) -> None:
    """Run one service in this process until SIGTERM or Ctrl-C."""
    module = importlib.import_module(f"services.{service}.service")
    module.run(_settings())


@main.command("label-ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8088,
    show_default=True,
    help="Port to listen on (0: any free one).",
)
def label_ui(host: str, port: int) -> None:
    """Serve the page where people answer the model's label requests (labeling.tasks).

    People sign in as a labeller (`eddy labellers add NAME`); each answer becomes a label with
    their name. Behind TLS set EDDY_LABELING__UI_SECURE_COOKIES=true.
    """
    from services.core.metrics import serve_metrics
    from services.core.stream import StopSignal
    from services.labeling.web import LabelServer

    settings = _settings()
    server = LabelServer(settings, host, port)
    stop = StopSignal().install()
    server.start()
    metrics_port = serve_metrics(settings.metrics_port, settings.metrics_host)
    click.echo(
        f"label requests on http://{host}:{server.port}/ "
        f"(metrics on {settings.metrics_host}:{metrics_port}; Ctrl-C stops)"
    )
    while not stop.event.wait(1.0):
        pass
    server.stop()
    click.echo("stopped")


@main.group()
def labellers() -> None:
    """The people who may sign in to the label page."""


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        raise click.ClickException("a password of at least 8 characters, please")
    return password


@labellers.command("add")
@click.argument("name")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (scripts)."
)
def labellers_add(name: str, password_stdin: bool) -> None:
    """Let NAME sign in to the label page (asks for a password; adding again replaces it)."""
    from services.labeling.labellers import add_to_file

    path = _settings().labeling.ui_users_file
    try:
        replaced = add_to_file(path, name, _read_password(password_stdin))
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{'replaced' if replaced else 'added'} {name} in {path}")


@labellers.command("hash")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (scripts)."
)
def labellers_hash(password_stdin: bool) -> None:
    """Print a password's hash, for EDDY_LABELING__UI_USERS or a users file of your own."""
    from services.labeling.labellers import hash_password

    click.echo(hash_password(_read_password(password_stdin)))


@main.group()
def stack() -> None:
    """The embedded broker and Redis for local work."""


@stack.command("up")
def stack_up() -> None:
    """Start the embedded broker and Redis, create topics, and wait for Ctrl-C."""
    from services.core.embedded import (
        BROKER_CHECK_S,
        BrokerWatch,
        EmbeddedStack,
        tuned_for_embedded,
    )
    from services.core.kafka import create_topics
    from services.core.stream import StopSignal

    settings = _settings()
    password = settings.redis_password.get_secret_value()
    with EmbeddedStack(redis_password=password) as embedded:
        on_the_stack = {
            "kafka_bootstrap": embedded.kafka_bootstrap,
            "kafka": tuned_for_embedded(settings.kafka),
        }
        create_topics(settings.model_copy(update=on_the_stack))
        click.echo("embedded stack running; in another shell:")
        for name, value in embedded.env().items():
            click.echo(f"  export {name}={value}")
        if password:
            click.echo("  (Redis asks for a password: export EDDY_REDIS_PASSWORD there too)")
        click.echo("press Ctrl-C to stop it")
        # Ctrl-C and SIGTERM both stop the servers cleanly; the handlers are set explicitly, as
        # a process started with SIGINT ignored (a background job of a script) keeps ignoring it
        stop = StopSignal().install()
        watch, looked = BrokerWatch(embedded.pids[0]), time.monotonic()
        while not stop.event.wait(1.0):
            if _restart_ended(embedded, settings.model_copy(update=on_the_stack)):
                watch = BrokerWatch(embedded.pids[0])
            if time.monotonic() - looked >= BROKER_CHECK_S:
                looked = time.monotonic()
                warning = watch.check()
                if warning:
                    click.echo(f"warning: {warning}", err=True)
        click.echo("stopping")


def _restart_ended(embedded: EmbeddedStack, settings: Settings) -> bool:
    """Say loudly which embedded server ended, and start it again; True if one had."""
    from services.core.kafka import create_topics

    ended = embedded.ended()
    if "redis" in ended:
        click.echo(
            f"error: the embedded Redis exited (code {ended['redis']}); starting it again on "
            "the same port. Its append-only file brings back its data but for the last second's "
            "writes; the services wait for it and go on.",
            err=True,
        )
        embedded.restart_redis()
        click.echo("the embedded Redis is running again", err=True)
    if "broker" in ended:
        click.echo(
            f"error: the embedded broker exited (code {ended['broker']}). It keeps everything "
            "in memory: every topic, message, consumer position and the models history is "
            "gone. Starting it again, empty, on the same port, with the topics created again; "
            "restart the services and the registry (`eddy models prune`) to begin afresh.",
            err=True,
        )
        embedded.restart_broker()
        create_topics(settings)
        click.echo("the embedded broker is running again, with its topics", err=True)
    return bool(ended)


@main.group()
def topics() -> None:
    """Topics declared in infra/topics.toml."""


@topics.command("create")
@click.option("--json", "as_json", is_flag=True, help="What was created, as JSON.")
def topics_create(as_json: bool) -> None:
    """Create every declared topic that does not exist yet (idempotent)."""
    import json

    from services.core.kafka import create_topics

    created, existing = create_topics(_settings())
    if as_json:
        click.echo(json.dumps({"created": created, "existing": existing}, indent=2))
        return
    for name in created:
        click.echo(f"created  {name}")
    for name in existing:
        click.echo(f"exists   {name}")


@topics.command("list")
@click.option("--json", "as_json", is_flag=True, help="The topics as JSON, for scripts.")
def topics_list(as_json: bool) -> None:
    """Declared topics with their partition counts on the broker."""
    import json

    from services.core.kafka import list_topics
    from services.core.topics import Topics

    settings = _settings()
    on_broker = list_topics(settings)
    declared = Topics(settings.topic_prefix).all()
    if as_json:
        rows = [
            {"name": n, "role": spec.role, "payload": spec.payload, "partitions": on_broker.get(n)}
            for n, spec in declared
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    for name, spec in declared:
        state = f"{on_broker[name]} partitions" if name in on_broker else "missing"
        click.echo(f"{name:<32} {spec.payload:<18} {state}")


@main.group()
def models() -> None:
    """The model registry (versions on the `models` topic)."""


@models.command("publish")
@click.option("--name", "model_name", default=None, help="Model name (default: serving's).")
@click.option(
    "--dataset",
    type=click.Choice(BINARY_DATASETS),
    default="phishing",
    show_default=True,
    help="Bundled dataset.",
)
@_count_option("--warmup", 100, "Rows learned before publishing (all of them if more).")
@click.option("--hold", is_flag=True, help="Do not serve it until `eddy models deploy` says so.")
def models_publish(model_name: str | None, dataset: str, warmup: int, hold: bool) -> None:
    """Publish a River model (scaled logistic regression) warmed up on a bundled dataset."""
    from itertools import islice

    from services.core import registry
    from services.core.datasets import default_classifier, stream
    from services.core.feature_schema import FeatureSchema

    settings = _settings()
    model = default_classifier()
    for features, label in islice(stream(dataset), warmup):
        model.learn_one(features, label)
    version = registry.publish(
        settings,
        model_name or settings.model_name,
        registry.serialize_river(model),
        trigger="manual",
        feature_names=list(FeatureSchema.load(BUNDLED[dataset][1]).features),
        task="binary",
        hold=hold,
        description=f"warm-up on {warmup} rows of {dataset}",
    )
    held = " (held: `eddy models deploy` serves it)" if hold else ""
    click.echo(f"published {version.model_name} v{version.version} ({version.artifact_uri}){held}")


@models.command("import")
@click.argument("graph", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--features",
    required=True,
    help="The graph's input columns, in order, comma-separated: every feature of the schema.",
)
@click.option(
    "--classes",
    default=None,
    help="A classifier's output columns, in order, comma-separated (default: the target's "
    "declared classes; a boolean target's false,true).",
)
@click.option("--name", "model_name", default=None, help="Model name (default: serving's).")
@click.option("--hold", is_flag=True, help="Do not serve it until `eddy models deploy` says so.")
@click.option("--description", default="", help="What it is, for `eddy models list`.")
def models_import(
    graph: Path,
    features: str,
    classes: str | None,
    model_name: str | None,
    hold: bool,
    description: str,
) -> None:
    """Publish your own ONNX graph (from skl2onnx, say), checked against the feature schema.

    Serving feeds it one float matrix, the features in the order given, and reads
    `probabilities` (a classifier: skl2onnx with options={"zipmap": False}) or `value` /
    `variable` (a regressor).
    """
    import json

    from services.core import registry
    from services.core.exceptions import ArtifactError
    from services.core.feature_schema import FeatureSchema
    from services.core.onnx_models import check_graph
    from services.core.rejection import Rejection

    settings = _settings()
    schema = FeatureSchema.load(settings.ingest.feature_schema).served()
    names = [n.strip() for n in features.split(",") if n.strip()]
    expected = set(schema.model_features())
    if set(names) != expected or len(names) != len(set(names)):
        missing, unknown = sorted(expected - set(names)), sorted(set(names) - expected)
        raise click.BadParameter(
            f"name every feature of schema {schema.name!r} once; missing {missing}, "
            f"not in the schema {unknown}",
            param_hint="--features",
        )
    target = schema.target
    order: list[Any] | None = None
    if target.type == "regression":
        if classes:
            raise click.BadParameter("a regression target has no classes", param_hint="--classes")
    elif classes is None:
        order = list(target.classes) if target.classes else None
        if order is None and target.type == "binary":
            order = [False, True]
        if order is None:
            raise click.BadParameter(
                "the target declares no classes: name the graph's output columns in order",
                param_hint="--classes",
            )
    else:
        order = []
        for text in (t.strip() for t in classes.split(",")):
            try:
                value: Any = json.loads(text)
            except ValueError:
                value = text
            checked = target.check(value)
            if isinstance(checked, Rejection):
                raise click.BadParameter(f"{text!r}: {checked.detail}", param_hint="--classes")
            order.append(checked)
    data = graph.read_bytes()
    try:
        check_graph(data, names, order)
    except ArtifactError as error:
        raise click.ClickException(f"{graph}: {error}") from None
    version = registry.publish(
        settings,
        model_name or settings.model_name,
        data,
        flavour="onnx",
        trigger="manual",
        feature_names=names,
        classes=order,
        task=target.type,
        hold=hold,
        description=description or f"imported from {graph.name}",
    )
    held = " (held: `eddy models deploy` serves it)" if hold else ""
    click.echo(f"published {version.model_name} v{version.version} ({version.artifact_uri}){held}")


@models.command("list")
@click.option("--name", "model_name", default=None, help="Only this model.")
@click.option("--json", "as_json", is_flag=True, help="The versions' records as JSON, for scripts.")
def models_list(model_name: str | None, as_json: bool) -> None:
    """Every published version, oldest first, with its trigger, parent and what it learned."""
    import json

    from services.core.registry import read_versions

    history = [
        v for v in read_versions(_settings()) if not model_name or v.model_name == model_name
    ]
    if as_json:
        click.echo(json.dumps([v.model_dump(mode="json") for v in history], indent=2))
        return
    if not history:
        click.echo(
            f"no versions of {model_name} yet" if model_name else "no versions published yet"
        )
    for v in history:
        parent = f"v{v.parent_version}" if v.parent_version else "-"
        learned = sum(span.last - span.first + 1 for span in v.lineage)
        click.echo(
            f"{v.model_name:<12} v{v.version:<4} {v.flavour:<5} {v.trigger:<9} parent {parent:<5} "
            f"learned {learned:>6}  {v.created_at:%Y-%m-%d %H:%M:%S}  {v.description}"
        )


@models.command("show")
@click.argument("name")
@click.argument("version", type=int)
def models_show(name: str, version: int) -> None:
    """One version's full record as JSON (checksum, signature, lineage) and its ancestry."""
    from services.core.registry import ancestry, find, read_versions

    history = read_versions(_settings())
    record = find(history, name, version)
    click.echo(record.model_dump_json(indent=2))
    chain = " <- ".join(f"v{n}" for n in ancestry(history, name, version))
    click.echo(f"ancestry: {chain}")


@models.command("promote")
@click.argument("name")
@click.argument("version", type=int)
def models_promote(name: str, version: int) -> None:
    """Make an existing version the one serving answers with (announced as a new version)."""
    from services.core.registry import find, read_versions, reannounce

    settings = _settings()
    message = reannounce(settings, find(read_versions(settings), name, version), "promote")
    click.echo(f"{name} promoted: v{message.version} serves the artifact of v{version}")


@models.command("rollback")
@click.argument("name")
@click.option("--to", "target", type=int, default=None, help="Version to go back to.")
def models_rollback(name: str, target: int | None) -> None:
    """Serve the version before the current one again (or the one given with --to).

    A running training service publishes its next scheduled version from its own model, which
    then supersedes the rollback; stop training first to hold it.
    """
    from services.core.registry import find, read_versions, reannounce

    settings = _settings()
    history = [v for v in read_versions(settings) if v.model_name == name]
    if not history:
        raise click.ClickException(f"model {name!r} has no versions")
    current = history[-1]
    if target is None:
        # a promote or rollback message stands for the version it re-announced
        serving = current
        if current.trigger in ("promote", "rollback") and current.parent_version is not None:
            serving = find(history, name, current.parent_version)
        if serving.parent_version is None:
            raise click.ClickException(f"{name} v{serving.version} has no parent to roll back to")
        target = serving.parent_version
    message = reannounce(settings, find(history, name, target), "rollback")
    click.echo(
        f"{name} rolled back: v{message.version} serves the artifact of v{target} "
        f"(was v{current.version})"
    )


@main.command()
@click.argument("features_json")
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    callback=_positive,
    help="Seconds to wait for a reply.",
)
@click.option(
    "--entity",
    default=None,
    help="Fill the features not given from this entity's latest in the feature store.",
)
def predict(features_json: str, timeout: float, entity: str | None) -> None:
    """Request/reply prediction: eddy predict '{"https": 1.0}' [--entity page-7]."""
    from pydantic import TypeAdapter

    from eddy.client import EddyClient
    from schemas.base import Features
    from services.core.stream import describe

    try:  # checked here, before connecting: a clear error, not the service's dead letter
        features = TypeAdapter(Features).validate_json(features_json)
    except ValidationError as error:
        raise click.BadParameter(
            f"not a JSON object of feature values: {describe(error)}", param_hint="FEATURES_JSON"
        ) from None
    with EddyClient(_settings()) as client:
        click.echo(client.predict(features, timeout, entity_id=entity).model_dump_json(indent=2))


@main.command()
@click.argument("file", type=click.File("rb"), default="-")
def send(file: Any) -> None:
    """Send raw events, one JSON object per line, to events.raw (ingest validates them)."""
    from eddy.client import EddyClient

    count = 0
    with EddyClient(_settings()) as client:
        for number, line in enumerate(file, 1):
            if line.strip():
                try:
                    client.send_raw(line.strip())
                except MessageTooLargeError as error:
                    client.flush()
                    raise click.ClickException(
                        f"line {number}: {error}; the {count} events before it were sent"
                    ) from None
                count += 1
        client.flush()
    click.echo(f"sent {count} events")


@main.group()
def schemas() -> None:
    """The JSON Schema files generated from the payload models."""


@schemas.command("export")
def schemas_export() -> None:
    """Write schemas/json/*.schema.json from the models."""
    from schemas.export import write_schemas

    for path in write_schemas():
        click.echo(f"wrote {path}")


@schemas.command("check")
def schemas_check() -> None:
    """Exit 1 if the committed schema files differ from the models."""
    from schemas.export import stale_schemas

    stale = stale_schemas()
    if stale:
        click.echo(f"stale: {', '.join(stale)} (run `eddy schemas export`)", err=True)
        sys.exit(1)
    click.echo("schemas up to date")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target", required=True, help="The column that holds the label.")
@click.option(
    "--schema",
    "schema_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A feature schema (TOML) to use instead of inferring one from the file.",
)
@click.option(
    "--models",
    default="auto",
    show_default=True,
    help="Candidates: auto, a name in infra/models/ (binary, multiclass, regression) or a path.",
)
@click.option(
    "--rate", default=500.0, show_default=True, callback=_positive, help="Events per second."
)
@_count_option("--label-delay", 100, "Events each label lags.")
@click.option("--events", type=click.IntRange(min=1), default=None, help="Only the first N rows.")
@click.option(
    "--summary-json",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Also write the summary as JSON here.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Where the HTML report goes [FILE with .report.html].",
)
def replay(
    file: Path,
    target: str,
    schema_path: Path | None,
    models: str,
    rate: float,
    label_delay: int,
    events: int | None,
    summary_json: Path | None,
    report_path: Path | None,
) -> None:
    """Stream your own CSV or JSON-lines file through the whole loop, and score what it served.

    Labels come from the --target column, each sent --label-delay events late. Without
    --schema, the feature schema is inferred and written beside the file for review.
    """
    import json

    from eddy.replay import Replay, run_replay

    plan = Replay(
        path=file,
        target=target,
        rate=rate,
        label_delay=label_delay,
        events=events,
        schema=schema_path,
        models=models,
        report=report_path or file.with_suffix(".report.html"),
    )
    summary = run_replay(_settings(), click.echo, plan)
    for line in summary.lines():
        click.echo(line)
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary.as_json(), indent=2) + "\n", encoding="utf-8")
        click.echo(f"  summary JSON    {summary_json}")


@main.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=Path("eddy-report.html"),
    show_default=True,
    help="The HTML file to write.",
)
@click.option("--json", "as_json", is_flag=True, help="Also print what it shows as JSON.")
@click.option(
    "--idle",
    type=click.FloatRange(0.1, 60),
    default=1.0,
    show_default=True,
    help="Seconds without a message that end the reading of a topic.",
)
def report(out: Path, as_json: bool, idle: float) -> None:
    """Write an HTML report of how the loop did over the stream; it opens offline.

    Served score over the stream with drift events and versions marked, the leaderboard over
    time, label coverage and delay, latency percentiles, dead letters by reason: read from the
    topics and training's leaderboard history on the configured stack.
    """
    from eddy.report import as_json as report_json
    from eddy.report import write_report

    settings = _settings()
    data = write_report(settings, out, idle)
    if not data.predictions and data.other_models:
        click.echo(
            f"no predictions of model {settings.model_name!r}; predictions on the topic are of "
            f"{sorted(data.other_models)}: set EDDY_MODEL_NAME to one of them",
            err=True,
        )
    if as_json:
        click.echo(report_json(data))
    else:
        click.echo(
            f"{data.predictions:,} predictions, {data.labelled:,} labelled, "
            f"{len(data.versions)} versions, {len(data.drift)} drift events: report written to "
            f"{out}"
        )


@models.command("deploy")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--shadow", is_flag=True, help="Run VERSION beside the champion, unseen, scored.")
@click.option(
    "--canary",
    "percent",
    type=click.FloatRange(0, 100, min_open=True),
    default=None,
    help="Let VERSION answer this percent of entities (sticky), ramping and deciding itself.",
)
@click.option(
    "--steps",
    default="25,50",
    show_default=True,
    help="The canary's next shares, in percent, ramped through while it holds its score.",
)
@click.option(
    "--follow", is_flag=True, help="Without --shadow/--canary: serve newer versions as they come."
)
def models_deploy(
    name: str, version: int, shadow: bool, percent: float | None, steps: str, follow: bool
) -> None:
    """Put VERSION in shadow, on canary, or in front as the champion (which then holds).

    Without --shadow or --canary, VERSION serves every event from now on and holds until a
    person or a rule changes it (--follow: newer versions take over as they come).
    """
    from services.core import deployments
    from services.core.artifacts import artifact_store
    from services.core.registry import find, load_verified, read_versions
    from services.core.signing import Keyring

    if shadow and percent is not None:
        raise click.UsageError("give --shadow or --canary, not both")
    settings = _settings()
    keys = Keyring.of(settings)
    versions = [v for v in read_versions(settings) if v.model_name == name]
    target = find(versions, name, version)
    load_verified(target, keys, artifact_store(settings))  # what serving would refuse, refused
    previous = deployments.latest(deployments.read_deployments(settings, name))
    plan = deployments.plan(versions, previous)
    if plan.champion is None:
        raise click.ClickException(f"model {name!r} has no version serving to stand beside")
    fields: dict[str, object] = {"model_name": name, "decided_by": "person"}
    if shadow or percent is not None:
        if version == plan.champion:
            raise click.ClickException(f"v{version} is the champion already")
        try:
            ramp = sorted({float(p) / 100 for p in steps.split(",") if p.strip()})
        except ValueError:
            raise click.BadParameter(
                "percents separated by commas: 25,50", param_hint="--steps"
            ) from None
        share = (percent or 0.0) / 100
        fields.update(
            action="shadow" if shadow else "canary",
            mode="shadow" if shadow else "canary",
            champion_version=plan.champion,
            challenger_version=version,
            follow=False,
            share=0.0 if shadow else share,
            steps=[] if shadow else [s for s in ramp if share < s <= 1],
            reason=f"v{version} {'in shadow' if shadow else f'on canary at {percent:g}%'}",
        )
    else:
        fields.update(
            action="serve",
            mode="none",
            champion_version=version,
            challenger_version=None,
            follow=follow,
            share=0.0,
            steps=[],
            reason=f"v{version} serves" + (", then newer versions" if follow else ", and holds"),
        )
    record = deployments.change(previous, keys, **fields)
    deployments.announce(settings, record)
    click.echo(f"{name}: {record.reason} (deployment {record.seq})")


@models.command("status")
@click.option("--name", "model_name", default=None, help="Model name (default: serving's).")
@click.option("--json", "as_json", is_flag=True, help="The status as JSON, for scripts.")
def models_status(model_name: str | None, as_json: bool) -> None:
    """What serves whom: the champion, a challenger in shadow or on canary, its live scores."""
    import json

    from services.core import deployments
    from services.core.registry import read_versions
    from services.core.state import connect_redis, deployment_status_key

    settings = _settings()
    name = model_name or settings.model_name
    versions = [v for v in read_versions(settings) if v.model_name == name]
    record = deployments.latest(deployments.read_deployments(settings, name))
    plan = deployments.plan(versions, record)
    live = None
    if record is not None and record.mode != "none":
        raw = connect_redis(settings).get(deployment_status_key(settings.topic_prefix, name))
        live = json.loads(raw) if raw is not None else None
        if live is not None and live.get("seq") != record.seq:
            live = None  # figures of an earlier deployment
    status = {
        "model": name,
        "champion_version": plan.champion,
        "follows_new_versions": record is None or record.follow,
        "mode": plan.mode,
        "challenger_version": plan.challenger,
        "share": plan.share,
        "next_steps": record.steps if record else [],
        "live": live,
        "last_change": record.model_dump(mode="json", exclude={"key_id", "signature"})
        if record
        else None,
    }
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    if plan.champion is None:
        click.echo(f"{name}: no version serving yet")
        return
    holds = "follows new versions" if status["follows_new_versions"] else "holds"
    line = f"{name}: champion v{plan.champion} ({holds})"
    if plan.mode == "shadow":
        line += f"; v{plan.challenger} in shadow"
    elif plan.mode == "canary":
        ahead = ", ".join(f"{s:.0%}" for s in (record.steps if record else [])) or "none"
        line += f"; v{plan.challenger} on canary for {plan.share:.0%} of entities (next: {ahead})"
    click.echo(line)
    if plan.mode != "none":
        if live is None:
            click.echo("live scores: none yet (monitoring has no labelled events of them)")
        else:

            def show(value: object) -> str:
                return "-" if value is None else f"{value:.4f}"

            click.echo(
                f"live {live['metric']}: champion {show(live['champion'])} "
                f"({live['champion_labels']:.0f} labelled), challenger {show(live['challenger'])} "
                f"({live['challenger_labels']:.0f}); likelihood ratio "
                f"{live['likelihood_ratio']:.3g}: {live['verdict']}"
            )
            if "labelled_waiting" in live:
                click.echo(
                    f"waiting to pair: {live['answers_waiting']:.0f} shadow answers without "
                    f"their label yet, {live['labelled_waiting']:.0f} labelled events without "
                    "the shadow's answer (many of these: is the shadow failing? see "
                    'eddy_rejected_total{reason="shadow_error"} on serving)'
                )
    if record is not None:
        click.echo(
            f"last change: {record.action} by {record.decided_by} at "
            f"{record.created_at:%Y-%m-%d %H:%M:%S}: {record.reason}"
        )


@models.command("leaderboard")
@click.option("--json", "as_json", is_flag=True, help="The board as JSON, for scripts.")
def models_leaderboard(as_json: bool) -> None:
    """The candidates training races, best first, with their live scores."""
    import json

    from services.core.state import connect_redis, leaderboard_key

    settings = _settings()
    raw = connect_redis(settings).get(leaderboard_key(settings.topic_prefix, settings.model_name))
    if raw is None:
        raise click.ClickException(
            f"no leaderboard for model {settings.model_name!r}: is training running "
            "(EDDY_MODEL_NAME, EDDY_TOPIC_PREFIX)?"
        )
    board = json.loads(raw)
    if as_json:
        click.echo(json.dumps(board, indent=2))
        return
    click.echo(f"{'':2}{'rank':>4}  {'candidate':<24} {'score':>8}  {'examples':>9}  {'ex/s':>8}")
    for row in board["candidates"]:
        score = "-" if row["score"] is None else f"{row['score']:.4f}"
        click.echo(
            f"{'*' if row['champion'] else ' ':2}{row['rank']:>4}  {row['candidate']:<24} "
            f"{score:>8}  {row['examples']:>9}  {row['examples_per_s']:>8.0f}"
            + (f"  ({row['behind']} behind)" if row["behind"] else "")
        )
    click.echo(
        f"metric: {board['candidates'][0]['metric'] if board['candidates'] else '-'}; * serves"
    )


@models.command("prune")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="What was removed, as JSON.")
def models_prune(dry_run: bool, as_json: bool) -> None:
    """Remove artifacts in the registry folder that no version on `models` names.

    The folder outlives stacks (an embedded broker forgets its topics when it stops), so it
    keeps artifacts no running stack knows; this frees them.
    """
    import json

    from services.core.registry import orphaned_artifacts, read_versions

    settings = _settings()
    if settings.registry_uri:
        raise click.ClickException(
            f"artifacts are in object storage ({settings.registry_uri}): prune them there, with "
            "the bucket's lifecycle rules; this command prunes the local folder only"
        )
    orphans = orphaned_artifacts(settings.registry_dir, read_versions(settings))
    freed = sum(path.stat().st_size for path in orphans)
    if not dry_run:
        for path in orphans:
            path.unlink(missing_ok=True)
    if as_json:
        click.echo(
            json.dumps({"removed": [str(p) for p in orphans], "bytes": freed, "dry_run": dry_run})
        )
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(orphans)} artifacts ({freed / 1e6:.1f} MB) in {settings.registry_dir}")


@main.command()
@click.argument("topic", type=click.Choice(TAILABLE))
@click.option("--from-beginning", is_flag=True, help="Start at the oldest message kept.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N messages.")
@click.option(
    "--idle-exit",
    type=float,
    default=None,
    help="Stop after this many seconds without a message (default: follow until Ctrl-C).",
)
def tail(topic: str, from_beginning: bool, count: int | None, idle_exit: float | None) -> None:
    """Print what the loop produced on a topic, one JSON object a line.

    Follows the topic from its end (or --from-beginning) until Ctrl-C, --count or --idle-exit.
    """
    from services.core.tailing import follow
    from services.core.topics import Topics

    settings = _settings()
    name = Topics(settings.topic_prefix)(topic)  # type: ignore[arg-type]  # a TopicRole choice
    for shown, value in enumerate(follow(settings, name, from_beginning, idle_exit), start=1):
        click.echo(value)
        if count is not None and shown >= count:
            break


@main.group()
def keys() -> None:
    """Keys that sign model versions."""


@keys.command("generate")
@click.option("--json", "as_json", is_flag=True, help="The key pair as JSON, for scripts.")
def keys_generate(as_json: bool) -> None:
    """Make an Ed25519 key pair: the private key for publishers, the public one for readers.

    Set EDDY_SIGNING_PRIVATE_KEY (or EDDY_SIGNING_PRIVATE_KEY_FILE) on training and wherever
    `eddy models publish` runs, and add the public key to EDDY_TRUSTED_KEYS everywhere.
    """
    import json

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from services.core.signing import ed25519_key_id, private_hex, public_hex

    private = Ed25519PrivateKey.generate()
    pair = {
        "key_id": ed25519_key_id(private.public_key()),
        "private_key": private_hex(private),
        "public_key": public_hex(private),
    }
    if as_json:
        click.echo(json.dumps(pair, indent=2))
        return
    click.echo(f"key id: {pair['key_id']}")
    click.echo(f"EDDY_SIGNING_PRIVATE_KEY={pair['private_key']}   # secret: publishers only")
    click.echo(f"EDDY_TRUSTED_KEYS='[\"{pair['public_key']}\"]'   # every service")


@main.group()
def dlq() -> None:
    """Dead letters: what was rejected and why; send them again after a fix."""


def _since(text: str | None) -> datetime | None:
    """``--since``: an ISO 8601 time, or an age such as 30m, 2h, 1d."""
    from datetime import UTC, datetime, timedelta

    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(seconds=float(text[:-1]) * units[text[-1]])
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither an ISO 8601 time (2026-12-04T10:00:00Z) nor an age (30m, 2h, 1d)",
            param_hint="--since",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


_REASON = click.Choice(list(get_args(RejectReason)))


@dlq.command("list")
@click.option("--reason", type=_REASON, default=None, help="Only letters with this reason.")
@click.option(
    "--since", default=None, help="Only letters since: an ISO 8601 time or an age (30m, 2h, 1d)."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line, for scripts.")
def dlq_list(reason: str | None, since: str | None, as_json: bool) -> None:
    """Dead letters on the topic now, oldest first, and a count by reason."""
    from collections import Counter

    from services.core.dead_letters import read_letters

    letters = read_letters(_settings(), reason, _since(since))
    if as_json:
        for letter in letters:
            click.echo(letter.model_dump_json())
        return
    for letter in letters:
        click.echo(
            f"{letter.failed_at:%Y-%m-%d %H:%M:%S}  {letter.service:<10} {letter.reason:<14} "
            f"{letter.source_topic}/{letter.source_partition}/{letter.source_offset}  "
            f"{letter.event_id or '-'}  {letter.detail[:120]}"
        )
    counts = Counter(letter.reason for letter in letters)
    summary = ", ".join(f"{r} {n}" for r, n in counts.most_common()) or "none"
    click.echo(f"{len(letters)} dead letters: {summary}", err=True)


@dlq.command("replay")
@click.option("--reason", type=_REASON, default=None, help="Only letters with this reason.")
@click.option("--since", default=None, help="Only letters since: an ISO 8601 time or an age.")
@click.option(
    "--to",
    "to_role",
    type=click.Choice(list(get_args(TopicRole))),
    default=None,
    help="Send them to this topic (default: each to the topic it came from).",
)
@click.option(
    "--watch",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds to watch the dead-letter topic afterwards for those rejected again (0: do not).",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be sent.")
@click.option("--json", "as_json", is_flag=True, help="The counts as JSON.")
def dlq_replay(
    reason: str | None,
    since: str | None,
    to_role: str | None,
    watch: float,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Send dead letters back where they came from after a fix, each once.

    Each letter's original bytes go back to its source topic (or --to), once: a second replay
    of the same letters sends nothing. Letters whose original was cut at the size limit cannot
    be sent. Afterwards it watches for those rejected again and counts them by reason.
    """
    import json

    from services.core.dead_letters import read_letters, replay
    from services.core.topics import Topics

    settings = _settings()
    letters = read_letters(settings, reason, _since(since))
    if dry_run:
        click.echo(
            json.dumps({"would_consider": len(letters)})
            if as_json
            else f"{len(letters)} dead letters match"
        )
        return
    to_topic = Topics(settings.topic_prefix)(to_role) if to_role else None  # type: ignore[arg-type]
    if not as_json:
        click.echo(
            f"replaying {len(letters)} dead letters; watching {watch:g} s for rejections", err=True
        )
    report = replay(settings, letters, to_topic, watch)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    again = ", ".join(f"{r} {n}" for r, n in report.rejected_again.most_common())
    where = ", ".join(f"{n} to {t}" for t, n in report.topics.items()) or "none"
    click.echo(
        f"sent {report.sent} ({where}); "
        f"already replayed {report.already_replayed}; "
        f"original cut or redacted, not sent {report.truncated}; "
        f"rejected again {sum(report.rejected_again.values())}" + (f" ({again})" if again else "")
    )


if __name__ == "__main__":
    main()
