# Call I7 (call I1's machine; carry .gpurun): weights with structure trained for 3 minutes instead of 2, and the
# shipped execution's accuracy on them (call I2's 2-minute weights gave min IoU 0.977).
[ -f /tmp/r/model_one.json ] || { echo "not call I1's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/r7
pack() { cp $OUT/phases.txt /tmp/r7/phases_i7.txt; tar -C /tmp -czf $OUT/callI7.tgz r7; }
timeout 220 python3 scripts/train_shapes.py /tmp/hub /tmp/trained3 --minutes 3 --batch 4 --out-json /tmp/r7/train3.json > /tmp/r7/train3.log 2>&1; ph "train exit $?"
tail -2 /tmp/r7/train3.log | cut -c1-300; pack
cp /tmp/trained3/model.safetensors /tmp/hub/model.safetensors
timeout $((400-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/hub --subjects shapes --candidates compiled_graphs:fp16 \
  --batch-size 8 --out /tmp/r7/accuracy_trained3.json > /tmp/r7/accuracy_trained3.log 2>&1; ph "accuracy trained exit $?"
cp /tmp/random.safetensors /tmp/hub/model.safetensors; tail -1 /tmp/r7/accuracy_trained3.log | cut -c1-900; ph done; pack
