/* Unit tests for the image module: JPEG/PNG round trips and variants, DCT
 * scaling, resize against Pillow's output and against the plain reference,
 * flip/crop/convert, and hostile input (truncated, corrupt, oversized headers,
 * failing allocations). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <png.h>
#include <turbojpeg.h>

#include "image_resize_ref.h"
#include "imops/core.h"
#include "imops/image.h"
#include "testutil.h"

/* ---- helpers ----------------------------------------------------------------- */

static int64_t g_live0;

static int setup(void **state) {
  (void)state;
  im_alloc_fail_after(0);
  g_live0 = im_alloc_live_bytes();
  return 0;
}

static int teardown(void **state) {
  (void)state;
  im_alloc_fail_after(0);
  int64_t live = im_alloc_live_bytes();
  if (live != g_live0) {
    fprintf(stderr, "leak: %lld bytes still allocated\n", (long long)(live - g_live0));
    return -1;
  }
  return 0;
}

static void assert_empty(const im_image_t *img) {
  assert_null(img->data);
  assert_int_equal(img->w, 0);
  assert_int_equal(img->h, 0);
  assert_int_equal(img->c, 0);
}

/* The pattern of tools/gen_resize_ref.py (keep the two identical). */
static uint8_t ref_pattern(int x, int y, int ch, int c) {
  if (c == 1) return (uint8_t)((x * 53 + y * y * 17 + (x * y) % 5 * 11) % 256);
  if (ch == 0) return (uint8_t)((x * 41 + y * 23 + (x * y) % 7 * 19) % 256);
  if (ch == 1) return (uint8_t)((x * x * 7 + y * 31 + 90) % 256);
  return (uint8_t)(((x ^ y) * 29 + y * y * 3) % 256);
}

static void make_ref_pattern(im_image_t *img, int w, int h, int c) {
  assert_int_equal(im_image_alloc(img, w, h, c), IM_OK);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int ch = 0; ch < c; ch++) img->data[((size_t)y * w + x) * c + ch] = ref_pattern(x, y, ch, c);
}

/* A smooth image that JPEG keeps well. */
static void make_smooth(im_image_t *img, int w, int h, int c) {
  assert_int_equal(im_image_alloc(img, w, h, c), IM_OK);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int ch = 0; ch < c; ch++) {
        double v = 128 + 90 * sin(x / (9.0 + 3 * ch)) * cos(y / (13.0 + 2 * ch)) + 20 * sin((x + y) / 31.0);
        img->data[((size_t)y * w + x) * c + ch] = (uint8_t)lround(v);
      }
}

static void make_random(im_image_t *img, int w, int h, int c, uint64_t seed) {
  assert_int_equal(im_image_alloc(img, w, h, c), IM_OK);
  im_rng_t r;
  im_rng_seed(&r, seed);
  for (size_t i = 0; i < (size_t)w * h * c; i++) img->data[i] = (uint8_t)im_rng_below(&r, 256);
}

static double mean_abs_diff(const im_image_t *a, const im_image_t *b) {
  assert_int_equal(a->w, b->w);
  assert_int_equal(a->h, b->h);
  assert_int_equal(a->c, b->c);
  size_t n = (size_t)a->w * a->h * a->c;
  double s = 0;
  for (size_t i = 0; i < n; i++) s += abs((int)a->data[i] - (int)b->data[i]);
  return s / (double)n;
}

static int max_abs_diff(const uint8_t *a, const uint8_t *b, size_t n) {
  int m = 0;
  for (size_t i = 0; i < n; i++) {
    int d = abs((int)a[i] - (int)b[i]);
    if (d > m) m = d;
  }
  return m;
}

static void encode_jpeg(const im_image_t *img, int q, uint8_t **buf, size_t *len) {
  assert_int_equal(im_image_encode_jpeg(img, q, buf, len), IM_OK);
  assert_non_null(*buf);
  assert_true(*len > 100);
}

/* Writes a PNG with libpng directly (rows: h * rowbytes raw PNG samples). */
typedef struct {
  uint8_t *data;
  size_t len, cap;
} membuf_t;

static void mb_write(png_structp png, png_bytep d, size_t n) {
  membuf_t *m = png_get_io_ptr(png);
  if (m->len + n > m->cap) {
    m->cap = (m->len + n) * 2 + 256;
    m->data = realloc(m->data, m->cap);
    if (!m->data) abort();
  }
  memcpy(m->data + m->len, d, n);
  m->len += n;
}

static void mb_flush(png_structp png) { (void)png; }

static uint8_t *make_png(int w, int h, int bd, int ct, int interlace, const uint8_t *rows, size_t rowbytes,
                         const png_color *pal, int npal, const png_byte *trns, int ntrns, size_t *len) {
  membuf_t m = {NULL, 0, 0};
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png_create_info_struct(png);
  assert_non_null(png);
  assert_non_null(info);
  if (setjmp(png_jmpbuf(png))) fail_msg("libpng write failed");
  png_set_write_fn(png, &m, mb_write, mb_flush);
  png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, bd, ct, interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (pal) png_set_PLTE(png, info, pal, npal);
  if (trns) {
    png_color_16 tc;
    memset(&tc, 0, sizeof tc);
    tc.gray = 3;
    tc.red = 3;
    png_set_tRNS(png, info, trns, ntrns, ct == PNG_COLOR_TYPE_PALETTE ? NULL : &tc);
  }
  png_write_info(png, info);
  int passes = png_set_interlace_handling(png);
  for (int p = 0; p < passes; p++)
    for (int y = 0; y < h; y++) png_write_row(png, rows + (size_t)y * rowbytes);
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  *len = m.len;
  return m.data;
}

/* ---- sniff / alloc ---------------------------------------------------------------- */

static void test_sniff(void **state) {
  (void)state;
  const uint8_t jpg[] = {0xFF, 0xD8, 0xFF, 0xE0};
  const uint8_t png[] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A, 0};
  assert_int_equal(im_image_sniff(jpg, sizeof jpg), IM_FORMAT_JPEG);
  assert_int_equal(im_image_sniff(jpg, 3), IM_FORMAT_JPEG);
  assert_int_equal(im_image_sniff(jpg, 2), IM_FORMAT_UNKNOWN);
  assert_int_equal(im_image_sniff(png, sizeof png), IM_FORMAT_PNG);
  assert_int_equal(im_image_sniff(png, 7), IM_FORMAT_UNKNOWN);
  assert_int_equal(im_image_sniff((const uint8_t *)"GIF89a", 6), IM_FORMAT_UNKNOWN);
  assert_int_equal(im_image_sniff(NULL, 0), IM_FORMAT_UNKNOWN);
}

