// Which vector path this CPU runs. One answer for every kernel, computed once.

#include "CKernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

int ambient_has_avx2_fma(void) {
#if defined(__x86_64__)
    static int cached = -1;   // -1 unknown, else the answer; every thread computes the same value
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
#else
    return 0;
#endif
}

int ambient_cpu_vector_level(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512cd") && ambient_has_avx2_fma()) return 3;
    if (ambient_has_avx2_fma()) return 2;
    if (__builtin_cpu_supports("avx")) return 1;
#endif
    return 0;
}

int ambient_flush_denormals(int on) {
#if defined(__x86_64__)
    // MXCSR bit 15 flushes subnormal results to zero (FTZ), bit 6 reads subnormal inputs as
    // zero (DAZ). Per thread; returns the previous state of those two bits, for
    // ambient_restore_denormals.
    unsigned int csr = _mm_getcsr(), bits = (1u << 15) | (1u << 6);
    unsigned int next = on ? (csr | bits) : (csr & ~bits);
    if (next != csr) _mm_setcsr(next);
    return (int)(csr & bits);
#else
    (void)on;
    return 0;
#endif
}

void ambient_restore_denormals(int previous) {
#if defined(__x86_64__)
    unsigned int csr = _mm_getcsr(), bits = (1u << 15) | (1u << 6);
    unsigned int next = (csr & ~bits) | ((unsigned int)previous & bits);
    if (next != csr) _mm_setcsr(next);
#else
    (void)previous;
#endif
}
