# session 6, call 1 (one run, part 1): cold compile (prebuild buckets 1 and 8 as the service does, plus plain
# compiles of b1 and b8 for the model-only figures), then model-only eager fp16 b1/4/8/16 and compiled b1/b8
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
M="--model-id import:birefnet_random:build --precisions fp16 --compile-cache-dir /tmp/cc"
P="--config configs/prod.yaml --set model_id=import:birefnet_random:build --set execution=compiled --set compile_cache_dir=/tmp/cc"
( timeout 400 python3 -m serve_app.prebuild --address local $P --set "graph_batch_sizes=[1, 8]" > $OUT/prebuild.log 2>&1; ph "prebuild exit $?" ) &
( timeout 400 python3 scripts/bench_model.py $M --modes compiled --batch-sizes 8 --iterations 3 --out /tmp/cold_b8.json > $OUT/cold_b8.log 2>&1; ph "plain compile b8 exit $?" ) &
( timeout 400 python3 scripts/bench_model.py $M --modes compiled --batch-sizes 1 --iterations 3 --out /tmp/cold_b1.json > $OUT/cold_b1.log 2>&1; ph "plain compile b1 exit $?" ) &
wait
grep '^{' $OUT/prebuild.log | cut -c1-400
timeout 100 python3 scripts/bench_model.py $M --modes compiled --batch-sizes 1,8 --iterations 30 --out $OUT/model_compiled.json > $OUT/model_compiled.log 2>&1; ph "model compiled exit $?"
timeout $((585-SECONDS)) python3 scripts/bench_model.py $M --modes eager --batch-sizes 1,4,8,16 --iterations 20 --out $OUT/model_eager.json > $OUT/model_eager.log 2>&1; ph "model eager exit $?"
grep "^{" $OUT/model_compiled.log $OUT/model_eager.log | cut -c1-400
