# Lease R, call 1 (fresh machine): install the wheels, random weights.
source .gpurun/setup.sh; mkdir -p /tmp/rt
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; sha256sum .hub-birefnet/birefnet.py; } > /tmp/rt/host.txt 2>&1; cat /tmp/rt/host.txt
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/rt/weights.log 2>&1; ph "weights exit $?"; tail -1 /tmp/rt/weights.log
cp $OUT/phases.txt /tmp/rt/phases_r1.txt; tar -C /tmp -czf $OUT/callR1.tgz rt; ph done
