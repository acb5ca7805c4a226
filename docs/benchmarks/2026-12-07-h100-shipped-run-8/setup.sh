# Sourced at the start of each call: the wheels the image lacks and (when carried) the offline Ray kit, into
# /tmp/site, compiled to bytecode once as pip would (this host's Python may not write .pyc files itself).
mkdir -p /tmp/site
if [ -d .whl ] && [ ! -f /tmp/site/.whl-stamp ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl > /tmp/whl.log 2>&1 || { tail -5 /tmp/whl.log; exit 1; }
  touch /tmp/site/.whl-stamp
fi
if [ -d .devkit ] && [ ! -d /tmp/site/ray ]; then
  bash .devkit/install.sh > /tmp/kit.log 2>&1 || { tail -20 /tmp/kit.log; exit 1; }
fi
if [ -d /tmp/site/ray ] && [ ! -f /tmp/site/.compiled ]; then
  python3 -m compileall -q -j 16 /tmp/site > /dev/null 2>&1; touch /tmp/site/.compiled
fi
# The image's own packages: pip writes their bytecode on a normal install; this image has none where it is missing.
if [ ! -f /tmp/.host-compiled ]; then
  ( HOSTSITE=$(python3 -c "import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))")
    echo "host site $HOSTSITE: $(find $HOSTSITE/torch -name '*.pyc' | wc -l) pyc, $(find $HOSTSITE/torch -name '*.py' | wc -l) py in torch" > /tmp/host_pyc.txt
    s0=$SECONDS; python3 -m compileall -q -j 8 $HOSTSITE > /dev/null 2>&1; echo "compiled host site in $((SECONDS-s0)) s: $(find $HOSTSITE/torch -name '*.pyc' | wc -l) pyc in torch" >> /tmp/host_pyc.txt
    touch /tmp/.host-compiled ) &
  HOSTCOMPILE=$!
fi
[ -e /tmp/photos ] || ln -s $(python3 -c "import skimage, os; print(os.path.join(os.path.dirname(skimage.__file__), 'data'))") /tmp/photos
export PYTHONPATH=/tmp/site:$PWD:$PWD/scripts RAY_USAGE_STATS_ENABLED=0 PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
export BENCH_CODE_COMMIT=$(cat .gpurun/commit.txt)
