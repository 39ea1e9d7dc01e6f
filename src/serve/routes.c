/* The model server's HTTP routes: POST /predict, the Open Inference Protocol
 * v2 (health, metadata, inference with JSON and binary tensors, the
 * classification extension), health probes, /metrics, /openapi.json, /docs.
 * Every error is {"error": "..."} with a 4xx status for the client's mistakes. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imops/image.h"
#include "imops/version.h"
#include "serve/serve_int.h"

/* ---- answers ---- */

static im_status_t reply_json(im_http_resp_t *resp, int status, json_t *j) {
  im_status_t st = im_http_resp_json(resp, status, j);
  json_decref(j);
  return st;
}

static im_status_t reply_error(im_http_resp_t *resp, int status, const char *fmt, ...) IM_PRINTF(3, 4);
static im_status_t reply_error(im_http_resp_t *resp, int status, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  im_status_t st = reply_json(resp, status, json_pack("{s:s}", "error", msg));
  if (st == IM_OK && status == 503) st = im_http_resp_header(resp, "Retry-After", "1");
  return st;
}

/* The status for a parser's error: the client's mistake is 4xx. */
static int status_of(im_status_t st) {
  switch (st) {
    case IM_ERR_LIMIT: return 413;
    case IM_ERR_UNSUPPORTED: return 415;
    case IM_ERR_NOT_FOUND: return 404;
    case IM_ERR_NOMEM: return 503;
    case IM_ERR_CANCELLED: return 503;
    default: return 400;
  }
}

/* 1 gzip, 2 deflate, 0 none: what the client's Accept-Encoding takes (a q=0 refuses). */
static int accepted_encoding(const im_http_req_t *req) {
  const char *ae = im_http_req_header(req, "Accept-Encoding");
  int best = 0;
  for (const char *p = ae; p && *p;) {
    while (*p == ' ' || *p == ',') p++;
    size_t n = strcspn(p, ",");
    size_t name = strcspn(p, ";, ");
    const char *q = memchr(p, ';', n);
    int refused = q && strstr(q, "q=0") && strtod(strstr(q, "q=0") + 2, NULL) == 0;
    if (!refused && name == 4 && !strncasecmp(p, "gzip", 4)) best = 1;
    else if (!refused && name == 7 && !strncasecmp(p, "deflate", 7) && !best) best = 2;
    p += n;
  }
  return best;
}

/* Status, Content-Type and body (taken: from im_malloc), compressed when the client accepts it. */
static im_status_t send_body(const im_http_req_t *req, im_http_resp_t *resp, int status, const char *ctype, char *body,
                             size_t len) {
  int enc = len > 256 ? accepted_encoding(req) : 0;
  im_status_t st = IM_OK;
  if (enc) {
    im_buf_t z = {0};
    if (im__serve_compress(enc == 1, (const uint8_t *)body, len, &z) == IM_OK) {
      im_free(body);
      body = z.data;
      len = z.len;
      st = im_http_resp_header(resp, "Content-Encoding", enc == 1 ? "gzip" : "deflate");
    } else {
      im_buf_free(&z);
    }
  }
  im_http_resp_status(resp, status);
  if (st == IM_OK) st = im_http_resp_header(resp, "Content-Type", ctype);
  if (st == IM_OK) {
    im_http_resp_body_owned(resp, body, len);
    return IM_OK;
  }
  im_free(body);
  return st;
}

im_status_t serve_not_found(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  return reply_error(resp, 404, "no route for %s %s; see /docs and /openapi.json", im_http_req_method(req),
                     im_http_req_path(req));
}

/* ---- images to inputs ---- */

/* Decodes each image (checking its pixels from the header first) and turns it
 * into the model's input exactly as `imops predict` does. Returns the HTTP status. */
