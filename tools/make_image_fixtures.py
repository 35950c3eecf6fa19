#!/usr/bin/env python3
"""An ImageNet-style folder of generated JPEG and PNG images (tests/fixtures/images/DIR/<class>/)
of assorted sizes and modes (RGB and grayscale JPEG, RGB, RGBA, palette and grayscale PNG),
and the pixel values transformers' ViT image processor (its PIL backend, the one that decodes
and resizes with Pillow) makes of them, for two preprocessor configs: bilinear and bicubic.

Pillow 12.x resamples horizontally, then vertically (its Resample.c); Pillow 13.0 runs the
vertical pass first when the height shrinks by more than twice the width's shrink, which moves
some pixels by one level. The references are written per Pillow release,
reference_pillow<MAJOR>.safetensors, from the committed images (--images makes them anew):

    V/bin/pip install transformers "pillow==12.3.0" numpy safetensors torch
    V/bin/python tools/make_image_fixtures.py --images   # the images and Pillow 12's reference
    V/bin/pip install "pillow==13.0.0" && V/bin/python tools/make_image_fixtures.py
"""
import os
import shutil
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "images")
CONFIGS = {
    "bilinear": dict(size={"height": 24, "width": 24}, resample=2, image_mean=[0.485, 0.456, 0.406],
                     image_std=[0.229, 0.224, 0.225]),
    "bicubic": dict(size={"height": 40, "width": 28}, resample=3, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]),
}


def picture(rng, w, h):
    """Smooth gradients plus noise and a few hard edges: resampling differences show."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([127 + 120 * np.sin(x / (3 + c) + y / (5 + 2 * c) + c) for c in range(3)], -1)
    img += rng.normal(0, 20, img.shape)
    img[h // 3:h // 2, :, 0] = 255
    img[:, w // 4:w // 4 + 2, 1] = 0
    return np.clip(img, 0, 255).astype(np.uint8)


def make_images():
    shutil.rmtree(ROOT, ignore_errors=True)
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        os.makedirs(os.path.join(ROOT, "folder", cls))
    specs = [("cat", "a.jpg", 64, 48, "RGB"), ("cat", "b.jpeg", 17, 31, "RGB"), ("cat", "c.png", 40, 40, "RGBA"),
             ("cat", "d.png", 13, 9, "P"), ("dog", "e.jpg", 100, 75, "L"), ("dog", "f.png", 24, 24, "RGB"),
             ("dog", "g.png", 50, 20, "L"), ("dog", "h.JPG", 31, 64, "RGB")]
    for cls, name, w, h, mode in specs:
        im = Image.fromarray(picture(rng, w, h))
        if mode == "RGBA":
            im.putalpha(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)))
        elif mode != "RGB":
            im = im.convert(mode)
        path = os.path.join(ROOT, "folder", cls, name)
        im.save(path, quality=90) if name.lower().endswith(("jpg", "jpeg")) else im.save(path)
    with open(os.path.join(ROOT, "classes.txt"), "w") as f:
        f.write("dog\ncat\n")  # a class list: label 0 = dog, 1 = cat
    for key, cfg in CONFIGS.items():
        ViTImageProcessorPil(**cfg).save_pretrained(os.path.join(ROOT, key))


if __name__ == "__main__":
    if "--images" in sys.argv[1:]:
        make_images()
    files = sorted((cls, os.path.join(ROOT, "folder", cls, name))
                   for cls in os.listdir(os.path.join(ROOT, "folder"))
                   for name in os.listdir(os.path.join(ROOT, "folder", cls)))
    out = {}
    for key, cfg in CONFIGS.items():
        proc = ViTImageProcessorPil(**cfg)
        for cls, path in files:
            rel = os.path.relpath(path, os.path.join(ROOT, "folder"))
            pv = proc(Image.open(path).convert("RGB"), return_tensors="np")["pixel_values"][0]
            out[f"{key}/{rel}"] = torch.from_numpy(np.ascontiguousarray(pv))
    import PIL
    major = PIL.__version__.split(".")[0]
    save_file(out, os.path.join(ROOT, f"reference_pillow{major}.safetensors"),
              metadata={"made_by": "tools/make_image_fixtures.py", "pillow": PIL.__version__})
    print({k: tuple(v.shape) for k, v in out.items()})
