# Call I3 (call I1's machine; carry .gpurun .ort2): ONNX Runtime's next part kept; the GPU tests.
[ -f /tmp/r/model_one.json ] || { echo "not call I1's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/ortp; cp .ort2/* /tmp/ortp/; ls -la /tmp/ortp
pack() { cp $OUT/phases.txt /tmp/r/phases_i3.txt; tar -C /tmp -czf $OUT/callI3.tgz r; }
timeout 200 python3 -m pytest -n 0 -q -p no:cacheprovider -m gpu tests/gpu > /tmp/r/gpu_tests.log 2>&1; ph "gpu tests exit $?"; tail -3 /tmp/r/gpu_tests.log | cut -c1-300
ph done; pack
