"""CPU seconds per process group over SECONDS: ingress replicas, model replica, HAProxy, the benchmark client, Ray."""
import json, os, sys, time
from collections import defaultdict
tick = os.sysconf("SC_CLK_TCK")
def label(pid):
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    for key, name in (("Ingress", "ingress"), ("BackgroundRemover", "model_replica"), ("haproxy", "haproxy"),
                      ("bench_service", "client"), ("ProxyActor", "serve_proxy"), ("ServeController", "controller"),
                      ("raylet", "raylet"), ("gcs_server", "gcs")):
        if key in cmd:
            return name
    return "other:" + cmd.split(" ")[0][-30:]
def sample():
    out = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                out[pid] = (int(f[11]) + int(f[12])) / tick
            except (OSError, IndexError):
                pass
    return out
seconds = float(sys.argv[1]); first = sample(); time.sleep(seconds); second = sample()
groups = defaultdict(float)
for pid, cpu in second.items():
    name = label(pid)
    if name:
        groups[name] += cpu - first.get(pid, 0.0)
print(json.dumps({"seconds": seconds, "cpus_busy": {k: round(v / seconds, 2) for k, v in sorted(groups.items(), key=lambda kv: -kv[1]) if v > 0.05 * seconds}}))
