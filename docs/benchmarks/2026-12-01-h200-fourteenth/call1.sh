# Prepared in session 13 for the next session's first GPU call (fresh machine, ~420 s): prebuild, then model-only
# eager + compiled at batch 1 and 8 on the photos WITH --serving-path (the deployment's device path, pipelined, from
# decoded photos in host memory). Question: is the service's ~125.5 ms per batch of 8 (vs 119.6 forward alone) in the
# device path (serving_path_ms_per_batch ~125) or in the Serve layer (~120)? Run next_call_b.sh right after (the
# machine is released 30 s after a call ends). A call brings back at most 8 files from $OUT.
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
CG='compile_options={"triton.cudagraphs": true}'
timeout 270 python3 -m serve_app.prebuild --address local --config configs/prod.yaml --set model_id=import:birefnet_random:build \
  --set execution=compiled --set compile_cache_dir=/tmp/cc --set "graph_batch_sizes=[1, 8]" --set "$CG" > $OUT/prebuild.log 2>&1; ph "prebuild exit $?"
grep '^{' $OUT/prebuild.log | cut -c1-300
ray stop --force > /dev/null 2>&1
timeout $((580-SECONDS)) python3 scripts/bench_model.py --in-ray-task configs/prod.yaml --model-id import:birefnet_random:build --precisions fp16 \
  --compile-cache-dir /tmp/cc --compile-options '{"triton.cudagraphs": true}' --modes eager,compiled --batch-sizes 1,8 \
  --inputs photos --serving-path --photo-dir $PWD/.photos --iterations 40 --out $OUT/model.json > $OUT/model.log 2>&1; ph "model exit $?"
python3 -c "import json; [print(r['mode'], r['batch_size'], r['ms_per_batch'], r['images_per_s'], r.get('serving_path_ms_per_batch'), r.get('serving_path_images_per_s'), r.get('serving_path_gpu_busy_fraction'), r.get('gpu_sm_clock_mhz')) for r in json.load(open('$OUT/model.json'))['results']]" 2>&1 | tail -8
ray stop --force > /dev/null 2>&1; ph done
