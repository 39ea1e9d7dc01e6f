/* PNG through libpng: IHDR probe (parsed by hand), decode from memory with
 * bounds-checked reads (every bit depth, grey, grey+alpha, palette with tRNS,
 * RGB, RGBA, interlaced; alpha dropped, 16-bit reduced to 8), and encode to
 * memory. libpng's errors arrive through setjmp/longjmp; its allocations go
 * through the imops allocation funnel. */
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <png.h>

#include "image/image_internal.h"
#include "imops/core.h"

static const uint8_t PNG_SIG[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};

/* Ancillary chunks (iCCP, text, ...) may not make libpng allocate more than this. */
#define PNG_CHUNK_MALLOC_MAX (8u << 20)
#define PNG_CHUNK_CACHE_MAX 256

typedef struct {
  char msg[200]; /* libpng's last error text */
  const uint8_t *data;
  size_t len, pos;
  const im_decode_opts_t *opts;
  png_structp png;
  png_infop info;
  uint8_t *pixels;
  png_bytep *rows;
  im_status_t st; /* set by our own checks inside the setjmp region */
  int w, h, c;
} png_rd_t;

typedef struct {
  char msg[200];
  uint8_t *data;
  size_t len, cap;
  const im_image_t *img;
  png_structp png;
  png_infop info;
} png_wr_t;

/* ---- callbacks ------------------------------------------------------------- */

static void on_error(png_structp png, png_const_charp msg) {
  /* Both context structs start with msg. */
  char *buf = png_get_error_ptr(png);
  if (buf) snprintf(buf, 200, "%s", msg ? msg : "error");
  png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
  (void)png;
  (void)msg; /* library code never prints */
}

static png_voidp on_malloc(png_structp png, png_alloc_size_t n) {
  (void)png;
  return im_malloc(n);
}

static void on_free(png_structp png, png_voidp p) {
  (void)png;
  im_free(p);
}

static void on_read(png_structp png, png_bytep out, size_t n) {
  png_rd_t *r = png_get_io_ptr(png);
  if (n > r->len - r->pos) png_error(png, "truncated data");
  memcpy(out, r->data + r->pos, n);
  r->pos += n;
}

static void on_write(png_structp png, png_bytep in, size_t n) {
  png_wr_t *wr = png_get_io_ptr(png);
  if (n > wr->cap - wr->len) {
    size_t cap = wr->cap ? wr->cap : 4096;
    while (cap - wr->len < n) {
      if (cap > SIZE_MAX / 2) png_error(png, "output too large");
      cap *= 2;
    }
    uint8_t *p = im_realloc(wr->data, cap);
    if (!p) png_error(png, "out of memory");
    wr->data = p;
    wr->cap = cap;
  }
  memcpy(wr->data + wr->len, in, n);
  wr->len += n;
}

static void on_flush(png_structp png) { (void)png; }

/* ---- probe ---------------------------------------------------------------- */

static uint32_t be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

im_status_t im_image__png_probe(const uint8_t *data, size_t len, im_image_info_t *info) {
  if (len < 8 || memcmp(data, PNG_SIG, 8) != 0) return im_error(IM_ERR_FORMAT, "png: bad signature");
  if (len < 8 + 8 + 13) return im_error(IM_ERR_FORMAT, "png: truncated data (no complete IHDR)");
  const uint8_t *c = data + 8;
  if (be32(c) != 13 || memcmp(c + 4, "IHDR", 4) != 0) return im_error(IM_ERR_FORMAT, "png: first chunk is not a valid IHDR");
  uint32_t w = be32(c + 8), h = be32(c + 12);
  int bd = c[16], ct = c[17];
  if (w == 0 || h == 0 || w > 0x7fffffffu || h > 0x7fffffffu)
    return im_error(IM_ERR_FORMAT, "png: invalid dimensions %ux%u", (unsigned)w, (unsigned)h);
  int ok;
  switch (ct) {
  case 0: ok = bd == 1 || bd == 2 || bd == 4 || bd == 8 || bd == 16; break;
  case 3: ok = bd == 1 || bd == 2 || bd == 4 || bd == 8; break;
  case 2: case 4: case 6: ok = bd == 8 || bd == 16; break;
  default: ok = 0;
  }
  if (!ok) return im_error(IM_ERR_FORMAT, "png: invalid colour type %d with bit depth %d", ct, bd);
  info->format = IM_FORMAT_PNG;
  info->w = (int)w;
  info->h = (int)h;
  info->channels = (ct == 0 || ct == 4) ? 1 : 3;
  return IM_OK;
}

