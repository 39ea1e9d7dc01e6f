/* Images in memory: decode (JPEG through libjpeg-turbo, PNG through libpng),
 * encode, resize, flip, crop. Pixels are interleaved uint8, rows packed
 * (stride = w * c), c = 1 (grey) or 3 (RGB).
 *
 *   im_image_t img = {0};
 *   im_decode_opts_t o = IM_DECODE_OPTS_DEFAULT;
 *   o.channels = 3; o.min_w = o.min_h = 112;    // lets JPEG scale in the DCT
 *   if (im_image_decode(bytes, len, &o, &img) == IM_OK) { ...; im_image_free(&img); }
 */
#ifndef IMOPS_IMAGE_H
#define IMOPS_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "imops/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int w, h, c;      /* width, height, channels (1 or 3) */
  uint8_t *data;    /* h * w * c bytes, owned (im_image_free) */
} im_image_t;

typedef enum { IM_FORMAT_UNKNOWN = 0, IM_FORMAT_JPEG, IM_FORMAT_PNG } im_image_format_t;

/** Default cap on decoded pixels (w*h): 64 megapixels. */
#define IM_IMAGE_MAX_PIXELS_DEFAULT (64LL * 1024 * 1024)

typedef struct {
  int channels;        /* 0: as stored (grey stays grey, colour becomes RGB), 1: grey, 3: RGB */
  int min_w, min_h;    /* 0: full size. Otherwise JPEG may be decoded at a DCT scale
                          (1/2, 1/4, 1/8) as long as the result stays >= min_w x min_h */
  int64_t max_pixels;  /* header dimensions beyond this are IM_ERR_LIMIT; 0: default */
} im_decode_opts_t;

#define IM_DECODE_OPTS_DEFAULT {0, 0, 0, 0}

typedef struct {
  im_image_format_t format;
  int w, h;
  int channels;        /* as stored: 1 for grey (and grey+alpha), 3 for colour */
} im_image_info_t;

/** Sniffs the format from the first bytes (magic numbers), not the file name. */
im_image_format_t im_image_sniff(const uint8_t *data, size_t len);

/** Reads dimensions and channels from the header without decoding pixels. */
im_status_t im_image_probe(const uint8_t *data, size_t len, im_image_info_t *info);

/** Decodes JPEG or PNG (8/16-bit, grey, palette, alpha; alpha is dropped,
 * 16-bit is reduced to 8) into *out. Truncated or corrupt data is
 * IM_ERR_FORMAT (JPEG decoder warnings count as errors; JPEG has no checksum,
 * so damage that keeps the code structure intact still decodes); a header over
 * the pixel cap or wider/taller than 65535 is IM_ERR_LIMIT, found before any
 * pixel memory is allocated. On failure *out is left empty. */
im_status_t im_image_decode(const uint8_t *data, size_t len, const im_decode_opts_t *opts, im_image_t *out);

/** Reads and decodes a file (max file size 256 MiB). */
im_status_t im_image_load(const char *path, const im_decode_opts_t *opts, im_image_t *out);

/** Encodes to a new buffer (free with im_free). quality 1..100. */
im_status_t im_image_encode_jpeg(const im_image_t *img, int quality, uint8_t **out, size_t *len);
im_status_t im_image_encode_png(const im_image_t *img, uint8_t **out, size_t *len);

/** Writes the image atomically; format from the extension (.jpg/.jpeg/.png). */
im_status_t im_image_save(const char *path, const im_image_t *img, int jpeg_quality);

typedef enum {
  IM_RESIZE_BILINEAR = 0, /* bilinear; antialiased (kernel widened) when downscaling, as PIL does */
  IM_RESIZE_AREA = 1      /* box filter over the source area (PIL BOX / OpenCV INTER_AREA) */
} im_resize_mode_t;

/** Resizes src to w x h into *dst (new buffer, same channels). */
im_status_t im_image_resize(const im_image_t *src, int w, int h, im_resize_mode_t mode, im_image_t *dst);

/** Resizes into a caller buffer of h*w*src->c bytes (no allocation of the result). */
im_status_t im_image_resize_into(const im_image_t *src, int w, int h, im_resize_mode_t mode, uint8_t *dst);

/** The plain reference version of im_image_resize (slow, straightforward
 * loops); the tests compare the fast path with it. */
im_status_t im_image_resize_ref(const im_image_t *src, int w, int h, im_resize_mode_t mode, im_image_t *dst);

/** Converts channels (1 <-> 3) into *dst. Grey from RGB uses ITU-R 601 luma
 * with PIL's convert("L") integer arithmetic:
 * L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16. */
im_status_t im_image_convert(const im_image_t *src, int channels, im_image_t *dst);

/** Mirrors left-right in place. */
void im_image_flip_h(im_image_t *img);

/** Copies the w x h rectangle at (x, y) into *dst; it must lie inside src. */
im_status_t im_image_crop(const im_image_t *src, int x, int y, int w, int h, im_image_t *dst);

/** Allocates a zeroed w x h x c image (w, h in 1..65535, c in 1..4). */
im_status_t im_image_alloc(im_image_t *img, int w, int h, int c);

/** Frees the pixels and zeroes the struct; safe on a zeroed struct. */
void im_image_free(im_image_t *img);

#ifdef __cplusplus
}
#endif
#endif