static void test_alloc_free(void **state) {
  (void)state;
  im_image_t img;
  assert_int_equal(im_image_alloc(&img, 4, 3, 3), IM_OK);
  assert_int_equal(img.w, 4);
  assert_int_equal(img.h, 3);
  assert_int_equal(img.c, 3);
  for (int i = 0; i < 36; i++) assert_int_equal(img.data[i], 0);
  im_image_free(&img);
  assert_empty(&img);
  im_image_free(&img); /* safe on a zeroed struct */
  im_image_free(NULL);
  assert_int_equal(im_image_alloc(&img, 0, 3, 3), IM_ERR_ARG);
  assert_empty(&img);
  assert_int_equal(im_image_alloc(&img, 3, -1, 3), IM_ERR_ARG);
  assert_int_equal(im_image_alloc(&img, 3, 3, 0), IM_ERR_ARG);
  assert_int_equal(im_image_alloc(&img, 3, 3, 5), IM_ERR_ARG);
  assert_int_equal(im_image_alloc(&img, 70000, 3, 1), IM_ERR_ARG);
  assert_empty(&img);
}

/* ---- PNG ---------------------------------------------------------------------- */

static void png_roundtrip(int c) {
  im_image_t img, out;
  make_ref_pattern(&img, 37, 23, c);
  uint8_t *buf = NULL;
  size_t len = 0;
  assert_int_equal(im_image_encode_png(&img, &buf, &len), IM_OK);
  assert_int_equal(im_image_sniff(buf, len), IM_FORMAT_PNG);
  im_image_info_t info;
  assert_int_equal(im_image_probe(buf, len, &info), IM_OK);
  assert_int_equal(info.format, IM_FORMAT_PNG);
  assert_int_equal(info.w, 37);
  assert_int_equal(info.h, 23);
  assert_int_equal(info.channels, c);

  im_decode_opts_t o = IM_DECODE_OPTS_DEFAULT;
  assert_int_equal(im_image_decode(buf, len, &o, &out), IM_OK);
  assert_int_equal(out.w, 37);
  assert_int_equal(out.h, 23);
  assert_int_equal(out.c, c);
  assert_memory_equal(out.data, img.data, (size_t)37 * 23 * c);
  im_image_free(&out);
  assert_int_equal(im_image_decode(buf, len, NULL, &out), IM_OK); /* NULL opts = defaults */
  assert_memory_equal(out.data, img.data, (size_t)37 * 23 * c);
  im_image_free(&out);

  /* Forced channel counts match im_image_convert. */
  for (int want = 1; want <= 3; want += 2) {
    im_image_t conv;
    o.channels = want;
    assert_int_equal(im_image_decode(buf, len, &o, &out), IM_OK);
    assert_int_equal(out.c, want);
    assert_int_equal(im_image_convert(&img, want, &conv), IM_OK);
    assert_memory_equal(out.data, conv.data, (size_t)37 * 23 * want);
    im_image_free(&conv);
    im_image_free(&out);
  }
  im_free(buf);
  im_image_free(&img);
}

static void test_png_roundtrip_rgb(void **state) {
  (void)state;
  png_roundtrip(3);
}

static void test_png_roundtrip_grey(void **state) {
  (void)state;
  png_roundtrip(1);
}

/* Decodes a PNG made by make_png with channels 0 and checks the result. */
static void check_png(const uint8_t *png, size_t len, int w, int h, int c, const uint8_t *expect) {
  im_image_t out;
  im_image_info_t info;
  assert_int_equal(im_image_probe(png, len, &info), IM_OK);
  assert_int_equal(info.w, w);
  assert_int_equal(info.h, h);
  assert_int_equal(info.channels, c);
  assert_int_equal(im_image_decode(png, len, NULL, &out), IM_OK);
  assert_int_equal(out.w, w);
  assert_int_equal(out.h, h);
  assert_int_equal(out.c, c);
  assert_memory_equal(out.data, expect, (size_t)w * h * c);
  im_image_free(&out);
  /* ... and forced to the other channel count. */
  im_decode_opts_t o = IM_DECODE_OPTS_DEFAULT;
  o.channels = c == 1 ? 3 : 1;
  assert_int_equal(im_image_decode(png, len, &o, &out), IM_OK);
  assert_int_equal(out.c, o.channels);
  im_image_t src = {w, h, c, NULL}, conv;
  uint8_t *copy = malloc((size_t)w * h * c);
  assert_non_null(copy);
  memcpy(copy, expect, (size_t)w * h * c);
  src.data = copy;
  assert_int_equal(im_image_convert(&src, o.channels, &conv), IM_OK);
  assert_memory_equal(out.data, conv.data, (size_t)w * h * o.channels);
  im_image_free(&conv);
  im_image_free(&out);
  free(copy);
}

