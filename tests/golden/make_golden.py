#!/usr/bin/env python3
"""Golden values from PyTorch for the model, losses, optimiser and schedule.

Usage: python3 tests/golden/make_golden.py   (needs torch, numpy, safetensors)

Writes, next to this script:
- tiny_weights.safetensors: a `tiny` model (3 input channels, out_dim 8) in
  the reference state_dict names, with BatchNorm running statistics moved
  away from their initial values by two training passes;
- golden.safetensors: inputs and outputs the Rust tests compare against.

The network below is written from the recipe (CIFAR ResNet, BasicBlocks,
projection head) with the reference parameter names; it is PyTorch's own
conv, BatchNorm, Linear, autograd, SGD and clip_grad_value_ that give the
numbers. CI never runs this script; it uses the committed files.
"""
import os

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)  # golden values in f64; Rust compares f32 with tolerances
HERE = os.path.dirname(os.path.abspath(__file__))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Backbone(nn.Module):
    def __init__(self, cin, widths, blocks):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        c = widths[0]
        for s, (w, n) in enumerate(zip(widths, blocks)):
            layers = []
            for b in range(n):
                layers.append(BasicBlock(c, w, (1 if s == 0 else 2) if b == 0 else 1))
                c = w
            setattr(self, f"layer{s + 1}", nn.Sequential(*layers))
        self.n_stages = len(widths)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        for s in range(self.n_stages):
            x = getattr(self, f"layer{s + 1}")(x)
        return x.mean(dim=(2, 3))


class Head(nn.Module):
    def __init__(self, cin, hidden, out):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(), nn.Linear(hidden, out))

    def forward(self, x):
        return self.layers(x)


class Net(nn.Module):
    def __init__(self, cin=3, widths=(4, 8, 8, 16), blocks=(1, 1, 1, 1), hidden=32, out=8):
        super().__init__()
        self.backbone = Backbone(cin, widths, blocks)
        self.projection_head = Head(widths[-1], hidden, out)

    def forward(self, x):
        return self.projection_head(self.backbone(x))


def f32(d):
    return {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in d.items()}


out = {}

# ---- model: forward in train and eval mode, gradients ----
net = Net()
for m in net.modules():
    if isinstance(m, nn.BatchNorm2d):  # non-trivial affine parameters
        nn.init.uniform_(m.weight, 0.5, 1.5)
        nn.init.uniform_(m.bias, -0.2, 0.2)
net.train()
with torch.no_grad():
    for _ in range(2):  # move the running statistics off 0 and 1
        net(torch.randn(5, 3, 12, 12) * 2 + 0.5)
state = {k: v.detach().clone() for k, v in net.state_dict().items()}
# Round the weights to f32 first, so both sides start from identical values.
net.load_state_dict({k: (v.float().double() if v.is_floating_point() else v) for k, v in state.items()})
save_file(f32(net.state_dict()), os.path.join(HERE, "tiny_weights.safetensors"))

x = torch.randn(6, 3, 12, 12).float().double()
r = torch.randn(6, 8).float().double()
net.eval()
with torch.no_grad():
    out["model.eval_out"] = net(x)
net.train()
xg = x.clone().requires_grad_(True)
y = net(xg)
out["model.x"] = x
out["model.r"] = r
out["model.train_out"] = y.detach()
(y * r).sum().backward()
out["model.grad.x"] = xg.grad
for name in ["backbone.conv1.weight", "backbone.layer3.0.shortcut.0.weight", "backbone.layer4.0.bn2.weight",
             "backbone.layer2.0.bn1.bias", "projection_head.layers.0.weight", "projection_head.layers.2.bias"]:
    out[f"model.grad.{name}"] = dict(net.named_parameters())[name].grad
sd = net.state_dict()
for name in ["backbone.bn1.running_mean", "backbone.bn1.running_var", "backbone.layer2.0.shortcut.1.running_var"]:
    out[f"model.after_train.{name}"] = sd[name]
out["model.after_train.num_batches_tracked"] = sd["backbone.bn1.num_batches_tracked"]


# ---- losses ----
def info_nce(a, b, kind):
    z = torch.cat([a, b])
    n2 = len(z)
    if kind == "cauchy":
        d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
        s = -torch.log1p(d2)
    else:
        u = z / z.norm(dim=1, keepdim=True)
        s = u @ u.T / 0.5
    s = s.masked_fill(torch.eye(n2, dtype=torch.bool), float("-inf"))
    n = n2 // 2
    target = torch.cat([torch.arange(n, n2), torch.arange(0, n)])
    return nn.functional.cross_entropy(s, target)


