# Two models on one GPU, call 3 (a fresh machine): weights and prebuild as in callM1.sh; `serve run` of the
# two-model config with its whole log kept, stopped and started again (a warm restart); then the alternative
# layout, one application per model (each model deployment on half the GPU, one replica), with 64 clients on the
# default model's application and 64 split between the two.
source .gpurun/setup.sh; ROOT=$PWD; mkdir -p /tmp/r3
[ -f /tmp/two.yaml ] || { bash .gpurun/callM1.sh > /tmp/r3/m1.log 2>&1; ph "callM1 exit $?"; grep -E '^\{' /tmp/r/prebuild.log | cut -c1-200; }
python3 - <<'PY'
import copy, yaml
two = yaml.safe_load(open("/tmp/two.yaml"))
app = two["applications"][0]; models = app["args"].pop("models"); app["args"].pop("default_model")
apps = []
for model, name, prefix in zip(models, ("background-removal", "background-removal-lite"), ("/", "/lite")):
    each = copy.deepcopy(app); each["name"], each["route_prefix"] = name, prefix
    each["args"]["model"] = {key: value for key, value in model.items() if key != "name"}
    for deployment in each["deployments"]:
        if deployment["name"] == "BackgroundRemover":
            deployment["ray_actor_options"]["num_gpus"] = 0.5
            deployment.pop("autoscaling_config"); deployment["num_replicas"] = 1
    apps.append(each)
two["applications"] = apps
yaml.safe_dump(two, open("/tmp/per_model_apps.yaml", "w"), sort_keys=False)
PY
cp /tmp/per_model_apps.yaml /tmp/r3/
start_service() {  # $1 = name, $2 = config
  start=$(date +%s.%N); (PYTHONPATH=/tmp/site:$ROOT:$ROOT/scripts serve run $2 > /tmp/r3/serve_$1.log 2>&1) &
  for i in $(seq 1 1800); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
  ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "$1 readyz 200 after $ready s"
}
stop_service() {
  pkill -f 'serve run'; sleep 2; ray stop --force > /dev/null 2>&1; pkill -x haproxy; sleep 1
}
ray stop --force > /dev/null 2>&1
start_service two_a /tmp/two.yaml
sleep 15; curl -s http://127.0.0.1:8000/v1/info > /tmp/r3/info_two_a.json; stop_service
start_service apps /tmp/per_model_apps.yaml
for i in $(seq 1 600); do sleep 0.2; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/lite/readyz)" = 200 ] && break; done; ph "lite app ready"
timeout 200 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir .photos --levels "64,64:|@/lite" \
  --duration 30 --warmup 15 --out /tmp/r3/service_apps.json > /tmp/r3/service_apps.log 2>&1; ph "apps service exit $?"
grep -E '^\{' /tmp/r3/service_apps.log | python3 -c "
import json, sys
for line in sys.stdin:
    d = json.loads(line); print(d['query'], d.get('images_per_s'), d.get('statuses_all_requests'), d.get('latency_ms'), d.get('gpu_busy_fraction'))"
curl -s http://127.0.0.1:8000/v1/info > /tmp/r3/info_apps.json; curl -s http://127.0.0.1:8000/lite/v1/info > /tmp/r3/info_apps_lite.json
nvidia-smi --query-gpu=memory.used --format=csv > /tmp/r3/memory_apps.txt; stop_service
python3 -c "
import json
for name in ('two_a',):
    d = json.load(open(f'/tmp/r3/info_{name}.json'))['model']; print(name, d['startup'], d['compile_warmup'])"
for f in /tmp/r3/serve_*.log; do grep -v "CALL remove_background\|POST /v1/remove-background" $f | tail -c 150000 > $f.kept; rm $f; done
cp $OUT/phases.txt /tmp/r3/; tar -C /tmp -czf $OUT/callM3.tgz r3; ph done
