#!/usr/bin/env python3
"""Residual pixel noise of generated 28x28 samples, with a calibration on Fashion-MNIST test images.

The evaluator's Frechet distance hardly sees Gaussian pixel noise (docs/results.md, issue 8), so
this estimates it directly: per image, Donoho's median-absolute-deviation estimator on the finest
diagonal Haar detail, sigma_hat = median(|HH|) / 0.6745 (orthonormal Haar), then the median over
images. Calibration rows add known noise to 500 clean test images (clean images give about 0.01:
their own fine detail).

Usage: scripts/residual-noise.py SAMPLES.npy [SAMPLES.npy ...]   (NPY of `ambient sample`, values in [-1, 1])
"""
import gzip
import sys

import numpy as np

TEST_IMAGES = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"  # Debian's dataset-fashion-mnist


def sigma_hat(images):
    a = np.asarray(images, dtype=np.float64)
    if a.size % 784 != 0:
        raise SystemExit(f"expected 28x28 images, got an array of shape {a.shape}")
    a = a.reshape(-1, 28, 28)
    hh = (a[:, 0::2, 0::2] - a[:, 0::2, 1::2] - a[:, 1::2, 0::2] + a[:, 1::2, 1::2]) / 2
    return np.median(np.abs(hh.reshape(len(a), -1)), axis=1) / 0.6745


def main(paths):
    if not paths or paths[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if paths else 2
    raw = gzip.open(TEST_IMAGES).read()[16:]
    clean = np.frombuffer(raw, np.uint8).reshape(-1, 784)[:500].astype(np.float64) / 127.5 - 1
    rng = np.random.default_rng(2)
    print(f"{'images':<48} median sigma_hat")
    for s in (0, 0.05, 0.1, 0.2, 0.3, 0.5):
        noisy = clean + s * rng.standard_normal(clean.shape)
        print(f"{f'test images + N(0, {s}^2)':<48} {np.median(sigma_hat(noisy)):.3f}")
    for p in paths:
        print(f"{p:<48} {np.median(sigma_hat(np.load(p))):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
