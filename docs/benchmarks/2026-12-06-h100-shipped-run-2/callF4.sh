# Call F4 (call F1's machine; carry .gpurun .ort3): ONNX Runtime's next part kept; the offline bulk tool on the
# 3,000 photos with prod.yaml's model settings (random weights; masks against the bulk client's outputs).
[ -f /tmp/r/model_one.json ] || { echo "not call F1's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/ortp; cp .ort3/* /tmp/ortp/; ls -la /tmp/ortp; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_f4.txt; tar -C /tmp -czf $OUT/callF4.tgz r; }
cmp -s /tmp/hub/model.safetensors /tmp/random.safetensors && echo "random weights in /tmp/hub"
timeout 300 python3 scripts/bench_bulk.py --mode offline --config configs/prod.yaml --model-id /tmp/hub --work-dir /tmp/bulk \
  --photos 3000 --photo-dir /tmp/photos --address local --compare-dir /tmp/bulk/out-client --compare-count 200 \
  --out /tmp/r/bulk_offline.json > /tmp/r/bulk_offline.log 2>&1; ph "bulk offline exit $?"
tail -c 1200 /tmp/r/bulk_offline.log; ray stop --force > /dev/null 2>&1
ph done; pack
