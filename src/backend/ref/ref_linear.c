/* Reference fully connected layer, torch's layout: y = x W^T + b with
 * W [out, in]. Naive triple loops with double accumulation. */
#include "backend/ref/ref.h"

/* x is (M, in) (any leading dims), w is (out, in), bias (out) or NULL; y is (M, out), assigned.
 * y[m,o] = bias[o] + sum_i x[m,i] w[o,i]. */
im_status_t im__ref_linear_forward(im_backend_t *b, im__ct *x, im__ct *w, im__ct *bias, im__t *y) {
  const int64_t O = w->shape[0], I = w->shape[1], M = im_tensor_numel(x) / (I ? I : 1);
  const float *xd = x->data, *wd = w->data, *bd = bias ? bias->data : NULL;
  float *yd = y->data;
  for (int64_t m = 0; m < M; m++)
    for (int64_t o = 0; o < O; o++) {
      double acc = bd ? bd[o] : 0.0;
      for (int64_t i = 0; i < I; i++) acc += (double)xd[m * I + i] * wd[o * I + i];
      yd[m * O + o] = (float)acc;
    }
  return IM_OK;
}

/* dy is (M, out), w is (out, in); dx is (M, in), assigned: dx[m,i] = sum_o dy[m,o] w[o,i]. */
im_status_t im__ref_linear_backward_data(im_backend_t *b, im__ct *dy, im__ct *w, im__t *dx) {
  const int64_t O = w->shape[0], I = w->shape[1], M = im_tensor_numel(dx) / (I ? I : 1);
  const float *dyd = dy->data, *wd = w->data;
  float *dxd = dx->data;
  for (int64_t m = 0; m < M; m++)
    for (int64_t i = 0; i < I; i++) {
      double acc = 0.0;
      for (int64_t o = 0; o < O; o++) acc += (double)dyd[m * O + o] * wd[o * I + i];
      dxd[m * I + i] = (float)acc;
    }
  return IM_OK;
}

/* x is (M, in), dy is (M, out); dw is (out, in), accumulated (+=): dw[o,i] += sum_m dy[m,o] x[m,i];
 * dbias (out) or NULL, accumulated (+=): dbias[o] += sum_m dy[m,o]. */
im_status_t im__ref_linear_backward_weight(im_backend_t *b, im__ct *x, im__ct *dy, im__t *dw, im__t *dbias) {
  const int64_t O = dw->shape[0], I = dw->shape[1], M = im_tensor_numel(dy) / (O ? O : 1);
  const float *xd = x->data, *dyd = dy->data;
  float *dwd = dw->data, *dbd = dbias ? dbias->data : NULL;
  for (int64_t o = 0; o < O; o++) {
    for (int64_t i = 0; i < I; i++) {
      double acc = 0.0;
      for (int64_t m = 0; m < M; m++) acc += (double)dyd[m * O + o] * xd[m * I + i];
      dwd[o * I + i] = (float)(dwd[o * I + i] + acc);
    }
    if (dbd) {
      double acc = 0.0;
      for (int64_t m = 0; m < M; m++) acc += dyd[m * O + o];
      dbd[o] = (float)(dbd[o] + acc);
    }
  }
  return IM_OK;
}
