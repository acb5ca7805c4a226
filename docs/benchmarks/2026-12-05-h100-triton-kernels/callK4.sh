# Lease K, call 4 (call K1's machine): the service as shipped with model settings changed ($MODEL_SET, JSON, e.g.
# '{"capturable_deform_conv": "triton"}'): prebuild of its buckets, then `serve run` (callX8.sh: /readyz, 64 and 1
# clients, the replicas after).
source .gpurun/setup.sh; mkdir -p /tmp/x; ray stop --force > /dev/null 2>&1
if [ ! -f /tmp/one.yaml ]; then
  echo "fresh machine: weights and one.yaml first"
  python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/x/weights.log 2>&1; ph "weights exit $?"
  python3 - <<'PY'
import copy, yaml
prod = yaml.safe_load(open("configs/prod.yaml"))
one = copy.deepcopy(prod); one["applications"][0]["args"]["model"]["model_id"] = "/tmp/hub"
yaml.safe_dump(one, open("/tmp/one.yaml", "w"), sort_keys=False)
PY
fi
python3 - <<'PY'
import json, os, yaml
one = yaml.safe_load(open("/tmp/one.yaml"))
one["applications"][0]["args"]["model"].update(json.loads(os.environ.get("MODEL_SET", "{}")))
yaml.safe_dump(one, open("/tmp/svc.yaml", "w"), sort_keys=False)
PY
grep -A12 "model:" /tmp/svc.yaml | head -14 > /tmp/x/svc_model.txt
timeout 240 python3 -m serve_app.prebuild --address local --config /tmp/svc.yaml > /tmp/x/prebuild_svc.log 2>&1; ph "prebuild exit $?"
ray stop --force > /dev/null 2>&1; tail -3 /tmp/x/prebuild_svc.log | cut -c1-300
CONFIG=/tmp/svc.yaml SKIP12=1 bash .gpurun/callX8.sh
cp /tmp/x/service.json /tmp/x/service_k4.json 2>/dev/null; tar -C /tmp -czf $OUT/callK4.tgz x
