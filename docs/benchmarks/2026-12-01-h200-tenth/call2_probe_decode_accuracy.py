"""Session 10 probe: the model's masks from nvJPEG-decoded input (what a lone JPEG upload now gets) against the
masks from the ingress's libjpeg-turbo decode, same model (eager fp16), 50 benchmark photos."""
import json, sys
from pathlib import Path
import numpy as np, torch
from serve_app import imaging
from serve_app.bench.photos import sample_photo_jpegs
from serve_app.model.core import BackgroundRemovalModel
from serve_app.settings import ModelSettings

model = BackgroundRemovalModel.from_settings(ModelSettings(model_id="import:birefnet_random:build", execution="eager",
                                                           precision="fp16"))
rows = []
for index, body in enumerate(sample_photo_jpegs(int(sys.argv[1]) if len(sys.argv) > 1 else 50, photo_dir=Path(".photos"))):
    encoded = imaging.device_decodable_jpeg(body, max_pixels=50_000_000)
    on_gpu = model.decode_jpeg(encoded)
    on_cpu = imaging.decode_image(body, max_pixels=50_000_000).model_input
    with torch.inference_mode():
        inputs = [model.preprocess([image]) for image in (on_gpu, on_cpu)]
        logits = [model.forward(batch) for batch in inputs]
    masks = [model.predict([image])[0].astype(np.int16) for image in (on_gpu, on_cpu)]
    inside = [mask >= 128 for mask in masks]
    union = np.logical_or(*inside).sum()
    rows.append({"photo": index, "size": list(encoded.size),
                 "max_abs_input_diff": float((inputs[0] - inputs[1]).abs().max()),
                 "mean_abs_alpha_diff": float(np.abs(masks[0] - masks[1]).mean() / 255),
                 "iou": float(np.logical_and(*inside).sum() / union) if union else 1.0,
                 "max_abs_logit_diff": float((logits[0] - logits[1]).abs().max())})
worst = {"photos": len(rows), "worst_mean_abs_alpha_diff": max(r["mean_abs_alpha_diff"] for r in rows),
         "worst_iou": min(r["iou"] for r in rows), "worst_max_abs_logit_diff": max(r["max_abs_logit_diff"] for r in rows),
         "worst_max_abs_input_diff": max(r["max_abs_input_diff"] for r in rows),
         "bounds": {"mean_abs_alpha_diff": 1 / 255, "iou": 0.99, "max_abs_logit_diff": 0.1}}
print(json.dumps(worst))
print(json.dumps(rows))
