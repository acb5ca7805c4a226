#!/usr/bin/env bash
# Every figure of the shipped path in one run, on one GPU host: configs/prod.yaml with only model_id changed.
#
#   scripts/bench_shipped.sh MODEL_DIR OUT [PHOTO_DIR]
#
# MODEL_DIR is a Hub-layout model directory (from_pretrained(..., trust_remote_code=True) loads it); PHOTO_DIR the
# folder of scikit-image's sample photos that the benchmarks derive their photos from (default: the installed
# scikit-image's). In order, each step's output in OUT (its phases, with seconds from the start, in phases.txt):
#   host.txt       the host, the versions, the commit
#   prebuild.log   `python -m serve_app.prebuild` with the compile cache as it is (cold on a fresh host), while the
#                  3,000 bulk photos are written (nice 19)
#   accuracy.json  the shipped execution against eager fp32 (scripts/check_accuracy.py)
#   model.json     the model alone from the saved buckets, in a Ray task as a replica runs it (scripts/bench_model.py)
#   service.json   `serve run` of the config: /readyz after the start, 64 then 1 client (scripts/bench_service.py)
#   service_12mp.json, cpu_12mp.json   64 clients sending 12 MP photos, the CPUs busy per process meanwhile
#   profile_12mp_*.json   meanwhile the model replica's and an ingress replica's threads (scripts/profile_threads.py)
#   bulk_client.json, bulk_offline.json   the bulk tool on the 3,000 photos, each mode's masks against another's
#                  (the tool's own logs: tool_bulk-*.log)
#   replicas_*.json    Serve's replica states: at ready, 40 s into the 64 clients, under the 12 MP load, at the end
# It stops every Ray (and HAProxy) on the host first and between steps (`ray stop --force`): a host for this alone. Environment: PYTHON (python3), DURATION and WARMUP
# (30 and 20 s a level), BULK_PHOTOS (3000), SKIP_12MP=1, CONFIG (configs/prod.yaml), PART=1 (up to the model
# alone) or PART=2 (from `serve run` on, into the OUT of a PART=1 run: its photos, its compile cache).
set -u
if [ $# -lt 2 ]; then
  sed -n '2,22p' "$0" | cut -c3-
  exit 2
fi
model=$(realpath "$1")
out=$(realpath -m "$2")
photo_dir=${3:+$(realpath "$3")}
python=${PYTHON:-python3}
duration=${DURATION:-30}
warmup=${WARMUP:-20}
bulk_photos=${BULK_PHOTOS:-3000}
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONPATH=$PWD:$PWD/scripts${PYTHONPATH:+:$PYTHONPATH} RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
photos=()
[ -n "$photo_dir" ] && photos=(--photo-dir "$photo_dir")
work=$out/bulk
config=$out/shipped.yaml

phase() { echo "$1 at $SECONDS s" | tee -a "$out/phases.txt"; }
replicas() {  # Serve's replica states by deployment, through the running Ray
  timeout 60 "$python" - > "$out/replicas_$1.json" 2> /dev/null <<'PY'
import json

import ray
from ray import serve

ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
states = {name: {"status": str(deployment.status), "message": deployment.message[:300],
                 "replica_states": {str(state): count for state, count in deployment.replica_states.items()}}
          for app in serve.status().applications.values() for name, deployment in app.deployments.items()}
print(json.dumps(states))
PY
}

"$python" - "${CONFIG:-configs/prod.yaml}" "$model" "$config" <<'PY'
import sys
from pathlib import Path

import yaml

from serve_app.serve_config import derive_config

yaml.safe_dump(derive_config(Path(sys.argv[1]), model={"model_id": sys.argv[2]}), open(sys.argv[3], "w"),
               sort_keys=False)
PY
{ nproc; lscpu | grep -E "Model name"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$python" -c "import sys, torch, torchvision, transformers, timm, kornia, PIL, ray, isal, simplejpeg; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'pillow', PIL.__version__, 'ray', ray.__version__, 'isal', isal.__version__, 'simplejpeg', simplejpeg.__version__)"
  git rev-parse --short HEAD 2> /dev/null; git status --porcelain --untracked-files=no 2> /dev/null; } > "$out/host.txt" 2>&1
ray stop --force > /dev/null 2>&1

if [ "${PART:-1}" = 1 ]; then
(timeout 900 nice -n 19 "$python" -c "import sys; from pathlib import Path; from harness.photos import write_sample_photo_folder; write_sample_photo_folder('$work/in', $bulk_photos, photo_dir=Path(sys.argv[1]) if sys.argv[1] else None, workers=6)" "$photo_dir" > "$out/photos.log" 2>&1
 phase "bulk photos exit $?") &
