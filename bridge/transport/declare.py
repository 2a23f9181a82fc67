"""Declaring, checking and deleting exchanges and queues, and binding them."""

from __future__ import annotations

from typing import Any

from bridge.errors import BrokerRefusedError, BrokerRejectedError
from bridge.transport.connection import Connection
from bridge.transport.mapping import NOT_FOUND, PRECONDITION_FAILED, mapped_errors


class Declaring(Connection):
    """The topology operations: declare (durable), check passively, bind, delete."""

    def declare_exchange(self, name: str, kind: str, *, arguments: dict[str, Any] | None = None) -> None:
        with mapped_errors(f"declare exchange {name!r}"):
            self.channel.exchange_declare(name, kind, durable=True, arguments=arguments)

    def ensure_exchange(self, name: str, kind: str, *, arguments: dict[str, Any] | None = None) -> None:
        """Check that the exchange exists (passively: no right needed); declare it only when it does not.

        A user without the configure right gets one line naming the exchange and the fix.
        """
        if self.exchange_exists(name):
            return
        try:
            self.declare_exchange(name, kind, arguments=arguments)
        except BrokerRefusedError:
            raise BrokerRefusedError(
                f"exchange {name!r} does not exist and user {self.username!r} may not declare it "
                "(no configure right on it); run tcx-bridge topology declare as an admin first"
            ) from None

    def exchange_exists(self, name: str) -> bool:
        try:
            with mapped_errors(f"check exchange {name!r}"):
                self.channel.exchange_declare(name, passive=True)
        except BrokerRejectedError as error:
            if error.reply_code == NOT_FOUND:
                return False
            raise
        return True

    def declare_queue(self, name: str, *, arguments: dict[str, Any] | None = None) -> int:
        """Declare a durable queue; return how many messages it holds.

        A queue that exists with other arguments (classic vs quorum) is a
        BrokerRefusedError saying how to migrate it.
        """
        try:
            with mapped_errors(f"declare queue {name!r}"):
                result = self.channel.queue_declare(name, durable=True, arguments=arguments)
        except BrokerRejectedError as error:
            if error.reply_code != PRECONDITION_FAILED:
                raise
            raise BrokerRefusedError(_mismatch(name, arguments or {}, str(error))) from None
        return int(result.method.message_count)

    def declare_private_queue(self) -> str:
        """A server-named queue that lives as long as this connection; return its name."""
        with mapped_errors("declare a private queue"):
            result = self.channel.queue_declare("", exclusive=True)  # gone with the connection
        return str(result.method.queue)

    def queue_info(self, name: str) -> tuple[int, int] | None:
        """(messages ready, consumers) of a queue, or None when it does not exist."""
        try:
            with mapped_errors(f"check queue {name!r}"):
                result = self.channel.queue_declare(name, passive=True)
        except BrokerRejectedError as error:
            if error.reply_code == NOT_FOUND:
                return None
            raise
        return int(result.method.message_count), int(result.method.consumer_count)

    def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        with mapped_errors(f"bind {queue!r} to {exchange!r} with {routing_key!r}"):
            self.channel.queue_bind(queue, exchange, routing_key)

    def delete_queue(self, name: str) -> None:
        with mapped_errors(f"delete queue {name!r}"):
            self.channel.queue_delete(name)

    def delete_exchange(self, name: str) -> None:
        with mapped_errors(f"delete exchange {name!r}"):
            self.channel.exchange_delete(name)


def _mismatch(name: str, arguments: dict[str, Any], detail: str) -> str:
    """The one line for a queue that exists with other arguments than ours."""
    wanted = str(arguments.get("x-queue-type", "classic"))
    current = "quorum" if wanted != "quorum" else "classic"
    quorum_only = ("x-dead-letter-strategy", "x-delivery-limit", "x-overflow")
    if "x-queue-type" in detail or (wanted == "classic" and any(arg in detail for arg in quorum_only)):
        return (
            f"queue {name!r} exists as a {current} queue but the settings ask for a {wanted} queue "
            f"(quorum={'true' if wanted == 'quorum' else 'false'}); either set TCX_BRIDGE_QUORUM="
            f"{'false' if wanted == 'quorum' else 'true'}, or migrate: stop its consumers, let it drain "
            f"(or shovel its messages away), delete it (rabbitmqctl delete_queue {name}) and start again"
        )
    return (
        f"queue {name!r} exists with other arguments than tcx-bridge declares ({detail}); "
        f"delete it (rabbitmqctl delete_queue {name}) once drained, or align the settings"
    )
