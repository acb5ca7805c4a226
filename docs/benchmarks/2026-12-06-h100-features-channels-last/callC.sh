# Call 3 (fresh machine; carry .whl .devkit .gpurun .hub-birefnet): prod.yaml as shipped with `features_channels_last`
# (one): the cold prebuild, the model alone from it (profile of 8); `serve run`: /readyz, 64 and 1 clients,
# replicas; weights with structure trained on the GPU (2 minutes) and the shipped execution's accuracy on them; with
# time left, the same prebuild and model alone with the option off (base), and accuracy on random weights.
source .gpurun/setup.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_c.txt; tar -C /tmp -czf $OUT/callC.tgz r; }
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, timm, kornia, PIL, triton, ray; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'pillow', PIL.__version__, 'triton', triton.__version__, 'ray', ray.__version__, 'cudnn', torch.backends.cudnn.version())"
  sha256sum .hub-birefnet/birefnet.py; cat .gpurun/commit.txt; } > /tmp/r/host.txt 2>&1; cat /tmp/r/host.txt
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/r/weights.log 2>&1; ph "weights exit $?"
python3 .gpurun/mkyaml.py /tmp/one.yaml; python3 .gpurun/mkyaml.py /tmp/base.yaml model.features_channels_last=false
cp /tmp/one.yaml /tmp/base.yaml /tmp/r/
timeout 170 python3 -m serve_app.prebuild --address local --config /tmp/one.yaml > /tmp/r/prebuild_one.log 2>&1; ph "prebuild one exit $?"
grep -E '^\{' /tmp/r/prebuild_one.log | cut -c1-300; ray stop --force > /dev/null 2>&1; pack
timeout 80 python3 scripts/bench_model.py --in-ray-task /tmp/one.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
  --iterations 20 --profile --out /tmp/r/model_one.json > /tmp/r/model_one.log 2>&1; ph "model one exit $?"; ray stop --force > /dev/null 2>&1
grep -ho '"batch_size": [0-9]*, "ms_per_batch": [0-9.]*, "images_per_s": [0-9.]*' /tmp/r/model_one.log | tail -2; pack
start=$(date +%s.%N); (serve run /tmp/one.yaml > /tmp/r/serve.log 2>&1) &
for i in $(seq 1 900); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "readyz 200 after $ready s"
python3 .gpurun/replicas.py > /tmp/r/replicas_ready.json 2>/dev/null
timeout 110 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --levels 64,1 \
  --duration 20 --warmup 15 --serve-run-at $start --ready-after-s $ready --out /tmp/r/service.json > /tmp/r/service.log 2>&1; ph "service exit $?"
grep -E "images/s|p50" /tmp/r/service.log | cut -c1-330 | head -4
python3 .gpurun/replicas.py > /tmp/r/replicas_after.json 2>/dev/null
kill %1 2>/dev/null; sleep 2; ray stop --force > /dev/null 2>&1; pkill -x haproxy
head -c 60000 /tmp/r/serve.log > /tmp/r/serve_head.log; grep -v "^\s*$" /tmp/r/serve.log | tail -c 40000 > /tmp/r/serve_tail.log; rm /tmp/r/serve.log; pack
timeout 150 python3 scripts/train_shapes.py /tmp/hub /tmp/trained --minutes 2 --batch 4 --out-json /tmp/r/train.json > /tmp/r/train.log 2>&1; ph "train exit $?"
tail -2 /tmp/r/train.log | cut -c1-300; pack
[ -d /tmp/trained ] && timeout $((590-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/trained --photo-dir /tmp/photos --candidates compiled_graphs:fp16 \
  --batch-size 8 --out /tmp/r/accuracy_trained.json > /tmp/r/accuracy_trained.log 2>&1; ph "accuracy trained exit $?"
tail -1 /tmp/r/accuracy_trained.log | cut -c1-600; pack
if [ $SECONDS -lt 420 ]; then
  timeout $((590-SECONDS)) python3 -m serve_app.prebuild --address local --config /tmp/base.yaml > /tmp/r/prebuild_base.log 2>&1; ph "prebuild base exit $?"
  ray stop --force > /dev/null 2>&1; pack
  [ $SECONDS -lt 530 ] && timeout $((595-SECONDS)) python3 scripts/bench_model.py --in-ray-task /tmp/base.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
    --iterations 20 --out /tmp/r/model_base.json > /tmp/r/model_base.log 2>&1; ph "model base exit $?"; ray stop --force > /dev/null 2>&1
  grep -ho '"batch_size": [0-9]*, "ms_per_batch": [0-9.]*, "images_per_s": [0-9.]*' /tmp/r/model_base.log | tail -2
fi
ph done; pack
