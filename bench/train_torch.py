#!/usr/bin/env python3
"""Training-step benchmark, the PyTorch half of `make bench-train`.

Mirrors `cargo run --release -p tsimcne-train --example bench_train`: the
same modes, the same shapes, the same `key seconds` output lines (median
over the timed repetitions after one warm-up) and `peak_rss_mib N`.

    train_torch.py step PRESET VIEWS   forward + backward + SGD step
    train_torch.py fwd  PRESET VIEWS   training-mode forward, output layer's gradient only
    train_torch.py ops                 per-op timings at 128 images
    train_torch.py layers PRESET VIEWS per-layer conv and BN timings
    train_torch.py epoch PRESET BATCH [IMAGES [EPOCHS]]
                                       whole pretraining epochs on IMAGES (default 60,000)
                                       random 32x32x3 images: two torchvision views per
                                       image in a DataLoader, forward, loss, backward, SGD;
                                       prints `epoch_PRESET_BATCH SECONDS`, the best epoch
                                       after the first (default EPOCHS 3)

Any mode takes `--device cpu|cuda|cuda:N` (default cpu), as bench_train
does; on a GPU every timed repetition ends with torch.cuda.synchronize().
`step` and `fwd` also take `--form eager|bf16|compile` (default eager, f32):
on a GPU eager runs with `cudnn.benchmark` (and PyTorch's default TF32
convolutions), bf16 adds bf16 autocast and channels_last, compile is
`torch.compile` of the bf16 form. The key gets the form as a suffix
(`step_resnet18_1024_bf16`) unless it is eager.
Threads: torch.set_num_threads(THREADS), THREADS from the environment
(default 2); `epoch` runs its DataLoader on WORKERS processes (default
THREADS). Requires torch (pip install torch; torchvision for `epoch`).
"""
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
torch.manual_seed(0)
DEVICE = torch.device("cpu")


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)

PRESETS = {
    "small": ([16, 32, 64, 128], [1, 1, 1, 1]),
    "resnet18": ([64, 128, 256, 512], [2, 2, 2, 2]),
}


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Net(nn.Module):
    """The CIFAR ResNet of tsimcne-model (3×3 stem, no max-pool) and its head."""

    def __init__(self, widths, blocks, cin=3, out_dim=128):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, c = [], widths[0]
        for s, (w, n) in enumerate(zip(widths, blocks)):
            for b in range(n):
                layers.append(Block(c, w, (1 if s == 0 else 2) if b == 0 else 1))
                c = w
        self.layers = nn.Sequential(*layers)
        self.hidden = nn.Linear(c, 1024)
        self.out = nn.Linear(1024, out_dim)

    def forward(self, x, output_only=False):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x).mean((2, 3))
        h = F.relu(self.hidden(x))
        if output_only:
            h = h.detach()
        return self.out(h)


def cauchy_info_nce(z):
    """t-SimCNE's loss: InfoNCE with the Cauchy kernel, views i and i+B paired."""
    n = z.shape[0]
    b = n // 2
    sim = 1.0 / (1.0 + torch.cdist(z, z).pow(2))
    sim = sim.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), 0.0)
    pos = torch.cat([torch.arange(b, n), torch.arange(0, b)]).to(z.device)
    rows = torch.arange(n, device=z.device)
    return -(torch.log(sim[rows, pos]) - torch.log(sim.sum(1))).mean()


def timed(reps, f):
    f()
    sync()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        sync()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]


def model_run(mode, preset, views, form="eager"):
    widths, blocks = PRESETS[preset]
    net = Net(widths, blocks).to(DEVICE)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = (torch.rand(views, 3, 32, 32) * 2 - 1).to(DEVICE)
    reps = 3 if preset == "resnet18" else 7
    if DEVICE.type == "cuda":
        torch.backends.cudnn.benchmark = True
        reps = 10
    if form in ("bf16", "compile"):
        net = net.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    forward = torch.compile(net) if form == "compile" else net

    def run(x, **kw):
        if form in ("bf16", "compile"):
            with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
                return cauchy_info_nce(forward(x, **kw).float())
        return cauchy_info_nce(forward(x, **kw))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = run(x)
        loss.backward()
        torch.nn.utils.clip_grad_value_(net.parameters(), 4.0)
        opt.step()
        loss.item()  # the loss to the host every step, as a NaN check would

    def fwd():
        opt.zero_grad(set_to_none=True)
        run(x, output_only=True).backward()

    if form == "compile":
        for _ in range(3):  # compilation and autotuning, untimed
            (step if mode == "step" else fwd)()
    secs = timed(reps, step if mode == "step" else fwd)
    suffix = "" if form == "eager" else f"_{form}"
    print(f"{mode}_{preset}_{views}{suffix} {secs:.4f}")


