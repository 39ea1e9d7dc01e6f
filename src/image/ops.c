/* Images as plain pixel buffers: allocate, free, channel conversion (grey <->
 * RGB with PIL's arithmetic), horizontal flip, crop, and the dimension checks
 * the decoders share. */
#include <string.h>

#include "image/image_internal.h"
#include "imops/core.h"

static int valid_image(const im_image_t *img) {
  return img && img->data && img->w > 0 && img->h > 0 && img->c >= 1 && img->c <= 4 &&
         img->w <= IM_IMAGE__MAX_DIM && img->h <= IM_IMAGE__MAX_DIM;
}

int64_t im_image__max_pixels(const im_decode_opts_t *opts) {
  return (opts && opts->max_pixels > 0) ? opts->max_pixels : IM_IMAGE_MAX_PIXELS_DEFAULT;
}

im_status_t im_image__check_dims(const char *what, int64_t w, int64_t h, const im_decode_opts_t *opts) {
  if (w <= 0 || h <= 0) return im_error(IM_ERR_FORMAT, "%s: invalid dimensions %lldx%lld", what, (long long)w, (long long)h);
  if (w > IM_IMAGE__MAX_DIM || h > IM_IMAGE__MAX_DIM)
    return im_error(IM_ERR_LIMIT, "%s: dimensions %lldx%lld exceed the limit of %d per side", what, (long long)w,
                    (long long)h, IM_IMAGE__MAX_DIM);
  int64_t cap = im_image__max_pixels(opts);
  if (w * h > cap)
    return im_error(IM_ERR_LIMIT, "%s: %lldx%lld is %lld pixels, over the cap of %lld", what, (long long)w,
                    (long long)h, (long long)(w * h), (long long)cap);
  return IM_OK;
}

void im_image__rgb_to_grey(const uint8_t *src, uint8_t *dst, size_t npix) {
  /* PIL Convert.c L24: exact integer ITU-R 601-2 luma. Forward order keeps
   * dst == src safe (dst[i] is written after src[3i..3i+2] is read). */
  for (size_t i = 0; i < npix; i++) {
    uint32_t r = src[3 * i], g = src[3 * i + 1], b = src[3 * i + 2];
    dst[i] = (uint8_t)((r * 19595u + g * 38470u + b * 7471u + 0x8000u) >> 16);
  }
}

void im_image__grey_to_rgb(const uint8_t *src, uint8_t *dst, size_t npix) {
  /* Backward order keeps dst == src safe. */
  for (size_t i = npix; i-- > 0;) {
    uint8_t v = src[i];
    dst[3 * i] = v;
    dst[3 * i + 1] = v;
    dst[3 * i + 2] = v;
  }
}

im_status_t im_image__fix_channels(uint8_t **data, size_t npix, int *c, int want) {
  if (want == 0 || want == *c) return IM_OK;
  if (*c == 3 && want == 1) {
    im_image__rgb_to_grey(*data, *data, npix);
    uint8_t *p = im_realloc(*data, npix);
    if (p) *data = p; /* a failed shrink leaves a larger, still valid buffer */
    *c = 1;
    return IM_OK;
  }
  if (*c == 1 && want == 3) {
    uint8_t *p = im_realloc(*data, npix * 3);
    if (!p) return im_error(IM_ERR_NOMEM, "image: out of memory converting grey to RGB");
    im_image__grey_to_rgb(p, p, npix);
    *data = p;
    *c = 3;
    return IM_OK;
  }
  return im_error(IM_ERR_ARG, "image: cannot convert %d channels to %d", *c, want);
}

im_status_t im_image_alloc(im_image_t *img, int w, int h, int c) {
  if (!img) return im_error(IM_ERR_ARG, "image alloc: NULL image");
  memset(img, 0, sizeof *img);
  if (w <= 0 || h <= 0 || w > IM_IMAGE__MAX_DIM || h > IM_IMAGE__MAX_DIM || c < 1 || c > 4)
    return im_error(IM_ERR_ARG, "image alloc: invalid size %dx%dx%d", w, h, c);
  uint8_t *p = im_calloc((size_t)w * (size_t)h, (size_t)c);
  if (!p) return im_error(IM_ERR_NOMEM, "image alloc: out of memory for %dx%dx%d", w, h, c);
  img->w = w;
  img->h = h;
  img->c = c;
  img->data = p;
  return IM_OK;
}

