# Call K1 (fresh machine; carry .whl .devkit .gpurun .hub-birefnet): one call, all that failed starts left device time
# for. Host, random weights; weights with structure trained on the GPU for 3.5 minutes on photos drawn at the accuracy
# check's sizes and squeezed to the model's input (train_shapes.py's default); the shipped execution's accuracy on
# them against eager fp32 (its batch-8 graph compiled in the check, no prebuild), and eager fp16's beside it.
source .gpurun/setup.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_k1.txt; tar -C /tmp -czf $OUT/callK1.tgz r; }
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, timm, kornia, PIL, triton; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'pillow', PIL.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version())"
  sha256sum .hub-birefnet/birefnet.py; cat .gpurun/commit.txt; } > /tmp/r/host.txt 2>&1; cat /tmp/r/host.txt
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/r/weights.log 2>&1; ph "weights exit $?"
timeout 260 python3 scripts/train_shapes.py /tmp/hub /tmp/trained --minutes 3.5 --batch 4 --out-json /tmp/r/train.json > /tmp/r/train.log 2>&1; ph "train exit $?"
tail -2 /tmp/r/train.log | cut -c1-300; pack
if [ -f /tmp/trained/model.safetensors ]; then
  cp /tmp/trained/model.safetensors /tmp/hub/model.safetensors
  timeout $((${LIMIT:-600}-10-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/hub --subjects shapes --candidates compiled_graphs:fp16,eager:fp16 \
    --batch-size 8 --out /tmp/r/accuracy_trained.json > /tmp/r/accuracy_trained.log 2>&1; ph "accuracy trained exit $?"
  tail -2 /tmp/r/accuracy_trained.log | cut -c1-900
fi
ph done; pack