def conv_ops(n, cin, cout, k, stride, hw, reps=5):
    x = (torch.rand(n, cin, hw, hw) * 2 - 1).to(DEVICE)
    w = (torch.rand(cout, cin, k, k) * 2 - 1).to(DEVICE)
    y = F.conv2d(x, w, stride=stride, padding=k // 2)
    dy = torch.rand_like(y) * 2 - 1
    f = timed(reps, lambda: F.conv2d(x, w, stride=stride, padding=k // 2))
    d = timed(reps, lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, stride=stride, padding=k // 2))
    g = timed(reps, lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, stride=stride, padding=k // 2))
    bn = nn.BatchNorm2d(cout).to(DEVICE)
    yb = y.detach().requires_grad_(True)

    def bn_fb():
        out = F.relu(bn(yb))
        out.backward(dy)

    b = timed(reps, bn_fb)
    return f, d, g, b


def ops():
    for c, hw in [(64, 32), (128, 16)]:
        f, d, g, b = conv_ops(128, c, c, 3, 1, hw)
        tag = f"{c}x{hw}"
        print(f"conv_fwd_{tag} {f:.4f}")
        print(f"conv_dx_{tag} {d:.4f}")
        print(f"conv_dw_{tag} {g:.4f}")
        print(f"bn_fwd_bwd_{tag} {b:.4f}")


def layers(preset, views):
    widths, blocks = PRESETS[preset]
    shapes = [(3, widths[0], 3, 1, 32)]
    cin, hw = widths[0], 32
    for s, (w, n) in enumerate(zip(widths, blocks)):
        for b in range(n):
            stride = (1 if s == 0 else 2) if b == 0 else 1
            shapes.append((cin, w, 3, stride, hw))
            if stride != 1 or cin != w:
                shapes.append((cin, w, 1, stride, hw))
            hw = (hw + 2 - 3) // stride + 1
            shapes.append((w, w, 3, 1, hw))
            cin = w
    dedup = [s for i, s in enumerate(shapes) if i == 0 or s != shapes[i - 1]]
    total = [0.0] * 4
    for cin, cout, k, stride, hw in dedup:
        f, d, g, b = conv_ops(views, cin, cout, k, stride, hw)
        print(f"layer {cin}->{cout} k{k} s{stride} @{hw}: fwd {f:.4f} dx {d:.4f} dw {g:.4f} bn {b:.4f}")
        total = [t + v for t, v in zip(total, (f, d, g, b))]
    print("layers_total fwd {:.4f} dx {:.4f} dw {:.4f} bn {:.4f}".format(*total))


class TwoViews(torch.utils.data.Dataset):
    """Two augmented views of each uint8 HWC image (the recipe's transforms)."""

    def __init__(self, images):
        import torchvision.transforms as T

        self.images = images
        self.view = T.Compose([
            T.RandomResizedCrop(32, scale=(0.2, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.ToTensor(),
        ])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        im = Image.fromarray(self.images[i])
        return self.view(im), self.view(im)


def epochs(preset, batch, n_images, n_epochs):
    """Whole pretraining epochs, data loading and augmentation included."""
    import numpy as np

    widths, blocks = PRESETS[preset]
    net = Net(widths, blocks).to(DEVICE)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    images = np.random.default_rng(0).integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8)
    workers = int(os.environ.get("WORKERS", os.environ.get("THREADS", "2")))
    loader = torch.utils.data.DataLoader(
        TwoViews(images), batch_size=batch, shuffle=True, drop_last=True,
        num_workers=workers, pin_memory=DEVICE.type == "cuda",
        persistent_workers=workers > 0,
    )
    times = []
    for e in range(n_epochs):
        sync()
        t = time.perf_counter()
        for a, b in loader:
            x = torch.cat([a, b]).to(DEVICE, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            loss = cauchy_info_nce(net(x))
            loss.backward()
            torch.nn.utils.clip_grad_value_(net.parameters(), 4.0)
            opt.step()
            if not torch.isfinite(loss).item():
                sys.exit(f"loss {loss.item()} in epoch {e + 1}")
        sync()
        times.append(time.perf_counter() - t)
        print(f"# epoch {e + 1}: {times[-1]:.2f} s", file=sys.stderr)
    best = min(times[1:]) if len(times) > 1 else times[0]
    print(f"epoch_{preset}_{batch} {best:.4f}")


def main():
    global DEVICE
    a = sys.argv[1:]
    if "--device" in a:
        i = a.index("--device")
        DEVICE = torch.device(a[i + 1])
        del a[i : i + 2]
        if DEVICE.type == "cuda":
            # torch 2.11's synchronize() wants an index: `cuda` is `cuda:0`.
            if DEVICE.index is None:
                DEVICE = torch.device("cuda", 0)
            torch.cuda.set_device(DEVICE)
    form = "eager"
    if "--form" in a:
        i = a.index("--form")
        form = a[i + 1]
        del a[i : i + 2]
        if form not in ("eager", "bf16", "compile"):
            sys.exit(f"--form is eager, bf16 or compile, not {form}")
    mode = a[0] if a else ""
    if mode in ("step", "fwd"):
        model_run(mode, a[1] if len(a) > 1 else "small", int(a[2]) if len(a) > 2 else 128, form)
    elif mode == "ops":
        ops()
    elif mode == "layers":
        layers(a[1] if len(a) > 1 else "small", int(a[2]) if len(a) > 2 else 128)
    elif mode == "epoch":
        epochs(
            a[1] if len(a) > 1 else "resnet18",
            int(a[2]) if len(a) > 2 else 512,
            int(a[3]) if len(a) > 3 else 60_000,
            int(a[4]) if len(a) > 4 else 3,
        )
    else:
        sys.exit(__doc__)
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak_rss_mib {rss_kib / 1024:.0f}")
    if DEVICE.type == "cuda":
        print(f"peak_gpu_mib {torch.cuda.max_memory_allocated(DEVICE) / 2**20:.0f}")


if __name__ == "__main__":
    main()
