/* Private glue between the image module's files: the per-codec entry points
 * that codec.c dispatches to, and the pixel-format helpers they share. Not
 * installed; only src/image/ includes it. */
#ifndef IMOPS_IMAGE_INTERNAL_H
#define IMOPS_IMAGE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "imops/image.h"

/* Largest width or height accepted anywhere in the module (JPEG's own limit is
 * 65535; PNG allows more, we do not). */
#define IM_IMAGE__MAX_DIM 65535

/* Hot loops get an AVX2 clone chosen at load time (GCC on x86-64); the default
 * clone runs everywhere else. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define IM_IMAGE__CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define IM_IMAGE__CLONES
#endif

/* opts->max_pixels with 0 meaning the default. */
int64_t im_image__max_pixels(const im_decode_opts_t *opts);

/* Checks header dimensions against the module limits and the pixel cap:
 * IM_ERR_FORMAT for w or h <= 0, IM_ERR_LIMIT beyond IM_IMAGE__MAX_DIM or the cap.
 * `what` names the format in the message ("png", "jpeg"). */
im_status_t im_image__check_dims(const char *what, int64_t w, int64_t h, const im_decode_opts_t *opts);

/* RGB -> grey with PIL's convert("L") arithmetic; dst may equal src. */
void im_image__rgb_to_grey(const uint8_t *src, uint8_t *dst, size_t npix);
/* Grey -> RGB by replication; dst may equal src (the buffer must then hold 3*npix bytes). */
void im_image__grey_to_rgb(const uint8_t *src, uint8_t *dst, size_t npix);

/* Turns a decoded buffer of npix pixels with c channels (1 or 3) into the
 * channel count asked for (0: keep), shrinking or growing *data with
 * im_realloc. On failure *data is still owned by the caller. */
im_status_t im_image__fix_channels(uint8_t **data, size_t npix, int *c, int want);

/* Per-codec entry points (codec_jpeg.c, codec_png.c). On failure *out is left
 * zeroed and the error message is set. */
im_status_t im_image__jpeg_probe(const uint8_t *data, size_t len, im_image_info_t *info);
im_status_t im_image__jpeg_decode(const uint8_t *data, size_t len, const im_decode_opts_t *opts, im_image_t *out);
im_status_t im_image__png_probe(const uint8_t *data, size_t len, im_image_info_t *info);
im_status_t im_image__png_decode(const uint8_t *data, size_t len, const im_decode_opts_t *opts, im_image_t *out);

#endif
