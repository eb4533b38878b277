"""The PyTorch twin of Ambient's U-Net denoiser, and the timing of its training step.

Used by `scripts/bench-vs-pytorch --scenario unet`. The module below is the network of
Sources/Diffusion/UNetNetwork.swift and UNetLayers.swift (docs/unet.md, "Architecture"), layer
for layer, so that both sides do the same work per step:

  - input conv3x3 (image channels -> channels[0]);
  - per resolution one residual block (blocks per level), 2x2 average pooling between
    resolutions; a middle residual block at the lowest resolution;
  - decoder from the lowest resolution: a residual block on [h | skip] (channel concatenation),
    nearest-neighbour 2x up-sampling between resolutions;
  - output GroupNorm -> SiLU -> conv3x3 back to the image channels, zero at initialisation;
  - residual block: h = conv1(silu(GN1(x))) + Linear(emb) per channel,
    y = skip(x) + conv2(silu(GN2(h))), skip = identity or conv1x1, conv2 zero at initialisation;
  - noise embedding: [sin(f_k c), cos(f_k c)], f_k = (pi/2) 256^(k/(K-1)), of c = c_noise,
    then silu(Linear(silu(Linear(.)))) of width 4 channels[0].

and the step is the one `ambient train --objective dsm` computes (Sources/Diffusion/
DenoisingScoreMatching.swift, EDM.swift, Denoiser.swift, Sources/Training/TrainingSession.swift):
sigma = exp(-1.2 + 1.2 N), x = x0 + sigma n, D = c_skip x + c_out F(c_in x, log(sigma)/4),
loss = sum_rows lambda(sigma) / B * ||D - x0||^2 with lambda = (sigma^2 + sd^2) / (sigma sd)^2,
the gradient norm (Ambient logs it every step), Adam (betas 0.9/0.999, eps 1e-8) with the linear
learning-rate warm-up, and the EMA of the weights with decay min(0.999, (1+t)/(10+t)).

The data are random tensors of the images' shape clamped to [-1, 1], not Fashion-MNIST: the step
time of this network does not depend on pixel values. A batch is gathered from a pool of such
images every step, as Ambient gathers its batch from the dataset.

Prints the parameter count and the throughput from the median step time after the warm-up steps:
  torch-unet threads=1 batch=32 channels=16,32,64 params=348257 steps=30 median_step_s=... samples_per_s=...
Usage: python torch_unet_bench.py [--batch 32] [--steps 30] [--warmup 5] [--threads 1]
       [--channels 16,32,64] [--lr 2e-3]
       python torch_unet_bench.py --verify RUNDIR --ambient BIN [--channels ...]
           (no timing: fails unless the module has the tensors of the Ambient run's
           model.safetensors and computes the same D(x, sigma) as `ambient denoise`)
"""
import argparse, json, math, os, shutil, statistics, struct, subprocess, tempfile, time
import torch, torch.nn as nn, torch.nn.functional as F


def uniform_fan_in_(t, fan_in):
    """Ambient's initialisation of every weight and bias: uniform in +-1/sqrt(fan_in)."""
    bound = 1 / math.sqrt(fan_in)
    with torch.no_grad():
        t.uniform_(-bound, bound)


def conv(cin, cout, k, zero=False):
    c = nn.Conv2d(cin, cout, k, padding=k // 2)     # stride 1, 'same' zero padding
    for t in (c.weight, c.bias):
        if zero:
            nn.init.zeros_(t)
        else:
            uniform_fan_in_(t, cin * k * k)
    return c


def dense(cin, cout):
    d = nn.Linear(cin, cout)
    for t in (d.weight, d.bias):
        uniform_fan_in_(t, cin)
    return d


class ResBlock(nn.Module):
    def __init__(self, cin, cout, emb_width, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-5)
        self.conv1 = conv(cin, cout, 3)
        self.embedding = dense(emb_width, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-5)
        self.conv2 = conv(cout, cout, 3, zero=True)
        self.skip = conv(cin, cout, 1) if cin != cout else None

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x))) + self.embedding(emb)[:, :, None, None]
        r = self.conv2(F.silu(self.norm2(h)))
        return (x if self.skip is None else self.skip(x)) + r


class NoiseEmbedding(nn.Module):
    """silu(fc2(silu(fc1([sin(f_k c), cos(f_k c)])))), f_k = (pi/2) 256^(k/(K-1)), of c = c_noise."""

    def __init__(self, size, width):
        super().__init__()
        k = size // 2
        freqs = [math.pi / 2 * 256 ** (j / (k - 1) if k > 1 else 0) for j in range(k)]
        self.register_buffer("freqs", torch.tensor(freqs, dtype=torch.float64))
        self.fc1 = dense(size, width)
        self.fc2 = dense(width, width)

    def forward(self, c_noise):
        # In double, then rounded, as Ambient computes it (32 x 64 values: no cost).
        a = c_noise.double()[:, None] * self.freqs[None, :]
        e = torch.cat([a.sin(), a.cos()], 1).to(self.fc1.weight.dtype)
        return F.silu(self.fc2(F.silu(self.fc1(e))))


