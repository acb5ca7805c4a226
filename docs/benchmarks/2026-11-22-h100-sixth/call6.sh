# session 6, call 6: the proxy queue (Ingress max_queued_requests) 64 against 128 under the same overload,
# each on a fresh service: prod config (CUDA graphs), 1 model replica, 12 ingress replicas, 80 requests/s for 45 s
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
ray() { python3 -c "from ray.scripts.scripts import main; main()" "$@"; }
for Q in 64 128; do
  ray stop --force >/dev/null 2>&1; ray start --head --num-cpus=16 --num-gpus=1 --include-dashboard=false --disable-usage-stats >/dev/null 2>&1
  python3 -c "
import yaml; from pathlib import Path; from serve_app.bench.service_process import derive_config
c = derive_config(Path('configs/prod.yaml'), model={'model_id':'import:birefnet_random:build'}, ingress_replicas=12, remover={'autoscaling_config':None,'num_replicas':1})
[d.update(max_queued_requests=$Q) for d in c['applications'][0]['deployments'] if d['name'] == 'Ingress']
print(yaml.safe_dump(c, sort_keys=False))" > $OUT/overload_q${Q}_config.yaml
  python3 -c "from ray.serve.scripts import cli; cli()" run $OUT/overload_q${Q}_config.yaml > /tmp/serve.log 2>&1 &
  for i in $(seq 1 150); do python3 -c "import urllib.request,sys; sys.exit(0 if b'ready' in urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).read() else 1)" 2>/dev/null && break; sleep 1; done; ph "q$Q ready"
  timeout 200 python3 scripts/overload.py --url http://127.0.0.1:8000 --rate 80 --capacity-clients 32 --capacity-duration 10 --capacity-warmup 10 --repeats 1 --duration 45 --timeout 60 --out $OUT/overload_q$Q.json > $OUT/overload_q$Q.log 2>&1; ph "q$Q overload exit $?"
  python3 -c "
import json; r = json.load(open('$OUT/overload_q$Q.json'))
for run in r['runs']:
    o = run['overload']; m = run['memory']
    print($Q, {k: o.get(k) for k in ('sent','not_sent_in_flight_cap','peak_in_flight','statuses','failure_reasons','ok_per_s','latency_ms')}, m.get('private_mib'), m.get('private_by_role_mib'))"
  ray stop --force >/dev/null 2>&1; sleep 2
done
