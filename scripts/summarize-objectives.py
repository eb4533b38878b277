#!/usr/bin/env python3
"""Tabulates the eval.json files of scripts/experiments-objectives as markdown (stdlib only)."""
import json, os, sys

out = sys.argv[1] if len(sys.argv) > 1 else "out/experiments-objectives"
rows = [
    ("1", "clean-dsm", "clean data, DSM (reference)"),
    ("1", "noisy-dsm", "noisy sigma_n=0.5, plain DSM"),
    ("1", "noisy-ambient", "noisy sigma_n=0.5, ambient O2"),
    ("2", "masked-plain", "masks p=0.6, no further corruption (delta 0)"),
    ("2", "masked-further", "masks p=0.6, further corruption delta 0.1 (O3)"),
    ("3", "blur-clean-only", "2,000 clean images only, DSM"),
    ("3", "blur-all-as-clean", "2,000 clean + 18,000 blurred, all as clean, DSM"),
    ("3", "blur-annotated", "same data, annotated Ambient-o (O5)"),
    ("4", "small-dsm", "300 images, DSM"),
    ("4", "small-split", "300 images, split O6 at sigma_n=1.0"),
]
print("| # | run | FD | FD of real training images | class TV | nn-sim > 0.95 | nn-sim > 0.9 | mean nn-sim |")
print("|---|---|---|---|---|---|---|---|")
results = {}
for exp, name, label in rows:
    path = os.path.join(out, "runs", name, "eval.json")
    if not os.path.exists(path):
        print(f"| {exp} | {label} | (missing) | | | | | |")
        continue
    e = json.load(open(path))
    q, m = e.get("image_quality", {}), e.get("memorization", {})
    results[name] = (q.get("frechet_distance"), m.get("fraction_above_0_95"))
    print(f"| {exp} | {label} (`{name}`) | {q.get('frechet_distance', float('nan')):.2f} | "
          f"{q.get('frechet_distance_of_training_images', float('nan')):.2f} | {q.get('class_balance_total_variation', float('nan')):.3f} | "
          f"{m.get('fraction_above_0_95', float('nan')):.4f} | {m.get('fraction_above_0_90', float('nan')):.4f} | {m.get('mean_similarity', float('nan')):.3f} |")

def fd(n): return results.get(n, (float("nan"), None))[0]
def near(n): return results.get(n, (None, float("nan")))[1]
print()
print("Orderings (True = holds at this scale):")
print(f"1. FD(ambient) < FD(plain DSM on noisy): {fd('noisy-ambient') < fd('noisy-dsm')} ({fd('noisy-ambient'):.2f} vs {fd('noisy-dsm'):.2f}; clean DSM {fd('clean-dsm'):.2f})")
print(f"2. FD(further corruption) < FD(masked, no further): {fd('masked-further') < fd('masked-plain')} ({fd('masked-further'):.2f} vs {fd('masked-plain'):.2f})")
print(f"3. FD(annotated) < FD(clean only): {fd('blur-annotated') < fd('blur-clean-only')} ({fd('blur-annotated'):.2f} vs {fd('blur-clean-only'):.2f}); "
      f"< FD(all as clean): {fd('blur-annotated') < fd('blur-all-as-clean')} (vs {fd('blur-all-as-clean'):.2f})")
print(f"4. near-copies split < DSM: {near('small-split') < near('small-dsm')} ({near('small-split'):.4f} vs {near('small-dsm'):.4f}); "
      f"FD split {fd('small-split'):.2f} vs DSM {fd('small-dsm'):.2f}")
ann = os.path.join(out, "data", "blur", "annotations.npy")
if os.path.exists(ann):
    try:
        import numpy as np
        a = np.load(ann)
        c = a[a > 0]
        print(f"\nAnnotations of the blurred samples: median {np.median(c):.3f}, quartiles {np.percentile(c, 25):.3f} / {np.percentile(c, 75):.3f}, "
              f"never crossed (80): {(c >= 80).sum()} of {c.size}")
    except ImportError:
        pass
