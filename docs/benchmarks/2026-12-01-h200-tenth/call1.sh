# session 10, call 1: nvJPEG decode vs libjpeg-turbo and PNG thread scaling on the host (probe_decode.py), and where the
# compiled forward's time goes at batch 8 (bench_model --profile), plain compiled and compiled + triton.cudagraphs
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
nproc; lscpu | grep -E "Model name|^CPU\(s\)"
(timeout 400 python3 scripts/bench_model.py --model-id import:birefnet_random:build --precisions fp16 --compile-cache-dir /tmp/cc1 \
  --modes compiled --batch-sizes 8 --iterations 10 --profile --out $OUT/profile_compiled.json > $OUT/profile_compiled.log 2>&1; ph "profile plain exit $?") &
(timeout 400 python3 scripts/bench_model.py --model-id import:birefnet_random:build --precisions fp16 --compile-cache-dir /tmp/cc2 \
  --compile-options '{"triton.cudagraphs": true}' --modes compiled --batch-sizes 8 --iterations 10 --profile \
  --out $OUT/profile_compiled_cg.json > $OUT/profile_compiled_cg.log 2>&1; ph "profile cg exit $?") &
sleep 2
timeout 200 python3 .gpurun/probe_decode.py 24 > $OUT/probe_decode.log 2>&1; ph "probe exit $?"
grep '^{' $OUT/probe_decode.log; tail -3 $OUT/probe_decode.log | cut -c1-300
wait
for f in profile_compiled profile_compiled_cg; do grep -E "images_per_s|ms_per_batch" $OUT/$f.log | head -3 | cut -c1-300; tail -30 $OUT/$f.log | cut -c1-200; done
