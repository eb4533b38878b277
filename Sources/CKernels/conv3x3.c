// Direct 3x3 convolution (stride 1, 'same' zero padding) on padded planes; see CKernels.h
// for the layout. Why it exists: with im2col + GEMM every input value is copied 9 times into
// the patch matrix and the GEMM packs that matrix again; with the U-Net's 16-64 channels each
// copied value feeds only 2 Cout FLOPs, so the copies cost about as much as the arithmetic
// (bench conv: 28-44 GFLOPS per core for the convolutions against 92 for square sgemm). Here
// the shifted input rows are read straight from the padded planes, and a register tile of
// 4 output channels x 16 positions reuses every load 4 times.
//
// Every function has a portable C body; on x86-64 CPUs with AVX2 and FMA the three hot loops
// run an 8-wide version chosen at run time (the binary stays runnable on any x86-64).
// Results are deterministic: a fixed order of additions for a given CPU path.

#include "CKernels.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

enum { TILE = 16, BLOCK = 4 };   // positions and output channels of a register tile

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

size_t ambient_conv3x3_output_stride(int height, int width) {
    return round_up((size_t)height * (size_t)(width + 2), TILE);
}

size_t ambient_conv3x3_plane_stride(int height, int width) {
    size_t wp = (size_t)width + 2;
    size_t padded = ((size_t)height + 2) * wp;
    // The forward kernel reads up to output position Qr - 1 plus the last tap (2 Wp + 2),
    // 8 values per load; the weight gradient reads less.
    size_t reach = ambient_conv3x3_output_stride(height, width) + 2 * wp + 2;
    return round_up(padded > reach ? padded : reach, 8);
}

size_t ambient_conv3x3_packed_weights(int cin, int cout) {
    return round_up((size_t)cout, BLOCK) * (size_t)cin * 9;
}

void ambient_conv3x3_pad(const float *x, float *p, int channels, int height, int width) {
    size_t stride = ambient_conv3x3_plane_stride(height, width), wp = (size_t)width + 2;
    for (int c = 0; c < channels; c++) {
        float *plane = p + (size_t)c * stride;
        const float *src = x + (size_t)c * height * width;
        memset(plane, 0, stride * sizeof(float));
        for (int y = 0; y < height; y++) {
            memcpy(plane + (size_t)(y + 1) * wp + 1, src + (size_t)y * width, (size_t)width * sizeof(float));
        }
    }
}

