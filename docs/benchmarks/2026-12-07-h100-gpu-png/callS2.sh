# Call S2 (fresh machine; carry .whl .gpurun): a 12 MP cut-out's PNG written on the GPU by gpu_png.py (Up filter
# fused with the histogram, one dynamic Huffman block of literals, Triton kernels, the copy to pinned memory),
# checked by Pillow, timed per step, sized against ISA-L level 1.
source .gpurun/setup.sh; mkdir -p /tmp/r
{ nproc; lscpu | grep -E "Model name"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; cat .gpurun/commit.txt; } > /tmp/r/host.txt 2>&1; cat /tmp/r/host.txt
timeout 240 python3 .gpurun/gpu_png.py --photo bench --repeat 10 --out /tmp/r/gpu_png_bench_fused.json > /tmp/r/gpu_png_bench_fused.log 2>&1; ph "bench photo exit $?"
tail -c 1500 /tmp/r/gpu_png_bench_fused.log
timeout 120 python3 .gpurun/gpu_png.py --repeat 10 --out /tmp/r/gpu_png_synthetic_fused.json > /tmp/r/gpu_png_synthetic_fused.log 2>&1; ph "synthetic exit $?"
tail -c 1500 /tmp/r/gpu_png_synthetic_fused.log
cp $OUT/phases.txt /tmp/r/phases_s2.txt; tar -C /tmp -czf $OUT/callS2.tgz r