static void test_png_variants(void **state) {
  (void)state;
  enum { W = 11, H = 7 };
  uint8_t raw[W * H * 8], expect[W * H * 3];
  size_t len;
  uint8_t *png;

  for (int interlace = 0; interlace <= 1; interlace++) {
    /* 16-bit RGB: reduced to the high byte. */
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W; x++)
        for (int ch = 0; ch < 3; ch++) {
          unsigned v = (unsigned)(x * 5000 + y * 7000 + ch * 300 + 77) & 0xFFFF;
          raw[(y * W + x) * 6 + ch * 2] = (uint8_t)(v >> 8);
          raw[(y * W + x) * 6 + ch * 2 + 1] = (uint8_t)v;
          expect[(y * W + x) * 3 + ch] = (uint8_t)(v >> 8);
        }
    png = make_png(W, H, 16, PNG_COLOR_TYPE_RGB, interlace, raw, W * 6, NULL, 0, NULL, 0, &len);
    check_png(png, len, W, H, 3, expect);
    free(png);

    /* 16-bit grey. */
    for (int i = 0; i < W * H; i++) {
      unsigned v = (unsigned)(i * 911 + 5) & 0xFFFF;
      raw[2 * i] = (uint8_t)(v >> 8);
      raw[2 * i + 1] = (uint8_t)v;
      expect[i] = (uint8_t)(v >> 8);
    }
    png = make_png(W, H, 16, PNG_COLOR_TYPE_GRAY, interlace, raw, W * 2, NULL, 0, NULL, 0, &len);
    check_png(png, len, W, H, 1, expect);
    free(png);

    /* 8-bit palette with tRNS, and 4-bit palette. */
    png_color pal[16];
    png_byte trns[16];
    for (int i = 0; i < 16; i++) {
      pal[i].red = (png_byte)(i * 16);
      pal[i].green = (png_byte)(255 - i * 16);
      pal[i].blue = (png_byte)(i * 5);
      trns[i] = (png_byte)(i * 17);
    }
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W; x++) {
        int idx = (x + 2 * y) % 16;
        raw[y * W + x] = (uint8_t)idx;
        expect[(y * W + x) * 3] = pal[idx].red;
        expect[(y * W + x) * 3 + 1] = pal[idx].green;
        expect[(y * W + x) * 3 + 2] = pal[idx].blue;
      }
    png = make_png(W, H, 8, PNG_COLOR_TYPE_PALETTE, interlace, raw, W, pal, 16, trns, 16, &len);
    check_png(png, len, W, H, 3, expect);
    free(png);
    const size_t rb4 = (W + 1) / 2;
    memset(raw, 0, sizeof raw);
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W; x++) {
        int idx = (x + 2 * y) % 16;
        raw[y * rb4 + x / 2] |= (uint8_t)(x % 2 ? idx : idx << 4);
      }
    png = make_png(W, H, 4, PNG_COLOR_TYPE_PALETTE, interlace, raw, rb4, pal, 16, NULL, 0, &len);
    check_png(png, len, W, H, 3, expect);
    free(png);

    /* Grey + alpha: the alpha is dropped, grey stays 1 channel. */
    for (int i = 0; i < W * H; i++) {
      raw[2 * i] = (uint8_t)(i * 3 + 1);
      raw[2 * i + 1] = (uint8_t)(i * 37);
      expect[i] = (uint8_t)(i * 3 + 1);
    }
    png = make_png(W, H, 8, PNG_COLOR_TYPE_GRAY_ALPHA, interlace, raw, W * 2, NULL, 0, NULL, 0, &len);
    check_png(png, len, W, H, 1, expect);
    free(png);

    /* 16-bit grey + alpha. */
    for (int i = 0; i < W * H; i++) {
      raw[4 * i] = (uint8_t)(i * 3 + 1);
      raw[4 * i + 1] = 0xAB;
      raw[4 * i + 2] = (uint8_t)(i * 37);
      raw[4 * i + 3] = 0x01;
      expect[i] = (uint8_t)(i * 3 + 1);
    }
    png = make_png(W, H, 16, PNG_COLOR_TYPE_GRAY_ALPHA, interlace, raw, W * 4, NULL, 0, NULL, 0, &len);
    check_png(png, len, W, H, 1, expect);
    free(png);

    /* RGBA. */
    for (int i = 0; i < W * H; i++) {
      for (int ch = 0; ch < 3; ch++) {
        raw[4 * i + ch] = (uint8_t)(i * 7 + ch * 50);
        expect[3 * i + ch] = (uint8_t)(i * 7 + ch * 50);
      }
      raw[4 * i + 3] = (uint8_t)(255 - i);
    }
    png = make_png(W, H, 8, PNG_COLOR_TYPE_RGB_ALPHA, interlace, raw, W * 4, NULL, 0, NULL, 0, &len);
    check_png(png, len, W, H, 3, expect);
    free(png);

    /* 1, 2 and 4-bit grey expand to the full 0..255 range. */
    for (int bd = 1; bd <= 4; bd *= 2) {
      const int maxv = (1 << bd) - 1, per = 8 / bd;
      const size_t rb = (size_t)(W + per - 1) / per;
      memset(raw, 0, sizeof raw);
      for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
          int v = (x * 3 + y) % (maxv + 1);
          int shift = 8 - bd * (x % per + 1);
          raw[y * rb + x / per] |= (uint8_t)(v << shift);
          expect[y * W + x] = (uint8_t)(v * 255 / maxv);
        }
      png = make_png(W, H, bd, PNG_COLOR_TYPE_GRAY, interlace, raw, rb, NULL, 0, NULL, 0, &len);
      check_png(png, len, W, H, 1, expect);
      free(png);
    }

    /* 8-bit grey with a tRNS colour key: the key is ignored. */
    for (int i = 0; i < W * H; i++) raw[i] = expect[i] = (uint8_t)(i % 7);
    png_byte dummy = 0;
    png = make_png(W, H, 8, PNG_COLOR_TYPE_GRAY, interlace, raw, W, NULL, 0, &dummy, 1, &len);
    check_png(png, len, W, H, 1, expect);
    free(png);
  }
}

/* ---- JPEG ---------------------------------------------------------------------- */

static void jpeg_roundtrip(int c) {
  im_image_t img, out;
  make_smooth(&img, 64, 48, c);
  uint8_t *buf = NULL;
  size_t len = 0;
  encode_jpeg(&img, 95, &buf, &len);
  assert_int_equal(im_image_sniff(buf, len), IM_FORMAT_JPEG);
  im_image_info_t info;
  assert_int_equal(im_image_probe(buf, len, &info), IM_OK);
  assert_int_equal(info.format, IM_FORMAT_JPEG);
  assert_int_equal(info.w, 64);
  assert_int_equal(info.h, 48);
  assert_int_equal(info.channels, c);
  assert_int_equal(im_image_decode(buf, len, NULL, &out), IM_OK);
  assert_int_equal(out.w, 64);
  assert_int_equal(out.h, 48);
  assert_int_equal(out.c, c);
  double mad = mean_abs_diff(&img, &out);
  assert_true(mad < 2.0);
  im_image_free(&out);

  /* Forced channels. */
  im_decode_opts_t o = IM_DECODE_OPTS_DEFAULT;
  o.channels = c == 1 ? 3 : 1;
  assert_int_equal(im_image_decode(buf, len, &o, &out), IM_OK);
  assert_int_equal(out.c, o.channels);
  im_image_t conv;
  assert_int_equal(im_image_convert(&img, o.channels, &conv), IM_OK);
  assert_true(mean_abs_diff(&conv, &out) < 2.0);
  im_image_free(&conv);
  im_image_free(&out);

  /* Quality matters, and bad quality values are refused. */
  uint8_t *small = NULL;
  size_t slen = 0;
  encode_jpeg(&img, 10, &small, &slen);
  assert_true(slen < len);
  im_free(small);
  assert_int_equal(im_image_encode_jpeg(&img, 0, &small, &slen), IM_ERR_ARG);
  assert_null(small);
  assert_int_equal(im_image_encode_jpeg(&img, 101, &small, &slen), IM_ERR_ARG);
  im_free(buf);
  im_image_free(&img);
}

static void test_jpeg_roundtrip_rgb(void **state) {
  (void)state;
  jpeg_roundtrip(3);
}

static void test_jpeg_roundtrip_grey(void **state) {
  (void)state;
  jpeg_roundtrip(1);
}

