#!/usr/bin/env python3
"""Tabulates the eval.json files under OUT/seed*/RUN/ of scripts/experiment-ambient-o and
scripts/experiment-memorization as markdown (stdlib only): one row per run and seed."""
import glob, json, os, sys

out = sys.argv[1]
print("| seed | run | FD noise-aware (real training images) | FD noise-aware, mean over sampler seeds (seeds) | FD class-only (real training images) | residual noise (test images) | samples diverged | nn-sim > 0.95 | calibrated copies (threshold, noise added) | calibrated copies, mean over sampler seeds | noisy test images above threshold |")
print("|---|---|---|---|---|---|---|---|---|---|---|")

def sampler_seed_means(run_dir, e0):
    """Means over eval.json (sampler seed 0) and eval-seed-E.json (scripts' EVAL_SEEDS)."""
    evals = [e0] + [json.load(open(p)) for p in sorted(glob.glob(os.path.join(run_dir, "eval-seed-*.json")))
                    if "-step-" not in os.path.basename(p)]
    fd = [e.get("image_quality", {}).get("noise_aware_frechet_distance") for e in evals]
    cp = [(e.get("memorization", {}).get("calibrated_copies") or {}).get("samples_above_threshold") for e in evals]
    fd = [x for x in fd if isinstance(x, (int, float))]
    cp = [x for x in cp if isinstance(x, (int, float))]
    return (sum(fd) / len(fd) if fd else None, len(fd), sum(cp) / len(cp) if cp else None)
tables = {}   # seed -> [(run, {sigma: test denoising MSE})], printed after the main table
for path in sorted(glob.glob(os.path.join(out, "seed*", "*", "eval.json"))):
    run = os.path.basename(os.path.dirname(path))
    seed = os.path.basename(os.path.dirname(os.path.dirname(path)))[4:]
    e = json.load(open(path))
    q, m = e.get("image_quality", {}), e.get("memorization", {})
    c = m.get("calibrated_copies") or {}
    def f(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) else "-"
    mfd, n, mcp = sampler_seed_means(os.path.dirname(path), e)
    if e.get("test_denoising"):
        tables.setdefault(seed, []).append((run, {x["sigma"]: x["mse"] for x in e["test_denoising"]}))
    print(f"| {seed} | `{run}` | {f(q.get('noise_aware_frechet_distance'), '.2f')} ({f(q.get('noise_aware_frechet_distance_of_training_images'), '.2f')}) | "
          f"{f(mfd, '.2f')} ({n}) | "
          f"{f(q.get('frechet_distance'), '.2f')} ({f(q.get('frechet_distance_of_training_images'), '.2f')}) | "
          f"{f(q.get('residual_noise'), '.3f')} ({f(q.get('residual_noise_of_test_images'), '.3f')}) | {q.get('samples_diverged', '-')} | {f(m.get('fraction_above_0_95'), '.4f')} | "
          f"{f(c.get('samples_above_threshold'), '.4f')} ({f(c.get('threshold'), '.3f')}, {f(c.get('matched_noise'), '.3f')}) | {f(mcp, '.4f')} | "
          f"{f(c.get('noisy_test_images_above_threshold'), '.4f')} |")
