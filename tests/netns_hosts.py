"""Separate hosts on one machine: network namespaces on a bridge, each with its own address, name and loss.

:class:`Network` makes a "switch" namespace holding a Linux bridge and, per host, a namespace whose ``eth0`` is one
end of a veth pair (the other end on the bridge) with an address ``10.<run>.0.<n>/24``. Every namespace has an
``/etc/netns/<ns>/hosts`` (``ip netns exec`` mounts it over ``/etc/hosts``) naming every host's DNS name, rewritten
in place when a host comes or goes so running processes read the change. Names are unique per run (the test
process's id); :meth:`Network.close` deletes every namespace and ``/etc/netns`` folder the run made, and
:func:`leftovers` lists any that remain. A host's link can be cut and restored (``ip link set dev eth0 down/up``)
and its incoming TCP dropped at random (nftables); latency comes from ``tests/latency_relay.py``, which the test
runs in a host (this kernel has no netem).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

NETNS_ETC = Path("/etc/netns")
PREFIX = "hpfnet"  # every namespace a run makes is named hpfnet<pid>-<name>
_OWN = re.compile(rf"{PREFIX}(\d+)-[a-z0-9-]+")
COMMAND_TIMEOUT_S = 10.0


def unavailable() -> str | None:
    """Why hosts cannot be made here (not root, or no ``ip netns``/``nft``), or None when they can."""
    if os.geteuid() != 0:
        return "separate hosts need root: network namespaces, veth links and nftables"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"separate hosts need the `{tool}` command"
    probe = f"{PREFIX}{os.getpid()}-probe"  # made and deleted at once: root without CAP_NET_ADMIN cannot
    try:
        made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"`ip netns` is unavailable: {err}"
    finally:
        with contextlib.suppress(Exception):
            _delete_namespace(probe)
    if made.returncode != 0:
        return f"`ip netns` is unavailable: {made.stderr.decode(errors='replace').strip()}"
    return None


def run(*args: str, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
    """Run a command; its stdout, or an AssertionError naming the command and its stderr."""
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def namespaces() -> list[str]:
    return [line.split()[0] for line in run("ip", "netns", "list").splitlines() if line.strip()]


def leftovers(pid: int | None = None) -> list[str]:
    """This run's namespaces and /etc/netns folders still there (``pid`` None: every run's)."""
    names = set(namespaces())
    if NETNS_ETC.is_dir():
        names |= {p.name for p in NETNS_ETC.iterdir()}
    return sorted(n for n in names if (m := _OWN.fullmatch(n)) and (pid is None or int(m.group(1)) == pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead_runs() -> list[str]:
    """Delete the namespaces and /etc/netns folders of earlier runs whose test process is gone (a run killed before
    its teardown), ending the processes that run left in them; the names removed."""
    removed = []
    for name in leftovers():
        match = _OWN.fullmatch(name)
        assert match is not None
        if _alive(int(match.group(1))):
            continue
        _delete_namespace(name, end_processes=True)
        removed.append(name)
    return removed


def _delete_namespace(ns: str, end_processes: bool = False) -> None:
    if ns in namespaces():
        if end_processes:  # only a dead run's: the parties it started in this namespace, by their ids
            listed = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
            for pid in listed.stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=COMMAND_TIMEOUT_S)
    shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)


@dataclass
class Host:
    """One host: its namespace, DNS name and address (on ``eth0``)."""

    name: str
    ns: str
    dns: str
    address: str
    number: int  # the last octet, also naming its veth ends

    def exec_args(self, *argv: str) -> list[str]:
        """``argv`` run in this host (``ip netns exec`` execs it: the process keeps the id Popen reports)."""
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(self, *argv: str, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
        return run(*self.exec_args(*argv), timeout_s=timeout_s)

    def link(self, up: bool) -> None:
        """Connect or cut this host (its ``eth0``), as a cable pulled out and plugged back in."""
        run("ip", "-n", self.ns, "link", "set", "dev", "eth0", "up" if up else "down")

    def link_is_up(self) -> bool:
        return "UP" in run("ip", "-n", self.ns, "-br", "link", "show", "dev", "eth0").split()[1]

    def drop_incoming(self, percent: int) -> None:
        """Drop ``percent`` % of the TCP packets arriving on ``eth0`` at random (loopback is spared)."""
        self.run("nft", "add", "table", "inet", "hpf")
        self.run("nft", "add", "chain", "inet", "hpf", "input", "{ type filter hook input priority 0; }")
        rule = f"iifname eth0 meta l4proto tcp numgen random mod 100 < {int(percent)} counter drop"
        self.run("nft", "add", "rule", "inet", "hpf", "input", *rule.split())

    def dropped(self) -> int:
        """Packets the random drop rule has dropped so far."""
        found = re.search(r"counter packets (\d+)", self.run("nft", "list", "chain", "inet", "hpf", "input"))
        return int(found.group(1)) if found else 0


@dataclass
class Network:
    """A switch and the hosts on it, all of this run; always :meth:`close` it (it is a context manager)."""

    domain: str = "hpf.internal"
    pid: int = field(default_factory=os.getpid)
    hosts: dict[str, Host] = field(default_factory=dict)
    made: list[str] = field(default_factory=list)  # every namespace made, in order, removed or not

    def __post_init__(self) -> None:
        self.subnet = f"10.{16 + self.pid % 224}"  # 10.<run>.0.0/24: the run's own, on its own bridge anyway
        self.switch = self._namespace("switch")
        run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.switch, "link", "set", "br0", "up")

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _namespace(self, name: str) -> str:
        ns = f"{PREFIX}{self.pid}-{name}"
        (NETNS_ETC / ns).mkdir(parents=True, exist_ok=True)
        self.made.append(ns)  # before it exists: a failure half-way is still cleaned up
        run("ip", "netns", "add", ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    def add_host(self, name: str, number: int, dns: str | None = None) -> Host:
        """A host ``name`` at ``10.<run>.0.<number>``, linked to the switch, and every host's hosts file naming it
        by ``dns`` (by default ``<name>.<domain>``)."""
        if name in self.hosts or any(h.number == number for h in self.hosts.values()):
            raise ValueError(f"host {name} or address .{number} is taken")
        ns = self._namespace(name)
        outer, inner = f"hv{self.pid}n{number}", f"hp{self.pid}n{number}"  # at most 15 characters
        run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        run("ip", "link", "set", outer, "netns", ns)
        run("ip", "-n", ns, "link", "set", outer, "name", "eth0")
        run("ip", "link", "set", inner, "netns", self.switch)
        run("ip", "-n", self.switch, "link", "set", inner, "master", "br0", "up")
        host = Host(
            name=name, ns=ns, dns=dns or f"{name}.{self.domain}", address=f"{self.subnet}.0.{number}", number=number
        )
        run("ip", "-n", ns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        self.hosts[name] = host
        self.write_hosts_files()
        return host

    def remove_host(self, name: str) -> None:
        """Delete host ``name``'s namespace (its veth pair goes with it) and hosts file; the others forget it."""
        host = self.hosts.pop(name)
        _delete_namespace(host.ns)
        self.write_hosts_files()

    def hosts_text(self) -> str:
        lines = ["127.0.0.1 localhost", *(f"{h.address} {h.dns}" for h in self.hosts.values())]
        return "\n".join(lines) + "\n"

    def write_hosts_files(self) -> None:
        """Every host's /etc/hosts, written in place (``ip netns exec`` bind-mounts the file: a new file would
        not be seen by a process already running)."""
        text = self.hosts_text()
        for host in self.hosts.values():
            path = NETNS_ETC / host.ns / "hosts"
            with open(path, "a+", encoding="utf-8") as fh:  # the same inode: truncated and rewritten
                fh.seek(0)
                fh.truncate()
                fh.write(text)

    def close(self) -> None:
        """Delete every namespace and /etc/netns folder this run made, the switch last; never raises."""
        for ns in reversed(self.made):
            with contextlib.suppress(Exception):
                _delete_namespace(ns)
        self.hosts.clear()


def wait_for(check: object, what: str, timeout_s: float, interval_s: float = 0.2) -> float:
    """Call ``check`` until it returns true, at most ``timeout_s`` (and a bounded count of tries); the time taken."""
    started = time.monotonic()
    for _ in range(int(timeout_s / interval_s) + 1):
        if check():  # type: ignore[operator]
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            break
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


def stop_processes(processes: Sequence[subprocess.Popen[bytes]], grace_s: float = 5.0) -> None:
    """SIGTERM each process still running (only these, by id), then SIGKILL any left after ``grace_s``."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
    ends = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.1, ends - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace_s)
