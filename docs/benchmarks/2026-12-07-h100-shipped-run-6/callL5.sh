# Call L5 (call L1's machine; carry .gpurun .ort4): ONNX Runtime GPU 1.31.1 assembled from its four parts (the
# wheel's files, tar + xz), then call L1's fp16 exports under the CUDA execution provider at batch 1 and 8, and
# whether the TensorRT provider can start.
[ -f /tmp/r/model_one.json ] || { echo "not call L2's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/r /tmp/ortp /tmp/ortsite
pack() { cp $OUT/phases.txt /tmp/r/phases_l5.txt; tar -C /tmp -czf $OUT/callL5.tgz r; }
cp .ort4/* /tmp/ortp/; cat /tmp/ortp/ortpart.0* > /tmp/ort.tar.xz; ls -la /tmp/ortp
echo "$(cut -d' ' -f1 .gpurun/ort.sha256)  /tmp/ort.tar.xz" | sha256sum -c || exit 1
tar -C /tmp/ortsite -xJf /tmp/ort.tar.xz; ph "unpacked"
export PYTHONPATH=/tmp/ortsite:$PYTHONPATH
python3 -c "import onnxruntime; print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())" | tee /tmp/r/ort_providers.txt
for b in 1 8; do timeout 200 python3 scripts/bench_onnxruntime.py /tmp/onnx/b$b.onnx --model-id /tmp/hub --iterations 20 \
  --out /tmp/r/ort_cuda_b$b.json > /tmp/r/ort_cuda_b$b.log 2>&1; ph "ort cuda b$b exit $?"; tail -c 1500 /tmp/r/ort_cuda_b$b.log; pack; done
timeout 90 python3 scripts/bench_onnxruntime.py /tmp/onnx/b1.onnx --model-id /tmp/hub --provider tensorrt --iterations 5 \
  --out /tmp/r/ort_tensorrt_b1.json > /tmp/r/ort_tensorrt_b1.log 2>&1; ph "ort tensorrt b1 exit $?"; tail -c 1200 /tmp/r/ort_tensorrt_b1.log
ph done; pack
