// Direct 3x3 convolution (stride 1, 'same' zero padding) on padded planes; see CKernels.h
// for the layout. Why it exists: with im2col + GEMM every input value is copied 9 times into
// the patch matrix and the GEMM packs that matrix again; with the U-Net's 16-64 channels each
// copied value feeds only 2 Cout FLOPs, so the copies cost about as much as the arithmetic
// (bench conv: 28-44 GFLOPS per core for the convolutions against 92 for square sgemm). Here
// the shifted input rows are read straight from the padded planes, and a register tile of
// 4 output channels x 16 positions reuses every load 4 times.
//
// Every function has a portable C body; on x86-64 CPUs with AVX2 and FMA the hot loops run an
// 8-wide version, with AVX-512 a 16-wide one that gives the same bits, chosen at run time (the
// binary stays runnable on any x86-64). Results are deterministic: a fixed order of additions
// for a given CPU path, and the same for the AVX2 and AVX-512 paths.

#include "CKernels.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// Output positions are computed in tiles of TILE (the AVX-512 tile; AVX2 and portable loops
// take 16 at a time) and output channels in blocks of BLOCK.
enum { TILE = 32, BLOCK = 4 };

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
        for (size_t q0 = 0; q0 < qr; q0 += 16) {
            float acc[BLOCK][16];
            for (int c = 0; c < BLOCK; c++) {
                int o = b * BLOCK + c;
                float init = (bias && o < cout) ? bias[o] : 0.0f;
                for (int j = 0; j < 16; j++) acc[c][j] = init;
            }
            for (int ci = 0; ci < cin; ci++) {
                const float *src = p + (size_t)ci * ps + q0;
                const float *wc = wb + (size_t)ci * 9 * BLOCK;
                for (int t = 0; t < 9; t++) {
                    const float *s = src + offs[t];
                    for (int c = 0; c < BLOCK; c++) {
                        float wv = wc[t * BLOCK + c];
                        for (int j = 0; j < 16; j++) acc[c][j] += wv * s[j];
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

// AVX-512 bodies: twice the width, and bitwise the same results as the AVX2 bodies, so that
// machines with and without AVX-512 train the same bits. The forward tile is 4 outputs x 32
// positions; every output value receives the same fused multiply-adds in the same order as in
// the 16-position AVX2 tile. The weight gradient keeps the AVX2 body's 8-lane partial sums (lane
// j sums positions j, j+8, j+16, ... of every sample in order) and puts two output channels in
// the two halves of each 16-lane register; the horizontal sums are the AVX2 ones, per half.
#define FORWARD_TAP512(t, off)                                                                    \
    do {                                                                                          \
        __m512 x0 = _mm512_loadu_ps(src + (off)), x1 = _mm512_loadu_ps(src + (off) + 16), w;      \
        w = _mm512_set1_ps(wc[(t) * BLOCK + 0]);                                                  \
        a00 = _mm512_fmadd_ps(w, x0, a00); a01 = _mm512_fmadd_ps(w, x1, a01);                    \
        w = _mm512_set1_ps(wc[(t) * BLOCK + 1]);                                                  \
        a10 = _mm512_fmadd_ps(w, x0, a10); a11 = _mm512_fmadd_ps(w, x1, a11);                    \
        w = _mm512_set1_ps(wc[(t) * BLOCK + 2]);                                                  \
        a20 = _mm512_fmadd_ps(w, x0, a20); a21 = _mm512_fmadd_ps(w, x1, a21);                    \
        w = _mm512_set1_ps(wc[(t) * BLOCK + 3]);                                                  \
        a30 = _mm512_fmadd_ps(w, x0, a30); a31 = _mm512_fmadd_ps(w, x1, a31);                    \
    } while (0)

__attribute__((target("avx512f,avx512dq,avx2,fma")))
static void forward_tiles_avx512(const float *p, const float *wp, const float *bias, int cin, int cout,
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
        for (size_t q0 = 0; q0 < qr; q0 += 32) {
            __m512 a00 = _mm512_set1_ps(init[0]), a01 = a00;
            __m512 a10 = _mm512_set1_ps(init[1]), a11 = a10;
            __m512 a20 = _mm512_set1_ps(init[2]), a21 = a20;
            __m512 a30 = _mm512_set1_ps(init[3]), a31 = a30;
            const float *src = p + q0;
            const float *wc = wb;
            for (int ci = 0; ci < cin; ci++, src += ps, wc += 9 * BLOCK) {
                FORWARD_TAP512(0, 0); FORWARD_TAP512(1, 1); FORWARD_TAP512(2, 2);
                FORWARD_TAP512(3, r1); FORWARD_TAP512(4, r1 + 1); FORWARD_TAP512(5, r1 + 2);
                FORWARD_TAP512(6, r2); FORWARD_TAP512(7, r2 + 1); FORWARD_TAP512(8, r2 + 2);
            }
            float *o0 = ob + q0, *o1 = o0 + qr, *o2 = o1 + qr, *o3 = o2 + qr;
            _mm512_storeu_ps(o0, a00); _mm512_storeu_ps(o0 + 16, a01);
            _mm512_storeu_ps(o1, a10); _mm512_storeu_ps(o1 + 16, a11);
            _mm512_storeu_ps(o2, a20); _mm512_storeu_ps(o2 + 16, a21);
            _mm512_storeu_ps(o3, a30); _mm512_storeu_ps(o3 + 16, a31);
        }
    }
}
#undef FORWARD_TAP512

// Two 8-value rows as one 16-lane register: lo in lanes 0-7, hi in lanes 8-15.
__attribute__((target("avx512f,avx512dq,avx2,fma")))
static inline __m512 load_pair(const float *lo, const float *hi) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(lo)), _mm256_loadu_ps(hi), 1);
}

