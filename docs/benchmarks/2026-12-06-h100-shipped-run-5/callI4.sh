# Call I4 (call I1's machine; carry .gpurun .ort3): ONNX Runtime's next part kept.
[ -f /tmp/r/model_one.json ] || { echo "not call I1's machine"; exit 1; }
mkdir -p /tmp/ortp; cp .ort3/* /tmp/ortp/; ls -la /tmp/ortp