void ambient_conv3x3_pack_weights(const float *w, float *packed, int cin, int cout, int transpose_flip) {
    // Normal: blocks over co, inner ci. Adjoint: blocks over ci (its outputs), inner co.
    int outs = transpose_flip ? cin : cout, ins = transpose_flip ? cout : cin;
    int blocks = (outs + BLOCK - 1) / BLOCK;
    for (int b = 0; b < blocks; b++) {
        for (int i = 0; i < ins; i++) {
            for (int t = 0; t < 9; t++) {
                for (int c = 0; c < BLOCK; c++) {
                    int o = b * BLOCK + c;
                    float v = 0;
                    if (o < outs) {
                        v = transpose_flip ? w[((size_t)i * cin + o) * 9 + (8 - t)]   // w(co = i, ci = o, flipped tap)
                                           : w[((size_t)o * cin + i) * 9 + t];
                    }
                    packed[(((size_t)b * ins + i) * 9 + t) * BLOCK + c] = v;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Portable bodies (also the reference the vector versions are tested against, through the
// Swift tests that compare both paths with the naive convolution).

static void forward_tiles_portable(const float *p, const float *wp, const float *bias, int cin, int cout,
                                   int height, int width, float *scratch) {
    size_t ps = ambient_conv3x3_plane_stride(height, width), qr = ambient_conv3x3_output_stride(height, width);
    ptrdiff_t wpitch = width + 2, offs[9];
    for (int t = 0; t < 9; t++) offs[t] = (t / 3) * wpitch + (t % 3);
    int blocks = (cout + BLOCK - 1) / BLOCK;
    for (int b = 0; b < blocks; b++) {
        const float *wb = wp + (size_t)b * cin * 9 * BLOCK;
        for (size_t q0 = 0; q0 < qr; q0 += TILE) {
            float acc[BLOCK][TILE];
            for (int c = 0; c < BLOCK; c++) {
                int o = b * BLOCK + c;
                float init = (bias && o < cout) ? bias[o] : 0.0f;
                for (int j = 0; j < TILE; j++) acc[c][j] = init;
            }
            for (int ci = 0; ci < cin; ci++) {
                const float *src = p + (size_t)ci * ps + q0;
                const float *wc = wb + (size_t)ci * 9 * BLOCK;
                for (int t = 0; t < 9; t++) {
                    const float *s = src + offs[t];
                    for (int c = 0; c < BLOCK; c++) {
                        float wv = wc[t * BLOCK + c];
                        for (int j = 0; j < TILE; j++) acc[c][j] += wv * s[j];
                    }
                }
            }
            for (int c = 0; c < BLOCK; c++) memcpy(scratch + ((size_t)b * BLOCK + c) * qr + q0, acc[c], sizeof(acc[c]));
        }
    }
}

static void weight_gradient_portable(const float *pdy, const float *p, float *dw, int cin, int cout,
                                     int height, int width, int samples) {
    size_t ps = ambient_conv3x3_plane_stride(height, width), qr = ambient_conv3x3_output_stride(height, width);
    size_t wpitch = (size_t)width + 2;
    size_t dy_sample = round_up((size_t)cout, BLOCK) * ps, x_sample = (size_t)cin * ps;
    for (int ci = 0; ci < cin; ci++) {
        for (int ky = 0; ky < 3; ky++) {
            for (int co = 0; co < cout; co++) {
                for (int kx = 0; kx < 3; kx++) {
                    float s = 0;
                    for (int n = 0; n < samples; n++) {
                        const float *xr = p + n * x_sample + (size_t)ci * ps + ky * wpitch + kx;
                        const float *d = pdy + n * dy_sample + (size_t)co * ps + wpitch + 1;
                        for (size_t q = 0; q < qr; q++) s += d[q] * xr[q];
                    }
                    dw[((size_t)co * cin + ci) * 9 + ky * 3 + kx] += s;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// AVX2 + FMA bodies.

#if defined(__x86_64__)
// One tap of the 4-output x 16-position tile: two input vectors, four broadcast weights,
// eight FMAs. Eight accumulators + two inputs + one weight stay within the 16 ymm registers
// (a 4 x 24 tile did not: the compiler spilled and shuffled accumulators every tap).
#define FORWARD_TAP(t, off)                                                                       \
    do {                                                                                          \
        __m256 x0 = _mm256_loadu_ps(src + (off)), x1 = _mm256_loadu_ps(src + (off) + 8), w;       \
        w = _mm256_broadcast_ss(wc + (t) * BLOCK + 0);                                            \
        a00 = _mm256_fmadd_ps(w, x0, a00); a01 = _mm256_fmadd_ps(w, x1, a01);                    \
        w = _mm256_broadcast_ss(wc + (t) * BLOCK + 1);                                            \
        a10 = _mm256_fmadd_ps(w, x0, a10); a11 = _mm256_fmadd_ps(w, x1, a11);                    \
        w = _mm256_broadcast_ss(wc + (t) * BLOCK + 2);                                            \
        a20 = _mm256_fmadd_ps(w, x0, a20); a21 = _mm256_fmadd_ps(w, x1, a21);                    \
        w = _mm256_broadcast_ss(wc + (t) * BLOCK + 3);                                            \
        a30 = _mm256_fmadd_ps(w, x0, a30); a31 = _mm256_fmadd_ps(w, x1, a31);                    \
    } while (0)

__attribute__((target("avx2,fma")))
static void forward_tiles_avx2(const float *p, const float *wp, const float *bias, int cin, int cout,
                               int height, int width, float *scratch) {
    size_t ps = ambient_conv3x3_plane_stride(height, width), qr = ambient_conv3x3_output_stride(height, width);
    const ptrdiff_t r1 = width + 2, r2 = 2 * r1;
    int blocks = (cout + BLOCK - 1) / BLOCK;
    for (int b = 0; b < blocks; b++) {
        const float *wb = wp + (size_t)b * cin * 9 * BLOCK;
        float init[BLOCK];
        for (int c = 0; c < BLOCK; c++) {
            int o = b * BLOCK + c;
            init[c] = (bias && o < cout) ? bias[o] : 0.0f;
        }
        float *ob = scratch + (size_t)b * BLOCK * qr;
        for (size_t q0 = 0; q0 < qr; q0 += 16) {
            __m256 a00 = _mm256_set1_ps(init[0]), a01 = a00;
            __m256 a10 = _mm256_set1_ps(init[1]), a11 = a10;
            __m256 a20 = _mm256_set1_ps(init[2]), a21 = a20;
            __m256 a30 = _mm256_set1_ps(init[3]), a31 = a30;
            const float *src = p + q0;
            const float *wc = wb;
            for (int ci = 0; ci < cin; ci++, src += ps, wc += 9 * BLOCK) {
                FORWARD_TAP(0, 0); FORWARD_TAP(1, 1); FORWARD_TAP(2, 2);
                FORWARD_TAP(3, r1); FORWARD_TAP(4, r1 + 1); FORWARD_TAP(5, r1 + 2);
                FORWARD_TAP(6, r2); FORWARD_TAP(7, r2 + 1); FORWARD_TAP(8, r2 + 2);
            }
            float *o0 = ob + q0, *o1 = o0 + qr, *o2 = o1 + qr, *o3 = o2 + qr;
            _mm256_storeu_ps(o0, a00); _mm256_storeu_ps(o0 + 8, a01);
            _mm256_storeu_ps(o1, a10); _mm256_storeu_ps(o1 + 8, a11);
            _mm256_storeu_ps(o2, a20); _mm256_storeu_ps(o2 + 8, a21);
            _mm256_storeu_ps(o3, a30); _mm256_storeu_ps(o3 + 8, a31);
        }
    }
}
#undef FORWARD_TAP

__attribute__((target("avx2,fma")))
static float hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

// The weight gradient sums over every position of every sample of the chunk before one
// horizontal sum per weight: at 7x7 a plane is only 8 vectors long, and a horizontal sum per
// sample cost as much as the products.
__attribute__((target("avx2,fma")))
static void weight_gradient_avx2(const float *pdy, const float *p, float *dw, int cin, int cout,
                                 int height, int width, int samples) {
    size_t ps = ambient_conv3x3_plane_stride(height, width), qr = ambient_conv3x3_output_stride(height, width);
    size_t wpitch = (size_t)width + 2;
    size_t dy_sample = round_up((size_t)cout, BLOCK) * ps, x_sample = (size_t)cin * ps;
    int blocks = (cout + BLOCK - 1) / BLOCK;
    for (int ci = 0; ci < cin; ci++) {
        for (int ky = 0; ky < 3; ky++) {
            for (int b = 0; b < blocks; b++) {
                __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;
                __m256 a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
                for (int n = 0; n < samples; n++) {
                    const float *xr = p + n * x_sample + (size_t)ci * ps + ky * wpitch;
                    const float *d0 = pdy + n * dy_sample + (size_t)(b * BLOCK) * ps + wpitch + 1;
                    const float *d1 = d0 + ps, *d2 = d1 + ps, *d3 = d2 + ps;
                    for (size_t q = 0; q < qr; q += 8) {
                        __m256 x0 = _mm256_loadu_ps(xr + q), x1 = _mm256_loadu_ps(xr + q + 1), x2 = _mm256_loadu_ps(xr + q + 2);
                        __m256 y;
                        y = _mm256_loadu_ps(d0 + q);
                        a00 = _mm256_fmadd_ps(y, x0, a00); a01 = _mm256_fmadd_ps(y, x1, a01); a02 = _mm256_fmadd_ps(y, x2, a02);
                        y = _mm256_loadu_ps(d1 + q);
                        a10 = _mm256_fmadd_ps(y, x0, a10); a11 = _mm256_fmadd_ps(y, x1, a11); a12 = _mm256_fmadd_ps(y, x2, a12);
                        y = _mm256_loadu_ps(d2 + q);
                        a20 = _mm256_fmadd_ps(y, x0, a20); a21 = _mm256_fmadd_ps(y, x1, a21); a22 = _mm256_fmadd_ps(y, x2, a22);
                        y = _mm256_loadu_ps(d3 + q);
                        a30 = _mm256_fmadd_ps(y, x0, a30); a31 = _mm256_fmadd_ps(y, x1, a31); a32 = _mm256_fmadd_ps(y, x2, a32);
                    }
                }
                __m256 acc[BLOCK][3] = {{a00, a01, a02}, {a10, a11, a12}, {a20, a21, a22}, {a30, a31, a32}};
                for (int c = 0; c < BLOCK; c++) {
                    int co = b * BLOCK + c;
                    if (co >= cout) break;
                    float *d = dw + ((size_t)co * cin + ci) * 9 + ky * 3;
                    for (int k = 0; k < 3; k++) d[k] += hsum_avx2(acc[c][k]);
                }
            }
        }
    }
}

#endif

int ambient_conv3x3_available(void) { return ambient_has_avx2_fma(); }

static void forward(const float *p, const float *wpacked, const float *bias, float *out,
                    int cin, int cout, int height, int width, int accumulate, float *scratch, int vector) {
#if defined(__x86_64__)
    if (vector && ambient_has_avx2_fma()) {
        forward_tiles_avx2(p, wpacked, bias, cin, cout, height, width, scratch);
    } else
#endif
    {
        forward_tiles_portable(p, wpacked, bias, cin, cout, height, width, scratch);
    }
    size_t qr = ambient_conv3x3_output_stride(height, width), wpitch = (size_t)width + 2;
    for (int co = 0; co < cout; co++) {
        const float *src = scratch + (size_t)co * qr;
        float *dst = out + (size_t)co * height * width;
        for (int y = 0; y < height; y++) {
            const float *s = src + (size_t)y * wpitch;
            float *d = dst + (size_t)y * width;
            if (accumulate) {
                for (int x = 0; x < width; x++) d[x] += s[x];
            } else {
                memcpy(d, s, (size_t)width * sizeof(float));
            }
        }
    }
}

void ambient_conv3x3_forward(const float *p, const float *wpacked, const float *bias, float *out,
                             int cin, int cout, int height, int width, int accumulate, float *scratch) {
    forward(p, wpacked, bias, out, cin, cout, height, width, accumulate, scratch, 1);
}

void ambient_conv3x3_forward_portable(const float *p, const float *wpacked, const float *bias, float *out,
                                      int cin, int cout, int height, int width, int accumulate, float *scratch) {
    forward(p, wpacked, bias, out, cin, cout, height, width, accumulate, scratch, 0);
}

void ambient_conv3x3_weight_gradient(const float *pdy, const float *p, float *dw,
                                     int cin, int cout, int height, int width, int samples) {
#if defined(__x86_64__)
    if (ambient_has_avx2_fma()) {
        weight_gradient_avx2(pdy, p, dw, cin, cout, height, width, samples);
        return;
    }
#endif
    weight_gradient_portable(pdy, p, dw, cin, cout, height, width, samples);
}

void ambient_conv3x3_weight_gradient_portable(const float *pdy, const float *p, float *dw,
                                              int cin, int cout, int height, int width, int samples) {
    weight_gradient_portable(pdy, p, dw, cin, cout, height, width, samples);
}
