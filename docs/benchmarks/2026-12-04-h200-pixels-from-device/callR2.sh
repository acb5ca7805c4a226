# Lease R, call 2 (call R1's machine): the Ray kit, then the GPU tier, pytest -m gpu tests/gpu on the Hub directory
# with random weights (cold compile into its own cache, then a warm restart).
[ -d /tmp/hub ] || { echo "not call R1's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/rt; ph "setup done"; ray stop --force > /dev/null 2>&1
SERVE_APP_GPU_MODEL_DIR=/tmp/hub timeout 560 python3 -m pytest -n 0 -p no:cacheprovider -m gpu tests/gpu -q -rA > /tmp/rt/gpu_tier.log 2>&1; ph "gpu tier exit $?"
tail -15 /tmp/rt/gpu_tier.log
cp $OUT/phases.txt /tmp/rt/phases_gpu_tier.txt; tar -C /tmp -czf $OUT/callR2.tgz rt; ph done
