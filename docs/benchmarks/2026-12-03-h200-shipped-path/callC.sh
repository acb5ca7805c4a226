# Call C (call A's machine, right after B): the offline bulk tool on the same 3,000 photos with prod.yaml's model
# settings and the warm compile cache, its masks against the bulk client's; then the accuracy check.
[ -d /tmp/site/ray ] || { echo "not call A's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/rc
ray stop --force > /dev/null 2>&1
timeout 330 python3 scripts/bench_bulk.py --mode offline --config configs/prod.yaml --model-id /tmp/hub --work-dir /tmp/bulk \
  --photos 3000 --photo-dir .photos --address local --compare-dir /tmp/bulk/out-client --compare-count 200 \
  --out /tmp/rc/bulk_offline.json > /tmp/rc/bulk_offline.log 2>&1; ph "bulk offline exit $?"
tail -c 1500 /tmp/rc/bulk_offline.log
ray stop --force > /dev/null 2>&1
timeout $((585-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/hub --photo-dir .photos --candidates compiled_graphs:fp16 \
  --batch-size 8 --out /tmp/rc/accuracy.json > /tmp/rc/accuracy.log 2>&1; ph "accuracy exit $?"
tail -5 /tmp/rc/accuracy.log
cp $OUT/phases.txt /tmp/rc/; tar -C /tmp -czf $OUT/callC.tgz rc; ph done
