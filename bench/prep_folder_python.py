"""The usual Python ways to turn a folder of photos into a 32x32 array, for
bench/prep_folder.sh: a Pillow loop (open, convert to RGB, resize with a box
filter, numpy.stack), and, when torch and torchvision are installed,
torchvision's ImageFolder through a DataLoader with 2 workers. Prints one
JSON line: seconds and peak RSS (MiB, this process and its children) of
each. Usage: python3 bench/prep_folder_python.py DIR
"""
import json, os, resource, sys, time

import numpy as np
from PIL import Image

root = sys.argv[1]
files = sorted(
    os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.lower().endswith((".jpg", ".jpeg", ".png"))
)
out = {"images": len(files)}

t0 = time.perf_counter()
arrays = []
for f in files:
    with Image.open(f) as im:
        arrays.append(np.asarray(im.convert("RGB").resize((32, 32), Image.BOX)))
stack = np.stack(arrays)
out["pillow_seconds"] = time.perf_counter() - t0
out["pillow_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
del arrays, stack

try:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ds = datasets.ImageFolder(root, transform=transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32), transforms.PILToTensor()]))
    batches = [x for x, _ in DataLoader(ds, batch_size=256, num_workers=2)]
    torch.cat(batches)
    out["torchvision_seconds"] = time.perf_counter() - t0
    out["torchvision_peak_mib"] = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    ) / 1024
except ImportError:
    out["torchvision_seconds"] = None
print(json.dumps(out))
