# Diagnostic lease D (fresh machine, no Ray): the host's CPU topology and the ceiling of the ingress's CPU work on
# 12 MP photos: all of it, the decodes alone, the PNG alone, without the reduced copy; then the ingress's shape.
source .gpurun/setup.sh; mkdir -p /tmp/d
{ nproc; lscpu; } > /tmp/d/lscpu.txt 2>&1; grep -E "^CPU\(s\)|Thread|Core|Socket|Model name|MHz|L2|L3|NUMA node" /tmp/d/lscpu.txt
pack() { cp $OUT/phases.txt /tmp/d/phases_d.txt; tar -C /tmp -czf $OUT/callD.tgz d; }
c() { name=$1; shift; timeout 120 python3 scripts/bench_codec.py --photo-dir /tmp/photos --photo-size 4000x3000 --duration 8 \
  --out /tmp/d/codec_$name.json "$@" > /tmp/d/codec_$name.log 2>&1; ph "$name exit $?"; cut -c1-250 /tmp/d/codec_$name.log; pack; }
c all --processes 1,8,12,16
c decode --stages decode --processes 1,16
c png --stages png --processes 1,16
c noreduced --stages no-reduced --processes 16
c ingress_shape --processes 12 --per-process 4 --png-threads 16
ph done; pack
