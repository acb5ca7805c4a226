# Batching before/after (one lease, one prebuild): weights, cold prebuild, then `serve run` of each version's
# prod.yaml (model_id only changed) with 64 then 1 clients; "before" = the previous commit's serve_app with this
# commit's model core (identical compile key).
source .gpurun/setup.sh; ROOT=$PWD; rm -rf /tmp/r; mkdir -p /tmp/r
{ nproc; lscpu | grep -i "model name"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, ray; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'ray', ray.__version__)"; } > $OUT/host.txt 2>&1; cat $OUT/host.txt
[ -d /tmp/hub ] || { python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/r/weights.log 2>&1; ph "weights exit $?"
  timeout 300 python3 -m serve_app.prebuild --address local --config configs/prod.yaml --set model_id=/tmp/hub > /tmp/r/prebuild.log 2>&1; ph "prebuild exit $?"; ray stop --force > /dev/null 2>&1; }
ray stop --force > /dev/null 2>&1
service() {  # $1 = name, $2 = config, $3 = PYTHONPATH head
  python3 -c "import yaml; c = yaml.safe_load(open('$2')); c['applications'][0]['args']['model']['model_id'] = '/tmp/hub'; yaml.safe_dump(c, open('/tmp/$1.yaml', 'w'), sort_keys=False)"
  start=$(date +%s.%N); (cd $3 && PYTHONPATH=/tmp/site:$3:$ROOT/scripts serve run /tmp/$1.yaml > /tmp/r/serve_$1.log 2>&1) &
  for i in $(seq 1 1200); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
  ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "$1 readyz 200 after $ready s"
  timeout 130 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir .photos --levels 64,1 \
    --duration 30 --warmup 15 --serve-run-at $start --ready-after-s $ready --out /tmp/r/service_$1.json > /tmp/r/service_$1.log 2>&1; ph "$1 service exit $?"
  grep -E "images/s|p50" /tmp/r/service_$1.log | cut -c1-300 | head -6
  pkill -f 'serve run'; sleep 2; ray stop --force > /dev/null 2>&1; pkill -x haproxy; sleep 1
  grep -v "^\s*$" /tmp/r/serve_$1.log | tail -c 60000 > /tmp/r/serve_$1_tail.log; rm /tmp/r/serve_$1.log
}
service before $PWD/.gpurun/before/prod.yaml $PWD/.gpurun/before
service after $PWD/configs/prod.yaml $PWD
cp $OUT/phases.txt /tmp/r/; tar -C /tmp -czf $OUT/callS2.tgz r; ph done
