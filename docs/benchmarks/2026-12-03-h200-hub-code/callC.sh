# Call C (same machine): accuracy of compiled_graphs fp16 against eager fp32 on 50 photos, then eager with the
# published attention (fused_window_attention off) for the speed of the code as downloaded.
[ -d /tmp/site/ray ] || { echo "not call A's machine"; exit 1; }
source .gpurun/setup.sh
ray stop --force > /dev/null 2>&1
timeout 150 python3 scripts/bench_model.py --in-ray-task configs/prod.yaml --model-id /tmp/hub --precisions fp16 --modes eager \
  --batch-sizes 1,8 --inputs photos --photo-dir $PWD/.photos --iterations 20 --set fused_window_attention=false \
  --out $OUT/model_published_attention.json > $OUT/model_published_attention.log 2>&1; ph "published attention exit $?"
python3 -c "import json; [print(r['mode'], r['execution'], r['batch_size'], r['ms_per_batch'], r['images_per_s'], r.get('fused_window_attention_layers')) for r in json.load(open('$OUT/model_published_attention.json'))['results']]" 2>&1 | tail -4
ray stop --force > /dev/null 2>&1
timeout $((585-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/hub --photo-dir .photos --candidates compiled_graphs:fp16,eager:fp16 \
  --batch-size 8 --compile-cache-dir /tmp/acc_cc --compile-options '{}' --out $OUT/accuracy.json > $OUT/accuracy.log 2>&1; ph "accuracy exit $?"
tail -15 $OUT/accuracy.log; ph done
