"""Hosts made of network namespaces on one switch, for the multi-host cluster test.

    root namespace (the test) --zv<id>--+
                                        |  switch namespace: bridge br0
    host "fe1"  eth0 10.A.B.11 ---- p-fe1 |  (a port per host; taking a port
    host "as1"  eth0 10.A.B.21 ---- p-as1 |   down partitions that host)
    ...

The bridge lives in a namespace of its own, so the machine's firewall and
bridge-netfilter settings never see the test's traffic, and the only thing
added to the root namespace is one veth (``zv<id>``) with 10.A.B.1, through
which the test talks to the front ends. Each host gets ``/etc/netns/<ns>/hosts``,
which ``ip netns exec`` mounts over /etc/hosts: that is the cluster's DNS.

Names carry the creating pid, so a run killed before its teardown is cleaned
up by the next one (``sweep_stale``). ``close()`` always removes everything.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path

NETNS_ETC = Path("/etc/netns")
PREFIX = "zasgi-t"  # namespaces: zasgi-t<pid>-<rand>-<host>


class NetnsUnavailable(Exception):
    """Why this machine cannot run the cluster (not root, no ip netns): a skip reason."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def probe() -> None:
    """Raise NetnsUnavailable with the reason unless namespaces can be made here."""
    if os.geteuid() != 0:
        raise NetnsUnavailable("needs root to create network namespaces (ip netns)")
    if shutil.which("ip") is None:
        raise NetnsUnavailable("the ip command (iproute2) is not installed")
    name = f"{PREFIX}{os.getpid()}-probe"
    made = ip("netns", "add", name, check=False)
    if made.returncode != 0:
        raise NetnsUnavailable(f"ip netns is unusable here: {made.stderr.strip()}")
    ip("netns", "del", name, check=False)


def sweep_stale() -> None:
    """Remove namespaces (and their hosts files) left by test runs whose process is gone."""
    listed = ip("netns", "list", check=False).stdout.split()
    for name in listed:
        match = re.match(rf"{PREFIX}(\d+)-", name)
        if match and not _alive(int(match.group(1))):
            ip("netns", "del", name, check=False)
            shutil.rmtree(NETNS_ETC / name, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_subnet() -> str:
    """A 10.x.y.0/24 that no route on this machine mentions."""
    routes = ip("-4", "route", "show", "table", "all", check=False).stdout
    addresses = ip("-4", "addr", check=False).stdout
    for _ in range(100):
        prefix = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"
        if f"{prefix}." not in routes and f"{prefix}." not in addresses:
            return prefix
    raise RuntimeError("no free 10.x.y.0/24 subnet found")


class Network:
    """A switch, the root namespace's port on it, and hosts added by name."""

    def __init__(self) -> None:
        self.run_id = f"{os.getpid()}-{random.randrange(16**4):04x}"
        self.prefix = _free_subnet()
        self.client_ip = f"{self.prefix}.1"
        self.switch = f"{PREFIX}{self.run_id}-sw"
        self.root_link = f"zv{self.run_id.split('-')[1]}{os.getpid() % 1000:03d}"  # <= 15 chars
        self.hosts: dict[str, str] = {}  # host -> address
        self._namespaces: list[str] = []
        self._next = 10
        try:
            self._add_namespace(self.switch)
            ns = ("-n", self.switch)
            ip(*ns, "link", "add", "br0", "type", "bridge")
            ip(*ns, "link", "set", "br0", "up")
            ip("link", "add", self.root_link, "type", "veth", "peer", "name", "p-root", "netns", self.switch)
            ip(*ns, "link", "set", "p-root", "master", "br0", "up")
            ip("addr", "add", f"{self.client_ip}/24", "dev", self.root_link)
            ip("link", "set", self.root_link, "up")
        except BaseException:
            self.close()
            raise

    def namespace(self, host: str) -> str:
        return f"{PREFIX}{self.run_id}-{host}"

    def add_host(self, host: str) -> str:
        """A namespace with eth0 on the switch and lo up; returns its address."""
        self._next += 1
        address = f"{self.prefix}.{self._next}"
        ns = self.namespace(host)
        self._add_namespace(ns)
        port = f"p-{host}"
        ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")
        self.hosts[host] = address
        self.write_hosts(host, {})
        return address

    def write_hosts(self, host: str, names: dict[str, list[str]]) -> None:
        """The host's /etc/hosts: ``names`` maps a name to its addresses (one line each).

        Written in place: a running ``ip netns exec`` process sees the file through a bind
        mount of this very inode, and glibc reads it on every lookup.
        """
        lines = ["127.0.0.1 localhost", f"{self.hosts[host]} {host}"]
        lines += [f"{address} {name}" for name, addresses in names.items() for address in addresses]
        path = NETNS_ETC / self.namespace(host) / "hosts"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def link(self, host: str, up: bool) -> None:
        """Take a host's switch port down (a partition) or up again."""
        ip("-n", self.switch, "link", "set", f"p-{host}", "up" if up else "down")

    def exec_argv(self, host: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(host), *argv]

    def close(self) -> None:
        """Remove every namespace (their links go with them) and hosts file; never raises."""
        ip("link", "del", self.root_link, check=False)
        for ns in reversed(self._namespaces):
            ip("netns", "del", ns, check=False)
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
        self._namespaces.clear()
        try:
            NETNS_ETC.rmdir()  # only if empty: it may hold other namespaces' files
        except OSError:
            pass

    def _add_namespace(self, ns: str) -> None:
        ip("netns", "add", ns)
        self._namespaces.append(ns)
        (NETNS_ETC / ns).mkdir(parents=True, exist_ok=True)
