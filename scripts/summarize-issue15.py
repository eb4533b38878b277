#!/usr/bin/env python3
"""Tabulates the eval.json files under OUT/seed*/RUN/ of scripts/experiment-ambient-o and
scripts/experiment-memorization as markdown (stdlib only): one row per run and seed."""
import glob, json, os, sys

out = sys.argv[1]
print("| seed | run | FD noise-aware (real training images) | FD class-only (real training images) | residual noise (test images) | samples diverged | nn-sim > 0.95 | calibrated copies (threshold, noise added) | noisy test images above threshold |")
print("|---|---|---|---|---|---|---|---|---|")
for path in sorted(glob.glob(os.path.join(out, "seed*", "*", "eval.json"))):
    run = os.path.basename(os.path.dirname(path))
    seed = os.path.basename(os.path.dirname(os.path.dirname(path)))[4:]
    e = json.load(open(path))
    q, m = e.get("image_quality", {}), e.get("memorization", {})
    c = m.get("calibrated_copies") or {}
    def f(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) else "-"
    print(f"| {seed} | `{run}` | {f(q.get('noise_aware_frechet_distance'), '.2f')} ({f(q.get('noise_aware_frechet_distance_of_training_images'), '.2f')}) | "
          f"{f(q.get('frechet_distance'), '.2f')} ({f(q.get('frechet_distance_of_training_images'), '.2f')}) | "
          f"{f(q.get('residual_noise'), '.3f')} ({f(q.get('residual_noise_of_test_images'), '.3f')}) | {q.get('samples_diverged', '-')} | {f(m.get('fraction_above_0_95'), '.4f')} | "
          f"{f(c.get('samples_above_threshold'), '.4f')} ({f(c.get('threshold'), '.3f')}, {f(c.get('matched_noise'), '.3f')}) | "
          f"{f(c.get('noisy_test_images_above_threshold'), '.4f')} |")
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
