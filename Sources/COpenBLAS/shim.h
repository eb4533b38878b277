// OpenBLAS CBLAS interface (Debian: libopenblas-dev). The thread-count setters are
// OpenBLAS extensions: workers choose their BLAS threads explicitly.
#include <cblas.h>
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
char *openblas_get_config(void);
char *openblas_get_corename(void);
// LAPACK (part of libopenblas): symmetric eigen-decomposition, divide and conquer.
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
             double *work, const int *lwork, int *iwork, const int *liwork, int *info);
