# Call L3 (call L1's machine; carry .gpurun .ort2): ONNX Runtime's second part kept (the offline bulk tool was not run:
# the device time left after call L2 went to the ONNX Runtime calls and call L6).
mkdir -p /tmp/ortp && cp .ort2/* /tmp/ortp/ && ls -la /tmp/ortp
