/* Reference 2-d convolution: direct loops over NCHW data, any stride,
 * symmetric zero padding, dilation and groups (depthwise included), with
 * double accumulation. Clear rather than fast: this is the spec that the
 * optimized kernels are compared against, and the fallback for odd shapes. */
#include "backend/ref/ref.h"

/* x is (N, C, H, W), w is (K, C/G, R, S), bias is (K) or NULL; y is (N, K, P, Q), assigned.
 * y[n,k,p,q] = bias[k] + sum_{c<C/G, r, s} x[n, g*C/G + c, p*sh - ph + r*dh, q*sw - pw + s*dw] w[k,c,r,s],
 * g = k / (K/G), x outside the image reading as 0. With res (shaped as y, possibly y itself), the
 * rounded sum is then added to res at the same position, and with relu the result is ReLU'd: each
 * element as the separate ops (conv, add, relu) compute it. */
static void conv_forward(const im_conv2d_params_t *p, im__ct *x, im__ct *w, im__ct *bias, im__ct *res, int relu,
                         im__t *y) {
  const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
  const int64_t K = w->shape[0], Cg = w->shape[1], R = w->shape[2], S = w->shape[3];
  const int64_t P = y->shape[2], Q = y->shape[3], Kg = K / p->groups;
  const int64_t sh = p->stride_h, sw = p->stride_w, ph = p->pad_h, pw = p->pad_w, dh = p->dilation_h,
                dw = p->dilation_w;
  const float *xd = x->data, *wd = w->data, *bd = bias ? bias->data : NULL, *rd = res ? res->data : NULL;
  float *yd = y->data;
  for (int64_t n = 0; n < N; n++)
    for (int64_t k = 0; k < K; k++) {
      const int64_t g = k / Kg;
      for (int64_t oh = 0; oh < P; oh++)
        for (int64_t ow = 0; ow < Q; ow++) {
          double acc = bd ? bd[k] : 0.0;
          for (int64_t c = 0; c < Cg; c++) {
            const float *xp = xd + (n * C + g * Cg + c) * H * W;
            const float *wp = wd + (k * Cg + c) * R * S;
            for (int64_t r = 0; r < R; r++) {
              const int64_t ih = oh * sh - ph + r * dh;
              if (ih < 0 || ih >= H) continue;
              for (int64_t s = 0; s < S; s++) {
                const int64_t iw = ow * sw - pw + s * dw;
                if (iw < 0 || iw >= W) continue;
                acc += (double)xp[ih * W + iw] * wp[r * S + s];
              }
            }
          }
          const int64_t at = ((n * K + k) * P + oh) * Q + ow;
          float v = (float)acc;
          if (rd) v += rd[at];
          yd[at] = relu && v < 0.0f ? 0.0f : v;
        }
    }
}

im_status_t im__ref_conv2d_forward(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *w, im__ct *bias,
                                   im__t *y) {
  conv_forward(p, x, w, bias, NULL, 0, y);
  return IM_OK;
}

/* dy is (N, K, P, Q), w is (K, C/G, R, S); dx is (N, C, H, W), assigned.
 * Gathered rather than scattered, so each dx element is one double sum:
 * dx[n,c,i,j] = sum over k in c's group and (r, s) with i = p*sh - ph + r*dh, j = q*sw - pw + s*dw
 * for some output position (p, q) of dy[n,k,p,q] w[k, c mod C/G, r, s]. */
