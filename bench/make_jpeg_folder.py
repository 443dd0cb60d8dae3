"""A folder of photo-like JPEGs for bench/prep_folder.sh: N images (default
20,000) of 256x256 in 10 class folders, quality 90, seeded. Each is a smooth
colour field with soft shapes and sensor-like noise, so JPEG sizes and
decoding work are those of photos (about 15 KB each), not of flat colour.
Usage: python3 bench/make_jpeg_folder.py DIR [N]
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image

out = Path(sys.argv[1])
n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
rng = np.random.default_rng(0)
y, x = np.mgrid[0:256, 0:256].astype(np.float32) / 255
for i in range(n):
    c = i % 10
    d = out / f"class{c}"
    d.mkdir(parents=True, exist_ok=True)
    a = rng.uniform(0, 2 * np.pi, 3)
    f = rng.uniform(1, 6, 3)
    img = np.stack([np.sin(f[k] * (x * np.cos(a[k]) + y * np.sin(a[k])) * np.pi + c) for k in range(3)], -1)
    cx, cy, r = rng.uniform(0.2, 0.8, 3)
    img[((x - cx) ** 2 + (y - cy) ** 2) < (r / 3) ** 2] *= 0.3
    img = (img * 90 + 128 + rng.normal(0, 6, img.shape)).clip(0, 255).astype(np.uint8)
    Image.fromarray(img, "RGB").save(d / f"{i:05d}.jpg", quality=90)
print(f"wrote {n} JPEGs to {out}")