class UNet(nn.Module):
    """F(c_in x, c_noise) of Ambient's UNetNetwork (no conditioning channels, not gated)."""

    def __init__(self, image_channels=1, channels=(16, 32, 64), blocks_per_level=1, groups=8,
                 embedding_size=64, embedding_width=None):
        super().__init__()
        width = embedding_width or 4 * channels[0]
        self.embedding = NoiseEmbedding(embedding_size, width)
        self.input = conv(image_channels, channels[0], 3)
        c = channels[0]
        self.down = nn.ModuleList()
        for cl in channels:
            blocks = nn.ModuleList()
            for _ in range(blocks_per_level):
                blocks.append(ResBlock(c, cl, width, groups))
                c = cl
            self.down.append(blocks)
        self.middle = ResBlock(c, c, width, groups)
        # up[l] works at resolution l, as Ambient's "up.l.b" (built and run from the lowest).
        up = [None] * len(channels)
        for level in reversed(range(len(channels))):
            blocks = nn.ModuleList()
            for _ in range(blocks_per_level):
                blocks.append(ResBlock(c + channels[level], channels[level], width, groups))
                c = channels[level]
            up[level] = blocks
        self.up = nn.ModuleList(up)
        self.output_norm = nn.GroupNorm(groups, c, eps=1e-5)   # Ambient's "output.norm"
        self.output = conv(c, image_channels, 3, zero=True)

    def forward(self, x, c_noise):
        emb = self.embedding(c_noise)
        h = self.input(x)
        skips = []
        for level, blocks in enumerate(self.down):
            if level > 0:
                h = F.avg_pool2d(h, 2)
            for b in blocks:
                h = b(h, emb)
                skips.append(h)
        h = self.middle(h, emb)
        for level in reversed(range(len(self.up))):
            for b in self.up[level]:
                h = b(torch.cat([h, skips.pop()], 1), emb)
            if level > 0:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
        return self.output(F.silu(self.output_norm(h)))


def denoise(net, x, sigma, sd=0.5):
    """EDM preconditioning: D(x, sigma) = c_skip x + c_out F(c_in x, log(sigma) / 4)."""
    s2 = sigma * sigma + sd * sd
    c_skip, c_out, c_in = sd * sd / s2, sigma * sd / s2.sqrt(), 1 / s2.sqrt()
    v = lambda c: c[:, None, None, None]
    return v(c_skip) * x + v(c_out) * net(v(c_in) * x, sigma.log() / 4)


def ambient_tensors(net):
    """(Ambient's tensor name, torch tensor, transposed) for every parameter: the names of
    Sources/Diffusion/UNetLayers.swift; Ambient stores dense weights (in, out), PyTorch (out, in)."""
    dense_weights = {f"{n}.weight" for n, m in net.named_modules() if isinstance(m, nn.Linear)}
    for name, q in net.named_parameters():
        yield name.replace("output_norm.", "output.norm.", 1), q, name in dense_weights


def read_safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return 8 + n, json.loads(f.read(n))


