/* Request parsers of the model server: base64, the bodies POST /predict takes
 * (multipart uploads, raw images, JSON with base64 images) and Open Inference
 * Protocol v2 inference requests (JSON, and JSON plus binary tensors). Input
 * comes from the network: every length and count is checked. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imops/http.h"
#include "imops/image.h"
#include "serve/serve_impl.h"

/* ---- blobs ---- */

void im__serve_blobs_free(im__serve_blobs_t *b) {
  if (!b) return;
  for (size_t i = 0; i < b->n; i++) {
    im_free(b->v[i].owned);
    im_free(b->v[i].name);
  }
  im_free(b->v);
  memset(b, 0, sizeof *b);
}

static im_status_t blob_add(im__serve_blobs_t *b, const uint8_t *data, size_t len, uint8_t *owned, const char *name,
                            size_t max_images) {
  if (b->n >= max_images) {
    im_free(owned);
    return im_error(IM_ERR_LIMIT, "more than %zu images in one request", max_images);
  }
  if (b->n == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 4;
    im__serve_blob_t *v = im_realloc(b->v, cap * sizeof *v);
    if (!v) {
      im_free(owned);
      return im_error(IM_ERR_NOMEM, "out of memory");
    }
    b->v = v;
    b->cap = cap;
  }
  im__serve_blob_t *e = &b->v[b->n];
  memset(e, 0, sizeof *e);
  e->data = data;
  e->len = len;
  e->owned = owned;
  b->n++;
  if (name && !(e->name = im_strdup(name))) return im_error(IM_ERR_NOMEM, "out of memory");
  return IM_OK;
}

/* ---- base64 ---- */

static int b64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

im_status_t im__serve_b64_decode(const char *s, size_t len, uint8_t **out, size_t *out_len) {
  *out = NULL;
  *out_len = 0;
  if (len >= 5 && !strncmp(s, "data:", 5)) { /* a data URL: data:image/png;base64,.... */
    const char *comma = memchr(s, ',', len);
    if (!comma) return im_error(IM_ERR_FORMAT, "a data: URL without ','");
    len -= (size_t)(comma + 1 - s);
    s = comma + 1;
  }
  uint8_t *o = im_malloc(len / 4 * 3 + 3 + 1);
  if (!o) return im_error(IM_ERR_NOMEM, "out of memory");
  size_t n = 0, pad = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      pad++;
      continue;
    }
    int v = b64_value(c);
    if (v < 0 || pad) {
      im_free(o);
      return im_error(IM_ERR_FORMAT, "invalid base64: unexpected character at offset %zu", i);
    }
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      o[n++] = (uint8_t)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  if (bits >= 6 || pad > 2) { /* one character left over: not a whole byte */
    im_free(o);
    return im_error(IM_ERR_FORMAT, "invalid base64: the data ends in the middle of a byte");
  }
  *out = o;
  *out_len = n;
  return IM_OK;
}

im_status_t im__serve_b64_encode(im_buf_t *b, const uint8_t *d, size_t len) {
  static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char q[4];
  for (size_t i = 0; i < len; i += 3) {
    uint32_t v = (uint32_t)d[i] << 16;
    if (i + 1 < len) v |= (uint32_t)d[i + 1] << 8;
    if (i + 2 < len) v |= d[i + 2];
    q[0] = tab[(v >> 18) & 63];
    q[1] = tab[(v >> 12) & 63];
    q[2] = i + 1 < len ? tab[(v >> 6) & 63] : '=';
    q[3] = i + 2 < len ? tab[v & 63] : '=';
    im_status_t st = im_buf_append(b, q, 4);
    if (st) return st;
  }
  return IM_OK;
}

/* ---- POST /predict ---- */

/* "type/subtype" of a Content-Type, lower-cased, without parameters. */
static void media_type(const char *ct, char *out, size_t n) {
  size_t k = 0;
  if (ct) {
    while (*ct == ' ') ct++;
    for (; *ct && *ct != ';' && *ct != ' ' && k + 1 < n; ct++) out[k++] = (char)tolower((unsigned char)*ct);
  }
  out[k] = '\0';
}

static int image_like(const char *mt) {
  return !strncmp(mt, "image/", 6) || !strcmp(mt, "application/octet-stream");
}