im_status_t im__ref_conv2d_backward_data(im_backend_t *b, const im_conv2d_params_t *p, im__ct *dy, im__ct *w,
                                         im__t *dx) {
  const int64_t N = dx->shape[0], C = dx->shape[1], H = dx->shape[2], W = dx->shape[3];
  const int64_t K = w->shape[0], Cg = w->shape[1], R = w->shape[2], S = w->shape[3];
  const int64_t P = dy->shape[2], Q = dy->shape[3], Kg = K / p->groups;
  const int64_t sh = p->stride_h, sw = p->stride_w, ph = p->pad_h, pw = p->pad_w, dh = p->dilation_h,
                dw = p->dilation_w;
  const float *dyd = dy->data, *wd = w->data;
  float *dxd = dx->data;
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++) {
      const int64_t g = c / Cg, cc = c % Cg;
      for (int64_t ih = 0; ih < H; ih++)
        for (int64_t iw = 0; iw < W; iw++) {
          double acc = 0.0;
          for (int64_t k = g * Kg; k < (g + 1) * Kg; k++) {
            const float *dyp = dyd + (n * K + k) * P * Q;
            const float *wp = wd + (k * Cg + cc) * R * S;
            for (int64_t r = 0; r < R; r++) {
              const int64_t th = ih + ph - r * dh;
              if (th < 0 || th % sh) continue;
              const int64_t oh = th / sh;
              if (oh >= P) continue;
              for (int64_t s = 0; s < S; s++) {
                const int64_t tw = iw + pw - s * dw;
                if (tw < 0 || tw % sw) continue;
                const int64_t ow = tw / sw;
                if (ow >= Q) continue;
                acc += (double)dyp[oh * Q + ow] * wp[r * S + s];
              }
            }
          }
          dxd[((n * C + c) * H + ih) * W + iw] = (float)acc;
        }
    }
  return IM_OK;
}

/* x is (N, C, H, W), dy is (N, K, P, Q); dw is (K, C/G, R, S), accumulated (+=);
 * dbias is (K) or NULL, accumulated (+=).
 * dw[k,c,r,s] += sum_{n,p,q} dy[n,k,p,q] x[n, g*C/G + c, p*sh - ph + r*dh, q*sw - pw + s*dw];
 * dbias[k] += sum_{n,p,q} dy[n,k,p,q]. */
im_status_t im__ref_conv2d_backward_weight(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *dy,
                                           im__t *dw, im__t *dbias) {
  const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
  const int64_t K = dw->shape[0], Cg = dw->shape[1], R = dw->shape[2], S = dw->shape[3];
  const int64_t P = dy->shape[2], Q = dy->shape[3], Kg = K / p->groups;
  const int64_t sh = p->stride_h, sw = p->stride_w, ph = p->pad_h, pw = p->pad_w, dh = p->dilation_h,
                dlw = p->dilation_w;
  const float *xd = x->data, *dyd = dy->data;
  float *dwd = dw->data, *dbd = dbias ? dbias->data : NULL;
  for (int64_t k = 0; k < K; k++) {
    const int64_t g = k / Kg;
    for (int64_t c = 0; c < Cg; c++)
      for (int64_t r = 0; r < R; r++)
        for (int64_t s = 0; s < S; s++) {
          double acc = 0.0;
          for (int64_t n = 0; n < N; n++) {
            const float *xp = xd + (n * C + g * Cg + c) * H * W;
            const float *dyp = dyd + (n * K + k) * P * Q;
            for (int64_t oh = 0; oh < P; oh++) {
              const int64_t ih = oh * sh - ph + r * dh;
              if (ih < 0 || ih >= H) continue;
              for (int64_t ow = 0; ow < Q; ow++) {
                const int64_t iw = ow * sw - pw + s * dlw;
                if (iw < 0 || iw >= W) continue;
                acc += (double)dyp[oh * Q + ow] * xp[ih * W + iw];
              }
            }
          }
          float *o = &dwd[((k * Cg + c) * R + r) * S + s];
          *o = (float)(*o + acc);
        }
    if (dbd) {
      double acc = 0.0;
      for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < P * Q; i++) acc += dyd[(n * K + k) * P * Q + i];
      dbd[k] = (float)(dbd[k] + acc);
    }
  }
  return IM_OK;
}

/* The fused inference convolution, by definition: the convolution, then the activation in place. */
im_status_t im__ref_conv2d_forward_fused(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *w,
                                         im__ct *bias, im_act_t act, im__t *y) {
  im_status_t st = im__ref_conv2d_forward(b, p, x, w, bias, y);
  if (st == IM_OK && act == IM_ACT_RELU) st = im__ref_relu_forward(b, y, y);
  return st;
}

/* The convolution, plus residual, then the activation, element by element (y may be residual: each
 * element reads its own residual before it is written). */
im_status_t im__ref_conv2d_forward_fused_add(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *w,
                                             im__ct *bias, im__ct *residual, im_act_t act, im__t *y) {
  conv_forward(p, x, w, bias, residual, act == IM_ACT_RELU, y);
  return IM_OK;
}
