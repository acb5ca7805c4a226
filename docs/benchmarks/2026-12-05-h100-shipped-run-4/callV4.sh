# Lease V, call 4 (call V3's machine; carry .gpurun): the offline bulk tool on the same 3,000 photos with
# prod.yaml's model settings (masks against the bulk client's), then accuracy of prod.yaml's execution on random
# weights and on the trained weights (compiled cold for that directory).
[ -d /tmp/bulk/out-client ] || { echo "not call V3's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_v4.txt; tar -C /tmp -czf $OUT/callV4.tgz r; }
timeout 240 python3 scripts/bench_bulk.py --mode offline --config configs/prod.yaml --model-id /tmp/hub --work-dir /tmp/bulk \
  --photos 3000 --photo-dir /tmp/photos --address local --compare-dir /tmp/bulk/out-client --compare-count 200 \
  --out /tmp/r/bulk_offline.json > /tmp/r/bulk_offline.log 2>&1; ph "bulk offline exit $?"
tail -c 1200 /tmp/r/bulk_offline.log; ray stop --force > /dev/null 2>&1; pack
timeout 150 python3 scripts/check_accuracy.py --model-id /tmp/hub --photo-dir /tmp/photos --candidates compiled_graphs:fp16 \
  --batch-size 8 --out /tmp/r/accuracy_random.json > /tmp/r/accuracy_random.log 2>&1; ph "accuracy random exit $?"
tail -1 /tmp/r/accuracy_random.log | cut -c1-500; pack
timeout $((570-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/trained --photo-dir /tmp/photos --candidates compiled_graphs:fp16 \
  --batch-size 8 --out /tmp/r/accuracy_trained.json > /tmp/r/accuracy_trained.log 2>&1; ph "accuracy trained exit $?"
tail -3 /tmp/r/accuracy_trained.log | cut -c1-400; pack
ph done; pack
