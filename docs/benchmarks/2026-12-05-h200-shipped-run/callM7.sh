# Lease M, call 7 (call M6's machine; carry .gpurun): eager fp16 and eager fp32 on the trained weights against eager
# fp32, the same photos.
source .gpurun/setup.sh; timeout 200 python3 scripts/check_accuracy.py --model-id /tmp/trained --photo-dir /tmp/photos --candidates eager:fp16,eager:fp32 --batch-size 8 --out /tmp/m/accuracy_trained_eager.json > /tmp/m/accuracy_trained_eager.log 2>&1; ph "acc eager exit $?"; tail -3 /tmp/m/accuracy_trained_eager.log | cut -c1-500; tar -C /tmp -czf $OUT/callM7.tgz m
