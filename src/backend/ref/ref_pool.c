/* Reference pooling over NCHW: max pool with argmax indices, average pool
 * (count_include_pad either way), global average pool. Window rules follow
 * torch (floor mode, padding at most half the kernel, windows clipped to the
 * image for max and to the padded image for the average's divisor). */
#include <math.h>
#include <string.h>

#include "backend/ref/ref.h"

/* x is (N, C, H, W); y is (N, C, P, Q), assigned; indices (N, C, P, Q) I32 or NULL, assigned:
 * y[n,c,p,q] = max over the window rows [p*sh - ph, +kh) x cols [q*sw - pw, +kw) clipped to the image;
 * indices = h*W + w of the first maximum in row-major order (a NaN wins). */
im_status_t im__ref_maxpool2d_forward(im_backend_t *b, const im_pool2d_params_t *p, im__ct *x, im__t *y,
                                      im__t *indices) {
  const int64_t NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
  const int64_t P = y->shape[2], Q = y->shape[3];
  const float *xd = x->data;
  float *yd = y->data;
  int32_t *id = indices ? indices->data : NULL;
  for (int64_t pl = 0; pl < NC; pl++) {
    const float *xp = xd + pl * H * W;
    for (int64_t oh = 0; oh < P; oh++)
      for (int64_t ow = 0; ow < Q; ow++) {
        int64_t h0 = oh * p->stride_h - p->pad_h, w0 = ow * p->stride_w - p->pad_w;
        const int64_t h1 = h0 + p->kernel_h < H ? h0 + p->kernel_h : H;
        const int64_t w1 = w0 + p->kernel_w < W ? w0 + p->kernel_w : W;
        if (h0 < 0) h0 = 0;
        if (w0 < 0) w0 = 0;
        float best = -INFINITY;
        int64_t arg = h0 * W + w0;
        for (int64_t ih = h0; ih < h1; ih++)
          for (int64_t iw = w0; iw < w1; iw++) {
            const float v = xp[ih * W + iw];
            if (v > best || isnan(v)) {
              best = v;
              arg = ih * W + iw;
              if (isnan(v)) goto done;
            }
          }
      done:
        yd[(pl * P + oh) * Q + ow] = best;
        if (id) id[(pl * P + oh) * Q + ow] = (int32_t)arg;
      }
  }
  return IM_OK;
}

/* dy, indices are (N, C, P, Q); dx is (N, C, H, W), assigned: zeroed, then
 * dx[n,c][indices[n,c,p,q]] += dy[n,c,p,q]. */
im_status_t im__ref_maxpool2d_backward(im_backend_t *b, const im_pool2d_params_t *p, im__ct *dy, im__ct *indices,
                                       im__t *dx) {
  const int64_t NC = dx->shape[0] * dx->shape[1], HW = dx->shape[2] * dx->shape[3];
  const int64_t PQ = dy->shape[2] * dy->shape[3];
  const float *dyd = dy->data;
  const int32_t *id = indices->data;
  float *dxd = dx->data;
  memset(dxd, 0, im_tensor_nbytes(dx));
  for (int64_t pl = 0; pl < NC; pl++)
    for (int64_t i = 0; i < PQ; i++) dxd[pl * HW + id[pl * PQ + i]] += dyd[pl * PQ + i];
  return IM_OK;
}

/* The divisor of output (oh, ow): the window clipped to the padded image
 * (count_include_pad) or to the image itself (exclude_pad). */
static int64_t avg_divisor(const im_pool2d_params_t *p, int64_t oh, int64_t ow, int64_t H, int64_t W) {
  int64_t h0 = oh * p->stride_h - p->pad_h, w0 = ow * p->stride_w - p->pad_w;
  int64_t h1 = h0 + p->kernel_h, w1 = w0 + p->kernel_w;
  if (h1 > H + p->pad_h) h1 = H + p->pad_h;
  if (w1 > W + p->pad_w) w1 = W + p->pad_w;
  if (!p->exclude_pad) return (h1 - h0) * (w1 - w0);
  if (h0 < 0) h0 = 0;
  if (w0 < 0) w0 = 0;
  if (h1 > H) h1 = H;
  if (w1 > W) w1 = W;
  return (h1 - h0) * (w1 - w0);
}

