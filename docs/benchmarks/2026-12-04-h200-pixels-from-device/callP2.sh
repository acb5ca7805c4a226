# Lease P, call 2 (call P1's machine): the Ray kit, a cold prebuild, then the GPU tests of the JPEG decode.
[ -f /tmp/one.yaml ] || { echo "not call P1's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/r; ph "setup done"
pack() { cp $OUT/phases.txt /tmp/r/phases_p2.txt; tar -C /tmp -czf $OUT/callP2.tgz r; }
timeout 240 python3 -m serve_app.prebuild --address local --config /tmp/one.yaml > /tmp/r/prebuild.log 2>&1; ph "prebuild exit $?"
ray stop --force > /dev/null 2>&1; pack
timeout 60 python3 -m pytest -n 0 -p no:cacheprovider -m gpu tests/gpu/test_jpeg_on_device.py -q -rA > /tmp/r/gpu_jpeg.log 2>&1; ph "gpu jpeg exit $?"
tail -4 /tmp/r/gpu_jpeg.log; ph done; pack
