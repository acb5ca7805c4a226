# Fourteenth session, call 1 (fresh machine): accuracy (eager fp16 and compiled + triton.cudagraphs against eager fp32,
# 50 photos, its own cold compile of bucket 8) beside the cold prebuild; then, with nothing else running, model-only
# on photos in a Ray task: the published model's eager (PyTorch's attention defaults, no project patches: the
# issue's eager baseline) at 4, 8, 16, and this project's eager + compiled at 1 and 8.
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
CG='compile_options={"triton.cudagraphs": true}'
( timeout 420 python3 scripts/check_accuracy.py --model-id import:birefnet_random:build --photo-dir $PWD/.photos --photos 50 \
  --candidates eager:fp16,compiled:fp16 --batch-size 8 --compile-cache-dir /tmp/cc_acc --compile-options '{"triton.cudagraphs": true}' \
  --out $OUT/accuracy.json > $OUT/accuracy.log 2>&1; ph "accuracy exit $?" ) &
timeout 300 python3 -m serve_app.prebuild --address local --config configs/prod.yaml --set model_id=import:birefnet_random:build \
  --set execution=compiled --set compile_cache_dir=/tmp/cc --set "graph_batch_sizes=[1, 8]" --set "$CG" > $OUT/prebuild.log 2>&1; ph "prebuild exit $?"
grep '^{' $OUT/prebuild.log | cut -c1-300
ray stop --force > /dev/null 2>&1
wait; grep '^{' $OUT/accuracy.log | cut -c1-400
model() {  # name, timeout, args
  timeout $2 python3 scripts/bench_model.py --in-ray-task configs/prod.yaml --model-id import:birefnet_random:build --precisions fp16 \
    --inputs photos --photo-dir $PWD/.photos --out $OUT/$1.json $3 > $OUT/$1.log 2>&1; ph "$1 exit $?"
  python3 -c "import json; [print(r['mode'], r['batch_size'], r['ms_per_batch'], r['images_per_s'], r.get('gpu_sm_clock_mhz'), r.get('peak_gpu_memory_gb')) for r in json.load(open('$OUT/$1.json'))['results']]" 2>&1 | tail -8
  ray stop --force > /dev/null 2>&1
}
model model_published 150 "--set attention_precision=fp32 --set contiguous_attention_masks=false --modes eager --batch-sizes 4,8,16 --iterations 20"
model model $((585-SECONDS)) "--compile-cache-dir /tmp/cc --compile-options {\"triton.cudagraphs\":true} --modes eager,compiled --batch-sizes 1,8 --iterations 40"
ph done