// The three kernel rows in one pass over the chunk: 4 outputs x 9 taps = 36 partial sums, as
// 18 registers of two outputs each. The AVX2 body passes over the chunk once per kernel row (it
// has 16 registers), and at 7 loads per 12 FMAs it is bound by the L2 cache, not by arithmetic;
// here each output-gradient vector is loaded once for 18 FMAs. Each partial sum still adds the
// same products in the same order as the AVX2 body.
#define WG_TAPS(ky, a0, a1, a2, b0, b1, b2)                                                         \
    do {                                                                                            \
        const float *xk = xr + (ky) * wpitch + q;                                                   \
        __m512 x;                                                                                   \
        x = _mm512_broadcast_f32x8(_mm256_loadu_ps(xk));                                            \
        a0 = _mm512_fmadd_ps(y01, x, a0); b0 = _mm512_fmadd_ps(y23, x, b0);                          \
        x = _mm512_broadcast_f32x8(_mm256_loadu_ps(xk + 1));                                        \
        a1 = _mm512_fmadd_ps(y01, x, a1); b1 = _mm512_fmadd_ps(y23, x, b1);                          \
        x = _mm512_broadcast_f32x8(_mm256_loadu_ps(xk + 2));                                        \
        a2 = _mm512_fmadd_ps(y01, x, a2); b2 = _mm512_fmadd_ps(y23, x, b2);                          \
    } while (0)