# Test denoising error by noise level (ambient eval's `test_denoising`: the MSE of D(x + sigma n) against
# x on held-out test images): where in sigma an arm gains or loses, which a single FD cannot say.
for seed, runs in sorted(tables.items()):
    sigmas = sorted({s for _, t in runs for s in t})
    print(f"\nSeed {seed}: test denoising MSE by sigma (held-out test images)")
    print("| sigma | " + " | ".join(f"`{r}`" for r, _ in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for s in sigmas:
        print(f"| {s:g} | " + " | ".join(f"{t[s]:.5f}" if s in t else "-" for _, t in runs) + " |")

for path in sorted(glob.glob(os.path.join(out, "seed*", "annotate.txt"))):
    print(f"\n{path}: " + open(path).read().strip().splitlines()[-1])
for path in sorted(glob.glob(os.path.join(out, "seed*", "classifier-holdout.md"))):
    print(f"\n{path} (the classifier chosen by held-out BCE, scripts/experiment-classifier-holdout):\n" + open(path).read().strip())
for path in sorted(glob.glob(os.path.join(out, "seed*", "check*.txt"))):
    print(f"\n{path}:\n```\n" + open(path).read().strip() + "\n```")

def npy_floats(path):
    b = open(path, "rb").read()
    n = int.from_bytes(b[8:10], "little")
    import struct
    return [x[0] for x in struct.iter_unpack("<f", b[10 + n:])]

edges = [0, 0.1, 0.5, 1, 2, 4, 8, 16, 80, float("inf")]
for path in sorted(glob.glob(os.path.join(out, "seed*", "data-blur", "annotations.npy"))):
    v = [x for x in npy_floats(path) if x > 0]
    counts = [sum(1 for x in v if lo <= x < hi) for lo, hi in zip(edges, edges[1:])]
    s = sorted(v)
    print(f"\n{path}: {len(v)} corrupted samples, quartiles {s[len(s)//4]:.3f} / {s[len(s)//2]:.3f} / {s[3*len(s)//4]:.3f}; histogram of sigma_min:")
    print("| " + " | ".join(f"[{lo:g}, {hi:g})" for lo, hi in zip(edges, edges[1:])) + " |")
    print("|" + "---|" * len(counts))
    print("| " + " | ".join(str(c) for c in counts) + " |")

def spearman(x, y):
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):   # ties share their mean rank
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx) ** 0.5
    vy = sum((b - my) ** 2 for b in ry) ** 0.5
    return cov / (vx * vy) if vx and vy else float("nan")

# Does the annotation follow the corruption? The clean originals of the blurred images are known here
# (data-clean5000 holds the same images in the same order), so each blurred image's blur residual
# RMS |x - blur(x)| is a ground truth the annotation should increase with (a stronger residual stays
# visible under more noise). Rank correlation over the blurred images, and the same split by what the
# classifier saw of each image when it was trained on the same images (CLASSIFIER=authors: the first
# half clean), where an identity shortcut would show as low annotations for images it saw clean.
for path in sorted(glob.glob(os.path.join(out, "seed*", "data-blur", "annotations.npy"))):
    d = os.path.dirname(os.path.dirname(path))
    clean, blur = os.path.join(d, "data-clean5000", "samples.npy"), os.path.join(d, "data-blur", "samples.npy")
    if not (os.path.exists(clean) and os.path.exists(blur)):
        continue
    a, c, b = npy_floats(path), npy_floats(clean), npy_floats(blur)
    n = len(a)
    dim = len(c) // n
    res = [(sum((c[i * dim + j] - b[i * dim + j]) ** 2 for j in range(dim)) / dim) ** 0.5 for i in range(n)]
    manifest = json.load(open(os.path.join(d, "data-blur", "manifest.json")))
    first = round(n * float(manifest["clean_fraction"]))
    groups = [("all blurred images", range(first, n))]
    hold = os.path.join(d, "classifier-holdout", os.path.basename(d), "data-blur", "manifest.json")
    if os.path.exists(hold):
        m = json.load(open(hold))
        half = round(n * float(m["clean_fraction"]))
        if half > first:
            groups += [(f"seen clean by the classifier ({first}..{half - 1})", range(first, half)),
                       (f"seen blurred by the classifier ({half}..{n - 1})", range(half, n))]
    print(f"\n{path}: annotation against the blur residual RMS (Spearman rank correlation; 0 = the annotation ignores the corruption)")
    print("| images | count | median sigma_min | median residual RMS | Spearman(sigma_min, residual) |")
    print("|---|---|---|---|---|")
    for name, idx in groups:
        idx = list(idx)
        sa, sr = sorted(a[i] for i in idx), sorted(res[i] for i in idx)
        print(f"| {name} | {len(idx)} | {sa[len(sa)//2]:.3f} | {sr[len(sr)//2]:.4f} | {spearman([a[i] for i in idx], [res[i] for i in idx]):.3f} |")
