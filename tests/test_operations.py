"""Operations: the demo, topology, schema and docs in sync, the compose file, simulate."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pika
import pytest
import yaml
from click.testing import CliRunner

from bridge.cli import cli
from bridge.config import Settings
from bridge.schema import asyncapi, json_schemas, render_markdown
from bridge.simulate import plan_traffic
from bridge.transport import Broker
from consumers.runtime.plugins import installed
from tests.conftest import Tap, run_cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.integration
def test_demo_runs_to_completion(env: dict[str, str]) -> None:
    started = time.monotonic()
    done = run_cli(env, "demo", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started < 60
    out = done.stdout
    assert "  pop    demo-" in out
    assert "(Muster AG)" in out or "unknown caller" in out
    assert "  dial   demo-1  +41790001020   dialed" in out
    assert "   wallboard: http://127.0.0.1:" in out
    assert "  dial   demo-1  +41790001020   confirmed (call id +41790001020)" in out
    assert "desk    calls  answered  missed  answer_rate" in out
    assert "8. stopped: crm exit 0, analytics exit 0, agent demo-1 exit 0" in out


@pytest.mark.integration
def test_topology_declare_twice_is_idempotent(
    env: dict[str, str], broker: Broker, settings: Settings
) -> None:
    """Counted from the topology's own list: installed plugins add their queues to it."""
    from bridge.inventory import consumer_kinds, expected, kind_queues

    entities = expected(settings, ["d1"])
    # each consumer's queues (webhooks: one per [[webhooks]] target, none here)
    consumers = [name for consumer in consumer_kinds() for name, _ in kind_queues(consumer, settings)]
    assert {"crm", "analytics", "wallboard"} <= set(consumers)
    for _ in range(2):
        done = run_cli(env, "topology", "declare", "--desk", "d1")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"declared {len(entities)} exchanges and queues on amqp://guest:****@")
    shown = run_cli(env, "topology", "show", "--desk", "d1")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert [line.split()[1] for line in lines] == [entity.name for entity in entities]
    assert not [line for line in lines if "MISSING" in line]
    for name in [*consumers, "desk.d1"]:  # each consumer's and the desk's queue, retry queue, dead letters
        for queue in (settings.queue(name), f"{settings.queue(name)}.retry", settings.dead_queue(name)):
            assert queue in [line.split()[1] for line in lines]


@pytest.mark.integration
def test_topology_show_reports_what_is_missing(env: dict[str, str], broker: Broker) -> None:
    shown = run_cli(env, "topology", "show")
    assert shown.returncode == 0, shown.stderr
    assert all("MISSING" in line for line in shown.stdout.splitlines())


@pytest.mark.integration
def test_topology_delete_lists_then_deletes_the_namespace_and_nothing_else(
    env: dict[str, str], broker: Broker, settings: Settings, namespace: str
) -> None:
    from bridge.inventory import expected

    neighbour = {**env, "TCX_BRIDGE_NAMESPACE": f"{namespace}x"}  # another namespace, sharing a prefix
    for environ in (env, neighbour):
        assert run_cli(environ, "topology", "declare", "--desk", "d1").returncode == 0
    try:
        dry = run_cli(env, "topology", "delete", "--desk", "d1")
        assert dry.returncode == 1
        entities = expected(settings, ["d1"])
        assert dry.stdout.splitlines() == [f"would delete {e.kind} {e.name}" for e in entities]
        said = dry.stderr.strip().splitlines()[-1]
        assert said.startswith(f"Error: {len(entities)} exchanges and queues of namespace {namespace!r} on ")
        assert said.endswith(": give --yes to delete them")
        assert not [
            line for line in run_cli(env, "topology", "show").stdout.splitlines() if "MISSING" in line
        ]
        done = run_cli(env, "topology", "delete", "--desk", "d1", "--yes")
        assert done.returncode == 0, done.stderr
        assert (
            done.stdout.splitlines()[-1]
            == f"deleted {len(entities)} exchanges and queues of namespace {namespace!r}"
        )
        shown = run_cli(env, "topology", "show", "--desk", "d1").stdout.splitlines()
        assert shown
        assert all("MISSING" in line for line in shown)
        others = run_cli(neighbour, "topology", "show", "--desk", "d1").stdout.splitlines()
        assert others
        assert not [line for line in others if "MISSING" in line]  # the other namespace stays
        again = run_cli(env, "topology", "delete", "--yes")  # nothing left: nothing to do
        assert again.returncode == 0
        assert again.stdout.strip() == f"deleted 0 exchanges and queues of namespace {namespace!r}"
    finally:
        assert run_cli(neighbour, "topology", "delete", "--desk", "d1", "--yes").returncode == 0


def test_messages_doc_is_generated_from_the_schema() -> None:
    """Regenerate with: tcx-bridge schema --markdown > docs/messages.md"""
    assert (ROOT / "docs" / "messages.md").read_text() == render_markdown()


@pytest.mark.integration
def test_the_documented_exchange_arguments_are_the_declared_ones(
    env: dict[str, str], broker: Broker, settings: Settings, plain: Any
) -> None:
    """A client that declares the exchanges as docs/messages.md and the AsyncAPI document say is accepted."""
    from bridge.schema import EXCHANGES

    assert run_cli(env, "topology", "declare").returncode == 0
    document = asyncapi()
    for name, (kind, arguments) in EXCHANGES.items():
        ours = name.replace("tcx.", f"{settings.namespace}.")
        documented = {
            key: value.replace("tcx.", f"{settings.namespace}.") for key, value in arguments.items()
        }
        plain.exchange_declare(ours, kind, durable=True, arguments=documented)  # as documented: accepted
        assert f"| `{name}` | {kind} | yes |" in render_markdown()
        for channel in document["channels"].values():
            if channel["bindings"]["amqp"]["exchange"]["name"] == name:
                assert channel["x-exchange-arguments"] == arguments
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="alternate-exchange"):
        plain.exchange_declare(settings.exchange, "topic", durable=True)  # as the consumer did