/* x is (N, C, H, W); y is (N, C, P, Q), assigned: the window's sum (clipped to the image) / avg_divisor. */
im_status_t im__ref_avgpool2d_forward(im_backend_t *b, const im_pool2d_params_t *p, im__ct *x, im__t *y) {
  const int64_t NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
  const int64_t P = y->shape[2], Q = y->shape[3];
  const float *xd = x->data;
  float *yd = y->data;
  for (int64_t pl = 0; pl < NC; pl++) {
    const float *xp = xd + pl * H * W;
    for (int64_t oh = 0; oh < P; oh++)
      for (int64_t ow = 0; ow < Q; ow++) {
        const int64_t h0 = oh * p->stride_h - p->pad_h, w0 = ow * p->stride_w - p->pad_w;
        double acc = 0.0;
        for (int64_t ih = h0 < 0 ? 0 : h0; ih < h0 + p->kernel_h && ih < H; ih++)
          for (int64_t iw = w0 < 0 ? 0 : w0; iw < w0 + p->kernel_w && iw < W; iw++) acc += xp[ih * W + iw];
        yd[(pl * P + oh) * Q + ow] = (float)(acc / (double)avg_divisor(p, oh, ow, H, W));
      }
  }
  return IM_OK;
}

/* First output index whose window [o*s - pad, o*s - pad + k) reaches position i: ceil((i + pad - k + 1) / s), >= 0. */
static int64_t first_out(int64_t i, int64_t k, int64_t s, int64_t pad) {
  const int64_t t = i + pad - k + 1;
  return t <= 0 ? 0 : (t + s - 1) / s;
}

/* dy is (N, C, P, Q); dx is (N, C, H, W), assigned, gathered:
 * dx[n,c,i,j] = sum over outputs (p, q) whose window holds (i, j) of dy[n,c,p,q] / avg_divisor(p, q). */
im_status_t im__ref_avgpool2d_backward(im_backend_t *b, const im_pool2d_params_t *p, im__ct *dy, im__t *dx) {
  const int64_t NC = dx->shape[0] * dx->shape[1], H = dx->shape[2], W = dx->shape[3];
  const int64_t P = dy->shape[2], Q = dy->shape[3];
  const float *dyd = dy->data;
  float *dxd = dx->data;
  for (int64_t pl = 0; pl < NC; pl++) {
    const float *dyp = dyd + pl * P * Q;
    for (int64_t ih = 0; ih < H; ih++)
      for (int64_t iw = 0; iw < W; iw++) {
        double acc = 0.0;
        const int64_t oh_last = (ih + p->pad_h) / p->stride_h, ow_last = (iw + p->pad_w) / p->stride_w;
        for (int64_t oh = first_out(ih, p->kernel_h, p->stride_h, p->pad_h); oh <= oh_last && oh < P; oh++)
          for (int64_t ow = first_out(iw, p->kernel_w, p->stride_w, p->pad_w); ow <= ow_last && ow < Q; ow++)
            acc += dyp[oh * Q + ow] / (double)avg_divisor(p, oh, ow, H, W);
        dxd[(pl * H + ih) * W + iw] = (float)acc;
      }
  }
  return IM_OK;
}

/* x is (N, C, H, W); y has N*C elements ([N,C] or [N,C,1,1]), assigned: the mean of each plane. */
im_status_t im__ref_global_avgpool_forward(im_backend_t *b, im__ct *x, im__t *y) {
  const int64_t NC = x->shape[0] * x->shape[1], HW = x->shape[2] * x->shape[3];
  const float *xd = x->data;
  float *yd = y->data;
  for (int64_t pl = 0; pl < NC; pl++) {
    double acc = 0.0;
    for (int64_t i = 0; i < HW; i++) acc += xd[pl * HW + i];
    yd[pl] = (float)(acc / (double)HW);
  }
  return IM_OK;
}

/* dy has N*C elements; dx is (N, C, H, W), assigned: dx[n,c,i,j] = dy[n,c] / (H W). */
im_status_t im__ref_global_avgpool_backward(im_backend_t *b, im__ct *dy, im__t *dx) {
  const int64_t NC = dx->shape[0] * dx->shape[1], HW = dx->shape[2] * dx->shape[3];
  const float *dyd = dy->data;
  float *dxd = dx->data;
  for (int64_t pl = 0; pl < NC; pl++) {
    const float g = (float)((double)dyd[pl] / (double)HW);
    for (int64_t i = 0; i < HW; i++) dxd[pl * HW + i] = g;
  }
  return IM_OK;
}
