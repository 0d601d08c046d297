"""The assignment's original backend behaviour, for comparison: download weights at start.

Like `models.resnet152(weights=...)` in the assignment's app.py: build the model (random
initialisation), download the state dict through torch.hub's own downloader, load it. The
download comes from a server on 127.0.0.1, a lower bound on a real download. Served by
gunicorn, as Cloud Run's Python sample serves an app, answering POST /predict with an upload.

    BENCH_MODELS="resnet152=http://127.0.0.1:PORT/f.pth,..." BENCH_HUB_DIR=/empty/dir \
        gunicorn --workers 1 --threads 8 --timeout 0 --no-control-socket \
        benchmarks.assignment_app:app

BENCH_HUB_DIR is torch.hub's download directory: the benchmark gives each start a new empty
one inside its own work directory, so every start downloads and nothing outlives the run (the
process is killed, so it cannot clean up after itself).
"""

import io
import json
import os
import sys
import time

import torch
from flask import Flask, jsonify, request
from PIL import Image
from torchvision.models import get_model

IMPORTED = time.time()


def _event(name: str, **fields) -> None:
    print(json.dumps({"event": name, "t": time.time(), **fields}), file=sys.stdout, flush=True)


_event("imported", t_imported=IMPORTED)
cache = os.environ["BENCH_HUB_DIR"]  # empty: every start downloads
models = {}
for spec in os.environ["BENCH_MODELS"].split(","):
    arch, url = spec.split("=", 1)
    start = time.time()
    model = get_model(arch, weights=None)
    built = time.time()
    state = torch.hub.load_state_dict_from_url(url, model_dir=cache, progress=False)
    downloaded = time.time()
    model.load_state_dict(state)
    models[arch] = model.eval()
    _event(
        "model_loaded",
        model=arch,
        build_s=built - start,
        download_s=downloaded - built,
        load_s=time.time() - downloaded,
    )
_event("ready")

app = Flask(__name__)
preprocess = None


@app.post("/predict")
def predict():
    from torchvision.transforms import v2 as T

    arch = request.form.get("model") or next(iter(models))
    image = Image.open(io.BytesIO(request.files["image"].read())).convert("RGB")
    tf = T.Compose(
        [
            T.Resize(256),
            T.CenterCrop(224),
            T.PILToTensor(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    with torch.inference_mode():
        logits = models[arch](tf(image).unsqueeze(0))
    return jsonify({"model": arch, "index": int(logits.argmax())})
