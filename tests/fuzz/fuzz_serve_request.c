/* libFuzzer target for the model server's request parsers, which take outside
 * input: POST /predict bodies (multipart uploads, raw images, JSON with base64
 * images) and Open Inference Protocol v2 inference requests (JSON, and JSON
 * followed by binary tensors), and gzip/deflate request bodies.
 *
 * Input layout: the first byte selects the parser.
 *   sel % 6 == 5: a gzip (sel & 8) or deflate Content-Encoding body, inflated under a limit
 *   sel % 5 == 0: /predict, multipart/form-data with the boundary "xyz" (the rest is the body)
 *   sel % 5 == 1: /predict, application/json
 *   sel % 5 == 2: /predict, image/jpeg (raw body)
 *   sel % 5 == 3: v2, JSON only
 *   sel % 5 == 4: v2 with the binary extension: the next two bytes (little-endian) are
 *                 Inference-Header-Content-Length, the rest is the body
 * Invariants checked: a failure says why, leaves nothing behind and is one of
 * the statuses the handlers map to 4xx; a success holds what the limits allow.
 *
 *   mkdir -p /tmp/fz && ./fuzz_serve_request -max_total_time=30 /tmp/fz tests/fuzz/corpus/serve_request
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imops/core.h"
#include "serve/serve_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_IMAGES 8
#define MAX_ELEMS 4096

static void check_status(im_status_t st) {
  if (st == IM_OK) return;
  if (!im_last_error()[0]) abort();
  if (st != IM_ERR_FORMAT && st != IM_ERR_LIMIT && st != IM_ERR_UNSUPPORTED && st != IM_ERR_EMPTY &&
      st != IM_ERR_NOMEM)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  if (data[0] % 6 == 5) {
    im_buf_t out = {0};
    im_status_t st = im__serve_inflate(data[0] & 8 ? "gzip" : "deflate", data + 1, size - 1, 1 << 16, &out);
    check_status(st);
    if (st == IM_OK && out.len > (1 << 16)) abort();
    im_buf_free(&out);
    return 0;
  }
  const int sel = data[0] % 5;
  const uint8_t *body = data + 1;
  size_t n = size - 1;
  im_error_clear();
  if (sel <= 2) {
    static const char *const ct[] = {"multipart/form-data; boundary=xyz", "application/json", "image/jpeg"};
    im__serve_blobs_t b = {0};
    im_status_t st = im__serve_parse_predict(ct[sel], body, n, MAX_IMAGES, &b);
    check_status(st);
    if (st == IM_OK) {
      if (b.n == 0 || b.n > MAX_IMAGES) abort();
      for (size_t i = 0; i < b.n; i++) {
        if (!b.v[i].data || b.v[i].len == 0) abort();
        volatile uint8_t sum = 0; /* every byte is readable */
        for (size_t k = 0; k < b.v[i].len; k++) sum ^= b.v[i].data[k];
        (void)sum;
      }
    }
    im__serve_blobs_free(&b);
    return 0;
  }
  char hl[16], *hlp = NULL;
  if (sel == 4) {
    if (n < 2) return 0;
    snprintf(hl, sizeof hl, "%u", (unsigned)body[0] | (unsigned)body[1] << 8);
    hlp = hl;
    body += 2;
    n -= 2;
  }
  im__serve_v2_req_t r;
  memset(&r, 0, sizeof r);
  im_status_t st = im__serve_v2_parse(body, n, hlp, MAX_ELEMS, MAX_IMAGES, &r);
  check_status(st);
  if (st == IM_OK) {
    if (r.numel < 1 || r.numel > MAX_ELEMS || !r.input_name) abort();
    if (r.dtype == IM__V2_FP32) {
      if (!r.f32) abort();
      volatile float s = 0;
      for (int64_t i = 0; i < r.numel; i++) s += r.f32[i];
      (void)s;
    } else if (r.dtype == IM__V2_BYTES) {
      if ((int64_t)r.bytes.n != r.numel || r.bytes.n > MAX_IMAGES) abort();
    } else {
      abort();
    }
  }
  im__serve_v2_req_free(&r);
  return 0;
}