__attribute__((target("avx512f,avx512dq,avx2,fma")))
static void weight_gradient_avx512(const float *pdy, const float *p, float *dw, int cin, int cout,
                                   int height, int width, int samples) {
    size_t ps = ambient_conv3x3_plane_stride(height, width), qr = ambient_conv3x3_output_stride(height, width);
    size_t wpitch = (size_t)width + 2;
    size_t dy_sample = round_up((size_t)cout, BLOCK) * ps, x_sample = (size_t)cin * ps;
    int blocks = (cout + BLOCK - 1) / BLOCK;
    for (int ci = 0; ci < cin; ci++) {
        for (int b = 0; b < blocks; b++) {
            // p<ky><kx>: outputs 0 and 1 of the block (lanes 0-7, 8-15); r<ky><kx>: outputs 2 and 3.
            __m512 p00 = _mm512_setzero_ps(), p01 = p00, p02 = p00, p10 = p00, p11 = p00, p12 = p00;
            __m512 p20 = p00, p21 = p00, p22 = p00;
            __m512 r00 = p00, r01 = p00, r02 = p00, r10 = p00, r11 = p00, r12 = p00, r20 = p00, r21 = p00, r22 = p00;
            for (int n = 0; n < samples; n++) {
                const float *xr = p + n * x_sample + (size_t)ci * ps;
                const float *d0 = pdy + n * dy_sample + (size_t)(b * BLOCK) * ps + wpitch + 1;
                const float *d1 = d0 + ps, *d2 = d1 + ps, *d3 = d2 + ps;
                for (size_t q = 0; q < qr; q += 8) {
                    __m512 y01 = load_pair(d0 + q, d1 + q), y23 = load_pair(d2 + q, d3 + q);
                    WG_TAPS(0, p00, p01, p02, r00, r01, r02);
                    WG_TAPS(1, p10, p11, p12, r10, r11, r12);
                    WG_TAPS(2, p20, p21, p22, r20, r21, r22);
                }
            }
            __m512 pairs[2][9] = {{p00, p01, p02, p10, p11, p12, p20, p21, p22},
                                  {r00, r01, r02, r10, r11, r12, r20, r21, r22}};
            for (int c = 0; c < BLOCK; c++) {
                int co = b * BLOCK + c;
                if (co >= cout) break;
                float *d = dw + ((size_t)co * cin + ci) * 9;
                for (int t = 0; t < 9; t++) {
                    __m512 v = pairs[c / 2][t];
                    __m256 half = (c % 2 == 0) ? _mm512_castps512_ps256(v) : _mm512_extractf32x8_ps(v, 1);
                    d[t] += hsum_avx2(half);
                }
            }
        }
    }
}
#undef WG_TAPS

#endif

// The vector level the kernels run at here: 3 AVX-512 (unless AMBIENT_CONV3X3_AVX512=0, for
// measuring the difference; the results are the same bits), 2 AVX2 + FMA, 0 portable.
int ambient_conv3x3_level(void) {
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        int cpu = ambient_cpu_vector_level();
        const char *env = getenv("AMBIENT_CONV3X3_AVX512");
        int allow512 = !(env && env[0] == '0');
        v = (cpu >= 3 && allow512) ? 3 : (cpu >= 2 ? 2 : 0);
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}

int ambient_conv3x3_available(void) { return ambient_has_avx2_fma(); }

// `level` is capped at what this CPU runs (ambient_conv3x3_level).
static int usable(int level) {
    int best = ambient_conv3x3_level();
    return level < best ? (level >= 3 ? 3 : (level >= 2 ? 2 : 0)) : best;
}

void ambient_conv3x3_forward_at(const float *p, const float *wpacked, const float *bias, float *out,
                                int cin, int cout, int height, int width, int accumulate, float *scratch, int level) {
    switch (usable(level)) {
#if defined(__x86_64__)
    case 3: forward_tiles_avx512(p, wpacked, bias, cin, cout, height, width, scratch); break;
    case 2: forward_tiles_avx2(p, wpacked, bias, cin, cout, height, width, scratch); break;
#endif
    default: forward_tiles_portable(p, wpacked, bias, cin, cout, height, width, scratch); break;
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
    ambient_conv3x3_forward_at(p, wpacked, bias, out, cin, cout, height, width, accumulate, scratch, 3);
}

void ambient_conv3x3_weight_gradient_at(const float *pdy, const float *p, float *dw,
                                        int cin, int cout, int height, int width, int samples, int level) {
    switch (usable(level)) {
#if defined(__x86_64__)
    case 3: weight_gradient_avx512(pdy, p, dw, cin, cout, height, width, samples); break;
    case 2: weight_gradient_avx2(pdy, p, dw, cin, cout, height, width, samples); break;
#endif
    default: weight_gradient_portable(pdy, p, dw, cin, cout, height, width, samples); break;
    }
}

void ambient_conv3x3_weight_gradient(const float *pdy, const float *p, float *dw,
                                     int cin, int cout, int height, int width, int samples) {
    ambient_conv3x3_weight_gradient_at(pdy, p, dw, cin, cout, height, width, samples, 3);
}
