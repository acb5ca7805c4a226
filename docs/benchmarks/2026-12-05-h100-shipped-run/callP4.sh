# Lease P, call 4 (call P3's machine; carry .gpurun): the offline bulk tool on the same 3,000 photos with
# prod.yaml's model settings (masks against the bulk client's), then accuracy on the trained weights (compiled cold
# for that directory).
[ -d /tmp/bulk/out-client ] || { echo "not call P3's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/p; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/p/phases_p4.txt; tar -C /tmp -czf $OUT/callP4.tgz p; }
timeout 240 python3 scripts/bench_bulk.py --mode offline --config configs/prod.yaml --model-id /tmp/hub --work-dir /tmp/bulk \
  --photos 3000 --photo-dir /tmp/photos --address local --compare-dir /tmp/bulk/out-client --compare-count 200 \
  --out /tmp/p/bulk_offline.json > /tmp/p/bulk_offline.log 2>&1; ph "bulk offline exit $?"
tail -c 1200 /tmp/p/bulk_offline.log; ray stop --force > /dev/null 2>&1; pack
timeout $((570-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/trained --photo-dir /tmp/photos --candidates compiled_graphs:fp16 \
  --batch-size 8 --out /tmp/p/accuracy_trained.json > /tmp/p/accuracy_trained.log 2>&1; ph "accuracy trained exit $?"
tail -3 /tmp/p/accuracy_trained.log | cut -c1-400; pack
ph done; pack
