"""Test-owned servers on free loopback ports, which tests may stop and restart."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

CLI = shutil.which("eightyeightpay") or os.path.join(
    os.path.dirname(sys.executable), "eightyeightpay"
)
"""The installed console script, run as a user runs it."""


def with_ctrl_c(command: list[str]) -> list[str]:
    """``command`` with SIGINT at its default, so that Ctrl-C (SIGINT) reaches it.

    A shell without job control starts background jobs with SIGINT ignored, and an ignored
    signal stays ignored in every child: a test run that way could not send Ctrl-C.
    """
    reset = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", reset, *command]


@contextlib.contextmanager
def cli_sandbox(
    *options: str, stop: signal.Signals = signal.SIGTERM, status: int = 0
) -> Iterator[dict[str, Any]]:
    """``eightyeightpay sandbox --port 0 --json`` in a child process; yields what it printed.

    On leaving, the child is sent ``stop`` (SIGTERM; SIGINT is Ctrl-C), and it must exit
    with ``status`` (0 for SIGTERM, 130 for Ctrl-C, as docs/cli.md says).
    """
    command = [CLI, "sandbox", "--port", "0", "--json", *options]
    if stop == signal.SIGINT:
        command = with_ctrl_c(command)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None and process.stderr is not None
            yield json.loads(process.stdout.readline())
        finally:
            process.send_signal(stop)
            try:
                code = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
        stderr = process.stderr.read()
    assert code == status, f"the sandbox command exited with {code}: {stderr}"
    assert "Traceback" not in stderr, stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, up: bool, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.02)
    raise RuntimeError(f"port {port} did not come {'up' if up else 'down'}")


class Startable(Protocol):
    """A test server: started, then closed (stopped, its files removed)."""

    def start(self) -> None: ...

    def close(self) -> None: ...


S = TypeVar("S", bound=Startable)


@contextlib.contextmanager
def running(server: S) -> Iterator[S]:
    """``server`` started, and closed on leaving (also when the block fails)."""
    server.start()
    try:
        yield server
    finally:
        server.close()


class ServerProcess:
    """A server binary run on a fixed free port; stop() and start() keep the port."""

    binary = ""

    def __init__(self) -> None:
        if shutil.which(self.binary) is None:
            raise RuntimeError(f"{self.binary} is not installed; .ci/run installs it")
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix=f"eightyeightpay-{self.binary}-")
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.directory
        )
        _wait_for_port(self.port, up=True)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
            _wait_for_port(self.port, up=False)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class RedisServer(ServerProcess):
    binary = "redis-server"

    def __init__(self, *options: str) -> None:
        super().__init__()
        self.options = list(options)
        """Further redis-server options (``--name value`` pairs)."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        """SIGKILL: the server dies without a word to its clients, replicas or sentinels."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def command(self) -> list[str]:
        return self._base() + self.options

    def _base(self) -> list[str]:
        return [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.directory,
        ]


class MemcachedServer(ServerProcess):
    binary = "memcached"

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def command(self) -> list[str]:
        return [
            "memcached",
            "-p",
            str(self.port),
            "-l",
            "127.0.0.1",
            "-U",
            "0",
            "-m",
            "16",
            "-u",
            "root",
        ]