static int prepare_images(im_serve_t *s, serve_gen_t *g, const im__serve_blobs_t *bl, float *x, char *err, size_t n) {
  im_train_model_t *m = g->inst[0];
  for (size_t i = 0; i < bl->n; i++) {
    const im__serve_blob_t *b = &bl->v[i];
    char who[300];
    if (b->name) snprintf(who, sizeof who, "image %zu (%s)", i, b->name);
    else snprintf(who, sizeof who, "image %zu", i);
    if (im_image_sniff(b->data, b->len) == IM_FORMAT_UNKNOWN) {
      snprintf(err, n, "%s is not a JPEG or PNG image", who);
      return 400;
    }
    im_image_info_t info;
    if (im_image_probe(b->data, b->len, &info) != IM_OK) {
      snprintf(err, n, "%s: cannot read the image header: %s", who, im_last_error());
      return 400;
    }
    if ((int64_t)info.w * info.h > s->o.max_pixels) {
      snprintf(err, n, "%s is %dx%d, over the limit of %lld pixels", who, info.w, info.h, (long long)s->o.max_pixels);
      return 413;
    }
    im_decode_opts_t dopt = IM_DECODE_OPTS_DEFAULT;
    dopt.channels = g->c;
    dopt.min_w = g->w;
    dopt.min_h = g->h;
    dopt.max_pixels = s->o.max_pixels;
    im_image_t img = {0};
    im_status_t st = im_image_decode(b->data, b->len, &dopt, &img);
    if (st == IM_OK) st = im_train_model_input(m, &img, x + i * g->chw);
    im_image_free(&img);
    if (st) {
      snprintf(err, n, "%s cannot be decoded: %s", who, im_last_error());
      return st == IM_ERR_LIMIT ? 413 : st == IM_ERR_NOMEM ? 503 : 400;
    }
  }
  return 200;
}

/* Images in, probabilities out (n x K, im_free), or an error status. */
static int infer_images(im_serve_t *s, serve_gen_t *g, const im__serve_blobs_t *bl, float **probs, char *err,
                        size_t errn) {
  *probs = NULL;
  float *x = im_malloc(sizeof(float) * g->chw * bl->n);
  float *p = im_malloc(sizeof(float) * (size_t)g->k * bl->n);
  int status = 503;
  if (!x || !p) snprintf(err, errn, "out of memory for %zu images", bl->n);
  else if ((status = prepare_images(s, g, bl, x, err, errn)) == 200)
    status = serve_infer(s, g, x, (int)bl->n, p, err, errn);
  im_free(x);
  if (status == 200) *probs = p;
  else im_free(p);
  return status;
}

static int argmax(const float *p, int k) {
  int best = 0;
  for (int c = 1; c < k; c++)
    if (p[c] > p[best]) best = c;
  return best;
}

/* ---- POST /predict ---- */

static im_status_t h_predict(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  im_serve_t *s = user;
  size_t len;
  const uint8_t *body = im_http_req_body(req, &len);
  const char *fmt = im_http_req_query(req, "format");
  if (fmt && strcmp(fmt, "classes") && strcmp(fmt, "full"))
    return reply_error(resp, 400, "unknown format '%s': use classes or full", fmt);
  im__serve_blobs_t bl = {0};
  im_status_t st = im__serve_parse_predict(im_http_req_content_type(req), body, len, (size_t)s->o.max_images, &bl);
  if (st) {
    im__serve_blobs_free(&bl);
    return reply_error(resp, status_of(st), "%s", im_last_error());
  }
  serve_gen_t *g = serve_gen_acquire(s);
  if (!g) {
    im__serve_blobs_free(&bl);
    return reply_error(resp, 503, "no model is loaded");
  }
  char err[1024] = "";
  float *probs = NULL;
  int status = infer_images(s, g, &bl, &probs, err, sizeof err);
  if (status != 200) {
    im__serve_blobs_free(&bl);
    serve_gen_unref(g);
    return reply_error(resp, status, "%s", err);
  }
  im_train_model_t *m = g->inst[0];
  json_t *out;
  if (fmt && !strcmp(fmt, "classes")) {
    out = json_array();
    for (size_t i = 0; i < bl.n; i++) json_array_append_new(out, json_integer(argmax(probs + i * (size_t)g->k, g->k)));
  } else {
    json_t *preds = json_array();
    for (size_t i = 0; i < bl.n; i++) {
      const float *p = probs + i * (size_t)g->k;
      int best = argmax(p, g->k);
      json_t *pj = json_object();
      for (int c = 0; c < g->k; c++) json_object_set_new(pj, im_train_model_class(m, c), json_real(p[c]));
      json_t *e = json_pack("{s:i, s:s, s:f, s:o}", "class", best, "label", im_train_model_class(m, best),
                            "probability", (double)p[best], "probabilities", pj);
      if (bl.v[i].name) json_object_set_new(e, "file", json_string(bl.v[i].name));
      json_array_append_new(preds, e);
    }
    out = json_pack("{s:s, s:s, s:o}", "model", g->name, "version", g->version, "predictions", preds);
  }
  im_free(probs);
  im__serve_blobs_free(&bl);
  serve_gen_unref(g);
  return reply_json(resp, 200, out);
}

