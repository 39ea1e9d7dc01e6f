/* The plain reference for resize.c: the same Pillow-compatible resampling
 * written as directly as possible (weights recomputed for every output sample,
 * one pixel and one channel at a time, every source row through the horizontal
 * pass). Slow; the tests compare the fast path against it. */
#include <math.h>
#include <string.h>

#include "image/image_internal.h"
#include "imops/core.h"

static double ref_filter(im_resize_mode_t mode, double x) {
  if (mode == IM_RESIZE_AREA) return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
  x = fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

/* The source window and 22-bit weights for output position i (Pillow's
 * precompute_coeffs for one position). Returns the tap count; k holds
 * up to kcap weights. */
static int ref_window(im_resize_mode_t mode, int in_size, int out_size, int i, int *first, int32_t *k, int kcap) {
  double scale = (double)in_size / out_size;
  double fscale = scale < 1.0 ? 1.0 : scale;
  double support = (mode == IM_RESIZE_AREA ? 0.5 : 1.0) * fscale;
  double center = (i + 0.5) * scale;
  int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
  if (lo < 0) lo = 0;
  if (hi > in_size) hi = in_size;
  int n = hi - lo;
  if (n > kcap) n = kcap;
  double sum = 0.0;
  for (int x = 0; x < n; x++) sum += ref_filter(mode, (x + lo - center + 0.5) / fscale);
  for (int x = 0; x < n; x++) {
    double v = ref_filter(mode, (x + lo - center + 0.5) / fscale);
    if (sum != 0.0) v /= sum;
    k[x] = (int32_t)lround(v * (1 << 22));
  }
  *first = lo;
  return n;
}

static uint8_t ref_clip(int64_t v) {
  if (v < 0) return 0;
  v >>= 22;
  return (uint8_t)(v > 255 ? 255 : v);
}

im_status_t im_image_resize_ref(const im_image_t *src, int w, int h, im_resize_mode_t mode, im_image_t *dst) {
  if (!dst) return im_error(IM_ERR_ARG, "resize_ref: NULL destination");
  if (!src || !src->data || src->w <= 0 || src->h <= 0 || src->c < 1 || src->c > 4 || w <= 0 || h <= 0 ||
      w > IM_IMAGE__MAX_DIM || h > IM_IMAGE__MAX_DIM || (mode != IM_RESIZE_BILINEAR && mode != IM_RESIZE_AREA))
    return im_error(IM_ERR_ARG, "resize_ref: invalid arguments");
  const int sw = src->w, sh = src->h, c = src->c;
  const int kcap = 2 * (int)ceil((double)(sw > sh ? sw : sh)) + 3;
  int32_t *k = im_malloc(sizeof(int32_t) * (size_t)kcap);
  uint8_t *mid = im_malloc((size_t)w * sh * c);
  uint8_t *out = im_malloc((size_t)w * h * c);
  if (!k || !mid || !out) {
    im_free(k);
    im_free(mid);
    im_free(out);
    return im_error(IM_ERR_NOMEM, "resize_ref: out of memory");
  }
  /* Horizontal (skipped when the width does not change, as Pillow does). */
  for (int y = 0; y < sh; y++)
    for (int x = 0; x < w; x++) {
      int first = x, n = 1;
      if (w != sw) n = ref_window(mode, sw, w, x, &first, k, kcap);
      else k[0] = 1 << 22;
      for (int ch = 0; ch < c; ch++) {
        int64_t s = 1 << 21;
        for (int t = 0; t < n; t++) s += (int64_t)src->data[((size_t)y * sw + first + t) * c + ch] * k[t];
        mid[((size_t)y * w + x) * c + ch] = ref_clip(s);
      }
    }
  /* Vertical. */
  for (int y = 0; y < h; y++) {
    int first = y, n = 1;
    if (h != sh) n = ref_window(mode, sh, h, y, &first, k, kcap);
    else k[0] = 1 << 22;
    for (int x = 0; x < w; x++)
      for (int ch = 0; ch < c; ch++) {
        int64_t s = 1 << 21;
        for (int t = 0; t < n; t++) s += (int64_t)mid[((size_t)(first + t) * w + x) * c + ch] * k[t];
        out[((size_t)y * w + x) * c + ch] = ref_clip(s);
      }
  }
  im_free(k);
  im_free(mid);
  if (dst == src) im_free(dst->data);
  dst->w = w;
  dst->h = h;
  dst->c = c;
  dst->data = out;
  return IM_OK;
}