static im_status_t add_b64(im__serve_blobs_t *out, const json_t *v, size_t max_images, const char *where) {
  if (json_is_object(v)) v = json_object_get(v, "b64");
  if (!json_is_string(v))
    return im_error(IM_ERR_FORMAT, "%s must be a base64 string (or {\"b64\": \"...\"})", where);
  uint8_t *d;
  size_t n;
  im_status_t st = im__serve_b64_decode(json_string_value(v), json_string_length(v), &d, &n);
  if (st) return im_error(st, "%s: %s", where, im_last_error());
  if (!n) {
    im_free(d);
    return im_error(IM_ERR_EMPTY, "%s is an empty image", where);
  }
  return blob_add(out, d, n, d, NULL, max_images);
}

static im_status_t parse_json_images(const uint8_t *body, size_t len, size_t max_images, im__serve_blobs_t *out) {
  json_error_t e;
  json_t *j = json_loadb((const char *)body, len, 0, &e);
  if (!j) return im_error(IM_ERR_FORMAT, "the body is not valid JSON: %s (at byte %d)", e.text, e.position);
  im_status_t st = IM_OK;
  const json_t *arr = json_object_get(j, "instances");
  const char *key = "instances";
  if (!arr) arr = json_object_get(j, "images"), key = "images";
  if (arr) {
    if (!json_is_array(arr)) {
      st = im_error(IM_ERR_FORMAT, "\"%s\" must be an array", key);
    } else {
      size_t i;
      const json_t *v;
      json_array_foreach(arr, i, v) {
        char where[64];
        snprintf(where, sizeof where, "%s[%zu]", key, i);
        if ((st = add_b64(out, v, max_images, where))) break;
      }
    }
  } else if (json_object_get(j, "image")) {
    st = add_b64(out, json_object_get(j, "image"), max_images, "image");
  } else {
    st = im_error(IM_ERR_FORMAT, "the JSON body has no \"instances\", \"images\" or \"image\" field");
  }
  json_decref(j);
  if (st == IM_OK && out->n == 0) st = im_error(IM_ERR_EMPTY, "no image in the request");
  return st;
}

im_status_t im__serve_parse_predict(const char *content_type, const uint8_t *body, size_t len, size_t max_images,
                                    im__serve_blobs_t *out) {
  char mt[128];
  media_type(content_type, mt, sizeof mt);
  if (!max_images) max_images = 1;
  if (!strcmp(mt, "multipart/form-data")) {
    im_http_form_t *form = NULL;
    im_http_form_limits_t lim = {.max_parts = max_images + 64};
    im_status_t st = im_http_form_parse(content_type, body, len, &lim, &form);
    if (st) return st == IM_ERR_UNSUPPORTED ? im_error(IM_ERR_FORMAT, "%s", im_last_error()) : st;
    for (size_t i = 0; i < im_http_form_size(form) && st == IM_OK; i++) {
      const im_http_part_t *p = im_http_form_at(form, i);
      char pmt[128];
      media_type(p->content_type, pmt, sizeof pmt);
      if (!p->filename && !image_like(pmt)) continue; /* a plain form field */
      if (p->len == 0) {
        st = im_error(IM_ERR_EMPTY, "the upload '%s' is empty", p->filename ? p->filename : p->name);
        break;
      }
      st = blob_add(out, p->data, p->len, NULL, p->filename ? p->filename : p->name, max_images);
    }
    im_http_form_free(form);
    if (st == IM_OK && out->n == 0)
      st = im_error(IM_ERR_EMPTY, "the multipart body has no file part; send the image as a file upload");
    return st;
  }
  if (image_like(mt)) {
    if (len == 0) return im_error(IM_ERR_EMPTY, "the request body is empty; send the image bytes");
    return blob_add(out, body, len, NULL, NULL, max_images);
  }
  if (!strcmp(mt, "application/json")) {
    if (len == 0) return im_error(IM_ERR_FORMAT, "the request body is empty; expected JSON");
    return parse_json_images(body, len, max_images, out);
  }
  return im_error(IM_ERR_UNSUPPORTED,
                  "unsupported Content-Type '%s': send multipart/form-data, image/jpeg, image/png or application/json",
                  mt[0] ? mt : "(none)");
}