/* ---- health, metrics, docs ---- */

static im_status_t h_live(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  return reply_json(resp, 200, json_pack("{s:s}", "status", "ok"));
}

static int is_ready(im_serve_t *s) {
  serve_gen_t *g = serve_gen_acquire(s);
  int ok = g && s->ready && !s->stopping;
  serve_gen_unref(g);
  return ok;
}

static im_status_t h_ready(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  im_serve_t *s = user;
  if (!is_ready(s)) return reply_error(resp, 503, "not ready");
  return reply_json(resp, 200, json_pack("{s:s}", "status", "ready"));
}

static im_status_t h_metrics(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  im_serve_t *s = user;
  im_buf_t b = {0};
  im_status_t st = im_monitor_expose(s->mon, &b);
  if (st) {
    im_buf_free(&b);
    return reply_error(resp, 503, "%s", im_last_error());
  }
  return send_body(req, resp, 200, IM_MONITOR_CONTENT_TYPE, b.data, b.len);
}

static im_status_t h_openapi(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  serve_gen_t *g = serve_gen_acquire(user);
  json_t *j = serve_openapi(g);
  serve_gen_unref(g);
  if (!j) return reply_error(resp, 503, "out of memory");
  return reply_json(resp, 200, j);
}

static im_status_t h_docs(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  return im_http_resp_text(resp, 200, "text/html; charset=utf-8", serve_docs_html);
}

/* ---- Open Inference Protocol v2 ---- */

static im_status_t h_v2_server(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  return reply_json(resp, 200, json_pack("{s:s, s:s, s:[s,s]}", "name", "imops", "version", im_version(), "extensions",
                                         "binary_tensor_data", "classification"));
}

static im_status_t h_v2_live(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  return reply_json(resp, 200, json_pack("{s:b}", "live", 1));
}

static im_status_t h_v2_ready(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  if (!is_ready(user)) return reply_error(resp, 503, "not ready");
  return reply_json(resp, 200, json_pack("{s:b}", "ready", 1));
}

/* The generation that serves /v2/models/{name}[/versions/{version}], or NULL
 * after answering 404 (unknown name or version) or 503. */
static serve_gen_t *v2_model(im_serve_t *s, im_http_req_t *req, im_http_resp_t *resp) {
  const char *name = im_http_req_param(req, "name"), *ver = im_http_req_param(req, "version");
  serve_gen_t *g = serve_gen_acquire(s);
  if (!g) {
    (void)reply_error(resp, 503, "no model is loaded");
    return NULL;
  }
  if (!name || strcmp(name, g->name)) {
    (void)reply_error(resp, 404, "unknown model '%s'; this server serves '%s'", name ? name : "", g->name);
  } else if (ver && *ver && strcmp(ver, g->version[0] ? g->version : "1")) {
    (void)reply_error(resp, 404, "model '%s' has no version '%s' here; it serves version %s", name, ver,
                      g->version[0] ? g->version : "1");
  } else {
    return g;
  }
  serve_gen_unref(g);
  return NULL;
}

static json_t *tensor_meta(const char *name, const char *dtype, int ndim, const int64_t *dims) {
  json_t *shape = json_array();
  for (int i = 0; i < ndim; i++) json_array_append_new(shape, json_integer(dims[i]));
  return json_pack("{s:s, s:s, s:o}", "name", name, "datatype", dtype, "shape", shape);
}

