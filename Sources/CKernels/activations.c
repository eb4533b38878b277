// SiLU forward and backward in float, 8 wide with AVX2 + FMA (chosen at run time), with the
// same Cephes expf polynomial as TensorCore's Swift `Float.fastExp`. Why in C: Swift code is
// compiled for baseline x86-64 (SSE2), so the Swift loop runs 4 wide without FMA; SiLU was
// 9% of a U-Net training step (bench step --profile).

#include "CKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

// exp(x) for x clamped to [-87.3, 88.3]: n = round(x / ln 2), r = x - n ln 2 (Cody-Waite),
// a degree-6 polynomial in r, times 2^n built in the exponent bits. Relative error < 2e-7.
__attribute__((target("avx2,fma")))
static inline __m256 exp_avx2(__m256 x) {
    const __m256 magic = _mm256_set1_ps(12582912.0f);   // 1.5 * 2^23: rounds and leaves n in the low bits
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504f), magic);
    __m256 n = _mm256_sub_ps(t, magic);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.1219444e-4f), r);
    __m256 p = _mm256_set1_ps(1.98756915e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(magic)),
                                                   _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma")))
static void silu_forward_avx2(const float *x, float *y, size_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, exp_avx2(_mm256_sub_ps(zero, v))));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(v, s));
    }
    if (i < n) {
        float xs[8] = {0}, ys[8];
        for (size_t j = 0; j < n - i; j++) xs[j] = x[i + j];
        silu_forward_avx2(xs, ys, 8);
        for (size_t j = 0; j < n - i; j++) y[i + j] = ys[j];
    }
}

__attribute__((target("avx2,fma")))
static void silu_backward_avx2(const float *x, const float *dy, float *dx, size_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, exp_avx2(_mm256_sub_ps(zero, v))));
        // dx += dy s (1 + v (1 - s))
        __m256 g = _mm256_mul_ps(s, _mm256_fmadd_ps(v, _mm256_sub_ps(one, s), one));
        _mm256_storeu_ps(dx + i, _mm256_fmadd_ps(_mm256_loadu_ps(dy + i), g, _mm256_loadu_ps(dx + i)));
    }
    if (i < n) {
        float xs[8] = {0}, ds[8] = {0}, gs[8] = {0};
        for (size_t j = 0; j < n - i; j++) { xs[j] = x[i + j]; ds[j] = dy[i + j]; gs[j] = dx[i + j]; }
        silu_backward_avx2(xs, ds, gs, 8);
        for (size_t j = 0; j < n - i; j++) dx[i + j] = gs[j];
    }
}

#endif

int ambient_silu_available(void) { return ambient_has_avx2_fma(); }

void ambient_silu_forward(const float *x, float *y, size_t n) {
#if defined(__x86_64__)
    if (ambient_has_avx2_fma()) { silu_forward_avx2(x, y, n); return; }
#endif
    (void)x; (void)y; (void)n;
    __builtin_trap();   // callers check ambient_silu_available()
}

void ambient_silu_backward(const float *x, const float *dy, float *dx, size_t n) {
#if defined(__x86_64__)
    if (ambient_has_avx2_fma()) { silu_backward_avx2(x, dy, dx, n); return; }
#endif
    (void)x; (void)dy; (void)dx; (void)n;
    __builtin_trap();
}