/* ---- decode --------------------------------------------------------------- */

/* All libpng calls that may longjmp live here; state that must survive the jump
 * is in *r, which this function never reassigns. 0 ok, -1 libpng error (r->msg),
 * -2 our own error (r->st). */
static int decode_inner(png_rd_t *r) {
  png_structp png = r->png;
  png_infop info = r->info;
  if (setjmp(png_jmpbuf(png))) return -1;
  png_set_user_limits(png, IM_IMAGE__MAX_DIM, IM_IMAGE__MAX_DIM);
  png_set_chunk_malloc_max(png, PNG_CHUNK_MALLOC_MAX);
  png_set_chunk_cache_max(png, PNG_CHUNK_CACHE_MAX);
  png_set_read_fn(png, r, on_read);
  png_read_info(png, info);

  png_uint_32 w = 0, h = 0;
  int bd = 0, ct = 0, il = 0;
  png_get_IHDR(png, info, &w, &h, &bd, &ct, &il, NULL, NULL);
  r->st = im_image__check_dims("png", (int64_t)w, (int64_t)h, r->opts);
  if (r->st != IM_OK) return -2;

  int want = r->opts ? r->opts->channels : 0;
  int grey = (ct & PNG_COLOR_MASK_COLOR) == 0;
  if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (grey && bd < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (bd == 16) png_set_strip_16(png);
  if (ct & PNG_COLOR_MASK_ALPHA || ct == PNG_COLOR_TYPE_PALETTE) png_set_strip_alpha(png);
  if (grey && want == 3) png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);

  int c = (grey && want != 3) ? 1 : 3;
  size_t rowbytes = png_get_rowbytes(png, info);
  if (png_get_channels(png, info) != c || png_get_bit_depth(png, info) != 8 || rowbytes != (size_t)w * (size_t)c) {
    r->st = im_error(IM_ERR_INTERNAL, "png: unexpected layout after transformations (%d channels, %zu bytes per row)",
                     png_get_channels(png, info), rowbytes);
    return -2;
  }
  r->pixels = im_malloc(rowbytes * h);
  r->rows = im_malloc(sizeof(png_bytep) * h);
  if (!r->pixels || !r->rows) {
    r->st = im_error(IM_ERR_NOMEM, "png: out of memory for %ux%ux%d", (unsigned)w, (unsigned)h, c);
    return -2;
  }
  for (png_uint_32 y = 0; y < h; y++) r->rows[y] = r->pixels + (size_t)y * rowbytes;
  png_read_image(png, r->rows);
  png_read_end(png, NULL); /* through IEND: a file cut after the pixels is still truncated */
  r->w = (int)w;
  r->h = (int)h;
  r->c = c;
  return 0;
}