static void decode_scaled(const uint8_t *buf, size_t len, int min_w, int min_h, int exp_w, int exp_h) {
  im_decode_opts_t o = IM_DECODE_OPTS_DEFAULT;
  o.min_w = min_w;
  o.min_h = min_h;
  im_image_t out;
  assert_int_equal(im_image_decode(buf, len, &o, &out), IM_OK);
  if (out.w != exp_w || out.h != exp_h)
    fail_msg("min %dx%d: got %dx%d, expected %dx%d", min_w, min_h, out.w, out.h, exp_w, exp_h);
  im_image_free(&out);
}

static void test_jpeg_dct_scaling(void **state) {
  (void)state;
  im_image_t img, full, scaled, ref;
  make_smooth(&img, 227, 227, 3);
  uint8_t *buf = NULL;
  size_t len = 0;
  encode_jpeg(&img, 90, &buf, &len);
  decode_scaled(buf, len, 0, 0, 227, 227);
  decode_scaled(buf, len, 224, 224, 227, 227);
  decode_scaled(buf, len, 228, 228, 227, 227); /* cannot meet it: full size */
  decode_scaled(buf, len, 112, 112, 114, 114); /* 1/2 */
  decode_scaled(buf, len, 114, 114, 114, 114);
  decode_scaled(buf, len, 115, 115, 227, 227);
  decode_scaled(buf, len, 60, 60, 114, 114); /* 1/4 would give 57 < 60 */
  decode_scaled(buf, len, 57, 57, 57, 57);   /* 1/4 */
  decode_scaled(buf, len, 30, 30, 57, 57);
  decode_scaled(buf, len, 29, 29, 29, 29); /* 1/8: ceil(227/8) = 29 */
  decode_scaled(buf, len, 1, 1, 29, 29);
  decode_scaled(buf, len, 112, 0, 114, 114); /* one side only */
  decode_scaled(buf, len, 0, 60, 114, 114);
  decode_scaled(buf, len, 60, 120, 227, 227);

  /* The DCT-scaled image looks like the full one shrunk. */
  im_decode_opts_t o = IM_DECODE_OPTS_DEFAULT;
  assert_int_equal(im_image_decode(buf, len, &o, &full), IM_OK);
  o.min_w = o.min_h = 112;
  assert_int_equal(im_image_decode(buf, len, &o, &scaled), IM_OK);
  assert_int_equal(im_image_resize(&full, 114, 114, IM_RESIZE_AREA, &ref), IM_OK);
  assert_true(mean_abs_diff(&scaled, &ref) < 3.0);
  im_image_free(&full);
  im_image_free(&scaled);
  im_image_free(&ref);
  im_free(buf);
  im_image_free(&img);
}

static void test_jpeg_cmyk(void **state) {
  (void)state;
  /* CMYK stored the Adobe way (inverted, as PIL writes and reads it):
   * stored (255, 127, 0, 255) is ink (0, 128, 255, 0) -> RGB (255, 127, 0) in PIL. */
  enum { W = 16, H = 16 };
  uint8_t cmyk[W * H * 4];
  for (int i = 0; i < W * H; i++) {
    cmyk[4 * i] = 255;
    cmyk[4 * i + 1] = 127;
    cmyk[4 * i + 2] = 0;
    cmyk[4 * i + 3] = 255;
  }
  tjhandle h = tjInitCompress();
  assert_non_null(h);
  unsigned char *jb = NULL;
  unsigned long jl = 0;
  assert_int_equal(tjCompress2(h, cmyk, W, 0, H, TJPF_CMYK, &jb, &jl, TJSAMP_444, 100, 0), 0);
  tjDestroy(h);
  im_image_info_t info;
  assert_int_equal(im_image_probe(jb, jl, &info), IM_OK);
  assert_int_equal(info.channels, 3);
  im_image_t out;
  assert_int_equal(im_image_decode(jb, jl, NULL, &out), IM_OK);
  assert_int_equal(out.c, 3);
  for (int i = 0; i < W * H; i++) {
    assert_true(abs(out.data[3 * i] - 255) <= 2);
    assert_true(abs(out.data[3 * i + 1] - 127) <= 2);
    assert_true(abs(out.data[3 * i + 2] - 0) <= 2);
  }
  im_image_free(&out);
  im_decode_opts_t o = IM_DECODE_OPTS_DEFAULT;
  o.channels = 1;
  assert_int_equal(im_image_decode(jb, jl, &o, &out), IM_OK);
  assert_int_equal(out.c, 1);
  assert_true(abs(out.data[0] - 151) <= 2); /* PIL: L of (255, 127, 0) */
  im_image_free(&out);
  tjFree(jb);
}

/* ---- resize ---------------------------------------------------------------------- */

static void test_resize_matches_pillow(void **state) {
  (void)state;
  const size_t n = sizeof RESIZE_REF_CASES / sizeof RESIZE_REF_CASES[0];
  int exact = 0;
  for (size_t i = 0; i < n; i++) {
    const resize_ref_case_t *rc = &RESIZE_REF_CASES[i];
    im_image_t src, dst;
    make_ref_pattern(&src, rc->sw, rc->sh, rc->c);
    im_resize_mode_t mode = rc->area ? IM_RESIZE_AREA : IM_RESIZE_BILINEAR;
    assert_int_equal(im_image_resize(&src, rc->w, rc->h, mode, &dst), IM_OK);
    assert_int_equal(dst.w, rc->w);
    assert_int_equal(dst.h, rc->h);
    assert_int_equal(dst.c, rc->c);
    size_t bytes = (size_t)rc->w * rc->h * rc->c;
    int d = max_abs_diff(dst.data, rc->expect, bytes);
    if (d > 1)
      fail_msg("case %zu (%dx%dx%d -> %dx%d %s): max diff %d", i, rc->sw, rc->sh, rc->c, rc->w, rc->h,
               rc->area ? "BOX" : "BILINEAR", d);
    exact += d == 0;
    /* resize_into agrees with resize. */
    uint8_t *into = malloc(bytes);
    assert_non_null(into);
    assert_int_equal(im_image_resize_into(&src, rc->w, rc->h, mode, into), IM_OK);
    assert_memory_equal(into, dst.data, bytes);
    free(into);
    im_image_free(&dst);
    im_image_free(&src);
  }
  /* The arithmetic follows Pillow's, so all cases are expected to be bit-exact. */
  assert_int_equal(exact, (int)n);
}