def verify(net, a):
    """Fails unless this module is Ambient's U-Net: the same tensors, names and shapes as the
    run's model.safetensors, and the same D(x, sigma) as `ambient denoise` with the same weights.

    The weights are drawn here (uniform +-1/sqrt(fan_in) everywhere, GroupNorm gains and biases
    random too, so no path starts at zero) and written into a copy of the run's file with its
    header unchanged; both sides then denoise the same noisy images at several noise levels."""
    import numpy as np
    model = os.path.join(a.verify, "model.safetensors")
    offset, header = read_safetensors_header(model)
    header.pop("__metadata__", None)
    mine = list(ambient_tensors(net))
    theirs = sum(math.prod(v["shape"]) for v in header.values())
    ours = sum(q.numel() for _, q, _ in mine)
    print(f"parameters: ambient {theirs}, torch {ours}")
    problems = [f"missing in torch: {k}" for k in header.keys() - {n for n, _, _ in mine}]
    for name, q, transposed in mine:
        shape = list(q.shape[::-1] if transposed else q.shape)
        if name not in header:
            problems.append(f"missing in ambient: {name} {shape}")
        elif header[name]["shape"] != shape or header[name]["dtype"] != "F32":
            problems.append(f"{name}: ambient {header[name]['dtype']} {header[name]['shape']}, torch {shape}")
    if theirs != ours or problems:
        raise SystemExit("the PyTorch U-Net is not Ambient's:\n  " + "\n  ".join(problems or ["parameter counts differ"]))

    g = torch.Generator().manual_seed(1)
    blob = bytearray(open(model, "rb").read())
    with torch.no_grad():
        for name, q, transposed in mine:
            if ".norm" in name:
                q.copy_(1 + 0.3 * torch.randn(q.shape, generator=g) if name.endswith("weight")
                        else 0.3 * torch.randn(q.shape, generator=g))
            else:
                fan_in = q.shape[1] if q.dim() == 2 else (q.shape[1:].numel() if q.dim() == 4 else None)
                if fan_in is None:   # a bias: the fan-in of its weight
                    w = dict(net.named_parameters())[name[: -len("bias")] + "weight"]
                    fan_in = w.shape[1:].numel()
                bound = 1 / math.sqrt(fan_in)
                q.copy_((2 * torch.rand(q.shape, generator=g) - 1) * bound)
            values = (q.t() if transposed else q).contiguous().numpy().astype("<f4").tobytes()
            lo, hi = header[name]["data_offsets"]
            assert hi - lo == len(values)
            blob[offset + lo: offset + hi] = values
    with tempfile.TemporaryDirectory() as tmp:
        run = os.path.join(tmp, "run")
        os.mkdir(run)
        shutil.copy(os.path.join(a.verify, "config.json"), run)
        open(os.path.join(run, "model.safetensors"), "wb").write(blob)
        x0 = (2 * torch.rand(8, 1, a.side, a.side, generator=g) - 1)
        worst = 0.0
        for sigma in (0.02, 0.5, 3.0, 40.0):
            x = x0 + sigma * torch.randn(x0.shape, generator=g)
            np.save(os.path.join(tmp, "x.npy"), x.numpy().astype(np.float32))
            subprocess.run([a.ambient, "denoise", "--run", run, "--input", os.path.join(tmp, "x.npy"), "--sigma", str(sigma),
                            "--out", os.path.join(tmp, "d.npy"), "--quiet", "--threads", "1", "--log-level", "error"],
                           check=True, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
            theirs_d = torch.from_numpy(np.load(os.path.join(tmp, "d.npy"))).double()
            with torch.no_grad():
                ours_d = denoise(net, x, torch.full((x.shape[0],), sigma)).double()
            # Compare F = (D - c_skip x) / c_out: the network's own error, at every sigma.
            sd = 0.5
            c_skip, c_out = sd * sd / (sigma ** 2 + sd ** 2), sigma * sd / math.sqrt(sigma ** 2 + sd ** 2)
            f_ours = (ours_d - c_skip * x.double()) / c_out
            err = ((theirs_d - ours_d).abs().max() / c_out / f_ours.abs().max()).item()
            print(f"sigma {sigma:5}: max |F_ambient - F_torch| / max |F| = {err:.2e}")
            worst = max(worst, err)
        if not worst < 1e-4:
            raise SystemExit(f"the PyTorch U-Net computes another function than Ambient's (relative error {worst:.2e})")
    print("same tensors, same parameter count, same D(x, sigma)")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--channels", default="16,32,64")
    p.add_argument("--side", type=int, default=28)
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (Ambient's U-Net default)")
    p.add_argument("--lr-warmup", type=int, default=100, help="linear learning-rate warm-up steps (Ambient's default)")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--verify", metavar="RUNDIR", help="compare with the U-Net of this finished Ambient run "
                   "(tensor names, shapes, count, and D on random weights via `ambient denoise`); no timing")
    p.add_argument("--ambient", metavar="BIN", help="the ambient binary, for --verify")
    a = p.parse_args()
    if a.verify and not a.ambient:
        p.error("--verify needs --ambient BIN")
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    channels = tuple(int(c) for c in a.channels.split(","))
    net = UNet(channels=channels)
    nparams = sum(q.numel() for q in net.parameters())
    B, side = a.batch, a.side

    if a.verify:
        verify(net, a)
        return

    params = list(net.parameters())
    # foreach: the multi-tensor update, the faster of PyTorch's CPU paths (same arithmetic).
    opt = torch.optim.Adam(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, foreach=True)
    ema = [q.detach().clone() for q in params]
    pool = torch.randn(1024, 1, side, side).clamp_(-1, 1)   # random images; see the docstring
    sd = 0.5
    times = []
    for t in range(a.warmup + a.steps):
        start = time.perf_counter()
        x0 = pool[torch.randint(0, pool.shape[0], (B,))]
        sigma = torch.exp(-1.2 + 1.2 * torch.randn(B))
        x = x0 + sigma[:, None, None, None] * torch.randn_like(x0)
        weight = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2 / B
        loss = (weight[:, None, None, None] * (denoise(net, x, sigma, sd) - x0) ** 2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(q.grad) for q in params]))
        if not (math.isfinite(loss.item()) and math.isfinite(norm.item())):
            raise SystemExit(f"step {t}: loss or gradient not finite")
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1, (t + 1) / a.lr_warmup) if a.lr_warmup > 0 else a.lr
        opt.step()
        d = min(a.ema, (1 + t) / (10 + t))
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1 - d)   # ema = d ema + (1 - d) params
        if t >= a.warmup:
            times.append(time.perf_counter() - start)
    med = statistics.median(times)
    print(f"torch-unet threads={a.threads} batch={B} channels={a.channels} params={nparams} steps={a.steps} "
          f"median_step_s={med:.5f} mean_step_s={statistics.mean(times):.5f} samples_per_s={B / med:.1f}")


if __name__ == "__main__":
    main()