im_status_t im_image__png_decode(const uint8_t *data, size_t len, const im_decode_opts_t *opts, im_image_t *out) {
  /* Our own IHDR parse first: huge dimensions are IM_ERR_LIMIT before libpng
   * (whose user limits would call them a format error) sees them. */
  im_image_info_t hdr;
  im_status_t st = im_image__png_probe(data, len, &hdr);
  if (st == IM_OK) st = im_image__check_dims("png", hdr.w, hdr.h, opts);
  if (st != IM_OK) return st;

  png_rd_t r;
  memset(&r, 0, sizeof r);
  r.data = data;
  r.len = len;
  r.opts = opts;
  r.png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, r.msg, on_error, on_warning, NULL, on_malloc, on_free);
  if (!r.png) return im_error(IM_ERR_NOMEM, "png: cannot create decoder");
  r.info = png_create_info_struct(r.png);
  if (!r.info) {
    png_destroy_read_struct(&r.png, NULL, NULL);
    return im_error(IM_ERR_NOMEM, "png: cannot create decoder");
  }
  int rc = decode_inner(&r);
  png_destroy_read_struct(&r.png, &r.info, NULL);
  im_free(r.rows);
  if (rc == -1) {
    im_free(r.pixels);
    int oom = strstr(r.msg, "memory") != NULL;
    return im_error(oom ? IM_ERR_NOMEM : IM_ERR_FORMAT, "png: %s (at byte %zu of %zu)", r.msg, r.pos, len);
  }
  if (rc == -2) {
    im_free(r.pixels);
    return r.st;
  }
  int c = r.c;
  st = im_image__fix_channels(&r.pixels, (size_t)r.w * (size_t)r.h, &c, opts ? opts->channels : 0);
  if (st != IM_OK) {
    im_free(r.pixels);
    return st;
  }
  out->w = r.w;
  out->h = r.h;
  out->c = c;
  out->data = r.pixels;
  return IM_OK;
}

/* ---- encode --------------------------------------------------------------- */

static int encode_inner(png_wr_t *wr) {
  png_structp png = wr->png;
  png_infop info = wr->info;
  const im_image_t *img = wr->img;
  if (setjmp(png_jmpbuf(png))) return -1;
  png_set_write_fn(png, wr, on_write, on_flush);
  png_set_compression_level(png, 6);
  png_set_IHDR(png, info, (png_uint_32)img->w, (png_uint_32)img->h, 8,
               img->c == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  const size_t stride = (size_t)img->w * (size_t)img->c;
  for (int y = 0; y < img->h; y++) png_write_row(png, img->data + (size_t)y * stride);
  png_write_end(png, NULL);
  return 0;
}

im_status_t im_image_encode_png(const im_image_t *img, uint8_t **out, size_t *len) {
  if (!out || !len) return im_error(IM_ERR_ARG, "png encode: NULL output");
  *out = NULL;
  *len = 0;
  if (!img || !img->data || img->w <= 0 || img->h <= 0 || img->w > IM_IMAGE__MAX_DIM || img->h > IM_IMAGE__MAX_DIM ||
      (img->c != 1 && img->c != 3))
    return im_error(IM_ERR_ARG, "png encode: invalid image (need 1 or 3 channels)");
  png_wr_t wr;
  memset(&wr, 0, sizeof wr);
  wr.img = img;
  wr.png = png_create_write_struct_2(PNG_LIBPNG_VER_STRING, wr.msg, on_error, on_warning, NULL, on_malloc, on_free);
  if (!wr.png) return im_error(IM_ERR_NOMEM, "png encode: cannot create encoder");
  wr.info = png_create_info_struct(wr.png);
  if (!wr.info) {
    png_destroy_write_struct(&wr.png, NULL);
    return im_error(IM_ERR_NOMEM, "png encode: cannot create encoder");
  }
  int rc = encode_inner(&wr);
  png_destroy_write_struct(&wr.png, &wr.info);
  if (rc != 0) {
    im_free(wr.data);
    int oom = strstr(wr.msg, "memory") != NULL;
    return im_error(oom ? IM_ERR_NOMEM : IM_ERR_INTERNAL, "png encode: %s", wr.msg);
  }
  uint8_t *p = im_realloc(wr.data, wr.len);
  *out = p ? p : wr.data;
  *len = wr.len;
  return IM_OK;
}
