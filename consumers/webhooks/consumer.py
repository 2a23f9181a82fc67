"""``tcx-bridge consume webhooks``: every ``[[webhooks]]`` target gets the call events it asked for.

    events exchange --<patterns>--> <namespace>.webhooks.<target>  (one durable queue per target)
        --> a Worker thread of its own: its connection, up to `concurrency` requests, its retries
            (<namespace>.retry.webhooks.<target>) and dead letters (<namespace>.dead.webhooks.<target>)
        --> POST url: the native, CloudEvents or Zammad body, signed as Standard Webhooks says

The queues are declared by ``tcx-bridge topology declare`` (an admin), which finds
them through :meth:`Webhooks.queues`; the consumer, as broker user ``tcx-webhooks``,
checks them passively. A target whose URL the SSRF guard refuses stops the start
with one line. The process stops on SIGTERM or Ctrl-C; a worker that meets an
error only an operator can fix (a refused login, a missing queue) stops them all
with its line. See docs/webhooks.md.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
from collections.abc import Sequence
from typing import Any

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.topology import Binding
from consumers.runtime.consumer import Consumer
from consumers.runtime.metrics import metrics_for
from consumers.webhooks import state, stats
from consumers.webhooks.guard import RefusedAddressError, check_url
from consumers.webhooks.settings import WEBHOOKS, WebhooksOptions, secrets_of
from consumers.webhooks.worker import Worker, bindings, consumer_name

logger = logging.getLogger(__name__)


class Webhooks(Consumer):
    """Signed webhooks to any HTTP endpoint: native JSON, CloudEvents or Zammad's CTI (docs/webhooks.md)."""

    name = "webhooks"

    @classmethod
    def bindings(cls, settings: Settings) -> Sequence[Binding]:
        return []  # no queue of its own: one per target (queues())

    @classmethod
    def queues(cls, settings: Settings) -> list[tuple[str, Sequence[Binding]]]:
        """One queue per target, bound to the target's patterns (for topology declare)."""
        options: WebhooksOptions = WEBHOOKS.of(settings)
        return [(consumer_name(target), bindings(settings, target)) for target in options.webhooks]

    def make_runner(self, settings: Settings, **_: Any) -> Supervisor:
        return Supervisor(settings)


class Supervisor:
    """Runs one Worker thread per target until stopped; writes their state for ``webhooks list``."""

    def __init__(self, settings: Settings, environ: dict[str, str] | None = None) -> None:
        options: WebhooksOptions = WEBHOOKS.of(settings)
        if not options.webhooks:
            raise ConfigError(
                "no [[webhooks]] targets are configured; add one to config.toml (docs/webhooks.md)"
            )
        self.settings = settings
        self.stop_event = threading.Event()
        logging.getLogger("httpx").setLevel(logging.WARNING)  # our own line per event says it all
        metrics = metrics_for(settings)
        self.metrics = metrics
        registry = getattr(metrics, "registry", None)
        if registry is not None:
            stats.use_registry(registry)
        self.workers = []
        for target in options.webhooks:
            try:
                check_url(target.name, target.url, target.allow_private)
            except RefusedAddressError:
                raise
            except ConfigError as error:  # does not resolve now: the worker retries
                logger.warning("%s", error)
            enabled = functools.partial(state.enable_requested, settings.data_dir, target.name)
            secrets = secrets_of(target, environ)
            self.workers.append(
                Worker(
                    target,
                    settings,
                    secrets,
                    options.webhook_agents,
                    self.stop_event,
                    enabled=enabled,
                    metrics=metrics,
                )
            )

    def stop(self, *_: object) -> None:
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> None:
        """Start every worker; return when stopped, or raise the first worker's fatal error."""
        threads = [
            threading.Thread(target=worker.run, name=f"webhook {worker.target.name}", daemon=True)
            for worker in self.workers
        ]
        for thread in threads:
            thread.start()
        try:
            while not self.stop_event.wait(state.STATE_EVERY):
                self.write_state()
                failed = next((worker.error for worker in self.workers if worker.error is not None), None)
                if failed is not None:
                    self.stop_event.set()
                    raise failed
        finally:
            self.stop_event.set()
            for thread in threads:
                thread.join(timeout=max(worker.target.timeout for worker in self.workers) + 5)
            self.write_state()
            self.metrics.close()

    def write_state(self) -> None:
        try:
            state.write_state(
                self.settings.data_dir,
                {worker.target.name: worker.stats.snapshot() for worker in self.workers},
            )
        except OSError as error:
            logger.warning("webhooks: cannot write the state file: %s", error)
