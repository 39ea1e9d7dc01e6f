/* Reference element-wise kernels: ReLU, exact GELU, dropout, residual add,
 * fill. Any shape; each may run in place (output == input). */
#include <math.h>
#include <string.h>

#include "backend/ref/ref.h"

/* x, y have the same shape; y = max(x, 0), assigned. (NaN stays NaN, as torch.) */
im_status_t im__ref_relu_forward(im_backend_t *b, im__ct *x, im__t *y) {
  const int64_t n = im_tensor_numel(x);
  const float *xd = x->data;
  float *yd = y->data;
  for (int64_t i = 0; i < n; i++) yd[i] = xd[i] < 0.0f ? 0.0f : xd[i];
  return IM_OK;
}

/* y (relu's output), dy, dx have the same shape; dx = y > 0 ? dy : 0, assigned. */
im_status_t im__ref_relu_backward(im_backend_t *b, im__ct *y, im__ct *dy, im__t *dx) {
  const int64_t n = im_tensor_numel(y);
  const float *yd = y->data, *dyd = dy->data;
  float *dxd = dx->data;
  for (int64_t i = 0; i < n; i++) dxd[i] = yd[i] > 0.0f ? dyd[i] : 0.0f;
  return IM_OK;
}

#define IM__SQRT1_2 0.70710678118654752440
#define IM__INV_SQRT_2PI 0.39894228040143267794

/* x, y have the same shape; y = x Phi(x) = x/2 (1 + erf(x / sqrt 2)), assigned. */
im_status_t im__ref_gelu_forward(im_backend_t *b, im__ct *x, im__t *y) {
  const int64_t n = im_tensor_numel(x);
  const float *xd = x->data;
  float *yd = y->data;
  for (int64_t i = 0; i < n; i++) {
    const double v = xd[i];
    yd[i] = (float)(0.5 * v * (1.0 + erf(v * IM__SQRT1_2)));
  }
  return IM_OK;
}

/* x (gelu's input), dy, dx have the same shape; dx = dy (Phi(x) + x phi(x)), assigned. */
im_status_t im__ref_gelu_backward(im_backend_t *b, im__ct *x, im__ct *dy, im__t *dx) {
  const int64_t n = im_tensor_numel(x);
  const float *xd = x->data, *dyd = dy->data;
  float *dxd = dx->data;
  for (int64_t i = 0; i < n; i++) {
    const double v = xd[i];
    const double cdf = 0.5 * (1.0 + erf(v * IM__SQRT1_2)), pdf = IM__INV_SQRT_2PI * exp(-0.5 * v * v);
    dxd[i] = (float)(dyd[i] * (cdf + v * pdf));
  }
  return IM_OK;
}

/* x, y have the same shape, mask is U8 of that shape; all assigned.
 * mask[i] = im__dropout_keep(seed, i, p); y = x mask / (1-p) (0 when p == 1). */
im_status_t im__ref_dropout_forward(im_backend_t *b, float p, uint64_t seed, im__ct *x, im__t *y, im__t *mask) {
  const int64_t n = im_tensor_numel(x);
  const float *xd = x->data;
  float *yd = y->data;
  uint8_t *md = mask->data;
  const float scale = p < 1.0f ? (float)(1.0 / (1.0 - (double)p)) : 0.0f;
  for (int64_t i = 0; i < n; i++) {
    md[i] = (uint8_t)im__dropout_keep(seed, (uint64_t)i, p);
    yd[i] = md[i] ? xd[i] * scale : 0.0f;
  }
  return IM_OK;
}

/* mask (U8), dy, dx have the same shape; dx = dy mask / (1-p), assigned. */
im_status_t im__ref_dropout_backward(im_backend_t *b, float p, im__ct *mask, im__ct *dy, im__t *dx) {
  const int64_t n = im_tensor_numel(dy);
  const uint8_t *md = mask->data;
  const float *dyd = dy->data;
  float *dxd = dx->data;
  const float scale = p < 1.0f ? (float)(1.0 / (1.0 - (double)p)) : 0.0f;
  for (int64_t i = 0; i < n; i++) dxd[i] = md[i] ? dyd[i] * scale : 0.0f;
  return IM_OK;
}

/* x1, x2, y have the same shape; y = x1 + x2, assigned (y may be x1 or x2). */
im_status_t im__ref_add(im_backend_t *b, im__ct *x1, im__ct *x2, im__t *y) {
  const int64_t n = im_tensor_numel(x1);
  const float *a = x1->data, *c = x2->data;
  float *yd = y->data;
  for (int64_t i = 0; i < n; i++) yd[i] = a[i] + c[i];
  return IM_OK;
}

/* dy, dx1, dx2 have the same shape; dx1 = dy, dx2 = dy, assigned (either may be NULL or dy). */
im_status_t im__ref_add_backward(im_backend_t *b, im__ct *dy, im__t *dx1, im__t *dx2) {
  const size_t nb = im_tensor_nbytes(dy);
  if (dx1 && dx1->data != dy->data) memmove(dx1->data, dy->data, nb);
  if (dx2 && dx2->data != dy->data) memmove(dx2->data, dy->data, nb);
  return IM_OK;
}

/* t is F32 of any shape; every element = v. */
im_status_t im__ref_fill(im_backend_t *b, im__t *t, float v) {
  const int64_t n = im_tensor_numel(t);
  float *d = t->data;
  for (int64_t i = 0; i < n; i++) d[i] = v;
  return IM_OK;
}
