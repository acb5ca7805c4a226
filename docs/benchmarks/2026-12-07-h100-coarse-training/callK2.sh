# Call K2 (fresh machine; carry .whl .devkit .gpurun .hub-birefnet): host, random weights; weights with structure
# trained on the GPU for MINUTES minutes (default 4.5; the first 60% on photos squeezed to 512 px, batch 8; then 1024 px, batch 4; a
# cosine-decayed learning rate); the shipped execution's accuracy on them against eager fp32 (its batch-8 graph
# compiled in the check, no prebuild; not with SKIP_CHECK set).
source .gpurun/setup.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_k2.txt; tar -C /tmp -czf $OUT/callK2.tgz r; }
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, timm, kornia, PIL, triton; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'pillow', PIL.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version())"
  sha256sum .hub-birefnet/birefnet.py; cat .gpurun/commit.txt; } > /tmp/r/host.txt 2>&1; cat /tmp/r/host.txt
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/r/weights.log 2>&1; ph "weights exit $?"
timeout $(python3 -c "print(int(${MINUTES:-4.5}*60+60))") python3 scripts/train_shapes.py /tmp/hub /tmp/trained --minutes ${MINUTES:-4.5} --batch 4 --coarse-share 0.6 --coarse-size 512 --coarse-batch 8 \
  --out-json /tmp/r/train.json > /tmp/r/train.log 2>&1; ph "train exit $?"
grep -E "^step|before|after" /tmp/r/train.log | cut -c1-200 | tail -8; pack
if [ -f /tmp/trained/model.safetensors ] && [ -z "$SKIP_CHECK" ]; then
  timeout $((${LIMIT:-590}-8-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/trained --subjects shapes --candidates compiled_graphs:fp16 \
    --batch-size 8 --out /tmp/r/accuracy_trained.json > /tmp/r/accuracy_trained.log 2>&1; ph "accuracy trained exit $?"
  tail -1 /tmp/r/accuracy_trained.log | cut -c1-900
fi
ph done; pack
