# Call 1 (fresh machine; carry .whl .devkit .gpurun .hub-birefnet): the wheels, random weights in the Hub layout,
# the GPU tests of the device PNG and JPEG paths and the device PNG coder against a busy device; then
# scripts/bench_shipped.sh PART=1 (host, cold prebuild of prod.yaml with model_id only, accuracy, model alone).
source .gpurun/setup.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_call1.txt 2>/dev/null; tar -C /tmp --exclude=r/bulk -czf $OUT/call1.tgz r; }
cp .gpurun/commit.txt /tmp/r/commit.txt; sha256sum .hub-birefnet/birefnet.py > /tmp/r/hub_code.txt
python3 -c "import torch, triton; print('cudnn', torch.backends.cudnn.version(), 'triton', triton.__version__)" >> /tmp/r/hub_code.txt 2>&1
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/r/weights.log 2>&1; ph "weights exit $?"
timeout 200 python3 -m pytest -n 0 -q -p no:cacheprovider -m gpu tests/gpu/test_png_device.py tests/gpu/test_jpeg_on_device.py -rfE > /tmp/r/gpu_tests.log 2>&1; T1=$?; ph "gpu tests exit $T1"
tail -4 /tmp/r/gpu_tests.log | cut -c1-300
timeout 60 python3 scripts/bench_device_png.py --busy --seconds 3 --out /tmp/r/device_png_busy.json > /tmp/r/device_png_busy.log 2>&1; ph "device png busy exit $?"
grep -v Warn /tmp/r/device_png_busy.log | cut -c1-400 | tail -3; pack
s0=$SECONDS; PART=1 timeout $((560 - SECONDS)) bash scripts/bench_shipped.sh /tmp/hub /tmp/r /tmp/photos; ph "part 1 exit $? after $((SECONDS - s0)) s"
cat /tmp/r/phases.txt; grep -ho '"batch_size": [0-9]*, "ms_per_batch": [0-9.]*, "images_per_s": [0-9.]*' /tmp/r/model.log | tail -2
tail -1 /tmp/r/accuracy.log | cut -c1-400; ls /tmp/r/bulk/in | wc -l; pack