static void test_resize_matches_ref(void **state) {
  (void)state;
  static const int sizes[][4] = {
      {227, 227, 112, 112}, {227, 227, 224, 224}, {227, 227, 256, 256}, {13, 11, 29, 31}, {1, 1, 5, 3},
      {5, 3, 1, 1},         {300, 7, 17, 7},      {7, 300, 7, 17},      {64, 64, 64, 32}, {64, 64, 32, 64},
      {100, 80, 33, 77},    {3, 250, 2, 9},       {50, 50, 7, 200},
  };
  uint64_t seed = 1;
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
    for (int c = 1; c <= 4; c++)
      for (int mode = 0; mode <= 1; mode++) {
        im_image_t src, fast, ref;
        make_random(&src, sizes[i][0], sizes[i][1], c, seed++);
        assert_int_equal(im_image_resize(&src, sizes[i][2], sizes[i][3], (im_resize_mode_t)mode, &fast), IM_OK);
        assert_int_equal(im_image_resize_ref(&src, sizes[i][2], sizes[i][3], (im_resize_mode_t)mode, &ref), IM_OK);
        size_t bytes = (size_t)sizes[i][2] * sizes[i][3] * c;
        int d = max_abs_diff(fast.data, ref.data, bytes);
        if (d != 0)
          fail_msg("%dx%dx%d -> %dx%d mode %d: fast and reference differ by %d", sizes[i][0], sizes[i][1], c,
                   sizes[i][2], sizes[i][3], mode, d);
        im_image_free(&fast);
        im_image_free(&ref);
        im_image_free(&src);
      }
}

static void test_resize_misc(void **state) {
  (void)state;
  im_image_t src, dst;
  make_random(&src, 9, 7, 3, 99);
  /* Same size: a copy. */
  assert_int_equal(im_image_resize(&src, 9, 7, IM_RESIZE_BILINEAR, &dst), IM_OK);
  assert_memory_equal(dst.data, src.data, 9 * 7 * 3);
  assert_ptr_not_equal(dst.data, src.data);
  im_image_free(&dst);
  /* A constant image stays constant in both modes, any size. */
  memset(src.data, 200, 9 * 7 * 3);
  for (int mode = 0; mode <= 1; mode++) {
    assert_int_equal(im_image_resize(&src, 4, 13, (im_resize_mode_t)mode, &dst), IM_OK);
    for (int i = 0; i < 4 * 13 * 3; i++) assert_int_equal(dst.data[i], 200);
    im_image_free(&dst);
  }
  /* Bad arguments. */
  uint8_t buf[16];
  assert_int_equal(im_image_resize(&src, 0, 5, IM_RESIZE_BILINEAR, &dst), IM_ERR_ARG);
  assert_int_equal(im_image_resize(&src, 5, -1, IM_RESIZE_BILINEAR, &dst), IM_ERR_ARG);
  assert_int_equal(im_image_resize(&src, 5, 5, (im_resize_mode_t)7, &dst), IM_ERR_ARG);
  assert_int_equal(im_image_resize_into(&src, 2, 2, IM_RESIZE_AREA, NULL), IM_ERR_ARG);
  assert_int_equal(im_image_resize_into(NULL, 2, 2, IM_RESIZE_AREA, buf), IM_ERR_ARG);
  im_image_t empty = {0, 0, 0, NULL};
  assert_int_equal(im_image_resize_into(&empty, 2, 2, IM_RESIZE_AREA, buf), IM_ERR_ARG);
  /* In place (dst == src). */
  assert_int_equal(im_image_resize(&src, 3, 2, IM_RESIZE_AREA, &src), IM_OK);
  assert_int_equal(src.w, 3);
  assert_int_equal(src.h, 2);
  im_image_free(&src);
}

/* ---- flip / crop / convert -------------------------------------------------------- */

static void test_flip(void **state) {
  (void)state;
  for (int c = 1; c <= 4; c++)
    for (int w = 1; w <= 6; w++) {
      im_image_t img, orig;
      make_random(&img, w, 3, c, (uint64_t)(w * 10 + c));
      assert_int_equal(im_image_crop(&img, 0, 0, w, 3, &orig), IM_OK); /* a copy */
      im_image_flip_h(&img);
      for (int y = 0; y < 3; y++)
        for (int x = 0; x < w; x++)
          for (int ch = 0; ch < c; ch++)
            assert_int_equal(img.data[((size_t)y * w + x) * c + ch], orig.data[((size_t)y * w + (w - 1 - x)) * c + ch]);
      im_image_flip_h(&img);
      assert_memory_equal(img.data, orig.data, (size_t)w * 3 * c);
      im_image_free(&img);
      im_image_free(&orig);
    }
  im_image_t empty = {0, 0, 0, NULL};
  im_image_flip_h(&empty); /* no-op */
  im_image_flip_h(NULL);
}

static void test_crop(void **state) {
  (void)state;
  im_image_t img, out;
  make_ref_pattern(&img, 13, 11, 3);
  assert_int_equal(im_image_crop(&img, 2, 3, 5, 4, &out), IM_OK);
  assert_int_equal(out.w, 5);
  assert_int_equal(out.h, 4);
  assert_int_equal(out.c, 3);
  for (int y = 0; y < 4; y++)
    for (int x = 0; x < 5; x++)
      for (int ch = 0; ch < 3; ch++) assert_int_equal(out.data[(y * 5 + x) * 3 + ch], ref_pattern(x + 2, y + 3, ch, 3));
  im_image_free(&out);
  assert_int_equal(im_image_crop(&img, 0, 0, 13, 11, &out), IM_OK);
  assert_memory_equal(out.data, img.data, 13 * 11 * 3);
  im_image_free(&out);
  assert_int_equal(im_image_crop(&img, 12, 10, 1, 1, &out), IM_OK);
  im_image_free(&out);

  const int bad[][4] = {{-1, 0, 2, 2}, {0, -1, 2, 2}, {0, 0, 0, 2},       {0, 0, 2, 0},         {12, 0, 2, 1},
                        {0, 10, 1, 2}, {0, 0, 14, 1}, {0, 0, 1, 12},      {2147483647, 0, 1, 1}, {1, 1, 2147483647, 1},
                        {0, 0, -5, 3}, {13, 0, 1, 1}, {5, 5, 2147483647, 2147483647}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    memset(&out, 0, sizeof out);
    assert_int_equal(im_image_crop(&img, bad[i][0], bad[i][1], bad[i][2], bad[i][3], &out), IM_ERR_ARG);
    assert_empty(&out);
  }
  assert_int_equal(im_image_crop(NULL, 0, 0, 1, 1, &out), IM_ERR_ARG);
  im_image_free(&img);
}

