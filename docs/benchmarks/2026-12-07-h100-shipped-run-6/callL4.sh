# Call L4 (call L1's machine; carry .gpurun .ort3): ONNX Runtime's third part kept.
[ -f /tmp/r/model_one.json ] || { echo "not call L2's machine"; exit 1; }
mkdir -p /tmp/ortp; cp .ort3/* /tmp/ortp/; ls -la /tmp/ortp
