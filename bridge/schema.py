"""JSON Schema and AsyncAPI 3 documents of the wire format, generated from the msgspec types.

``docs/messages.md`` is ``render_markdown()``; a test fails when it is stale
(regenerate with ``tcx-bridge schema --markdown > docs/messages.md``).
"""

from __future__ import annotations

import inspect
import json
from typing import Any, NamedTuple

import msgspec

from bridge import events


class Channel(NamedTuple):
    """Where a message travels: exchange and routing key (with {parameters})."""

    key: str
    exchange: str
    address: str
    message: type[msgspec.Struct]
    sender: str
    summary: str


CHANNELS = (
    Channel(
        "callEvents",
        "tcx.events",
        "call.{kind}.{direction}.{desk}",
        events.CallEvent,
        "tcx-bridge-notify",
        "One launch of the registered executable by 3CX Assistant.",
    ),
    Channel(
        "invalidCallEvents",
        "tcx.events",
        "call.invalid.{desk}",
        events.CallEvent,
        "tcx-bridge-notify",
        "A launch that could not be understood (kind invalid, with reason and argv).",
    ),
    Channel(
        "dialResults",
        "tcx.events",
        "dial.{status}.{desk}",
        events.DialResult,
        "tcx-bridge agent",
        "What became of a dial request.",
    ),
    Channel(
        "dialRequests",
        "tcx.commands",
        "desk.{desk}.dial",
        events.DialRequest,
        "CRM servers, tcx-bridge dial",
        "Ask a desk's 3CX Assistant to dial (also ext.{extension}.dial).",
    ),
    Channel(
        "screenPops",
        "tcx.commands",
        "desk.{desk}.popup",
        events.ScreenPop,
        "tcx-bridge consume crm",
        "Who is calling, for the desk (also ext.{extension}.popup).",
    ),
    Channel(
        "callbackOpened",
        "tcx.events",
        "callback.opened",
        events.CallbackOpened,
        "tcx-bridge consume callbacks",
        "A missed external caller got a callback task.",
    ),
    Channel(
        "callbackAssigned",
        "tcx.events",
        "callback.assigned",
        events.CallbackAssigned,
        "tcx-bridge consume callbacks",
        "A callback task was given to a desk (auto, or callbacks assign / dial).",
    ),
    Channel(
        "callbackClosed",
        "tcx.events",
        "callback.closed",
        events.CallbackClosed,
        "tcx-bridge consume callbacks",
        "A callback task closed: reached, unreached, or closed by hand.",
    ),
    Channel(
        "forgetRequests",
        "tcx.commands",
        "privacy.forget",
        events.ForgetRequest,
        "tcx-bridge privacy forget",
        "Erase a caller's number in what every desk agent and consumer holds alone.",
    ),
)
# Each exchange as topology declare makes it: a client that declares one with other arguments gets
# PRECONDITION_FAILED, so the documents name the arguments and recommend a passive declare.
EXCHANGES = {
    "tcx.events": ("topic", {"alternate-exchange": "tcx.unrouted"}),
    "tcx.commands": ("topic", {}),
}
EXCHANGE_ADVICE = (
    "Declare it passively (it exists once `tcx-bridge topology declare` ran); "
    "a declare with other arguments fails with PRECONDITION_FAILED."
)
PARAMETERS = {
    "kind": "started, connected or ended",
    "direction": "inbound, outbound or unknown",
    "desk": "the desk id, [A-Za-z0-9_-]",
    "status": "dialed, confirmed, unconfirmed, rejected, expired or failed",
}


# Messages whose decoders read one type, so the tag may be left out (dial results are read in a union).
TAG_OPTIONAL = ("CallEvent", "ScreenPop", "DialRequest")


def _components(ref_template: str) -> dict[str, Any]:
    """The msgspec schemas, with ``required`` saying what the decoders really require.

    Normalised so that the documents do not change with the msgspec version: descriptions (the
    Structs' docstrings) with inspect.cleandoc (0.23 keeps their indentation, older releases did
    not), and ``null`` last in each anyOf (releases before 0.22 put it first).
    """
    _, components = msgspec.json.schema_components(events.MESSAGES, ref_template=ref_template)
    _normalise(components)
    for name in TAG_OPTIONAL:
        required = components[name].get("required", [])
        components[name]["required"] = [field for field in required if field != "type"]
    return components


def _normalise(node: Any) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("description"), str):
            node["description"] = inspect.cleandoc(node["description"])
        if isinstance(node.get("anyOf"), list):
            node["anyOf"].sort(key=lambda option: option == {"type": "null"})  # stable: only null moves
        for value in node.values():
            _normalise(value)
    elif isinstance(node, list):
        for value in node:
            _normalise(value)


def json_schemas(ref_template: str = "#/$defs/{name}") -> dict[str, Any]:
    """{"$defs": {...}} with one JSON Schema per message (and its parts)."""
    components = _components(ref_template)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": components}


