"""Sample the resident memory of a running service's Ray processes, so that 'memory stays flat' is a number."""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass, field

import numpy as np

try:
    import psutil
except ImportError:  # not a declared dependency: Ray ships it in ray/thirdparty_files, put on sys.path by `import ray`
    import ray  # noqa: F401

    psutil = importlib.import_module("psutil")

MIB = 1024 * 1024
# Title markers Ray gives its worker processes (setproctitle): the Serve replicas and the HTTP proxy that
# holds the requests queued for the ingress; with the HAProxy ingress, the actor that runs HAProxy (its child).
REPLICA_MARKER, PROXY_MARKER, HAPROXY_MANAGER_MARKER = "ServeReplica:", "ray::ProxyActor", "ray::HAProxyManager"


def listening_process(port: int) -> psutil.Process:
    """The process that accepts TCP connections on `port` (the Serve HTTP proxy, or HAProxy)."""
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
            return psutil.Process(connection.pid)
    raise LookupError(f"no process of this user listens on port {port}; is the service running here?")


def serving_raylet(port: int, attempts: int = 50) -> psutil.Process:
    """The raylet of the Ray instance whose Serve proxy listens on `port` here (it starts every worker of its node):
    the listening process's parent, or with the HAProxy ingress its grandparent (raylet > HAProxyManager > haproxy).

    HAProxy hands its socket to a new process whenever its backends change, and the old one exits: a listener
    found by the scan can be gone a moment later, so the scan is repeated."""
    for _ in range(attempts):
        try:
            return _raylet_above(listening_process(port))
        except psutil.NoSuchProcess:
            time.sleep(0.1)
    raise LookupError(f"the listener on port {port} kept exiting before its raylet was found")


def _raylet_above(process: psutil.Process) -> psutil.Process:
    for ancestor in process.parents():
        if "--session_dir=" in " ".join(ancestor.cmdline()):
            return ancestor
    raise LookupError(f"no raylet above the process {process.pid} ({process.name()}); is it a Ray Serve proxy?")


def process_role(process: psutil.Process) -> str | None:
    """'Ingress', 'BackgroundRemover', ... for a Serve replica, 'ProxyActor' for the proxy, else None."""
    try:
        title = " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    if REPLICA_MARKER in title:
        # "ray::ServeReplica:APP:DEPLOYMENT", with ".method" appended while a call runs
        return title.split(REPLICA_MARKER, 1)[1].split()[0].rsplit(":", 1)[-1].split(".", 1)[0]
    if title.startswith(HAPROXY_MANAGER_MARKER):
        return "HAProxyManager"
    return "ProxyActor" if title.startswith(PROXY_MARKER) else None


def service_processes(port: int, raylet: psutil.Process | None = None) -> dict[int, str]:
    """{pid: role} of the Serve replicas and proxy of the Ray instance serving `port` (`raylet`, if known), and
    with the HAProxy ingress its manager actor and HAProxy itself ("HAProxy", the manager's children).

    The replicas are children of the proxy's raylet; other Ray instances on the same machine (another test run,
    another service) are never counted.
    """
    roles = {child.pid: process_role(child) for child in (raylet or serving_raylet(port)).children()}
    for pid in [pid for pid, role in roles.items() if role == "HAProxyManager"]:
        try:
            roles.update({child.pid: "HAProxy" for child in psutil.Process(pid).children()})
        except psutil.NoSuchProcess:
            pass
    return {pid: role for pid, role in roles.items() if role is not None}


@dataclass
class MemorySample:
    elapsed_s: float
    rss_by_role: dict[str, int]  # bytes, summed over the role's processes
    # Of that RSS, pages shared with other processes: libraries, and Ray's object store (plasma), which every
    # replica maps and touches more of as arguments pass through it. Bounded by the store's size, counted once
    # per process here, so private memory (RSS minus shared) is what tells a leak or a deep queue apart.
    shared_by_role: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rss_by_role.values())

    @property
    def private_total(self) -> int:
        return self.total - sum(self.shared_by_role.values())

    def private(self, role: str) -> int:
        return self.rss_by_role.get(role, 0) - self.shared_by_role.get(role, 0)


