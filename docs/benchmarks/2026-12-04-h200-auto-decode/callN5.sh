# Lease N, call 5 (call N4's machine): the GPU tier, pytest -m gpu tests/gpu on the Hub directory with random
# weights (cold compile into its own cache, then a warm restart).
[ -f /tmp/r/accuracy.json ] || { echo "not call N4's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/rt; ray stop --force > /dev/null 2>&1
SERVE_APP_GPU_MODEL_DIR=/tmp/hub timeout 570 python3 -m pytest -n 0 -p no:cacheprovider -m gpu tests/gpu -q -rA > /tmp/rt/gpu_tier.log 2>&1; ph "gpu tier exit $?"
tail -15 /tmp/rt/gpu_tier.log
cp $OUT/phases.txt /tmp/rt/phases_gpu_tier.txt; tar -C /tmp -czf $OUT/callN5.tgz rt; ph done
