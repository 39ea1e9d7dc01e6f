/* Fully connected layers on oneDNN's sgemm (row-major, AVX-512, on the same
 * OpenMP threads as the primitives; unlike OpenBLAS it ignores the
 * OPENBLAS_CORETYPE=Haswell setting of this environment). torch's layout:
 * y = x W^T + b with W [out, in]. The weight gradient accumulates through
 * sgemm's beta = 1; bias terms are OpenMP loops. */
#include <string.h>

#include "backend/cpu/cpu.h"

static im_status_t gemm(cpu_ctx_t *c, char ta, char tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                        const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  im__cpu_set_threads(c->nthreads);
  dnnl_status_t s = dnnl_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
  return s == dnnl_success ? IM_OK : im__cpu_dnnl_error(s, "sgemm");
}

/* x is (M, in) (any leading dims), w is (out, in), bias (out) or NULL; y is (M, out), assigned.
 * y = bias (each row) then y += x W^T. */
im_status_t im__cpu_linear_forward(im_backend_t *b, im__ct *x, im__ct *w, im__ct *bias, im__t *y) {
  const im_tensor_t *all[] = {x, w, y};
  if (im__cpu_any_empty(3, all)) return IM_ERR_UNSUPPORTED;
  cpu_ctx_t *c = im__cpu_ctx(b);
  const int64_t O = w->shape[0], I = w->shape[1], M = im_tensor_numel(x) / I;
  float *yd = y->data;
  if (bias) {
    const float *bd = bias->data;
    const int nt_ = c->nthreads, par_ = M * O > CPU_PAR_MIN;
    (void)nt_;
    (void)par_;
    CPU_OMP_FOR
    for (int64_t m = 0; m < M; m++) memcpy(yd + m * O, bd, (size_t)O * sizeof *bd);
  }
  return gemm(c, 'N', 'T', M, O, I, x->data, I, w->data, I, bias ? 1.0f : 0.0f, yd, O);
}

/* dy is (M, out), w is (out, in); dx is (M, in), assigned: dx = dy W. */
im_status_t im__cpu_linear_backward_data(im_backend_t *b, im__ct *dy, im__ct *w, im__t *dx) {
  const im_tensor_t *all[] = {dy, w, dx};
  if (im__cpu_any_empty(3, all)) return IM_ERR_UNSUPPORTED;
  const int64_t O = w->shape[0], I = w->shape[1], M = im_tensor_numel(dx) / I;
  return gemm(im__cpu_ctx(b), 'N', 'N', M, I, O, dy->data, O, w->data, I, 0.0f, dx->data, I);
}

/* x is (M, in), dy is (M, out); dw is (out, in), accumulated (+=): dw += dy^T x (sgemm with beta 1);
 * dbias (out) or NULL, accumulated (+=): the column sums of dy, in double, blocks of 64 columns
 * in parallel (each block reads its 64 contiguous floats of every row). */
im_status_t im__cpu_linear_backward_weight(im_backend_t *b, im__ct *x, im__ct *dy, im__t *dw, im__t *dbias) {
  const im_tensor_t *all[] = {x, dy, dw};
  if (im__cpu_any_empty(3, all)) return IM_ERR_UNSUPPORTED;
  cpu_ctx_t *c = im__cpu_ctx(b);
  const int64_t O = dw->shape[0], I = dw->shape[1], M = im_tensor_numel(dy) / O;
  im_status_t st = gemm(c, 'T', 'N', O, I, M, dy->data, O, x->data, I, 1.0f, dw->data, I);
  if (st != IM_OK || !dbias) return st;
  const float *g = dy->data;
  float *db = dbias->data;
  const int64_t nblk = (O + 63) / 64;
  const int nt_ = c->nthreads, par_ = M * O > CPU_PAR_MIN && nblk > 1;
  (void)nt_;
  (void)par_;
  CPU_OMP_FOR
  for (int64_t blk = 0; blk < nblk; blk++) {
    const int64_t o0 = blk * 64, n = O - o0 < 64 ? O - o0 : 64;
    double acc[64] = {0};
    for (int64_t m = 0; m < M; m++)
      for (int64_t j = 0; j < n; j++) acc[j] += g[m * O + o0 + j];
    for (int64_t j = 0; j < n; j++) db[o0 + j] = (float)(db[o0 + j] + acc[j]);
  }
  return IM_OK;
}
