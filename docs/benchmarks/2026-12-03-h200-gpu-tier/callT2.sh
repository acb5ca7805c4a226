# GPU tier on call S's machine: pytest -m gpu tests/gpu on the Hub directory with random weights (cold compile
# into its own cache, then a warm restart).
source .gpurun/setup.sh; mkdir -p /tmp/rt
[ -d /tmp/hub ] || { python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/rt/weights.log 2>&1; ph "weights exit $?"; }
ray stop --force > /dev/null 2>&1
SERVE_APP_GPU_MODEL_DIR=/tmp/hub timeout 570 python3 -m pytest -n 0 -p no:cacheprovider -m gpu tests/gpu -q -rA > /tmp/rt/gpu_tier.log 2>&1; ph "gpu tier exit $?"
tail -15 /tmp/rt/gpu_tier.log
cp $OUT/phases.txt /tmp/rt/; tar -C /tmp -czf $OUT/callT.tgz rt; ph done