static void test_convert(void **state) {
  (void)state;
  /* Values from PIL's Image.convert("L"). */
  const uint8_t rgb[] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 12, 200, 99, 255, 255, 255, 1, 2, 3, 128, 64, 250};
  const uint8_t grey[] = {76, 150, 29, 132, 255, 2, 104};
  uint8_t copy[sizeof rgb];
  memcpy(copy, rgb, sizeof rgb);
  im_image_t src = {7, 1, 3, copy}, out, back;
  assert_int_equal(im_image_convert(&src, 1, &out), IM_OK);
  assert_int_equal(out.c, 1);
  assert_memory_equal(out.data, grey, sizeof grey);
  assert_int_equal(im_image_convert(&out, 3, &back), IM_OK);
  assert_int_equal(back.c, 3);
  for (int i = 0; i < 7; i++)
    for (int ch = 0; ch < 3; ch++) assert_int_equal(back.data[3 * i + ch], grey[i]);
  im_image_free(&back);
  /* Same channels: a copy. */
  assert_int_equal(im_image_convert(&src, 3, &back), IM_OK);
  assert_memory_equal(back.data, rgb, sizeof rgb);
  im_image_free(&back);
  /* In place. */
  assert_int_equal(im_image_convert(&out, 3, &out), IM_OK);
  assert_int_equal(out.c, 3);
  assert_int_equal(out.data[20], 104);
  im_image_free(&out);
  assert_int_equal(im_image_convert(&src, 2, &out), IM_ERR_ARG);
  assert_int_equal(im_image_convert(&src, 0, &out), IM_ERR_ARG);
  assert_int_equal(im_image_convert(NULL, 1, &out), IM_ERR_ARG);
}

/* ---- bad input ------------------------------------------------------------------- */

static void expect_decode_error(const uint8_t *data, size_t len, im_status_t want, const char *what) {
  im_image_t out;
  memset(&out, 0xAB, sizeof out); /* must be cleared even on failure */
  im_status_t st = im_image_decode(data, len, NULL, &out);
  if (want == IM_OK ? st == IM_OK : st != want)
    fail_msg("%s: got %s (%s)", what, im_status_name(st), im_last_error());
  assert_empty(&out);
  assert_true(strlen(im_last_error()) > 0);
}

static void test_bad_input_basic(void **state) {
  (void)state;
  const uint8_t one[] = {0xFF};
  const uint8_t soi[] = {0xFF, 0xD8, 0xFF};
  const uint8_t sig[] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  const char *text = "hello, this is not an image at all\n";
  expect_decode_error(one, 0, IM_ERR_FORMAT, "zero bytes");
  expect_decode_error(NULL, 0, IM_ERR_FORMAT, "NULL, zero bytes");
  expect_decode_error(one, 1, IM_ERR_FORMAT, "one byte");
  expect_decode_error(soi, 3, IM_ERR_FORMAT, "SOI only");
  expect_decode_error(sig, 8, IM_ERR_FORMAT, "PNG signature only");
  expect_decode_error((const uint8_t *)text, strlen(text), IM_ERR_FORMAT, "text");
  im_image_info_t info;
  assert_int_equal(im_image_probe(one, 0, &info), IM_ERR_FORMAT);
  assert_int_equal(im_image_probe(soi, 3, &info), IM_ERR_FORMAT);
  assert_int_equal(im_image_probe(sig, 8, &info), IM_ERR_FORMAT);
  assert_int_equal(im_image_probe((const uint8_t *)text, strlen(text), &info), IM_ERR_FORMAT);
  /* Bad options. */
  im_decode_opts_t o = IM_DECODE_OPTS_DEFAULT;
  o.channels = 2;
  im_image_t out;
  assert_int_equal(im_image_decode(sig, 8, &o, &out), IM_ERR_ARG);
}

static void test_truncated_jpeg(void **state) {
  (void)state;
  im_image_t img;
  make_smooth(&img, 227, 227, 3);
  uint8_t *buf = NULL;
  size_t len = 0;
  encode_jpeg(&img, 90, &buf, &len);
  im_image_free(&img);
  expect_decode_error(buf, len / 2, IM_ERR_FORMAT, "jpeg cut at half");
  expect_decode_error(buf, len * 9 / 10, IM_ERR_FORMAT, "jpeg cut at 90%");
  expect_decode_error(buf, len - 1, IM_ERR_FORMAT, "jpeg without the last byte");
  im_decode_opts_t o = IM_DECODE_OPTS_DEFAULT;
  o.min_w = o.min_h = 60;
  im_image_t out;
  assert_int_equal(im_image_decode(buf, len / 2, &o, &out), IM_ERR_FORMAT);
  assert_empty(&out);
  im_free(buf);

  /* Every prefix of a small JPEG (grey and colour) is an error. */
  for (int c = 1; c <= 3; c += 2) {
    make_smooth(&img, 24, 16, c);
    encode_jpeg(&img, 75, &buf, &len);
    im_image_free(&img);
    for (size_t n = 0; n < len; n++) {
      char what[64];
      snprintf(what, sizeof what, "jpeg prefix %zu/%zu", n, len);
      expect_decode_error(buf, n, IM_ERR_FORMAT, what);
      im_image_info_t info;
      (void)im_image_probe(buf, n, &info); /* may succeed once the header is in; must not crash */
    }
    im_free(buf);
  }
}

static void test_truncated_png(void **state) {
  (void)state;
  im_image_t img;
  make_ref_pattern(&img, 40, 30, 3);
  uint8_t *buf = NULL;
  size_t len = 0;
  assert_int_equal(im_image_encode_png(&img, &buf, &len), IM_OK);
  im_image_free(&img);
  for (size_t n = 0; n < len; n++) {
    char what[64];
    snprintf(what, sizeof what, "png prefix %zu/%zu", n, len);
    expect_decode_error(buf, n, IM_ERR_FORMAT, what);
  }
  im_free(buf);
}

/* Offset of the first marker segment FF <code> before the scan data, or 0. */
static size_t find_segment(const uint8_t *b, size_t len, uint8_t code) {
  size_t i = 2;
  while (i + 4 <= len && b[i] == 0xFF) {
    if (b[i + 1] == code) return i;
    if (b[i + 1] == 0xDA) return 0;
    i += 2 + (((size_t)b[i + 2] << 8) | b[i + 3]);
  }
  return 0;
}

