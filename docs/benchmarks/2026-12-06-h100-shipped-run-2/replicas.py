"""Print each deployment's replica states (serve.status through the running Ray, no dashboard needed)."""
import json

import ray
from ray import serve

ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
states = {}
for app in serve.status().applications.values():
    for name, deployment in app.deployments.items():
        states[name] = {"status": str(deployment.status), "message": deployment.message[:300],
                        "replica_states": {str(state): count for state, count in deployment.replica_states.items()}}
print(json.dumps(states))
