# Call L1 (fresh machine; carry .whl .devkit .gpurun .hub-birefnet): host, random weights, prod.yaml as shipped
# (model_id only: one.yaml); the cold prebuild of one.yaml (timed, alone on the GPU; the 3,000 bulk photos written at
# nice 19 meanwhile). Then weights with structure trained on the GPU for 4 minutes at 1024 px (batch 4, a subject
# pixel's cross-entropy balanced per batch), the fp16 ONNX exports at batch 1 and 8 (random weights, CPUs, nice 19)
# beside it; the shipped execution's accuracy on the trained weights (put in /tmp/hub: the prebuilt batch-8 bucket)
# against eager fp32, and the random weights back in /tmp/hub.
source .gpurun/setup.sh; mkdir -p /tmp/r /tmp/onnx; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_l1.txt; tar -C /tmp -czf $OUT/callL1.tgz r; }
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, timm, kornia, PIL, triton, ray, onnx, onnxscript; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'pillow', PIL.__version__, 'triton', triton.__version__, 'ray', ray.__version__, 'onnx', onnx.__version__, 'onnxscript', onnxscript.__version__, 'cudnn', torch.backends.cudnn.version())"
  sha256sum .hub-birefnet/birefnet.py; cat .gpurun/commit.txt; } > /tmp/r/host.txt 2>&1; cat /tmp/r/host.txt
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/r/weights.log 2>&1; ph "weights exit $?"
cp /tmp/hub/model.safetensors /tmp/random.safetensors; rm -rf /tmp/hub_export; cp -r /tmp/hub /tmp/hub_export
python3 .gpurun/mkyaml.py /tmp/one.yaml; cp /tmp/one.yaml /tmp/r/
(timeout 500 nice -n 19 python3 -c "from pathlib import Path; from harness.photos import write_sample_photo_folder; write_sample_photo_folder('/tmp/bulk/in', 3000, photo_dir=Path('/tmp/photos'), workers=3)" > /tmp/r/photos.log 2>&1; ph "photos exit $?") &
p0=$SECONDS; timeout 300 python3 -m serve_app.prebuild --address local --config /tmp/one.yaml > /tmp/r/prebuild_one.log 2>&1; ph "prebuild one (cold cache) exit $? after $((SECONDS-p0)) s"
grep -E '^\{' /tmp/r/prebuild_one.log | cut -c1-300; ray stop --force > /dev/null 2>&1; pack
for b in 1 8; do (CUDA_VISIBLE_DEVICES= timeout 330 nice -n 19 python3 scripts/export_onnx.py /tmp/hub_export /tmp/onnx/b$b.onnx --batch $b --precision fp16 \
  --out-json /tmp/r/export_b$b.json > /tmp/r/export_b$b.log 2>&1; ph "export b$b exit $?") & done
timeout 300 python3 scripts/train_shapes.py /tmp/hub /tmp/trained --minutes ${MINUTES:-4} --batch 4 --subject-weight balanced \
  --out-json /tmp/r/train.json > /tmp/r/train.log 2>&1; ph "train exit $?"
grep -E "^step|before|after" /tmp/r/train.log | cut -c1-200 | tail -8; pack
if [ -f /tmp/trained/model.safetensors ]; then
  cp /tmp/trained/model.safetensors /tmp/hub/model.safetensors
  timeout $((${LIMIT:-590}-8-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/hub --subjects shapes --candidates compiled_graphs:fp16 \
    --batch-size 8 --out /tmp/r/accuracy_trained.json > /tmp/r/accuracy_trained.log 2>&1; ph "accuracy trained exit $?"
  cp /tmp/random.safetensors /tmp/hub/model.safetensors
  tail -1 /tmp/r/accuracy_trained.log | cut -c1-900
fi
wait; ls -la /tmp/onnx; ls /tmp/bulk/in | wc -l; ph done; pack