/* ---- Open Inference Protocol v2 ---- */

void im__serve_v2_req_free(im__serve_v2_req_t *r) {
  if (!r) return;
  json_decref(r->header);
  im_free(r->f32);
  im__serve_blobs_free(&r->bytes);
  for (int i = 0; i < r->n_outputs; i++) im_free(r->outputs[i].name);
  memset(r, 0, sizeof *r);
}

static int json_truthy(const json_t *v, int dflt) {
  if (json_is_boolean(v)) return json_is_true(v);
  if (json_is_integer(v)) return json_integer_value(v) != 0;
  return dflt;
}

/* Flattens nested arrays of numbers into r->f32 (row-major). */
static im_status_t flatten_f32(const json_t *v, im__serve_v2_req_t *r, int64_t *k, int depth) {
  if (depth > IM__V2_MAX_DIMS) return im_error(IM_ERR_FORMAT, "input data is nested too deeply");
  if (json_is_array(v)) {
    size_t i;
    const json_t *e;
    json_array_foreach(v, i, e) {
      im_status_t st = flatten_f32(e, r, k, depth + 1);
      if (st) return st;
    }
    return IM_OK;
  }
  if (!json_is_number(v)) return im_error(IM_ERR_FORMAT, "FP32 input data must hold numbers only");
  if (*k >= r->numel)
    return im_error(IM_ERR_FORMAT, "input data has more values than its shape's %lld", (long long)r->numel);
  double d = json_number_value(v);
  if (!isfinite(d) || fabs(d) > 3.4e38) return im_error(IM_ERR_FORMAT, "FP32 input data holds a value out of range");
  r->f32[(*k)++] = (float)d;
  return IM_OK;
}

static im_status_t flatten_bytes(const json_t *v, im__serve_v2_req_t *r, size_t max_images, int depth) {
  if (depth > IM__V2_MAX_DIMS) return im_error(IM_ERR_FORMAT, "input data is nested too deeply");
  if (json_is_array(v)) {
    size_t i;
    const json_t *e;
    json_array_foreach(v, i, e) {
      im_status_t st = flatten_bytes(e, r, max_images, depth + 1);
      if (st) return st;
    }
    return IM_OK;
  }
  if (!json_is_string(v)) return im_error(IM_ERR_FORMAT, "BYTES input data must hold strings only");
  const uint8_t *s = (const uint8_t *)json_string_value(v);
  size_t n = json_string_length(v);
  if (n == 0) return im_error(IM_ERR_EMPTY, "BYTES input element %zu is empty", r->bytes.n);
  if (im_image_sniff(s, n) != IM_FORMAT_UNKNOWN) return blob_add(&r->bytes, s, n, NULL, NULL, max_images);
  uint8_t *d;
  size_t dn;
  im_status_t st = im__serve_b64_decode((const char *)s, n, &d, &dn);
  if (st) return im_error(st, "BYTES input element %zu is neither an image nor base64: %s", r->bytes.n, im_last_error());
  return blob_add(&r->bytes, d, dn, d, NULL, max_images);
}

static im_status_t parse_outputs(const json_t *h, im__serve_v2_req_t *r) {
  const json_t *outs = json_object_get(h, "outputs");
  if (!outs) return IM_OK;
  if (!json_is_array(outs)) return im_error(IM_ERR_FORMAT, "\"outputs\" must be an array");
  if (json_array_size(outs) > IM__V2_MAX_OUTPUTS)
    return im_error(IM_ERR_LIMIT, "at most %d outputs may be requested", IM__V2_MAX_OUTPUTS);
  size_t i;
  const json_t *o;
  json_array_foreach(outs, i, o) {
    const char *name = json_string_value(json_object_get(o, "name"));
    if (!name) return im_error(IM_ERR_FORMAT, "outputs[%zu] has no \"name\"", i);
    im__serve_v2_out_t *d = &r->outputs[r->n_outputs];
    if (!(d->name = im_strdup(name))) return im_error(IM_ERR_NOMEM, "out of memory");
    r->n_outputs++;
    const json_t *p = json_object_get(o, "parameters");
    d->binary = json_object_get(p, "binary_data") ? json_truthy(json_object_get(p, "binary_data"), 0) : -1;
    const json_t *cls = json_object_get(p, "classification");
    if (cls) {
      if (!json_is_integer(cls) || json_integer_value(cls) < 0 || json_integer_value(cls) > 1000000)
        return im_error(IM_ERR_FORMAT, "outputs[%zu]: \"classification\" must be a count", i);
      d->classification = (int)json_integer_value(cls);
    }
  }
  return IM_OK;
}