void im_image_free(im_image_t *img) {
  if (!img) return;
  im_free(img->data);
  memset(img, 0, sizeof *img);
}

im_status_t im_image_convert(const im_image_t *src, int channels, im_image_t *dst) {
  if (!dst) return im_error(IM_ERR_ARG, "image convert: NULL destination");
  if (!valid_image(src) || (src->c != 1 && src->c != 3))
    return im_error(IM_ERR_ARG, "image convert: invalid source image");
  if (channels != 1 && channels != 3) return im_error(IM_ERR_ARG, "image convert: channels must be 1 or 3, not %d", channels);
  int w = src->w, h = src->h, c = src->c;
  size_t npix = (size_t)w * (size_t)h;
  uint8_t *p = im_malloc(npix * (size_t)channels);
  if (!p) return im_error(IM_ERR_NOMEM, "image convert: out of memory for %dx%dx%d", w, h, channels);
  if (c == channels)
    memcpy(p, src->data, npix * (size_t)c);
  else if (c == 3)
    im_image__rgb_to_grey(src->data, p, npix);
  else
    im_image__grey_to_rgb(src->data, p, npix);
  if (dst == src) im_free(dst->data);
  dst->w = w;
  dst->h = h;
  dst->c = channels;
  dst->data = p;
  return IM_OK;
}

void im_image_flip_h(im_image_t *img) {
  if (!valid_image(img)) return;
  const int w = img->w, c = img->c;
  const size_t stride = (size_t)w * (size_t)c;
  for (int y = 0; y < img->h; y++) {
    uint8_t *row = img->data + (size_t)y * stride;
    uint8_t *l = row, *r = row + stride - (size_t)c;
    if (c == 3) {
      for (; l < r; l += 3, r -= 3) {
        uint8_t t0 = l[0], t1 = l[1], t2 = l[2];
        l[0] = r[0]; l[1] = r[1]; l[2] = r[2];
        r[0] = t0; r[1] = t1; r[2] = t2;
      }
    } else if (c == 1) {
      for (; l < r; l++, r--) {
        uint8_t t = *l;
        *l = *r;
        *r = t;
      }
    } else {
      for (; l < r; l += c, r -= c)
        for (int k = 0; k < c; k++) {
          uint8_t t = l[k];
          l[k] = r[k];
          r[k] = t;
        }
    }
  }
}

im_status_t im_image_crop(const im_image_t *src, int x, int y, int w, int h, im_image_t *dst) {
  if (!dst) return im_error(IM_ERR_ARG, "image crop: NULL destination");
  if (!valid_image(src)) return im_error(IM_ERR_ARG, "image crop: invalid source image");
  if (x < 0 || y < 0 || w <= 0 || h <= 0 || (int64_t)x + w > src->w || (int64_t)y + h > src->h)
    return im_error(IM_ERR_ARG, "image crop: rectangle %dx%d at (%d,%d) does not lie inside %dx%d", w, h, x, y, src->w,
                    src->h);
  const int c = src->c;
  const size_t sstride = (size_t)src->w * (size_t)c, dstride = (size_t)w * (size_t)c;
  uint8_t *p = im_malloc(dstride * (size_t)h);
  if (!p) return im_error(IM_ERR_NOMEM, "image crop: out of memory for %dx%dx%d", w, h, c);
  const uint8_t *s = src->data + (size_t)y * sstride + (size_t)x * (size_t)c;
  for (int r = 0; r < h; r++) memcpy(p + (size_t)r * dstride, s + (size_t)r * sstride, dstride);
  if (dst == src) im_free(dst->data);
  dst->w = w;
  dst->h = h;
  dst->c = c;
  dst->data = p;
  return IM_OK;
}
