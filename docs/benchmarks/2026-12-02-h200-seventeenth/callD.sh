# Seventeenth session, call D (same lease): the aot_compile probe again with torch._dynamo.config.enable_aot_compile set
# (call C: torch 2.11's torch.compile() result has no .aot_compile without it). Save at batch 1, load in a fresh process
# with an empty inductor cache.
export PYTHONPATH=/tmp/site:$PWD:$PWD/scripts RAY_USAGE_STATS_ENABLED=0
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
TORCHINDUCTOR_CACHE_DIR=/tmp/ind_save2 timeout 330 python3 docs/benchmarks/2026-12-02-h200-seventeenth/aot_probe.py save 1 > $OUT/aot.log 2>&1; ph "aot save exit $?"
TORCHINDUCTOR_CACHE_DIR=/tmp/ind_load2 timeout $((440-SECONDS)) python3 docs/benchmarks/2026-12-02-h200-seventeenth/aot_probe.py load 1 >> $OUT/aot.log 2>&1; ph "aot load exit $?"
grep -v "^\s*$" $OUT/aot.log | grep -v -i warn | tail -30 | cut -c1-400