static im_status_t h_v2_model(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  serve_gen_t *g = v2_model(user, req, resp);
  if (!g) return IM_OK;
  int64_t in[4] = {-1, g->c, g->h, g->w}, one[1] = {-1}, pr[2] = {-1, g->k};
  json_t *classes = json_array();
  for (int c = 0; c < g->k; c++) json_array_append_new(classes, json_string(im_train_model_class(g->inst[0], c)));
  json_t *j = json_pack("{s:s, s:s, s:[o,o], s:[o,o,o], s:{s:o, s:s, s:s}}", "name", g->name, "platform",
                        "imops_safetensors", "inputs", tensor_meta("input", "FP32", 4, in),
                        tensor_meta("image", "BYTES", 1, one), "outputs",
                        tensor_meta("probabilities", "FP32", 2, pr), tensor_meta("class", "INT64", 1, one),
                        tensor_meta("label", "BYTES", 1, one), "parameters", "classes", classes, "arch", g->arch,
                        "run_id", g->run_id);
  if (j && g->version[0]) json_object_set_new(j, "versions", json_pack("[s]", g->version));
  serve_gen_unref(g);
  return reply_json(resp, 200, j);
}

static im_status_t h_v2_model_ready(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  serve_gen_t *g = v2_model(user, req, resp);
  if (!g) return IM_OK;
  int ok = is_ready(user);
  json_t *j = json_pack("{s:s, s:b}", "name", g->name, "ready", ok);
  serve_gen_unref(g);
  if (!ok) {
    json_decref(j);
    return reply_error(resp, 503, "model is not ready");
  }
  return reply_json(resp, 200, j);
}

enum { OUT_PROBS, OUT_CLASS, OUT_LABEL, OUT_N };
static const char *const out_names[OUT_N] = {"probabilities", "class", "label"};

