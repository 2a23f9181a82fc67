"""A RabbitMQ cluster of our own on this machine: three nodes, their own ports, data and Erlang cookie.

Used by the ``cluster`` fixture and by ``bench/soak.py``. The shared node on 5672
is never touched: every node here has its own name (``tcx<id>-<n>@localhost``),
AMQP and distribution ports, data dir, config file (no plugins) and cookie.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def rabbitmq_available() -> bool:
    """True when this machine can run RabbitMQ nodes of its own."""
    return (RABBITMQ_BIN / "rabbitmq-server").exists() or shutil.which("rabbitmq-server") is not None


def _free_port_block(count: int) -> int:
    """A base port with count free ports after it (and their distribution ports at +100)."""
    for base in range(26000, 29000, 10):
        ports = [base + i for i in range(count)] + [base + 100 + i for i in range(count)]
        if all(_free(port) for port in ports):
            return base
    raise RuntimeError("no free block of ports between 26000 and 29000 for the test cluster")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class LocalCluster:
    """Three (or size) RabbitMQ nodes joined into one cluster; kill, stop and start them one by one."""

    def __init__(self, size: int = 3, *, extra_config: str = "") -> None:
        """extra_config: more rabbitmq.conf lines for every node (a TLS listener, say)."""
        self.size = size
        self.id = uuid.uuid4().hex[:6]
        self.base = Path(tempfile.mkdtemp(prefix="tcx-cluster-"))
        self.port = _free_port_block(size)
        (self.base / ".erlang.cookie").write_text(f"TCXCLUSTER{self.id.upper()}")
        (self.base / ".erlang.cookie").chmod(0o400)
        (self.base / "rabbitmq-env.conf").write_text("")
        for n in range(size):
            node = self.base / f"n{n}"
            node.mkdir()
            (node / "rabbitmq.conf").write_text(
                f"listeners.tcp.default = 127.0.0.1:{self.port + n}\n{extra_config}"
            )
            (node / "enabled_plugins").write_text("[].\n")

    # names ------------------------------------------------------------------
    def node(self, n: int) -> str:
        return f"tcx{self.id}-{n}@localhost"

    def url(self, n: int) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port + n}/%2F"

    @property
    def urls(self) -> list[str]:
        return [self.url(n) for n in range(self.size)]

    def index_of_port(self, port: int) -> int:
        return port - self.port

    def _env(self, n: int) -> dict[str, str]:
        node = self.base / f"n{n}"
        return {
            **os.environ,
            "HOME": str(self.base),  # the cookie of this cluster alone
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.node(n),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port + n),
            "RABBITMQ_DIST_PORT": str(self.port + 100 + n),
            "RABBITMQ_MNESIA_BASE": str(node / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node / "log"),
            "RABBITMQ_CONFIG_FILE": str(node / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(node / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(node / "pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def ctl(self, n: int, *args: str, timeout: float = 60, check: bool = True) -> str:
        done = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", self.node(n), *args],
            env=self._env(n),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.node(n)}: {done.stderr.strip()}")
        return done.stdout

    # lifecycle --------------------------------------------------------------
    def start(self) -> LocalCluster:
        """Start every node and join them into one cluster (about 20 s)."""
        for n in range(self.size):
            self.start_node(n, wait=False)
        for n in range(self.size):
            self.wait_node(n)
        for n in range(1, self.size):
            self.ctl(n, "stop_app")
            self.ctl(n, "join_cluster", self.node(0))
            self.ctl(n, "start_app")
        return self

    def start_node(self, n: int, *, wait: bool = True) -> None:
        subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmq-server"), "-detached"],
            env=self._env(n),
            check=True,
            capture_output=True,
            timeout=60,
        )
        if wait:
            self.wait_node(n)

    def wait_node(self, n: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not self.answers(n):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.node(n)} did not start within {timeout}s; see {self.base}/n{n}/log"
                )
            time.sleep(0.2)
        self.ctl(n, "await_startup", "--timeout", str(int(timeout)))

    def answers(self, n: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port + n), timeout=0.5):
                return True
        except OSError:
            return False

    def pids(self, n: int) -> list[int]:
        """The processes of one node: its Erlang VM (found by the node name in its environment)."""
        wanted = f"RABBITMQ_NODENAME={self.node(n)}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes()
                command = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if command.startswith("beam") and wanted in environ.split(b"\0"):
                found.append(int(entry.name))
        return found

    def kill(self, n: int) -> None:
        """kill -9 of one node's Erlang VM."""
        for pid in self.pids(n):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.answers(n) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop_node(self, n: int) -> None:
        """A graceful stop of one node (as for patching)."""
        self.ctl(n, "stop", timeout=120)

    def restart(self, n: int) -> None:
        """Start a node that was killed or stopped; it rejoins the cluster."""
        self.start_node(n)

    def leader(self, queue: str) -> int:
        """The node that leads a quorum queue."""
        for n in range(self.size):
            if not self.answers(n):
                continue
            for line in self.ctl(n, "list_queues", "name", "leader", "--no-table-headers").splitlines():
                name, _, leader = line.partition("\t")
                if name == queue:
                    return next(i for i in range(self.size) if self.node(i) == leader.strip())
        raise LookupError(f"queue {queue!r} has no leader")

    def close(self) -> None:
        """Stop every node and remove the data."""
        for n in range(self.size):
            for pid in self.pids(n):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(0.5)
        shutil.rmtree(self.base, ignore_errors=True)