@dataclass
class ServiceMemorySampler:
    """Sums the RSS of the service's processes every `interval_s` in a background thread."""

    port: int
    interval_s: float = 0.5
    samples: list[MemorySample] = field(default_factory=list)
    pids_by_role: dict[str, set[int]] = field(default_factory=dict)  # every process seen, replacements included
    cpu_s_by_pid: dict[int, tuple[float, float]] = field(default_factory=dict)  # (first seen, last seen)

    def __post_init__(self) -> None:
        # Found once (a scan of the machine's sockets): the raylet outlives proxy and replica restarts.
        self._raylet: psutil.Process | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> MemorySample:
        rss_by_role: dict[str, int] = {}
        shared_by_role: dict[str, int] = {}
        if self._raylet is None or not self._raylet.is_running():
            self._raylet = serving_raylet(self.port)
        for pid, role in service_processes(self.port, self._raylet).items():
            try:
                process = psutil.Process(pid)
                memory, cpu = process.memory_info(), process.cpu_times()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue  # died between the listing and now (a killed replica)
            rss_by_role[role] = rss_by_role.get(role, 0) + memory.rss
            shared_by_role[role] = shared_by_role.get(role, 0) + getattr(memory, "shared", 0)  # Linux only
            self.pids_by_role.setdefault(role, set()).add(pid)
            first_cpu_s = self.cpu_s_by_pid.get(pid, (cpu.user + cpu.system, 0.0))[0]
            self.cpu_s_by_pid[pid] = (first_cpu_s, cpu.user + cpu.system)
        sample = MemorySample(time.perf_counter() - self._started, rss_by_role, shared_by_role)
        self.samples.append(sample)
        return sample

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except LookupError:
                pass  # the proxy is restarting; the next sample will find it again

    def __enter__(self) -> ServiceMemorySampler:
        self._started = time.perf_counter()
        self.sample()  # the start figure, taken before any load
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.sample()  # the end figure, after the load finished

    def summary(self) -> dict:
        """Start, end and max of the summed RSS in MiB, the least-squares slope in MiB per minute, CPU seconds."""
        if not self.samples:
            return {"samples": 0}
        totals = np.array([s.total for s in self.samples], dtype=float) / MIB
        private = np.array([s.private_total for s in self.samples], dtype=float) / MIB
        times = np.array([s.elapsed_s for s in self.samples])
        half = len(times) // 2
        roles = sorted({role for s in self.samples for role in s.rss_by_role})
        return {
            "samples": len(self.samples),
            "span_s": round(float(times[-1] - times[0]), 1),
            "rss_mib": _start_end_max(totals),
            "growth_mib": round(float(totals[-1] - totals[0]), 1),
            "slope_mib_per_min": _slope_per_min(times, totals),
            # Queues fill first, so growth early in a run is expected; a leak keeps growing in the second half.
            "second_half_slope_mib_per_min": _slope_per_min(times[half:], totals[half:]),
            # RSS minus shared pages (see MemorySample): what the requests in flight and any leak hold
            "private_mib": _start_end_max(private),
            "private_growth_mib": round(float(private[-1] - private[0]), 1),
            "private_second_half_slope_mib_per_min": _slope_per_min(times[half:], private[half:]),
            "private_series_mib": _series(times, private),
            "series_mib": _series(times, totals),
            "by_role_mib": {role: _start_end_max(np.array([s.rss_by_role.get(role, 0) for s in self.samples]) / MIB)
                            for role in roles},
            "private_by_role_mib": {role: _start_end_max(np.array([s.private(role) for s in self.samples]) / MIB)
                                    for role in roles},
            "processes_by_role": {role: len(pids) for role, pids in sorted(self.pids_by_role.items())},
            # where the machine's CPU went while sampling: explains a throughput that falls under overload
            "cpu_s_by_role": {role: round(sum(self.cpu_s_by_pid[pid][1] - self.cpu_s_by_pid[pid][0]
                                              for pid in pids), 1)
                              for role, pids in sorted(self.pids_by_role.items())},
        }


def _series(times: np.ndarray, values: np.ndarray, points: int = 20) -> list[list[float]]:
    """About `points` (seconds, MiB) pairs spread over the run, for the record."""
    return [[round(float(t), 1), round(float(v))] for t, v in
            list(zip(times, values, strict=True))[:: max(1, len(times) // points)]]


def _start_end_max(values: np.ndarray) -> dict[str, float]:
    return {"start": round(float(values[0]), 1), "end": round(float(values[-1]), 1),
            "max": round(float(values.max()), 1)}


def _slope_per_min(times: np.ndarray, values: np.ndarray) -> float | None:
    return round(float(np.polyfit(times, values, 1)[0]) * 60, 2) if len(times) > 1 else None
