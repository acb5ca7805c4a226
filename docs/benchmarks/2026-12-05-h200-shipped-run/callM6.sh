# Lease M, call 6 (call M5's machine; carry .gpurun): the error of call M4's attention timing; call M4's accuracy run
# on the trained weights again with a compile cache of its own (M4's loaded the random-weight directory's saved
# bucket, whose guards did not match this directory's classes, and ran batch 8 on the eager forward).
source .gpurun/setup.sh; tail -c 1500 /tmp/m/kernels_attention.log; timeout 330 python3 scripts/check_accuracy.py --model-id /tmp/trained --photo-dir /tmp/photos --candidates compiled_graphs:fp16 --compile-cache-dir /tmp/cc2 --batch-size 8 --out /tmp/m/accuracy_trained_cold.json > /tmp/m/accuracy_trained_cold.log 2>&1; ph "acc cold exit $?"; tail -2 /tmp/m/accuracy_trained_cold.log | cut -c1-600; tar -C /tmp -czf $OUT/callM6.tgz m
