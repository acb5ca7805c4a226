# Sourced at the start of each call: the offline Ray kit and the wheels the image lacks, into /tmp/site.
if [ ! -d /tmp/site/ray ]; then
  bash .devkit/install.sh > /tmp/kit.log 2>&1 || { tail -20 /tmp/kit.log; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD:$PWD/scripts RAY_USAGE_STATS_ENABLED=0 PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
