/* libFuzzer target for the image decoders: probe and decode arbitrary bytes
 * (JPEG, PNG, anything), then resize and flip whatever decodes. Each input is
 * tried twice: whole, with default options (so the seed files, plain images in
 * tests/fuzz/corpus/image_decode/, decode as they are), and without its first
 * byte, with options (channels, DCT-scaling minimums, pixel cap, resize mode)
 * taken from that byte.
 *
 *   mkdir -p /tmp/fz && ./fuzz_image_decode -runs=20000 /tmp/fz tests/fuzz/corpus/image_decode
 * (libFuzzer writes new inputs into the first directory: keep the seeds out of it.)
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "imops/core.h"
#include "imops/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one(const uint8_t *data, size_t size, const im_decode_opts_t *o, im_resize_mode_t mode) {
  im_image_info_t info;
  im_status_t pst = im_image_probe(data, size, &info);
  im_image_t img;
  im_status_t st = im_image_decode(data, size, o, &img);
  if (st != IM_OK) {
    if (img.data || img.w || img.h || img.c) abort(); /* a failed decode leaves the image empty */
    return;
  }
  if (pst != IM_OK || info.format == IM_FORMAT_UNKNOWN) abort(); /* decodable implies probeable */
  if (!img.data || img.w <= 0 || img.h <= 0 || (img.c != 1 && img.c != 3)) abort();
  if (img.w > info.w || img.h > info.h) abort();
  if (o->channels && img.c != o->channels) abort();
  if (!o->channels && img.c != info.channels) abort();
  if ((int64_t)info.w * info.h > o->max_pixels) abort();
  im_image_t small;
  if (im_image_resize(&img, 1 + img.w / 3, 1 + img.h / 2, mode, &small) == IM_OK) {
    im_image_flip_h(&small);
    im_image_free(&small);
  }
  im_image_free(&img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* A modest pixel cap keeps each run fast: headers may claim anything. */
  im_decode_opts_t o = {0, 0, 0, (int64_t)1 << 22};
  one(data, size, &o, IM_RESIZE_BILINEAR);
  if (size < 1) return 0;

  static const int channels[4] = {0, 1, 3, 0};
  static const int mins[4] = {0, 1, 8, 112};
  const uint8_t sel = data[0];
  o.channels = channels[sel & 3];
  o.min_w = mins[(sel >> 2) & 3];
  o.min_h = mins[(sel >> 4) & 3];
  o.max_pixels = (sel & 0x40) ? 4096 : (int64_t)1 << 22;
  one(data + 1, size - 1, &o, (sel & 0x80) ? IM_RESIZE_AREA : IM_RESIZE_BILINEAR);
  return 0;
}
