// Hand-written CPU kernels that BLAS does not provide: the direct 3x3 convolution of the
// U-Net (forward, input gradient, weight gradient) and SiLU, in float, with AVX2 + FMA (and for
// the convolution AVX-512, with the same bits) chosen at run time. TensorCore calls them through `DirectConvolution` and keeps its im2col + GEMM path
// as the reference and the fallback (no AVX2, other kernel sizes, Double).
//
// Layout shared by every function ("padded planes"): an image plane of H x W values is stored
// as (H + 2) rows of Wp = W + 2 values, with a one-pixel zero border, followed by zeros up to
// `ambient_conv3x3_plane_stride(H, W)` values; plane c of a padded image starts at
// c * stride. Value (y, x) of the image is at index (y + 1) * Wp + (x + 1).
//
// Output positions are computed on the flattened grid q = y * Wp + x, x in [0, Wp): the
// positions with x >= W are computed and thrown away, so one kernel covers every image size
// without edge cases. Tap (ky, kx) of output q reads input q + ky * Wp + kx.
#ifndef AMBIENT_CKERNELS_H
#define AMBIENT_CKERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// 1 on x86-64 CPUs with AVX2 and FMA (the vector paths of every kernel here), else 0.
int ambient_has_avx2_fma(void);

/// The widest x86-64 vector level this CPU (and its OS) supports: 3 for AVX-512 F, BW, DQ, VL
/// and CD (OpenBLAS's SkylakeX kernels), 2 for AVX2 + FMA (Haswell), 1 for AVX (Sandybridge),
/// 0 otherwise and on other architectures.
int ambient_cpu_vector_level(void);

/// Sets (on != 0) or clears flush-to-zero and denormals-are-zero for the calling thread's SSE/AVX
/// arithmetic; returns the previous state for ambient_restore_denormals (nonzero when either
/// was set). No-ops returning 0 off x86-64.
int ambient_flush_denormals(int on);
void ambient_restore_denormals(int previous);

/// 1 when this CPU runs the direct kernels' vector path (ambient_has_avx2_fma), else 0.
int ambient_conv3x3_available(void);

/// Values per padded plane of an H x W image (a multiple of 8, with room for the kernels'
/// vector over-reads). Output positions are computed in tiles of 32 (ambient_conv3x3_output_stride).
size_t ambient_conv3x3_plane_stride(int height, int width);

/// Output positions per plane the kernels compute: H * (W + 2) rounded up to the tile size.
size_t ambient_conv3x3_output_stride(int height, int width);

/// Floats of packed weights for `cout` outputs of `cin` inputs (cout rounded up to 4).
size_t ambient_conv3x3_packed_weights(int cin, int cout);

/// `channels` planes of H x W from `x` (contiguous, channel-major) into padded planes at `p`
/// (every value of the padded planes is written: borders and tails are zero).
void ambient_conv3x3_pad(const float *x, float *p, int channels, int height, int width);

/// Packs weights w (cout, cin, 3, 3) for `ambient_conv3x3_forward`: blocks of 4 outputs,
/// [block][ci][tap][4], zero for outputs beyond cout. With `transpose_flip`, packs instead the
/// weights of the adjoint convolution (the input gradient): w'(ci, co, ky, kx) =
/// w(co, ci, 2 - ky, 2 - kx), a convolution from cout planes to cin planes; `cin` and `cout`
/// still describe w.
void ambient_conv3x3_pack_weights(const float *w, float *packed, int cin, int cout, int transpose_flip);

/// One image: out(co, y, x) (=|+=) bias(co) + sum over ci, ky, kx of
/// wpacked(co, ci, ky, kx) p(ci, y + ky - 1, x + kx - 1), for co < cout.
/// `p` holds cin padded planes; `bias` may be NULL; with `accumulate` the result is added to
/// `out` (cout planes of H x W, channel-major) instead of stored. `scratch` holds
/// ceil(cout / 4) * 4 * ambient_conv3x3_output_stride(H, W) floats.
void ambient_conv3x3_forward(const float *p, const float *wpacked, const float *bias, float *out,
                             int cin, int cout, int height, int width, int accumulate, float *scratch);

/// `samples` images: dw(co, ci, ky, kx) += sum over samples n, y, x of
/// dy(n, co, y, x) p(n, ci, y + ky - 1, x + kx - 1). `pdy` holds, per sample, ceil(cout / 4) * 4
/// padded planes of the output gradient (the planes beyond cout zero); `p` holds, per sample,
/// cin padded planes of the input; dw is (cout, cin, 3, 3).
void ambient_conv3x3_weight_gradient(const float *pdy, const float *p, float *dw,
                                     int cin, int cout, int height, int width, int samples);

/// 1 when `ambient_silu_forward` and `ambient_silu_backward` run here (AVX2 and FMA); they
/// must not be called otherwise (TensorCore keeps its Swift loops for that case).
int ambient_silu_available(void);

/// y = x sigmoid(x), for n values.
void ambient_silu_forward(const float *x, float *y, size_t n);

/// dx += dy sigmoid(x) (1 + x (1 - sigmoid(x))), for n values.
void ambient_silu_backward(const float *x, const float *dy, float *dx, size_t n);

/// The vector level the two functions above run at on this CPU: 3 AVX-512 (F and DQ), 2 AVX2 +
/// FMA, 0 portable C. `AMBIENT_CONV3X3_AVX512=0` caps it at 2, for measuring; levels 2 and 3
/// give bitwise the same results.
int ambient_conv3x3_level(void);

/// The same two functions at a chosen level (0 portable, 2 AVX2, 3 AVX-512), capped at
/// ambient_conv3x3_level(): for the tests that compare the paths on one machine.
void ambient_conv3x3_forward_at(const float *p, const float *wpacked, const float *bias, float *out,
                                int cin, int cout, int height, int width, int accumulate, float *scratch,
                                int level);
void ambient_conv3x3_weight_gradient_at(const float *pdy, const float *p, float *dw,
                                        int cin, int cout, int height, int width, int samples, int level);

#ifdef __cplusplus
}
#endif

#endif