static im_status_t parse_binary_bytes(const uint8_t *p, size_t n, im__serve_v2_req_t *r, size_t max_images) {
  size_t off = 0;
  while (off < n) {
    if (n - off < 4) return im_error(IM_ERR_FORMAT, "BYTES binary data ends inside an element's length");
    uint32_t el = (uint32_t)p[off] | (uint32_t)p[off + 1] << 8 | (uint32_t)p[off + 2] << 16 | (uint32_t)p[off + 3] << 24;
    off += 4;
    if (el > n - off) return im_error(IM_ERR_FORMAT, "BYTES binary element %zu runs past its data", r->bytes.n);
    if (el == 0) return im_error(IM_ERR_EMPTY, "BYTES input element %zu is empty", r->bytes.n);
    im_status_t st = blob_add(&r->bytes, p + off, el, NULL, NULL, max_images);
    if (st) return st;
    off += el;
  }
  return IM_OK;
}

im_status_t im__serve_v2_parse(const uint8_t *body, size_t len, const char *header_len, size_t max_elems,
                               size_t max_images, im__serve_v2_req_t *r) {
  size_t hlen = len;
  if (header_len) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(header_len, &end, 10);
    while (*end == ' ') end++;
    if (errno || end == header_len || *end || header_len[0] == '-' || v > len)
      return im_error(IM_ERR_FORMAT, "Inference-Header-Content-Length '%s' is not a length within the body (%zu bytes)",
                      header_len, len);
    hlen = (size_t)v;
  }
  if (hlen == 0) return im_error(IM_ERR_FORMAT, "the request body is empty; expected an inference request in JSON");
  json_error_t e;
  r->header = json_loadb((const char *)body, hlen, 0, &e);
  if (!r->header) return im_error(IM_ERR_FORMAT, "the inference request is not valid JSON: %s (at byte %d)", e.text,
                                  e.position);
  const json_t *h = r->header;
  if (!json_is_object(h)) return im_error(IM_ERR_FORMAT, "the inference request must be a JSON object");
  const json_t *id = json_object_get(h, "id");
  if (id && !json_is_string(id)) return im_error(IM_ERR_FORMAT, "\"id\" must be a string");
  r->id = json_string_value(id);
  r->binary_output = json_truthy(json_object_get(json_object_get(h, "parameters"), "binary_data_output"), 0);
  im_status_t st = parse_outputs(h, r);
  if (st) return st;
  const json_t *ins = json_object_get(h, "inputs");
  if (!json_is_array(ins) || json_array_size(ins) == 0)
    return im_error(IM_ERR_FORMAT, "the request needs \"inputs\": an array with one tensor");
  if (json_array_size(ins) != 1)
    return im_error(IM_ERR_FORMAT, "the model takes one input; the request has %zu", json_array_size(ins));
  const json_t *in = json_array_get(ins, 0);
  r->input_name = json_string_value(json_object_get(in, "name"));
  if (!r->input_name) return im_error(IM_ERR_FORMAT, "inputs[0] has no \"name\"");
  const char *dt = json_string_value(json_object_get(in, "datatype"));
  if (!dt) return im_error(IM_ERR_FORMAT, "input '%s' has no \"datatype\"", r->input_name);
  if (!strcmp(dt, "FP32")) r->dtype = IM__V2_FP32;
  else if (!strcmp(dt, "BYTES")) r->dtype = IM__V2_BYTES;
  else
    return im_error(IM_ERR_UNSUPPORTED, "input '%s' has datatype %s; this model takes FP32 (normalized N x C x H x W) "
                                        "or BYTES (encoded images)",
                    r->input_name, dt);
  const json_t *shape = json_object_get(in, "shape");
  if (!json_is_array(shape) || json_array_size(shape) == 0 || json_array_size(shape) > IM__V2_MAX_DIMS)
    return im_error(IM_ERR_FORMAT, "input '%s' needs a \"shape\" of 1 to %d dimensions", r->input_name,
                    IM__V2_MAX_DIMS);
  r->ndim = (int)json_array_size(shape);
  r->numel = 1;
  for (int i = 0; i < r->ndim; i++) {
    const json_t *d = json_array_get(shape, (size_t)i);
    if (!json_is_integer(d) || json_integer_value(d) < 0)
      return im_error(IM_ERR_FORMAT, "input '%s': shape dimensions must be integers >= 0", r->input_name);
    r->shape[i] = json_integer_value(d);
    if (r->shape[i] > (int64_t)max_elems || (r->shape[i] && r->numel > (int64_t)max_elems / r->shape[i]))
      return im_error(IM_ERR_LIMIT, "input '%s' has more than %zu elements", r->input_name, max_elems);
    r->numel *= r->shape[i];
  }
  if (r->numel == 0) return im_error(IM_ERR_EMPTY, "input '%s' has no elements", r->input_name);
  if (r->dtype == IM__V2_BYTES && (size_t)r->numel > max_images)
    return im_error(IM_ERR_LIMIT, "more than %zu images in one request", max_images);
  const json_t *params = json_object_get(in, "parameters");
  const json_t *bsz = json_object_get(params, "binary_data_size");
  const json_t *data = json_object_get(in, "data");
  if (bsz) {
    if (!header_len) return im_error(IM_ERR_FORMAT, "binary_data_size without an Inference-Header-Content-Length header");
    if (!json_is_integer(bsz) || json_integer_value(bsz) < 0 || (size_t)json_integer_value(bsz) != len - hlen)
      return im_error(IM_ERR_FORMAT, "input '%s': binary_data_size %lld does not match the %zu bytes after the header",
                      r->input_name, (long long)json_integer_value(bsz), len - hlen);
    const uint8_t *p = body + hlen;
    size_t n = len - hlen;
    if (r->dtype == IM__V2_FP32) {
      if (n != (size_t)r->numel * 4)
        return im_error(IM_ERR_FORMAT, "input '%s': %zu bytes of FP32 data for a shape of %lld elements", r->input_name,
                        n, (long long)r->numel);
      if (!(r->f32 = im_malloc(n))) return im_error(IM_ERR_NOMEM, "out of memory");
      for (int64_t i = 0; i < r->numel; i++) { /* little-endian on the wire */
        uint32_t u = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
                     (uint32_t)p[4 * i + 3] << 24;
        float f;
        memcpy(&f, &u, 4);
        if (!isfinite(f)) return im_error(IM_ERR_FORMAT, "FP32 input data holds a value that is not finite");
        r->f32[i] = f;
      }
      return IM_OK;
    }
    if ((st = parse_binary_bytes(p, n, r, max_images))) return st;
  } else {
    if (header_len && hlen != len)
      return im_error(IM_ERR_FORMAT, "%zu bytes follow the JSON header, but no input has binary_data_size", len - hlen);
    if (!data) return im_error(IM_ERR_FORMAT, "input '%s' has neither \"data\" nor binary_data_size", r->input_name);
    if (r->dtype == IM__V2_FP32) {
      if (!(r->f32 = im_malloc((size_t)r->numel * sizeof *r->f32))) return im_error(IM_ERR_NOMEM, "out of memory");
      int64_t k = 0;
      if ((st = flatten_f32(data, r, &k, 0))) return st;
      if (k != r->numel)
        return im_error(IM_ERR_FORMAT, "input '%s' has %lld values for a shape of %lld elements", r->input_name,
                        (long long)k, (long long)r->numel);
      return IM_OK;
    }
    if ((st = flatten_bytes(data, r, max_images, 0))) return st;
  }
  if ((int64_t)r->bytes.n != r->numel)
    return im_error(IM_ERR_FORMAT, "input '%s' has %zu BYTES elements for a shape of %lld elements", r->input_name,
                    r->bytes.n, (long long)r->numel);
  return IM_OK;
}
