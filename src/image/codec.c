/* Format-independent entry points: sniff the format from magic bytes, then
 * probe or decode with the matching codec; load from and save to files. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "image/image_internal.h"
#include "imops/core.h"

#define IM_IMAGE_MAX_FILE_BYTES ((size_t)256 << 20)

static const uint8_t PNG_MAGIC[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};

im_image_format_t im_image_sniff(const uint8_t *data, size_t len) {
  if (!data) return IM_FORMAT_UNKNOWN;
  if (len >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return IM_FORMAT_JPEG;
  if (len >= 8 && memcmp(data, PNG_MAGIC, 8) == 0) return IM_FORMAT_PNG;
  return IM_FORMAT_UNKNOWN;
}

im_status_t im_image_probe(const uint8_t *data, size_t len, im_image_info_t *info) {
  if (!info) return im_error(IM_ERR_ARG, "image probe: NULL info");
  memset(info, 0, sizeof *info);
  if (!data && len) return im_error(IM_ERR_ARG, "image probe: NULL data");
  im_image_info_t tmp;
  memset(&tmp, 0, sizeof tmp);
  im_status_t st;
  switch (im_image_sniff(data, len)) {
  case IM_FORMAT_JPEG: st = im_image__jpeg_probe(data, len, &tmp); break;
  case IM_FORMAT_PNG: st = im_image__png_probe(data, len, &tmp); break;
  default:
    return len == 0 ? im_error(IM_ERR_FORMAT, "image: empty input")
                    : im_error(IM_ERR_FORMAT, "image: not a JPEG or PNG (%zu bytes, unknown magic)", len);
  }
  if (st == IM_OK) *info = tmp;
  return st;
}

im_status_t im_image_decode(const uint8_t *data, size_t len, const im_decode_opts_t *opts, im_image_t *out) {
  if (!out) return im_error(IM_ERR_ARG, "image decode: NULL output");
  memset(out, 0, sizeof *out);
  if (!data && len) return im_error(IM_ERR_ARG, "image decode: NULL data");
  if (opts && opts->channels != 0 && opts->channels != 1 && opts->channels != 3)
    return im_error(IM_ERR_ARG, "image decode: channels must be 0, 1 or 3, not %d", opts->channels);
  if (opts && (opts->min_w < 0 || opts->min_h < 0 || opts->max_pixels < 0))
    return im_error(IM_ERR_ARG, "image decode: negative min_w, min_h or max_pixels");
  im_image_t tmp;
  memset(&tmp, 0, sizeof tmp);
  im_status_t st;
  switch (im_image_sniff(data, len)) {
  case IM_FORMAT_JPEG: st = im_image__jpeg_decode(data, len, opts, &tmp); break;
  case IM_FORMAT_PNG: st = im_image__png_decode(data, len, opts, &tmp); break;
  default:
    return len == 0 ? im_error(IM_ERR_FORMAT, "image: empty input")
                    : im_error(IM_ERR_FORMAT, "image: not a JPEG or PNG (%zu bytes, unknown magic)", len);
  }
  if (st == IM_OK) *out = tmp;
  return st;
}

/* Re-raises the current error with the path in front, unless it names it already. */
static im_status_t with_path(im_status_t st, const char *path) {
  if (strstr(im_last_error(), path)) return st;
  char msg[512];
  snprintf(msg, sizeof msg, "%s", im_last_error());
  return im_error(st, "%s: %s", path, msg);
}

im_status_t im_image_load(const char *path, const im_decode_opts_t *opts, im_image_t *out) {
  if (!out) return im_error(IM_ERR_ARG, "image load: NULL output");
  memset(out, 0, sizeof *out);
  if (!path) return im_error(IM_ERR_ARG, "image load: NULL path");
  uint8_t *data = NULL;
  size_t len = 0;
  im_status_t st = im_file_read(path, IM_IMAGE_MAX_FILE_BYTES, &data, &len);
  if (st != IM_OK) return with_path(st, path);
  st = im_image_decode(data, len, opts, out);
  im_free(data);
  return st == IM_OK ? IM_OK : with_path(st, path);
}

/* Format from the file name's extension, case-insensitively. */
static im_image_format_t format_from_path(const char *path) {
  const char *dot = strrchr(path, '.');
  const char *slash = strrchr(path, '/');
  if (!dot || (slash && dot < slash)) return IM_FORMAT_UNKNOWN;
  if (strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0) return IM_FORMAT_JPEG;
  if (strcasecmp(dot, ".png") == 0) return IM_FORMAT_PNG;
  return IM_FORMAT_UNKNOWN;
}

im_status_t im_image_save(const char *path, const im_image_t *img, int jpeg_quality) {
  if (!path) return im_error(IM_ERR_ARG, "image save: NULL path");
  im_image_format_t fmt = format_from_path(path);
  if (fmt == IM_FORMAT_UNKNOWN)
    return im_error(IM_ERR_ARG, "%s: unknown image extension (use .jpg, .jpeg or .png)", path);
  uint8_t *buf = NULL;
  size_t len = 0;
  im_status_t st = fmt == IM_FORMAT_JPEG ? im_image_encode_jpeg(img, jpeg_quality, &buf, &len)
                                         : im_image_encode_png(img, &buf, &len);
  if (st != IM_OK) return with_path(st, path);
  st = im_file_write_atomic(path, buf, len);
  im_free(buf);
  return st == IM_OK ? IM_OK : with_path(st, path);
}
