# Lease Q, call 1 (fresh machine; carry .whl .gpurun): the deformable convolution's kernels per shape, the Triton
# kernel with its bias added in its epilogue against a pass after it (branch deform-bias-epilogue).
source .gpurun/setup.sh; mkdir -p /tmp/q
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; cat .gpurun/commit.txt; } > /tmp/q/host.txt; cat /tmp/q/host.txt
timeout 240 python3 scripts/bench_kernels.py --kinds deform --out /tmp/q/kernels_deform.json > /tmp/q/kernels_deform.log 2>&1; ph "kernels exit $?"
grep -E '^\{"deform"' /tmp/q/kernels_deform.log; tail -c 800 /tmp/q/kernels_deform.log | grep -iE "error|Traceback"
cp $OUT/phases.txt /tmp/q/phases_q1.txt; tar -C /tmp -czf $OUT/callQ1.tgz q
