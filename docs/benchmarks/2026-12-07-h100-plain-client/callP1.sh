# Call P1 (fresh machine; carry .whl .devkit .gpurun .hub-birefnet): random weights, prod.yaml as shipped
# (model_id only: one.yaml); the cold prebuild; the model alone from the saved buckets in a Ray task (100 batches of
# photos). Call P2 follows on the same machine.
source .gpurun/setup.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_p1.txt; tar -C /tmp -czf $OUT/callP1.tgz r; }
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, timm, kornia, PIL, triton, ray, isal, simplejpeg; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'pillow', PIL.__version__, 'triton', triton.__version__, 'ray', ray.__version__, 'isal', isal.__version__, 'simplejpeg', simplejpeg.__version__, 'cudnn', torch.backends.cudnn.version())"
  sha256sum .hub-birefnet/birefnet.py; cat .gpurun/commit.txt; } > /tmp/r/host.txt 2>&1; cat /tmp/r/host.txt
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/r/weights.log 2>&1; ph "weights exit $?"
python3 .gpurun/mkyaml.py /tmp/one.yaml; cp /tmp/one.yaml /tmp/r/
p0=$SECONDS; timeout 300 python3 -m serve_app.prebuild --address local --config /tmp/one.yaml > /tmp/r/prebuild_one.log 2>&1; ph "prebuild one (cold cache) exit $? after $((SECONDS-p0)) s"
ray stop --force > /dev/null 2>&1; pack
timeout 90 python3 scripts/bench_model.py --in-ray-task /tmp/one.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
  --iterations 100 --out /tmp/r/model_one.json > /tmp/r/model_one.log 2>&1; ph "model one exit $?"; ray stop --force > /dev/null 2>&1
grep -ho '"batch_size": [0-9]*, "ms_per_batch": [0-9.]*, "images_per_s": [0-9.]*' /tmp/r/model_one.log | tail -2; pack
ph done; pack
