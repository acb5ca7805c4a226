# Seventeenth session, call C (calls A and B's machine, within 30 s of B's end): accuracy of compiled_graphs against
# eager fp32 on 50 photos (buckets from /tmp/cc), beside a probe of torch.compile(...).aot_compile() on BiRefNet at
# batch 1: compile and save, then load in a fresh process with an empty inductor cache (docs/benchmarks/2026-12-02-h200-seventeenth/aot_probe.py).
# (aot_probe.py as run in this call lacked the `torch._dynamo.config.enable_aot_compile = True` line, added for call D.)
[ -d /tmp/site/ray ] || source .gpurun/setup.sh
export PYTHONPATH=/tmp/site:$PWD:$PWD/scripts RAY_USAGE_STATS_ENABLED=0 PATH=/tmp/site/bin:$PATH
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
ray stop --force > /dev/null 2>&1; pkill -x haproxy
( timeout 420 python3 scripts/check_accuracy.py --model-id import:birefnet_random:build --photo-dir $PWD/.photos --photos 50 \
  --candidates compiled_graphs:fp16 --batch-size 8 --compile-cache-dir /tmp/cc --compile-options '{}' \
  --out $OUT/accuracy.json > $OUT/accuracy.log 2>&1; ph "accuracy exit $?" ) &
( TORCHINDUCTOR_CACHE_DIR=/tmp/ind_save timeout 300 python3 docs/benchmarks/2026-12-02-h200-seventeenth/aot_probe.py save 1 > $OUT/aot.log 2>&1; ph "aot save exit $?"
  TORCHINDUCTOR_CACHE_DIR=/tmp/ind_load timeout $((560-SECONDS)) python3 docs/benchmarks/2026-12-02-h200-seventeenth/aot_probe.py load 1 >> $OUT/aot.log 2>&1; ph "aot load exit $?" )
wait; grep -v "^\s*$" $OUT/aot.log | grep -v Warning | tail -25 | cut -c1-400
grep '^{' $OUT/accuracy.log | cut -c1-900; grep -i "Traceback" -A3 $OUT/accuracy.log | head -8; ph done
