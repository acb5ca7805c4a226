# Prepared in session 12 for the next session's first GPU call (fresh machine, ~400 s): prebuild, then model-only
# eager + compiled at batch 1 and 8 on noise AND photos (one model load each). Question: is the service's 93.7% of
# compiled model-only (twelfth session) the input (noise vs photos) or clocks? Run next_call_b.sh right after
# (the machine is released 30 s after a call ends). A call brings back at most 8 files from $OUT.
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,utilization.gpu --format=csv -l 2 > $OUT/smi.csv 2>&1 &
CG='compile_options={"triton.cudagraphs": true}'
timeout 280 python3 -m serve_app.prebuild --address local --config configs/prod.yaml --set model_id=import:birefnet_random:build \
  --set execution=compiled --set compile_cache_dir=/tmp/cc --set "graph_batch_sizes=[1, 8]" --set "$CG" > $OUT/prebuild.log 2>&1; ph "prebuild exit $?"
grep '^{' $OUT/prebuild.log | cut -c1-300
ray stop --force > /dev/null 2>&1
timeout $((570-SECONDS)) python3 scripts/bench_model.py --in-ray-task configs/prod.yaml --model-id import:birefnet_random:build --precisions fp16 \
  --compile-cache-dir /tmp/cc --compile-options '{"triton.cudagraphs": true}' --modes eager,compiled --batch-sizes 1,8 \
  --inputs noise,photos --photo-dir $PWD/.photos --iterations 50 --out $OUT/model.json > $OUT/model.log 2>&1; ph "model exit $?"
python3 -c "import json; [print(r['mode'], r['input'], r['batch_size'], r['ms_per_batch'], r['images_per_s'], r.get('gpu_sm_clock_mhz'), r.get('gpu_power_w')) for r in json.load(open('$OUT/model.json'))['results']]" 2>&1 | tail -8
ray stop --force > /dev/null 2>&1
kill %1 2>/dev/null; ph done
