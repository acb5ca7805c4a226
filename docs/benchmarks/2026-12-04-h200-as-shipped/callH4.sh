# Lease H, call 4 (call H3's machine): the offline bulk tool on the same 3,000 photos with prod.yaml's model
# settings and the warm compile cache, its masks against the bulk client's; then the accuracy check.
[ -d /tmp/bulk/out-client ] || { echo "not call H3's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_h4.txt; tar -C /tmp -czf $OUT/callH4.tgz r; }
timeout 300 python3 scripts/bench_bulk.py --mode offline --config configs/prod.yaml --model-id /tmp/hub --work-dir /tmp/bulk \
  --photos 3000 --photo-dir /tmp/photos --address local --compare-dir /tmp/bulk/out-client --compare-count 200 \
  --out /tmp/r/bulk_offline.json > /tmp/r/bulk_offline.log 2>&1; ph "bulk offline exit $?"
tail -c 1200 /tmp/r/bulk_offline.log; ray stop --force > /dev/null 2>&1; pack
timeout $((570-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/hub --photo-dir /tmp/photos --candidates compiled_graphs:fp16 \
  --batch-size 8 --out /tmp/r/accuracy.json > /tmp/r/accuracy.log 2>&1; ph "accuracy exit $?"
tail -5 /tmp/r/accuracy.log | cut -c1-400; ph done; pack
