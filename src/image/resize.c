/* Separable resampling compatible with Pillow's Image.resize (BILINEAR and BOX):
 * per-call coefficient tables in 22-bit fixed point, a horizontal pass into a
 * uint8 intermediate over only the rows the vertical pass needs, then a
 * vertical pass that accumulates whole rows (contiguous, vectorisable). The
 * arithmetic (window bounds, rounding, clipping) follows Pillow's so results
 * match it exactly; resize_ref.c holds the plain version the tests compare with. */
#include <math.h>
#include <string.h>

#include "image/image_internal.h"
#include "imops/core.h"

#define PREC 22 /* Pillow's PRECISION_BITS for 8-bit images: 32 - 8 - 2 */

typedef struct {
  double (*fn)(double);
  double support;
} filter_t;

static double box_fn(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }

static double triangle_fn(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

static const filter_t FILTERS[2] = {{triangle_fn, 1.0}, {box_fn, 0.5}};

typedef struct {
  int ksize;       /* coefficients per output position (row stride of k) */
  int *bounds;     /* per output position: first input index, tap count */
  int32_t *k;      /* out * ksize fixed-point weights */
} coefs_t;

static void coefs_free(coefs_t *c) {
  im_free(c->bounds);
  im_free(c->k);
  memset(c, 0, sizeof *c);
}

static im_status_t coefs_make(int in_size, int out_size, const filter_t *f, coefs_t *c) {
  memset(c, 0, sizeof *c);
  double scale = (double)in_size / out_size;
  double fscale = scale < 1.0 ? 1.0 : scale;
  double support = f->support * fscale;
  int ksize = (int)ceil(support) * 2 + 1;
  double *w = im_malloc(sizeof(double) * (size_t)ksize);
  c->bounds = im_malloc(sizeof(int) * 2 * (size_t)out_size);
  c->k = im_malloc(sizeof(int32_t) * (size_t)ksize * (size_t)out_size);
  if (!w || !c->bounds || !c->k) {
    im_free(w);
    coefs_free(c);
    return im_error(IM_ERR_NOMEM, "resize: out of memory for coefficients");
  }
  c->ksize = ksize;
  const double ss = 1.0 / fscale;
  for (int xx = 0; xx < out_size; xx++) {
    double center = (xx + 0.5) * scale;
    int xmin = (int)(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = (int)(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    int n = xmax - xmin;
    if (n > ksize) n = ksize;
    if (n < 0) n = 0;
    double ww = 0.0;
    for (int x = 0; x < n; x++) {
      w[x] = f->fn((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    int32_t *k = c->k + (size_t)xx * ksize;
    for (int x = 0; x < n; x++) {
      double v = ww != 0.0 ? w[x] / ww : w[x];
      k[x] = (int32_t)(v < 0 ? -0.5 + v * (1 << PREC) : 0.5 + v * (1 << PREC));
    }
    for (int x = n; x < ksize; x++) k[x] = 0;
    c->bounds[2 * xx] = xmin;
    c->bounds[2 * xx + 1] = n;
  }
  im_free(w);
  return IM_OK;
}

static inline uint8_t clip8(int32_t v) {
  if (v <= 0) return 0;
  v >>= PREC;
  return (uint8_t)(v > 255 ? 255 : v);
}

/* Vertical pass over rows of rowlen bytes: each output row is a weighted sum of
 * whole input rows, accumulated in acc (rowlen int32). y_off is subtracted from
 * the input row indices (the intermediate starts at that source row). */
IM_IMAGE__CLONES
static void vpass(const uint8_t *src, size_t rowlen, int y_off, uint8_t *dst, int dh, const coefs_t *co, int32_t *acc) {
  const int32_t half = 1 << (PREC - 1);
  for (int yy = 0; yy < dh; yy++) {
    const int32_t *k = co->k + (size_t)yy * co->ksize;
    const int ymin = co->bounds[2 * yy] - y_off, n = co->bounds[2 * yy + 1];
    uint8_t *o = dst + (size_t)yy * rowlen;
    int t = 0;
    if (n >= 2) {
      const uint8_t *r0 = src + (size_t)ymin * rowlen, *r1 = r0 + rowlen;
      const int32_t w0 = k[0], w1 = k[1];
      for (size_t i = 0; i < rowlen; i++) acc[i] = half + r0[i] * w0 + r1[i] * w1;
      t = 2;
    } else {
      for (size_t i = 0; i < rowlen; i++) acc[i] = half;
    }
    for (; t + 1 < n; t += 2) {
      const uint8_t *r0 = src + (size_t)(ymin + t) * rowlen, *r1 = r0 + rowlen;
      const int32_t w0 = k[t], w1 = k[t + 1];
      for (size_t i = 0; i < rowlen; i++) acc[i] += r0[i] * w0 + r1[i] * w1;
    }
    if (t < n) {
      const uint8_t *r0 = src + (size_t)(ymin + t) * rowlen;
      const int32_t w0 = k[t];
      for (size_t i = 0; i < rowlen; i++) acc[i] += r0[i] * w0;
    }
    for (size_t i = 0; i < rowlen; i++) o[i] = clip8(acc[i]);
  }
}

/* dst (w rows of h pixels) = src (h rows of w pixels) transposed; c bytes a
 * pixel. Blocked so that both sides stay in cache. */
static void transpose(const uint8_t *src, int w, int h, int c, uint8_t *dst) {
  enum { B = 16 };
  for (int y0 = 0; y0 < h; y0 += B)
    for (int x0 = 0; x0 < w; x0 += B) {
      const int y1 = y0 + B < h ? y0 + B : h, x1 = x0 + B < w ? x0 + B : w;
      if (c == 3) {
        /* Down each column of dst in turn, a pixel as one 4-byte load and store
         * (not 3 + 3 byte moves): the extra byte written is the first of the
         * next pixel of dst, written after it (later in this run, or in the next
         * block of rows, which comes later). The last row (y = h - 1) moves 3
         * bytes, so nothing is read or written past either buffer. */
        const size_t sstride = (size_t)w * 3;
        for (int x = x0; x < x1; x++) {
          const uint8_t *p = src + ((size_t)y0 * w + x) * 3;
          uint8_t *q = dst + ((size_t)x * h + y0) * 3;
          int y = y0;
          for (; y < y1 && y < h - 1; y++, p += sstride, q += 3) {
            uint32_t v;
            memcpy(&v, p, 4);
            memcpy(q, &v, 4);
          }
          for (; y < y1; y++, p += sstride, q += 3) q[0] = p[0], q[1] = p[1], q[2] = p[2];
        }
      } else if (c == 1) { /* (a memcpy of one byte per pixel cost more than the resampling) */
        for (int y = y0; y < y1; y++)
          for (int x = x0; x < x1; x++) dst[(size_t)x * h + y] = src[(size_t)y * w + x];
      } else {
        for (int y = y0; y < y1; y++)
          for (int x = x0; x < x1; x++) memcpy(dst + ((size_t)x * h + y) * c, src + ((size_t)y * w + x) * c, (size_t)c);
      }
    }
}

/* The horizontal pass done as a vertical one on the transposed image, so its
 * inner loops run over contiguous memory (vectorised) instead of gathering a
 * few taps per output pixel. Same integer arithmetic as hpass, so the same
 * bytes: rows rows of src from y0 -> dst (rows x dw). */
static im_status_t hpass_t(const uint8_t *src, int sw, int c, int y0, int rows, uint8_t *dst, int dw, const coefs_t *co) {
  const size_t col = (size_t)rows * c;
  uint8_t *t = im_malloc((size_t)sw * col + (size_t)dw * col);
  int32_t *acc = im_malloc(sizeof(int32_t) * col);
  if (!t || !acc) {
    im_free(t);
    im_free(acc);
    return im_error(IM_ERR_NOMEM, "resize: out of memory");
  }
  uint8_t *u = t + (size_t)sw * col;
  transpose(src + (size_t)y0 * sw * c, sw, rows, c, t); /* sw rows of `rows` pixels */
  vpass(t, col, 0, u, dw, co, acc);                     /* dw rows of `rows` pixels */
  transpose(u, rows, dw, c, dst);                       /* rows rows of dw pixels */
  im_free(t);
  im_free(acc);
  return IM_OK;
}

static im_status_t check_args(const im_image_t *src, int w, int h, im_resize_mode_t mode) {
  if (!src || !src->data || src->w <= 0 || src->h <= 0 || src->c < 1 || src->c > 4 || src->w > IM_IMAGE__MAX_DIM ||
      src->h > IM_IMAGE__MAX_DIM)
    return im_error(IM_ERR_ARG, "resize: invalid source image");
  if (w <= 0 || h <= 0 || w > IM_IMAGE__MAX_DIM || h > IM_IMAGE__MAX_DIM)
    return im_error(IM_ERR_ARG, "resize: invalid target size %dx%d", w, h);
  if (mode != IM_RESIZE_BILINEAR && mode != IM_RESIZE_AREA) return im_error(IM_ERR_ARG, "resize: unknown mode %d", (int)mode);
  return IM_OK;
}

im_status_t im_image_resize_into(const im_image_t *src, int w, int h, im_resize_mode_t mode, uint8_t *dst) {
  im_status_t st = check_args(src, w, h, mode);
  if (st != IM_OK) return st;
  if (!dst) return im_error(IM_ERR_ARG, "resize: NULL destination");
  const int sw = src->w, sh = src->h, c = src->c;
  if (w == sw && h == sh) {
    memcpy(dst, src->data, (size_t)w * h * c);
    return IM_OK;
  }
  const filter_t *f = &FILTERS[mode];
  coefs_t ch = {0, NULL, NULL}, cv = {0, NULL, NULL};
  uint8_t *tmp = NULL;
  int32_t *acc = NULL;
  if (w != sw && (st = coefs_make(sw, w, f, &ch)) != IM_OK) goto done;
  if (h != sh && (st = coefs_make(sh, h, f, &cv)) != IM_OK) goto done;
  const size_t rowlen = (size_t)w * c;
  if (h != sh) {
    acc = im_malloc(sizeof(int32_t) * rowlen);
    if (!acc) {
      st = im_error(IM_ERR_NOMEM, "resize: out of memory");
      goto done;
    }
  }
  if (w != sw && h != sh) {
    /* Only the source rows some output row reads. */
    const int y0 = cv.bounds[0];
    const int y1 = cv.bounds[2 * (h - 1)] + cv.bounds[2 * (h - 1) + 1];
    tmp = im_malloc(rowlen * (size_t)(y1 - y0));
    if (!tmp) {
      st = im_error(IM_ERR_NOMEM, "resize: out of memory for the intermediate image");
      goto done;
    }
    if ((st = hpass_t(src->data, sw, c, y0, y1 - y0, tmp, w, &ch)) != IM_OK) goto done;
    vpass(tmp, rowlen, y0, dst, h, &cv, acc);
  } else if (w != sw) {
    st = hpass_t(src->data, sw, c, 0, sh, dst, w, &ch);
  } else {
    vpass(src->data, rowlen, 0, dst, h, &cv, acc);
  }
done:
  im_free(tmp);
  im_free(acc);
  coefs_free(&ch);
  coefs_free(&cv);
  return st;
}

im_status_t im_image_resize(const im_image_t *src, int w, int h, im_resize_mode_t mode, im_image_t *dst) {
  if (!dst) return im_error(IM_ERR_ARG, "resize: NULL destination");
  im_status_t st = check_args(src, w, h, mode);
  if (st != IM_OK) return st;
  const int c = src->c;
  uint8_t *p = im_malloc((size_t)w * h * c);
  if (!p) return im_error(IM_ERR_NOMEM, "resize: out of memory for %dx%dx%d", w, h, c);
  st = im_image_resize_into(src, w, h, mode, p);
  if (st != IM_OK) {
    im_free(p);
    return st;
  }
  if (dst == src) im_free(dst->data);
  dst->w = w;
  dst->h = h;
  dst->c = c;
  dst->data = p;
  return IM_OK;
}
