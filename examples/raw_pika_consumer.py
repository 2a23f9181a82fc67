"""A consumer in 20 lines with pika only, none of tcx-bridge's code: print who is calling.

pip install pika && python examples/raw_pika_consumer.py
"""

import json
import os

import pika

connection = pika.BlockingConnection(
    pika.URLParameters(os.environ.get("AMQP_URL", "amqp://guest:guest@localhost/%2F"))
)
channel = connection.channel()
# declared exactly as tcx-bridge declares it, so the first of us to start creates it
channel.exchange_declare(
    "tcx.events", "topic", durable=True, arguments={"alternate-exchange": "tcx.unrouted"}
)
channel.queue_declare("my-team.screen-log", durable=True)
channel.queue_bind("my-team.screen-log", "tcx.events", "call.started.inbound.*")


def on_event(ch, method, properties, body):
    event = json.loads(body)  # ignore fields you do not know: new ones may be added
    caller = event["caller_id"] or "anonymous"
    print(f"{event['occurred_at']} {event['desk']}: call {event['call_id']} from {caller}")
    ch.basic_ack(method.delivery_tag)  # ack after your side effect is done


channel.basic_qos(prefetch_count=50)
channel.basic_consume("my-team.screen-log", on_event)
channel.start_consuming()
