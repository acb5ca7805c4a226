# Lease M, call 4 (call M3's machine; carry .gpurun .ort3): the offline bulk tool on the same 3,000 photos with
# prod.yaml's model settings (masks against the bulk client's), accuracy on the trained weights, the GPU tests of the
# Triton kernels, then the window attention candidates per shape.
[ -d /tmp/bulk/out-client ] || { echo "not call M3's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/m /tmp/ortp; cp .ort3/* /tmp/ortp/; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/m/phases_m4.txt; tar -C /tmp -czf $OUT/callM4.tgz m; }
timeout 240 python3 scripts/bench_bulk.py --mode offline --config configs/prod.yaml --model-id /tmp/hub --work-dir /tmp/bulk \
  --photos 3000 --photo-dir /tmp/photos --address local --compare-dir /tmp/bulk/out-client --compare-count 200 \
  --out /tmp/m/bulk_offline.json > /tmp/m/bulk_offline.log 2>&1; ph "bulk offline exit $?"
tail -c 1200 /tmp/m/bulk_offline.log; ray stop --force > /dev/null 2>&1; pack
timeout 150 python3 scripts/check_accuracy.py --model-id /tmp/trained --photo-dir /tmp/photos --candidates compiled_graphs:fp16 \
  --batch-size 8 --out /tmp/m/accuracy_trained.json > /tmp/m/accuracy_trained.log 2>&1; ph "accuracy trained exit $?"
tail -3 /tmp/m/accuracy_trained.log | cut -c1-400; pack
timeout 120 python3 -m pytest -n 0 -q -p no:cacheprovider -m gpu tests/gpu/test_triton_kernels.py > /tmp/m/gpu_tests.log 2>&1; ph "gpu tests exit $?"
tail -3 /tmp/m/gpu_tests.log; pack
timeout $((560-SECONDS)) python3 scripts/bench_kernels.py --kinds attention --out /tmp/m/kernels_attention.json > /tmp/m/kernels_attention.log 2>&1; ph "kernels exit $?"
ph done; pack
