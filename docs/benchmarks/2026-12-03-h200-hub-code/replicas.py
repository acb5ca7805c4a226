"""Print each deployment's replica states (serve.status through the running Ray, no dashboard needed)."""
import json, sys
import ray
from ray import serve
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
status = serve.status()
out = {}
for app_name, app in status.applications.items():
    for name, dep in app.deployments.items():
        out[name] = {"status": str(dep.status), "replica_states": {str(k): v for k, v in dep.replica_states.items()}, "message": dep.message[:300]}
print(json.dumps(out))