def redis_cli(port: int, *args: str, tls: list[str] | None = None) -> str:
    """``redis-cli -p port args...`` on loopback; its output."""
    result = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *(tls or []), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def _until(check: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (subprocess.SubprocessError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not happen within {seconds:g} s")


def _cluster_port() -> int:
    """A free port whose cluster bus port (the port + 10000) is free and valid too."""
    for _ in range(200):
        port = random.randint(20000, 29999)
        try:
            with socket.socket() as one, socket.socket() as bus:
                one.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of ports for a cluster node")


def _cluster_ok(port: int) -> bool:
    return "cluster_state:ok" in redis_cli(port, "cluster", "info")


def _sentinels_met(port: int) -> bool:
    answer = redis_cli(port, "sentinel", "master", SENTINEL_MASTER).split()
    return (
        "num-other-sentinels" in answer and answer[answer.index("num-other-sentinels") + 1] == "2"
    )


class SentinelProcess(RedisServer):
    """A redis-server in sentinel mode, with the writable config file sentinels need."""

    def __init__(self) -> None:
        super().__init__()
        self.config = os.path.join(self.directory, "sentinel.conf")

    def command(self) -> list[str]:
        return ["redis-server", self.config, "--sentinel"]


class RedisClusterServers:
    """A Redis Cluster of ``masters`` masters (no replicas) on free loopback ports."""

    def __init__(self, masters: int = 3) -> None:
        self.nodes = [
            RedisServer(
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            )
            for _ in range(masters)
        ]
        for node in self.nodes:
            node.port = _cluster_port()

    @property
    def url(self) -> str:
        """A seed node's URL: cluster clients discover the others from it."""
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0",
             "--cluster-yes"],
            capture_output=True, timeout=60, check=True,
        )  # fmt: skip
        for node in self.nodes:
            _until(functools.partial(_cluster_ok, node.port), "the cluster's convergence")

    def close(self) -> None:
        for node in self.nodes:
            node.close()


SENTINEL_MASTER = "fleet"
"""The name the sentinels monitor the master under."""


class SentinelServers:
    """One master, one replica and three sentinels (quorum 2), failing over within seconds."""

    def __init__(self) -> None:
        self.master = RedisServer()
        self.replica = RedisServer()
        self.sentinels = [SentinelProcess() for _ in range(3)]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The sentinels, as (host, port) pairs for ``redis.sentinel.Sentinel``."""
        return [("127.0.0.1", sentinel.port) for sentinel in self.sentinels]

    def start(self) -> None:
        self.master.start()
        self.replica.options = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.replica.start()
        _until(
            lambda: "master_link_status:up" in redis_cli(self.replica.port, "info", "replication"),
            "the replica's sync",
        )
        for sentinel in self.sentinels:
            with open(sentinel.config, "w") as file:
                file.write(
                    f"port {sentinel.port}\nbind 127.0.0.1\ndir {sentinel.directory}\n"
                    f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {self.master.port} 2\n"
                    f"sentinel down-after-milliseconds {SENTINEL_MASTER} 500\n"
                    f"sentinel failover-timeout {SENTINEL_MASTER} 5000\n"
                )
            sentinel.start()
        for sentinel in self.sentinels:
            _until(
                functools.partial(_sentinels_met, sentinel.port),
                "the sentinels' discovery of each other",
            )

    def master_port(self) -> int:
        """The port the sentinels name as master now."""
        answer = redis_cli(
            self.sentinels[0].port, "sentinel", "get-master-addr-by-name", SENTINEL_MASTER
        )
        return int(answer.split()[1])

    def close(self) -> None:
        for server in (*self.sentinels, self.replica, self.master):
            server.close()


class TlsAclRedis(RedisServer):
    """A redis-server speaking only TLS (a throw-away CA) with an ACL user and no default user."""

    user = "fleet-app"
    password = "pw/with:reserved@chars#1"
    """A password with every character a URL must percent-encode."""

    def __init__(self) -> None:
        super().__init__()
        from eightyeightpay.plugins.sandbox.tls import make_test_ca

        self.certificates = make_test_ca(self.directory, hostname=["127.0.0.1", "localhost"])
        acl = os.path.join(self.directory, "users.acl")
        with open(acl, "w") as file:
            file.write(
                "user default off\n"
                f"user {self.user} on >{self.password} ~eightyeightpay:* resetchannels -@all "
                "+get +set +pttl +multi +exec +evalsha +eval +script|load +time +zadd +zcard "
                "+zremrangebyscore +zrangebyscore +expire +pexpire +del +ping\n"
            )
        self.options = [
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(self.certificates.cert_file),
            "--tls-key-file",
            str(self.certificates.key_file),
            "--tls-ca-cert-file",
            str(self.certificates.ca_file),
            "--tls-auth-clients",
            "no",
            "--aclfile",
            acl,
        ]

    def command(self) -> list[str]:
        base = self._base()
        del base[1:3]  # the plain --port: this server listens with TLS only
        return base + self.options