for d in (2, 16):
    a = torch.randn(7, d).float().double().requires_grad_(True)
    b = (a.detach() + 0.3 * torch.randn(7, d)).float().double().requires_grad_(True)
    for kind in ("cauchy", "cosine"):
        a.grad = None
        b.grad = None
        loss = info_nce(a, b, kind)
        loss.backward()
        out[f"loss.{kind}.d{d}.a"] = a.detach()
        out[f"loss.{kind}.d{d}.b"] = b.detach()
        out[f"loss.{kind}.d{d}.value"] = loss.detach().reshape(1)
        out[f"loss.{kind}.d{d}.grad_a"] = a.grad.clone()
        out[f"loss.{kind}.d{d}.grad_b"] = b.grad.clone()
    if d == 2:
        # --map-scale 11: the views centred and scaled to a root mean square
        # coordinate of 11 before the Cauchy loss (same a, b; no new draws).
        a.grad = None
        b.grad = None
        z = torch.cat([a, b])
        zc = z - z.mean(0, keepdim=True)
        zs = zc / torch.sqrt((zc ** 2).mean() + 1e-12) * 11.0
        loss = info_nce(zs[:7], zs[7:], "cauchy")
        loss.backward()
        out["loss.cauchy_scale11.d2.value"] = loss.detach().reshape(1)
        out["loss.cauchy_scale11.d2.grad_a"] = a.grad.clone()
        out["loss.cauchy_scale11.d2.grad_b"] = b.grad.clone()

# ---- SGD: two steps with momentum, weight decay and clipping at 4 ----
w0 = torch.randn(4, 3).float().double()
g1 = (torch.randn(4, 3) * 5).float().double()  # some elements beyond ±4
g2 = (torch.randn(4, 3) * 5).float().double()
p = nn.Parameter(w0.clone())
opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=5e-4)
for g, lr in ((g1, 0.1), (g2, 0.05)):
    for group in opt.param_groups:
        group["lr"] = lr
    p.grad = g.clone()
    nn.utils.clip_grad_value_([p], 4.0)
    opt.step()
    out[f"sgd.after_lr{lr}"] = p.detach().clone()
out["sgd.w0"] = w0
out["sgd.g1"] = g1
out["sgd.g2"] = g2


# ---- schedule (the reference formula, numpy) ----
def schedule(base, epochs, warmup):
    anneal = epochs - warmup
    lrs = np.hstack([np.linspace(0, base, warmup),
                     base * 0.5 * (1 + np.cos(np.pi * np.arange(anneal + 1) / (anneal + 1)))])
    return lrs[:epochs]


for epochs, warmup in ((20, 5), (7, 0), (1000, 10), (3, 1)):
    out[f"schedule.e{epochs}.w{warmup}"] = torch.tensor(schedule(0.06, epochs, warmup))

save_file({k: v.clone().contiguous() for k, v in out.items()}, os.path.join(HERE, "golden.safetensors"))
print(f"wrote {len(out)} golden tensors")


# ---- augmentations: torchvision's tensor ops, given fixed view parameters ----
import torchvision.transforms.functional as TF  # noqa: E402

aug = {}
rng = np.random.default_rng(0)
cases = [
    # (h, w, c, (top, left, height, width), flip, jitter (order, b, c, s, hue) or None, grayscale)
    (32, 32, 3, (3, 5, 20, 25), True, ((2, 0, 3, 1), 1.2, 0.7, 1.3, 0.07), False),
    (32, 32, 3, (0, 0, 32, 32), False, ((3, 2, 1, 0), 0.65, 1.35, 0.6, -0.09), True),
    (32, 32, 3, (10, 12, 9, 11), True, None, False),
    (32, 32, 3, (1, 2, 30, 17), False, ((0, 1, 2, 3), 1.0, 1.0, 1.39, 0.099), False),
    (28, 28, 1, (2, 1, 20, 26), False, ((1, 3, 0, 2), 0.8, 1.25, 1.1, 0.05), True),
]
for k, (h, w, c, crop, flip, jitter, gray) in enumerate(cases):
    # Smooth colour gradients plus noise: every hue and saturation occurs.
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1)[..., :c]
    img = np.clip(base + rng.normal(0, 40, (h, w, c)), 0, 255).astype(np.uint8)
    x = torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
    x = TF.resized_crop(x, *crop, [h, w], antialias=True)
    if flip:
        x = TF.hflip(x)
    if jitter is not None:
        order, bf, cf, sf, hf = jitter
        for op in order:
            x = [lambda t: TF.adjust_brightness(t, bf), lambda t: TF.adjust_contrast(t, cf),
                 lambda t: TF.adjust_saturation(t, sf), lambda t: TF.adjust_hue(t, hf)][op](x)
    if gray and c == 3:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    params = list(crop) + [float(flip), float(jitter is not None)]
    params += list(jitter[0]) + list(jitter[1:]) if jitter is not None else [0] * 8
    params += [float(gray)]
    aug[f"case{k}.image"] = torch.from_numpy(img.copy())
    aug[f"case{k}.params"] = torch.tensor(params, dtype=torch.float64)
    aug[f"case{k}.out"] = x.float().contiguous()
save_file(aug, os.path.join(HERE, "augment_golden.safetensors"))
print(f"wrote {len(aug)} augmentation tensors")