def asyncapi() -> dict[str, Any]:
    """An AsyncAPI 3.0 document of the channels (exchanges and routing keys) and messages."""
    schemas = _components("#/components/schemas/{name}")
    channels = {channel.key: _asyncapi_channel(channel) for channel in CHANNELS}
    operations = {f"send_{channel.key}": _asyncapi_operation(channel) for channel in CHANNELS}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "tcx-bridge",
            "version": str(events.SCHEMA_VERSION),
            "description": "3CX Assistant call events, screen pops and dial requests on RabbitMQ. "
            "Exchange names use the default namespace tcx.",
        },
        "defaultContentType": "application/json",
        "servers": {"rabbitmq": {"host": "localhost:5672", "protocol": "amqp", "protocolVersion": "0.9.1"}},
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": {
                message.__name__: {
                    "name": message.__name__,
                    "contentType": "application/json",
                    "payload": {"$ref": f"#/components/schemas/{message.__name__}"},
                }
                for message in events.MESSAGES
            },
            "schemas": schemas,
        },
    }


def _asyncapi_channel(channel: Channel) -> dict[str, Any]:
    """One channel of the AsyncAPI document: its address, parameters, message and AMQP binding."""
    name = channel.message.__name__
    parameters = {p: {"description": PARAMETERS[p]} for p in PARAMETERS if "{" + p + "}" in channel.address}
    kind, arguments = EXCHANGES[channel.exchange]
    shown = ", ".join(f"{key} {value}" for key, value in arguments.items()) or "no arguments"
    return {
        "address": channel.address,
        "description": f"{channel.summary} Exchange {channel.exchange}: {kind}, durable, {shown}. "
        + EXCHANGE_ADVICE,
        "x-exchange-arguments": arguments,
        "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        **({"parameters": parameters} if parameters else {}),
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": {
                    "name": channel.exchange,
                    "type": kind,
                    "durable": True,
                    "autoDelete": False,
                    "vhost": "/",
                },
                "bindingVersion": "0.3.0",
            }
        },
    }


def _asyncapi_operation(channel: Channel) -> dict[str, Any]:
    """The send operation of a channel: who publishes there, persistent and mandatory."""
    return {
        "action": "send",
        "channel": {"$ref": f"#/channels/{channel.key}"},
        "summary": f"Published by {channel.sender}.",
        "bindings": {"amqp": {"deliveryMode": 2, "mandatory": True, "bindingVersion": "0.3.0"}},
    }


def render_markdown() -> str:
    """docs/messages.md: every message, where it travels, and its JSON Schema."""
    schemas = json_schemas()["$defs"]
    lines = [
        "# Messages",
        "",
        "Generated by `tcx-bridge schema --markdown` from the msgspec types in `bridge/events.py`;",
        "do not edit by hand. Exchange names use the default namespace `tcx`. Every body is JSON;",
        "consumers must ignore fields they do not know (new fields may be added, types never change).",
        "",
        "Times (`occurred_at`, `expires_at`) are RFC 3339 (`format: date-time`). Decoders accept 0-9",
        "fraction digits, `Z` or a numeric offset, and `T` or a space, and refuse impossible dates;",
        "tcx-bridge emits UTC with microseconds and `Z`. Fields that are not required have defaults.",
        "",
        "Dial results come in this sequence: `dialed`, then `confirmed` (with the Assistant's `call_id`)",
        "or `unconfirmed` when `confirm_within` is set; or one of `rejected`, `expired`, `failed`.",
        "",
        "| exchange | routing key | message | published by |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{c.exchange}` | `{c.address}` | {c.message.__name__} | {c.sender} |" for c in CHANNELS]
    lines += ["", "| exchange | type | durable | arguments |", "|---|---|---|---|"]
    for exchange, (kind, arguments) in EXCHANGES.items():
        shown = ", ".join(f"`{key}: {value}`" for key, value in arguments.items()) or "none"
        lines.append(f"| `{exchange}` | {kind} | yes | {shown} |")
    lines += ["", EXCHANGE_ADVICE.replace("Declare it", "Declare an exchange")]
    for message in events.MESSAGES:
        name = message.__name__
        schema = schemas[name]
        lines += ["", f"## {name}", "", (message.__doc__ or "").strip().splitlines()[0], ""]
        lines += ["| field | type | required |", "|---|---|---|"]
        required = set(schema.get("required", []))
        for field, spec in schema["properties"].items():
            lines.append(f"| `{field}` | {_type(spec)} | {'yes' if field in required else 'no'} |")
        lines += ["", "```json", json.dumps(schema, indent=2), "```"]
    return "\n".join(lines) + "\n"


def _type(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        return str(spec["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in spec:
        return " or ".join(_type(option) for option in spec["anyOf"])
    if "enum" in spec:
        return " \\| ".join(f"`{value}`" for value in spec["enum"])
    if "const" in spec:
        return f"`{spec['const']}`"
    if spec.get("type") == "array":
        return f"array of {_type(spec.get('items', {}))}"
    return str(spec.get("type", "any"))
