# session 6, call 5: proxy queue 128: the OOM split under 96 clients opening at once (batch cap above what fits),
# then the overload run of docs/reliability.md (fourth run's command) on the prod config
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
timeout 220 python3 scripts/bench_service.py --config configs/prod.yaml --model-id import:birefnet_random:build --photo-dir .photos \
  --set-model execution=eager --set-model probe_batch_limit=false --max-batch-size 128 --batch-wait-s 1.0 \
  --ingress-replicas 12 --remover-replicas 1 --levels 96 --duration 120 --warmup 5 --ready-timeout 90 --out $OUT/oom.json > $OUT/oom.log 2>&1; ph "oom exit $?"
python3 -c "import json; r=json.load(open('$OUT/oom.json')); m=r['model_after']; print(m.get('out_of_memory_splits'), m.get('batching')); [print({k: l.get(k) for k in ('clients','images_per_s','statuses_all_requests','errors_all_requests','batch_size_histogram')}) for l in r['levels']]" 2>&1 | cut -c1-900
sleep 3
ray() { python3 -c "from ray.scripts.scripts import main; main()" "$@"; }
ray stop --force >/dev/null 2>&1; ray start --head --num-cpus=16 --num-gpus=1 --include-dashboard=false --disable-usage-stats >/dev/null 2>&1
python3 -c "import yaml; from pathlib import Path; from serve_app.bench.service_process import derive_config; print(yaml.safe_dump(derive_config(Path('configs/prod.yaml'), model={'model_id':'import:birefnet_random:build'}, ingress_replicas=12, remover={'autoscaling_config':None,'num_replicas':1}), sort_keys=False))" > $OUT/overload_config.yaml
python3 -c "from ray.serve.scripts import cli; cli()" run $OUT/overload_config.yaml > /tmp/serve.log 2>&1 &
for i in $(seq 1 150); do python3 -c "import urllib.request,sys; sys.exit(0 if b'ready' in urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).read() else 1)" 2>/dev/null && break; sleep 1; done; ph "ready"
timeout $((580-SECONDS)) python3 scripts/overload.py --url http://127.0.0.1:8000 --rate-factor 2 --capacity-clients 32 --capacity-duration 15 --capacity-warmup 10 --repeats 2 --duration 60 --timeout 60 --out $OUT/overload.json > $OUT/overload.log 2>&1; ph "overload exit $?"
tail -c 3000 $OUT/overload.log
ray stop --force >/dev/null 2>&1
