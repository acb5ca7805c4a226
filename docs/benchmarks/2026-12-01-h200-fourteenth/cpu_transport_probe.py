"""Where a Serve replica-to-replica call's time goes on this machine: caller -> callee arrival ('to'), callee return ->
caller resume ('back'), by payload size and replica flags. Throwaway probe."""
import asyncio, os, sys, time, json
import numpy as np
import ray
from ray import serve

VARIANT = sys.argv[1]
ENV = {"one_loop": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"},
       "default": {}, "inline_args": {}}[VARIANT]
CALLER_ENV = {"inline_args": {"RAY_max_direct_call_object_size": "1048576"}}.get(VARIANT, ENV)

@serve.deployment(ray_actor_options={"num_cpus": 0.1, "runtime_env": {"env_vars": ENV}}, max_ongoing_requests=64)
class Callee:
    async def f(self, payload, sent_at, reply_bytes):
        arrived = time.time()
        return arrived, np.zeros(reply_bytes, np.uint8), time.time()

@serve.deployment(ray_actor_options={"num_cpus": 0.1, "runtime_env": {"env_vars": CALLER_ENV}})
class Caller:
    def __init__(self, callee):
        self.callee = callee
    async def run(self, size, reply, n):
        payload = b"x" * size
        rows = []
        for _ in range(n):
            sent = time.time()
            arrived, _, left = await self.callee.f.remote(payload, sent, reply)
            back = time.time()
            rows.append(((arrived - sent) * 1e3, (back - left) * 1e3))
        rows = rows[5:]
        return [float(np.median([r[0] for r in rows])), float(np.median([r[1] for r in rows]))]

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
h = serve.run(Caller.bind(Callee.bind()), name="rt", route_prefix=None)
for size, reply in [(1000, 1000), (400_000, 1000), (1000, 2_600_000), (400_000, 2_600_000)]:
    to, back = h.run.remote(size, reply, 60).result()
    print(json.dumps({"variant": VARIANT, "send_bytes": size, "reply_bytes": reply, "to_ms": round(to, 2), "back_ms": round(back, 2)}), flush=True)
serve.shutdown(); ray.shutdown()