writer=$!
started=$SECONDS
timeout 900 "$python" -m serve_app.prebuild --address local --config "$config" > "$out/prebuild.log" 2>&1
phase "prebuild exit $? after $((SECONDS - started)) s"
ray stop --force > /dev/null 2>&1
timeout 300 "$python" scripts/check_accuracy.py --model-id "$model" "${photos[@]}" --candidates compiled_graphs:fp16 \
  --batch-size 8 --out "$out/accuracy.json" > "$out/accuracy.log" 2>&1
phase "accuracy exit $?"
wait $writer
timeout 300 "$python" scripts/bench_model.py --in-ray-task "$config" --model-id "$model" "${photos[@]}" \
  --iterations 100 --out "$out/model.json" > "$out/model.log" 2>&1
phase "model alone exit $?"
ray stop --force > /dev/null 2>&1
fi
[ "${PART:-2}" = 2 ] || { phase done; exit 0; }

serve_started=$("$python" -c "import time; print(time.time())")
# A background job of a script starts with SIGINT ignored: set back to its default, `serve run` stops on it as on a
# user's Ctrl-C, shutting the application down (SIGTERM aborts it mid-way).
"$python" -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])' \
  serve run "$config" > "$out/serve.log" 2>&1 &
server=$!
ready=
for _ in $(seq 1 3000); do
  sleep 0.1
  kill -0 $server 2> /dev/null || break  # serve run ended: its log says why
  if [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ]; then
    ready=$("$python" -c "import time; print(round(time.time() - $serve_started, 1))"); break
  fi
done
phase "readyz ${ready:-never} s after serve run"
if [ -n "$ready" ]; then
  replicas ready
  (sleep 40; replicas load64) &
  looker=$!
  timeout 300 "$python" scripts/bench_service.py --url http://127.0.0.1:8000 "${photos[@]}" --levels 64,1 \
    --duration "$duration" --warmup "$warmup" --serve-run-at "$serve_started" --ready-after-s "$ready" \
    --out "$out/service.json" > "$out/service.log" 2>&1
  phase "service exit $?"
  wait $looker
  if [ -z "${SKIP_12MP:-}" ]; then
    timeout 300 "$python" scripts/bench_service.py --url http://127.0.0.1:8000 "${photos[@]}" \
      --photo-size 4000x3000 --photos 12 --levels 64 --duration "$duration" --warmup "$warmup" \
      --out "$out/service_12mp.json" > "$out/service_12mp.log" 2>&1 &
    load=$!
    sleep "$warmup"
    profiles=()
    for group in BackgroundRemover Ingress; do  # where their threads' time goes, GIL included (with py-spy)
      pid=$(pgrep -f "ServeReplica.*$group" | head -1)
      [ -n "$pid" ] || continue
      "$python" scripts/profile_threads.py --pid "$pid" --seconds "$(( duration / 3 < 8 ? duration / 3 : 8 ))" \
        --out "$out/profile_12mp_$group.json" > /dev/null 2>&1 &
      profiles+=($!)
    done
    "$python" scripts/cpu_by_process.py --seconds "$((duration * 2 / 3))" --out "$out/cpu_12mp.json" > /dev/null
    [ ${#profiles[@]} = 0 ] || wait "${profiles[@]}"
    replicas load12mp
    wait $load
    phase "12 MP exit $?"
  fi
  timeout 600 "$python" scripts/bench_bulk.py --mode client --url http://127.0.0.1:8000 --work-dir "$work" \
    --photos "$bulk_photos" "${photos[@]}" --compare-url http://127.0.0.1:8000 --out "$out/bulk_client.json" \
    > "$out/bulk_client.log" 2>&1
  phase "bulk client exit $?"
  replicas end
  curl -s http://127.0.0.1:8000/v1/info > "$out/info_end.json"
fi
kill -INT $server 2> /dev/null
for _ in $(seq 1 50); do kill -0 $server 2> /dev/null || break; sleep 0.2; done
kill $server 2> /dev/null  # still running after 10 s
ray stop --force > /dev/null 2>&1
pkill -x haproxy 2> /dev/null
compare=()  # the offline tool's masks against the bulk client's, where that ran
[ -d "$work/out-client" ] && compare=(--compare-dir "$work/out-client" --compare-count 200)
timeout 600 "$python" scripts/bench_bulk.py --mode offline --config "$config" --model-id "$model" --work-dir "$work" \
  --photos "$bulk_photos" "${photos[@]}" --address local "${compare[@]}" --out "$out/bulk_offline.json" \
  > "$out/bulk_offline.log" 2>&1
phase "bulk offline exit $?"
for log in "$work"/bulk-*.log; do  # the tool's own log (its start's steps with their times), kept beside the record
  [ -f "$log" ] && tail -c 200000 "$log" > "$out/tool_$(basename "$log")"
done
ray stop --force > /dev/null 2>&1
phase done
