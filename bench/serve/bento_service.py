"""The BentoML side of bench/serve: imops' surfacenet in PyTorch, loaded from the
same model bundle imops serves (model.json + model.safetensors), behind a BentoML
service with adaptive batching. Same preprocessing as imops: decode (JPEGs at a
reduced scale when the model's size allows), bilinear resize to the model's size,
scale to 0..1, normalize with the model's mean/std.

    IMOPS_BENCH_MODEL=/path/to/model bentoml serve bento_service:SurfaceClassifier --port 3001

POST /predict with multipart files under "images" answers the predicted class
indices, e.g. [1] for a cracked surface (the seed's service did the same)."""
import json
import math
import os
import struct
from pathlib import Path
from typing import List

import bentoml
import numpy as np
import torch
import torch.nn as nn
from PIL import Image

MAX_BATCH = int(os.environ.get("IMOPS_BENCH_MAX_BATCH", "32"))
# BentoML's max_latency_ms is a budget for the whole request (queueing and inference), past
# which it answers 503; its default (60 s) like imops' request timeout, not imops' batching hold.
MAX_LATENCY_MS = int(os.environ.get("IMOPS_BENCH_MAX_LATENCY_MS", "60000"))


class SurfaceNet(nn.Module):
    """imops' surfacenet; the reference definition is tools/ref/gen_model_fixtures.py (not imported here:
    it pulls in torchvision, which would add to BentoML's measured memory)."""

    def __init__(self, num_classes=2, in_channels=3, width=1.0, stem_stride=2, dropout=0.0):
        super().__init__()
        c1, c2, c3 = (max(1, int(math.floor(b * width + 0.5))) for b in (32, 64, 128))
        self.conv1 = nn.Conv2d(in_channels, c1, 3, stride=stem_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.conv3 = nn.Conv2d(c2, c3, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c3)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c3, num_classes)

    def forward(self, x):
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = self.pool(self.relu(self.bn2(self.conv2(x))))
        x = self.relu(self.bn3(self.conv3(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def load_safetensors(path):
    """{name: tensor} of a safetensors file (the format is small enough to read without the package)."""
    b = Path(path).read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, t in header.items():
        lo, hi = t["data_offsets"]
        arr = np.frombuffer(b, dtype=DTYPES[t["dtype"]], count=(hi - lo) // np.dtype(DTYPES[t["dtype"]]).itemsize,
                            offset=8 + n + lo).reshape(t["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


@bentoml.service(name="surface_classifier", workers=int(os.environ.get("IMOPS_BENCH_BENTO_WORKERS", "1")),
                 traffic={"timeout": 60})
class SurfaceClassifier:
    def __init__(self):
        if os.environ.get("OMP_NUM_THREADS"):
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        d = Path(os.environ["IMOPS_BENCH_MODEL"])
        meta = json.loads((d / "model.json").read_text())
        assert meta["arch"] == "surfacenet", "the bench serves surfacenet bundles"
        o = meta["options"]
        self.model = SurfaceNet(num_classes=meta["num_classes"], in_channels=meta["in_channels"], width=o["width"],
                                stem_stride=o["stem_stride"])
        self.model.load_state_dict(load_safetensors(d / meta["weights"]), strict=True)
        self.model.eval()
        self.h, self.w = meta["img_size"]
        self.mean = torch.tensor(meta["mean"]).view(3, 1, 1)
        self.std = torch.tensor(meta["std"]).view(3, 1, 1)

    def _input(self, im):
        im.draft("RGB", (self.w, self.h))  # JPEG: decode at a reduced scale (DCT scaling), as imops does
        im = im.convert("RGB").resize((self.w, self.h), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - self.mean) / self.std

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, images: List[Image.Image]) -> List[int]:
        x = torch.stack([self._input(im) for im in images])
        with torch.inference_mode():
            return self.model(x).argmax(1).tolist()

    @bentoml.api
    def probabilities(self, image: Image.Image) -> List[float]:
        with torch.inference_mode():
            return torch.softmax(self.model(self._input(image)[None]), 1)[0].tolist()