def test_schema_covers_every_message() -> None:
    defs = json_schemas()["$defs"]
    assert {"CallEvent", "ScreenPop", "DialRequest", "DialResult", "Contact"} <= set(defs)
    assert set(defs["CallEvent"]["required"]) >= {
        "event_id",
        "kind",
        "direction",
        "call_id",
        "caller_id",
        "desk",
        "extension",
        "occurred_at",
        "argv",
    }
    assert set(defs["DialRequest"]["required"]) >= {"request_id", "number"}


def test_asyncapi_document() -> None:
    document = asyncapi()
    assert document["asyncapi"] == "3.0.0"
    channel = document["channels"]["callEvents"]
    assert channel["address"] == "call.{kind}.{direction}.{desk}"
    assert channel["bindings"]["amqp"]["exchange"]["name"] == "tcx.events"
    assert document["channels"]["dialRequests"]["address"] == "desk.{desk}.dial"
    for operation in document["operations"].values():
        target = operation["channel"]["$ref"].rsplit("/", 1)[-1]
        assert target in document["channels"]
    result = CliRunner().invoke(cli, ["schema", "--asyncapi"])
    assert json.loads(result.output) == document


def test_compose_file_parses_and_runs_only_commands_that_exist() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["rabbitmq"]["image"].startswith("rabbitmq:")
    assert "management" in services["rabbitmq"]["image"]
    assert services["rabbitmq"]["healthcheck"]["test"]
    assert any(volume.endswith(":/var/lib/rabbitmq") for volume in services["rabbitmq"]["volumes"])
    assert {"crm", "analytics"} <= set(services)
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in postgres["volumes"])
    for name in ("crm", "analytics"):
        assert services[name]["environment"]["TCX_BRIDGE_STORE_URL"].startswith("postgresql://")
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["tcx-bridge"]' in dockerfile
    assert "postgres" in dockerfile  # the image has the extra the store needs
    for name, service in services.items():
        if "build" not in service:
            continue
        command = service["command"]
        result = CliRunner().invoke(cli, [*command, "--help"])
        assert result.exit_code == 0, f"{name}: {command}: {result.output}"
        if command[0] == "consume":
            assert command[1] in {plugin.name for plugin in installed()}
        assert service["environment"]["TCX_BRIDGE_AMQP_URL"].startswith("amqp://")


def test_traffic_plan_is_reproducible_and_mixed() -> None:
    one = plan_traffic(60, ["a", "b"], seed=5)
    assert one == plan_traffic(60, ["a", "b"], seed=5)
    assert one != plan_traffic(60, ["a", "b"], seed=6)
    assert all(one.kinds[kind] > 0 for kind in ("answered", "missed", "outbound"))
    for call in one.calls:
        assert [launch.at for launch in call] == sorted(launch.at for launch in call)
        assert call[0].argv[0] == "/N:S"
        assert call[-1].argv[0] == "/N:E"


@pytest.mark.integration
def test_simulate_launches_the_registered_executable(
    env: dict[str, str], settings: Settings, events_tap: Tap
) -> None:
    plan = plan_traffic(6, ["sim-1", "sim-2"], seed=3, speed=600)
    done = run_cli(env, "simulate", "--calls", "6", "--desks", "2", "--seed", "3", "--speed", "600")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{plan.launches} launches (")
    arrived = events_tap.drain()
    assert len(arrived) == plan.launches
    argvs = sorted(tuple(json.loads(d.body)["argv"]) for d in arrived)
    assert argvs == sorted(launch.argv for call in plan.calls for launch in call)
    assert {d.routing_key.rsplit(".", 1)[-1] for d in arrived} <= {"sim-1", "sim-2"}


def test_demo_without_a_broker_or_docker_says_what_to_do(env: dict[str, str], tmp_path: Path) -> None:
    no_docker = {**env, "TCX_BRIDGE_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/%2F", "PATH": str(tmp_path)}
    done = run_cli(no_docker, "demo")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "Error: no RabbitMQ at amqp://guest:****@127.0.0.1:1/%2F (connect to 127.0.0.1:1: the broker cannot be "
        "reached ([Errno 111] Connection refused)) and no Docker to start one: start RabbitMQ (docker compose up "
        "-d rabbitmq, or rabbitmq-server -detached) or set TCX_BRIDGE_AMQP_URL"
    )


def test_compose_reads_credentials_from_env_and_has_a_cluster_profile() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "guest" not in text  # no default credentials: .env gives them
    compose = yaml.safe_load(text)
    nodes = [
        name for name, service in compose["services"].items() if "cluster" in service.get("profiles", [])
    ]
    assert nodes == ["mq1", "mq2", "mq3"]
    example = (ROOT / ".env.example").read_text()
    assert "TCX_MQ_USER=" in example
    assert "TCX_MQ_PASSWORD=" in example
    assert "TCX_PG_PASSWORD=" in example
    cluster_conf = (ROOT / "examples" / "cluster" / "rabbitmq.conf").read_text()
    assert all(f"rabbit@mq{n}" in cluster_conf for n in (1, 2, 3))
