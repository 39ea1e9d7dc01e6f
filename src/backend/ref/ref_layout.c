/* Reference layout changes between NCHW and NHWC (channels-last), for
 * blocks that normalize over channels (ConvNeXt's layer norm). Any dtype. */
#include <string.h>

#include "backend/ref/ref.h"

/* x is (N, C, H, W); y is (N, H, W, C), assigned: y[n,h,w,c] = x[n,c,h,w]. */
im_status_t im__ref_nchw_to_nhwc(im_backend_t *b, im__ct *x, im__t *y) {
  const int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
  const size_t es = im_dtype_size(x->dtype);
  const unsigned char *xd = x->data;
  unsigned char *yd = y->data;
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t i = 0; i < HW; i++) memcpy(yd + ((n * HW + i) * C + c) * es, xd + ((n * C + c) * HW + i) * es, es);
  return IM_OK;
}

/* x is (N, H, W, C); y is (N, C, H, W), assigned: y[n,c,h,w] = x[n,h,w,c]. */
im_status_t im__ref_nhwc_to_nchw(im_backend_t *b, im__ct *x, im__t *y) {
  const int64_t N = x->shape[0], HW = x->shape[1] * x->shape[2], C = x->shape[3];
  const size_t es = im_dtype_size(x->dtype);
  const unsigned char *xd = x->data;
  unsigned char *yd = y->data;
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t i = 0; i < HW; i++) memcpy(yd + ((n * C + c) * HW + i) * es, xd + ((n * HW + i) * C + c) * es, es);
  return IM_OK;
}