static void test_corrupt_data(void **state) {
  (void)state;
  im_image_t img;
  make_smooth(&img, 227, 227, 3);
  uint8_t *buf = NULL;
  size_t len = 0;
  encode_jpeg(&img, 90, &buf, &len);
  uint8_t *bad = malloc(len);
  assert_non_null(bad);
  size_t sof = find_segment(buf, len, 0xC0), dht = find_segment(buf, len, 0xC4), dqt = find_segment(buf, len, 0xDB);
  assert_true(sof > 0 && dht > 0 && dqt > 0);

  /* JPEG: damaged headers are errors. */
  memcpy(bad, buf, len);
  bad[sof + 4] = 12; /* sample precision */
  expect_decode_error(bad, len, IM_ERR_FORMAT, "jpeg with 12-bit precision");
  memcpy(bad, buf, len);
  bad[sof + 9] = 0; /* component count */
  expect_decode_error(bad, len, IM_ERR_FORMAT, "jpeg with no components");
  memcpy(bad, buf, len);
  for (int i = 0; i < 16; i++) bad[dht + 5 + i] = 0xF0; /* code counts summing past 256 */
  expect_decode_error(bad, len, IM_ERR_FORMAT, "jpeg with a bogus Huffman table");
  memcpy(bad, buf, len);
  bad[dqt + 1] = 0xFE; /* the quantisation table becomes a comment */
  expect_decode_error(bad, len, IM_ERR_FORMAT, "jpeg without quantisation tables");
  memcpy(bad, buf, len);
  bad[len - 1] = 0x00; /* the EOI replaced */
  bad[len - 2] = 0x00;
  expect_decode_error(bad, len, IM_ERR_FORMAT, "jpeg without EOI");

  /* JPEG: flipped bytes in the entropy-coded data. JPEG has no checksum, so
   * libjpeg notices only damage that breaks the code structure (bad Huffman
   * codes, stray markers); the rest decodes to wrong pixels. Either way: no
   * crash, and a result is an error with an empty image or a whole image. */
  int detected = 0, total = 0;
  for (size_t pos = dht + 500; pos + 64 < len; pos += 53) {
    memcpy(bad, buf, len);
    for (size_t i = pos; i < pos + 8; i++) bad[i] ^= 0xFF;
    im_image_t out;
    im_status_t st = im_image_decode(bad, len, NULL, &out);
    total++;
    if (st == IM_OK) {
      assert_int_equal(out.w, 227);
      assert_int_equal(out.h, 227);
      assert_int_equal(out.c, 3);
      im_image_free(&out);
    } else {
      assert_int_equal(st, IM_ERR_FORMAT);
      assert_empty(&out);
      detected++;
    }
  }
  assert_true(detected > 0 && total > 20);
  free(bad);
  im_free(buf);

  /* PNG: any flipped byte after the signature is caught by a CRC or by zlib. */
  assert_int_equal(im_image_encode_png(&img, &buf, &len), IM_OK);
  bad = malloc(len);
  assert_non_null(bad);
  for (size_t pos = 8; pos < len; pos += len / 97 + 1) {
    memcpy(bad, buf, len);
    bad[pos] ^= 0x5A;
    char what[64];
    snprintf(what, sizeof what, "png with byte %zu/%zu flipped", pos, len);
    im_image_t out;
    im_status_t st = im_image_decode(bad, len, NULL, &out);
    if (st == IM_OK) fail_msg("%s: decoded", what);
    assert_empty(&out);
  }
  free(bad);
  im_free(buf);
  im_image_free(&img);
}

