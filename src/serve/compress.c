/* Content-Encoding for the inference routes (the compression tritonclient
 * offers): gzip and deflate request bodies are inflated under a size limit
 * (a small body must not expand without bound), and responses are compressed
 * when the client accepts it. zlib does the work. */
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "serve/serve_impl.h"

static im_status_t inflate_with(const uint8_t *in, size_t n, int window_bits, size_t max_out, im_buf_t *out) {
  z_stream z;
  memset(&z, 0, sizeof z);
  if (inflateInit2(&z, window_bits) != Z_OK) return im_error(IM_ERR_NOMEM, "out of memory");
  z.next_in = (Bytef *)(uintptr_t)in;
  z.avail_in = (uInt)n;
  uint8_t chunk[16384];
  int rc = Z_OK;
  im_status_t st = IM_OK;
  while (rc != Z_STREAM_END) {
    z.next_out = chunk;
    z.avail_out = sizeof chunk;
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      st = im_error(IM_ERR_FORMAT, "the compressed body is corrupt or truncated: %s", z.msg ? z.msg : "no end of stream");
      break;
    }
    size_t got = sizeof chunk - z.avail_out;
    if (out->len + got > max_out) {
      st = im_error(IM_ERR_LIMIT, "the decompressed body is over the limit of %zu bytes", max_out);
      break;
    }
    if (got && (st = im_buf_append(out, chunk, got))) break;
    if (rc == Z_OK && got == 0 && z.avail_in == 0) {
      st = im_error(IM_ERR_FORMAT, "the compressed body is truncated");
      break;
    }
  }
  inflateEnd(&z);
  return st;
}

im_status_t im__serve_inflate(const char *encoding, const uint8_t *in, size_t n, size_t max_out, im_buf_t *out) {
  if (!strcasecmp(encoding, "gzip") || !strcasecmp(encoding, "x-gzip")) return inflate_with(in, n, 16 + 15, max_out, out);
  if (!strcasecmp(encoding, "deflate")) {
    /* HTTP's deflate is the zlib format; some clients send raw deflate */
    im_status_t st = inflate_with(in, n, 15, max_out, out);
    if (st == IM_ERR_FORMAT) {
      out->len = 0;
      st = inflate_with(in, n, -15, max_out, out);
    }
    return st;
  }
  return im_error(IM_ERR_UNSUPPORTED, "Content-Encoding %s is not supported; use gzip, deflate or none", encoding);
}

im_status_t im__serve_compress(int gzip, const uint8_t *in, size_t n, im_buf_t *out) {
  z_stream z;
  memset(&z, 0, sizeof z);
  if (deflateInit2(&z, 1, Z_DEFLATED, gzip ? 16 + 15 : 15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return im_error(IM_ERR_NOMEM, "out of memory");
  size_t bound = deflateBound(&z, (uLong)n);
  im_status_t st = IM_OK;
  if (out->cap < out->len + bound + 1) {
    char *p = im_realloc(out->data, out->len + bound + 1);
    if (!p) {
      deflateEnd(&z);
      return im_error(IM_ERR_NOMEM, "out of memory");
    }
    out->data = p;
    out->cap = out->len + bound + 1;
  }
  z.next_in = (Bytef *)(uintptr_t)in;
  z.avail_in = (uInt)n;
  z.next_out = (Bytef *)out->data + out->len;
  z.avail_out = (uInt)bound;
  int rc = deflate(&z, Z_FINISH);
  if (rc != Z_STREAM_END) st = im_error(IM_ERR_INTERNAL, "compression failed");
  else out->len += bound - z.avail_out;
  deflateEnd(&z);
  return st;
}