/* One output tensor of the response: JSON data, or binary appended to bin. */
static im_status_t add_output(json_t *outs, im_buf_t *bin, const char *name, const char *dtype, int ndim,
                              const int64_t *dims, int binary, json_t *data, const void *raw, size_t raw_len) {
  json_t *shape = json_array();
  for (int i = 0; i < ndim; i++) json_array_append_new(shape, json_integer(dims[i]));
  json_t *o = json_pack("{s:s, s:s, s:o}", "name", name, "datatype", dtype, "shape", shape);
  if (!o) {
    json_decref(data);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  if (binary) {
    json_decref(data);
    json_object_set_new(o, "parameters", json_pack("{s:I}", "binary_data_size", (json_int_t)raw_len));
    im_status_t st = im_buf_append(bin, raw, raw_len);
    if (st) {
      json_decref(o);
      return st;
    }
  } else {
    json_object_set_new(o, "data", data);
  }
  return json_array_append_new(outs, o) ? im_error(IM_ERR_NOMEM, "out of memory") : IM_OK;
}

static void put_u32le(im_buf_t *b, uint32_t v) {
  uint8_t q[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  (void)im_buf_append(b, q, 4);
}

/* A BYTES tensor of strings: JSON array, and the binary form (u32le length + bytes). */
static void bytes_el(json_t *arr, im_buf_t *raw, const char *s) {
  json_array_append_new(arr, json_string(s));
  put_u32le(raw, (uint32_t)strlen(s));
  (void)im_buf_append(raw, s, strlen(s));
}

static im_status_t v2_respond(const im_http_req_t *req, im_http_resp_t *resp, serve_gen_t *g,
                              const im__serve_v2_req_t *r, const float *probs, int n) {
  im_train_model_t *m = g->inst[0];
  /* which outputs, in the order asked (all three when none is named) */
  int which[IM__V2_MAX_OUTPUTS], bin[IM__V2_MAX_OUTPUTS], cls[IM__V2_MAX_OUTPUTS], no = 0;
  if (r->n_outputs == 0) {
    for (int i = 0; i < OUT_N; i++) which[no] = i, bin[no] = r->binary_output, cls[no] = 0, no++;
  } else {
    for (int i = 0; i < r->n_outputs; i++) {
      int k = -1;
      for (int q = 0; q < OUT_N; q++)
        if (!strcmp(r->outputs[i].name, out_names[q])) k = q;
      if (k < 0)
        return reply_error(resp, 400, "unknown output '%s': the model has probabilities, class and label",
                           r->outputs[i].name);
      which[no] = k;
      bin[no] = r->outputs[i].binary >= 0 ? r->outputs[i].binary : r->binary_output;
      cls[no] = r->outputs[i].classification;
      no++;
    }
  }
  json_t *outs = json_array();
  im_buf_t blobs = {0};
  im_status_t st = IM_OK;
  for (int o = 0; o < no && st == IM_OK; o++) {
    json_t *data = json_array();
    im_buf_t raw = {0};
    int64_t dims[2] = {n, g->k};
    if (which[o] == OUT_PROBS && cls[o] > 0) { /* classification extension: "value:index:label", top K */
      int topk = cls[o] < g->k ? cls[o] : g->k;
      dims[1] = topk;
      for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * (size_t)g->k;
        int used[1024] = {0};
        for (int t = 0; t < topk && t < 1024; t++) {
          int best = -1;
          for (int c = 0; c < g->k && c < 1024; c++)
            if (!used[c] && (best < 0 || p[c] > p[best])) best = c;
          used[best] = 1;
          char e[512];
          snprintf(e, sizeof e, "%f:%d:%s", (double)p[best], best, im_train_model_class(m, best));
          bytes_el(data, &raw, e);
        }
      }
      st = add_output(outs, &blobs, out_names[OUT_PROBS], "BYTES", 2, dims, bin[o], data, raw.data, raw.len);
    } else if (which[o] == OUT_PROBS) {
      for (int i = 0; i < n * g->k; i++) json_array_append_new(data, json_real(probs[i]));
      st = add_output(outs, &blobs, "probabilities", "FP32", 2, dims, bin[o], data, probs,
                      sizeof(float) * (size_t)n * (size_t)g->k);
    } else if (which[o] == OUT_CLASS) {
      for (int i = 0; i < n; i++) {
        int64_t c = argmax(probs + (size_t)i * (size_t)g->k, g->k);
        json_array_append_new(data, json_integer(c));
        uint8_t q[8];
        for (int b = 0; b < 8; b++) q[b] = (uint8_t)((uint64_t)c >> (8 * b));
        (void)im_buf_append(&raw, q, 8);
      }
      st = add_output(outs, &blobs, "class", "INT64", 1, dims, bin[o], data, raw.data, raw.len);
    } else {
      for (int i = 0; i < n; i++) bytes_el(data, &raw, im_train_model_class(m, argmax(probs + (size_t)i * (size_t)g->k, g->k)));
      st = add_output(outs, &blobs, "label", "BYTES", 1, dims, bin[o], data, raw.data, raw.len);
    }
    im_buf_free(&raw);
  }
  if (st) {
    json_decref(outs);
    im_buf_free(&blobs);
    return reply_error(resp, 503, "%s", im_last_error());
  }
  json_t *j = json_pack("{s:s, s:{}, s:o}", "model_name", g->name, "parameters", "outputs", outs);
  if (g->version[0]) json_object_set_new(j, "model_version", json_string(g->version));
  if (r->id) json_object_set_new(j, "id", json_string(r->id));
  int any_bin = 0;
  for (int o = 0; o < no; o++) any_bin |= bin[o];
  char *hdr = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  if (!hdr) {
    im_buf_free(&blobs);
    return reply_error(resp, 503, "out of memory");
  }
  size_t hl = strlen(hdr);
  im_buf_t body = {0};
  st = im_buf_append(&body, hdr, hl);
  if (st == IM_OK && blobs.len) st = im_buf_append(&body, blobs.data, blobs.len);
  free(hdr);
  im_buf_free(&blobs);
  if (st) {
    im_buf_free(&body);
    return reply_error(resp, 503, "out of memory");
  }
  if (any_bin) { /* the JSON's length, before any compression, as tritonclient reads it */
    char hls[32];
    snprintf(hls, sizeof hls, "%zu", hl);
    if ((st = im_http_resp_header(resp, "Inference-Header-Content-Length", hls))) {
      im_buf_free(&body);
      return st;
    }
  }
  return send_body(req, resp, 200, any_bin ? "application/octet-stream" : "application/json", body.data, body.len);
}

static im_status_t h_v2_infer(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  im_serve_t *s = user;
  serve_gen_t *g = v2_model(s, req, resp);
  if (!g) return IM_OK;
  size_t len;
  const uint8_t *body = im_http_req_body(req, &len);
  const char *enc = im_http_req_header(req, "Content-Encoding");
  im__serve_v2_req_t r = {0};
  im_status_t st = IM_OK;
  char err[1024] = "";
  int status = 200, n = 0;
  float *probs = NULL;
  im_buf_t plain = {0};
  if (enc && *enc && strcasecmp(enc, "identity")) {
    if ((st = im__serve_inflate(enc, body, len, s->o.max_body_bytes, &plain))) {
      status = st == IM_ERR_UNSUPPORTED ? 415 : status_of(st);
      snprintf(err, sizeof err, "%s", im_last_error());
      goto out;
    }
    body = plain.data ? (const uint8_t *)plain.data : (const uint8_t *)"";
    len = plain.len;
  }
  const size_t max_elems = (size_t)s->o.max_images * (g->chw > 0 ? g->chw : 1);
  if ((st = im__serve_v2_parse(body, len, im_http_req_header(req, "Inference-Header-Content-Length"), max_elems,
                               (size_t)s->o.max_images, &r))) {
    status = st == IM_ERR_UNSUPPORTED ? 400 : status_of(st);
    snprintf(err, sizeof err, "%s", im_last_error());
    goto out;
  }
  if (r.dtype == IM__V2_FP32) {
    const int64_t want[3] = {g->c, g->h, g->w};
    int ok = (r.ndim == 4 || r.ndim == 3);
    for (int i = 0; ok && i < 3; i++) ok = r.shape[r.ndim - 3 + i] == want[i];
    if (!ok) {
      char got[160] = "";
      for (int i = 0; i < r.ndim; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "", (long long)r.shape[i]);
      status = 400;
      snprintf(err, sizeof err, "input '%s' has shape [%s]; the model takes FP32 [-1,%d,%d,%d] (normalized N x C x H x W)",
               r.input_name, got, g->c, g->h, g->w);
      goto out;
    }
    n = r.ndim == 4 ? (int)r.shape[0] : 1;
    if (n > s->o.max_images) {
      status = 413;
      snprintf(err, sizeof err, "more than %d images in one request", s->o.max_images);
      goto out;
    }
    if (!(probs = im_malloc(sizeof(float) * (size_t)n * (size_t)g->k))) {
      status = 503;
      snprintf(err, sizeof err, "out of memory");
      goto out;
    }
    status = serve_infer(s, g, r.f32, n, probs, err, sizeof err);
  } else {
    n = (int)r.bytes.n;
    status = infer_images(s, g, &r.bytes, &probs, err, sizeof err);
  }
  if (status == 200) st = v2_respond(req, resp, g, &r, probs, n);
out:
  im_free(probs);
  im_buf_free(&plain);
  im__serve_v2_req_free(&r);
  serve_gen_unref(g);
  if (status != 200) return reply_error(resp, status, "%s", err);
  return st;
}

im_status_t serve_routes(im_serve_t *s) {
  static const struct {
    const char *method, *pattern;
    im_http_handler_fn fn;
  } routes[] = {
      {"POST", "/predict", h_predict},
      {"GET", "/healthz", h_live},
      {"GET", "/livez", h_live},
      {"GET", "/readyz", h_ready},
      {"GET", "/metrics", h_metrics},
      {"GET", "/openapi.json", h_openapi},
      {"GET", "/docs", h_docs},
      {"GET", "/", h_docs},
      {"GET", "/v2", h_v2_server},
      {"GET", "/v2/health/live", h_v2_live},
      {"GET", "/v2/health/ready", h_v2_ready},
      {"GET", "/v2/models/{name}", h_v2_model},
      {"GET", "/v2/models/{name}/versions/{version}", h_v2_model},
      {"GET", "/v2/models/{name}/ready", h_v2_model_ready},
      {"GET", "/v2/models/{name}/versions/{version}/ready", h_v2_model_ready},
      {"POST", "/v2/models/{name}/infer", h_v2_infer},
      {"POST", "/v2/models/{name}/versions/{version}/infer", h_v2_infer},
  };
  for (size_t i = 0; i < sizeof routes / sizeof *routes; i++) {
    im_status_t st = im_http_server_route(s->http, routes[i].method, routes[i].pattern, routes[i].fn, s);
    if (st) return st;
  }
  return IM_OK;
}