static uint32_t crc32_png(const uint8_t *p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static void test_oversized_headers(void **state) {
  (void)state;
  im_image_t img, out;
  make_smooth(&img, 32, 24, 3);
  uint8_t *buf = NULL;
  size_t len = 0;
  int64_t live0 = im_alloc_live_bytes();

  /* JPEG whose SOF claims 60000 x 60000. */
  encode_jpeg(&img, 80, &buf, &len);
  size_t sof = 0;
  for (size_t i = 2; i + 9 < len; i++)
    if (buf[i] == 0xFF && buf[i + 1] == 0xC0) {
      sof = i;
      break;
    }
  assert_true(sof > 0);
  buf[sof + 5] = 60000 >> 8; /* height */
  buf[sof + 6] = 60000 & 0xFF;
  buf[sof + 7] = 60000 >> 8; /* width */
  buf[sof + 8] = 60000 & 0xFF;
  im_image_info_t info;
  assert_int_equal(im_image_probe(buf, len, &info), IM_OK);
  assert_int_equal(info.w, 60000);
  assert_int_equal(info.h, 60000);
  expect_decode_error(buf, len, IM_ERR_LIMIT, "jpeg 60000x60000");
  assert_int_equal(im_alloc_live_bytes(), live0 + (int64_t)len);
  im_free(buf);

  /* The cap applies at its configured value too, and to scaled decodes. */
  encode_jpeg(&img, 80, &buf, &len);
  im_decode_opts_t o = IM_DECODE_OPTS_DEFAULT;
  o.max_pixels = 32 * 24 - 1;
  o.min_w = o.min_h = 4;
  assert_int_equal(im_image_decode(buf, len, &o, &out), IM_ERR_LIMIT);
  assert_empty(&out);
  o.max_pixels = 32 * 24;
  assert_int_equal(im_image_decode(buf, len, &o, &out), IM_OK);
  im_image_free(&out);
  im_free(buf);

  /* PNG whose IHDR (CRC fixed up) claims huge dimensions, or zero. */
  assert_int_equal(im_image_encode_png(&img, &buf, &len), IM_OK);
  const uint32_t dims[][2] = {{100000, 100000}, {60000, 60000}, {65536, 1}, {0x7fffffff, 0x7fffffff}, {0, 10}};
  const im_status_t want[] = {IM_ERR_LIMIT, IM_ERR_LIMIT, IM_ERR_LIMIT, IM_ERR_LIMIT, IM_ERR_FORMAT};
  for (size_t i = 0; i < 5; i++) {
    put_be32(buf + 16, dims[i][0]);
    put_be32(buf + 20, dims[i][1]);
    put_be32(buf + 29, crc32_png(buf + 12, 17));
    char what[64];
    snprintf(what, sizeof what, "png %ux%u", (unsigned)dims[i][0], (unsigned)dims[i][1]);
    expect_decode_error(buf, len, want[i], what);
  }
  o.max_pixels = 32 * 24 - 1;
  o.min_w = o.min_h = 0;
  put_be32(buf + 16, 32);
  put_be32(buf + 20, 24);
  put_be32(buf + 29, crc32_png(buf + 12, 17));
  assert_int_equal(im_image_decode(buf, len, &o, &out), IM_ERR_LIMIT);
  assert_empty(&out);
  assert_int_equal(im_image_decode(buf, len, NULL, &out), IM_OK); /* the fixed-up file is valid again */
  im_image_free(&out);
  im_free(buf);
  im_image_free(&img);
}

/* ---- files ---------------------------------------------------------------------- */

static void test_load_save(void **state) {
  (void)state;
  const char *dir = tu_tmpdir();
  im_image_t img, out;
  make_smooth(&img, 30, 20, 3);
  const char *names[] = {"a.png", "b.PNG", "c.jpg", "d.JPEG", "e.jpeg", "f.Jpg"};
  for (size_t i = 0; i < 6; i++) {
    const char *p = tu_path(dir, names[i]);
    assert_int_equal(im_image_save(p, &img, 95), IM_OK);
    assert_int_equal(im_image_load(p, NULL, &out), IM_OK);
    assert_int_equal(out.w, 30);
    assert_int_equal(out.h, 20);
    assert_int_equal(out.c, 3);
    if (i < 2)
      assert_memory_equal(out.data, img.data, 30 * 20 * 3);
    else
      assert_true(mean_abs_diff(&img, &out) < 2.5);
    im_image_free(&out);
  }
  assert_int_equal(im_image_save(tu_path(dir, "x.bmp"), &img, 90), IM_ERR_ARG);
  assert_int_equal(im_image_save(tu_path(dir, "noext"), &img, 90), IM_ERR_ARG);
  assert_int_equal(im_image_save(tu_path(dir, "x.png.d/y"), &img, 90), IM_ERR_ARG);

  /* A text file named .jpg. */
  const char *txt = tu_path(dir, "text.jpg");
  assert_int_equal(tu_write_file(txt, "just some text\n", 15), 0);
  memset(&out, 0x11, sizeof out);
  assert_int_equal(im_image_load(txt, NULL, &out), IM_ERR_FORMAT);
  assert_empty(&out);
  assert_non_null(strstr(im_last_error(), txt));
  /* A missing file: an error that names it. */
  const char *missing = tu_path(dir, "missing.png");
  assert_int_not_equal(im_image_load(missing, NULL, &out), IM_OK);
  assert_empty(&out);
  assert_non_null(strstr(im_last_error(), missing));
  im_image_free(&img);
  tu_rmtree(dir);
}

/* ---- allocation failures ------------------------------------------------------------ */

typedef im_status_t (*op_fn)(void *ctx);

/* Runs op with the nth allocation failing for n = 1, 2, ... until it succeeds;
 * every failure must clean up after itself (the teardown checks live bytes). */
static void fail_each_allocation(op_fn op, void *ctx, const char *what) {
  for (int64_t n = 1; n < 10000; n++) {
    int64_t live = im_alloc_live_bytes();
    im_alloc_fail_after(n);
    im_status_t st = op(ctx);
    im_alloc_fail_after(0);
    if (st == IM_OK) return;
    if (im_alloc_live_bytes() != live) fail_msg("%s: leak after failing allocation %lld", what, (long long)n);
  }
  fail_msg("%s: never succeeded", what);
}

typedef struct {
  const uint8_t *data;
  size_t len;
  im_image_t *img;
  int mode;
} op_ctx_t;

static im_status_t op_decode(void *p) {
  op_ctx_t *c = p;
  im_image_t out;
  im_decode_opts_t o = IM_DECODE_OPTS_DEFAULT;
  o.channels = c->mode;
  im_status_t st = im_image_decode(c->data, c->len, &o, &out);
  if (st == IM_OK) im_image_free(&out);
  else if (out.data) return IM_ERR_INTERNAL;
  return st;
}

static im_status_t op_encode(void *p) {
  op_ctx_t *c = p;
  uint8_t *buf = NULL;
  size_t len = 0;
  im_status_t st = c->mode ? im_image_encode_png(c->img, &buf, &len) : im_image_encode_jpeg(c->img, 80, &buf, &len);
  im_free(buf);
  return st;
}

static im_status_t op_resize(void *p) {
  op_ctx_t *c = p;
  im_image_t out;
  memset(&out, 0, sizeof out);
  im_status_t st = im_image_resize(c->img, 17, 13, (im_resize_mode_t)c->mode, &out);
  im_image_free(&out);
  return st;
}

static void test_alloc_failures(void **state) {
  (void)state;
  im_image_t img;
  make_smooth(&img, 40, 30, 3);
  uint8_t *jpg = NULL, *png = NULL;
  size_t jlen = 0, plen = 0;
  encode_jpeg(&img, 90, &jpg, &jlen);
  assert_int_equal(im_image_encode_png(&img, &png, &plen), IM_OK);
  for (int ch = 0; ch <= 3; ch++) {
    if (ch == 2) continue;
    op_ctx_t cj = {jpg, jlen, NULL, ch}, cp = {png, plen, NULL, ch};
    fail_each_allocation(op_decode, &cj, "jpeg decode");
    fail_each_allocation(op_decode, &cp, "png decode");
  }
  op_ctx_t ce = {NULL, 0, &img, 0};
  fail_each_allocation(op_encode, &ce, "jpeg encode");
  ce.mode = 1;
  fail_each_allocation(op_encode, &ce, "png encode");
  for (int mode = 0; mode <= 1; mode++) {
    op_ctx_t cr = {NULL, 0, &img, mode};
    fail_each_allocation(op_resize, &cr, "resize");
  }
  im_free(jpg);
  im_free(png);
  im_image_free(&img);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_sniff, setup, teardown),
      cmocka_unit_test_setup_teardown(test_alloc_free, setup, teardown),
      cmocka_unit_test_setup_teardown(test_png_roundtrip_rgb, setup, teardown),
      cmocka_unit_test_setup_teardown(test_png_roundtrip_grey, setup, teardown),
      cmocka_unit_test_setup_teardown(test_png_variants, setup, teardown),
      cmocka_unit_test_setup_teardown(test_jpeg_roundtrip_rgb, setup, teardown),
      cmocka_unit_test_setup_teardown(test_jpeg_roundtrip_grey, setup, teardown),
      cmocka_unit_test_setup_teardown(test_jpeg_dct_scaling, setup, teardown),
      cmocka_unit_test_setup_teardown(test_jpeg_cmyk, setup, teardown),
      cmocka_unit_test_setup_teardown(test_resize_matches_pillow, setup, teardown),
      cmocka_unit_test_setup_teardown(test_resize_matches_ref, setup, teardown),
      cmocka_unit_test_setup_teardown(test_resize_misc, setup, teardown),
      cmocka_unit_test_setup_teardown(test_flip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_crop, setup, teardown),
      cmocka_unit_test_setup_teardown(test_convert, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_input_basic, setup, teardown),
      cmocka_unit_test_setup_teardown(test_truncated_jpeg, setup, teardown),
      cmocka_unit_test_setup_teardown(test_truncated_png, setup, teardown),
      cmocka_unit_test_setup_teardown(test_corrupt_data, setup, teardown),
      cmocka_unit_test_setup_teardown(test_oversized_headers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_load_save, setup, teardown),
      cmocka_unit_test_setup_teardown(test_alloc_failures, setup, teardown),
  };
  return cmocka_run_group_tests_name("image", tests, NULL, NULL);
}
