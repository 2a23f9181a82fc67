"""Missed inbound calls to a chat webhook, as a tcx-bridge consumer plugin.

The call record is merged from the call events by tcx-bridge's CallConsumer (any
order, duplicates dropped); when a call ends without being answered, one message
goes to the webhook. The webhook's answer decides: 2xx done, 5xx or no answer
retried (a TransientError), 4xx dead-lettered (a HandlerError, with the reason).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bridge.config import Settings
from bridge.errors import HandlerError, TransientError
from bridge.events import CallEvent
from consumers.analytics.calls import CALLS_SCHEMA, CallConsumer
from consumers.crm.contacts import SqliteContacts
from consumers.numbers import normalise
from consumers.runtime import Context
from consumers.store.core import open_database

WEBHOOK_ENV = "TCX_MISSED_CALLS_WEBHOOK"


class MissedCalls(CallConsumer):
    """A chat message for every missed inbound call, with the caller and the contact name."""

    name = "missed-calls"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.webhook = os.environ.get(WEBHOOK_ENV, "")
        if not self.webhook.startswith(("http://", "https://")):
            from bridge.errors import ConfigError

            raise ConfigError(f"{WEBHOOK_ENV} must be the webhook's http(s) URL, not {self.webhook!r}")
        data = Path(settings.data_dir)
        self.database = open_database(data / "missed-calls.sqlite3", CALLS_SCHEMA)
        self.contacts = SqliteContacts(data / "contacts.sqlite3")

    def on_record(self, event: CallEvent, record: dict[str, Any], context: Context) -> str:
        complete = record["started_at"] is not None and record["ended_at"] is not None
        missed = record["direction"] == "inbound" and complete and not record["answered"]
        if not missed or event.kind not in ("started", "ended"):
            return "not-missed"  # events may arrive in any order: the one that completes the call posts
        number = normalise(record["caller_id"], self.settings.region)
        contact = self.contacts.lookup(number.e164) if number.e164 else None
        caller = number.e164 or record["caller_id"] or "anonymous"
        who = f"{contact.name} ({caller})" if contact else caller
        self.post({"text": f"Missed call on {record['desk']} from {who} at {record['started_at']}"})
        return "posted"

    def post(self, message: dict[str, str]) -> None:
        request = urllib.request.Request(
            self.webhook, json.dumps(message).encode(), {"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=5):
                return
        except urllib.error.HTTPError as error:
            if error.code >= 500 or error.code == 429:
                raise TransientError(f"webhook answered {error.code}") from None
            raise HandlerError(f"webhook refused the message: HTTP {error.code}") from None
        except (urllib.error.URLError, TimeoutError) as error:
            raise TransientError(f"webhook unreachable: {error}") from None
