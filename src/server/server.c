/* The tracking server's setup and request plumbing: the http server and its
 * routes (every MLflow route twice, under /api/2.0/ and /ajax-api/2.0/), the
 * bearer-token check for writes, the Content-Type rule, turning a JSON body or
 * a query string into one argument object, MLflow-style error answers, and
 * the pool of store handles (a handle serves one request at a time). */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "imops/version.h"
#include "server/server_impl.h"

/* ---- answers ---------------------------------------------------------------------- */

int im__srv_http_status(const char *code) {
  static const struct {
    const char *code;
    int status;
  } map[] = {
      {"INVALID_PARAMETER_VALUE", 400}, {"BAD_REQUEST", 400},          {"RESOURCE_ALREADY_EXISTS", 400},
      {"MALFORMED_REQUEST", 400},       {"INVALID_STATE", 500},        {"RESOURCE_DOES_NOT_EXIST", 404},
      {"ENDPOINT_NOT_FOUND", 404},      {"NOT_FOUND", 404},            {"ALREADY_EXISTS", 409},
      {"RESOURCE_CONFLICT", 409},       {"ABORTED", 409},              {"PERMISSION_DENIED", 403},
      {"UNAUTHENTICATED", 401},         {"CUSTOMER_UNAUTHORIZED", 401}, {"REQUEST_LIMIT_EXCEEDED", 429},
      {"RESOURCE_EXHAUSTED", 429},      {"INTERNAL_ERROR", 500},       {"DATA_LOSS", 500},
      {"NOT_IMPLEMENTED", 501},         {"TEMPORARILY_UNAVAILABLE", 503}, {"DEADLINE_EXCEEDED", 504},
      {"CANCELLED", 499},
  };
  if (!code) return 500;
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
    if (!strcmp(map[i].code, code)) return map[i].status;
  return 500;
}

im_status_t im__srv_ok(srv_ctx_t *c, json_t *j) {
  if (!j) j = json_object();
  if (!j) return im_error(IM_ERR_NOMEM, "out of memory building the response");
  im_status_t st = im_http_resp_json(c->resp, 200, j);
  json_decref(j);
  return st;
}

static im_status_t vfail(srv_ctx_t *c, const char *code, const char *fmt, va_list ap) {
  char msg[1200];
  vsnprintf(msg, sizeof msg, fmt, ap);
  int status = im__srv_http_status(code);
  if (status >= 500)
    im_log(IM_LOG_ERROR, "server: %s %s: %d %s: %s", im_http_req_method(c->req), im_http_req_path(c->req), status,
           code, msg);
  if (im_http_resp_error_json(c->resp, status, code, "%s", msg) != IM_OK)
    im_http_resp_status(c->resp, status); /* an empty body, but still the right status */
  return status == 404 ? IM_ERR_NOT_FOUND : status >= 500 ? IM_ERR_INTERNAL : IM_ERR_ARG;
}

im_status_t im__srv_fail(srv_ctx_t *c, const char *code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  im_status_t st = vfail(c, code, fmt, ap);
  va_end(ap);
  return st;
}

im_status_t im__srv_store_fail(srv_ctx_t *c, im_status_t st) {
  /* A pooled handle keeps its last failure: use its code only when this failure
   * is that one (the store sets the handle's and the thread's message together). */
  const char *msg = im_last_error()[0] ? im_last_error() : im_strerror(st);
  const char *code = NULL;
  if (c->st && im_track_error_code(c->st) && !strcmp(im_track_errmsg(c->st), msg)) code = im_track_error_code(c->st);
  if (!code) code = im_track_status_to_error_code(st);
  return im__srv_fail(c, code, "%s", msg);
}

json_t *im__srv_obj1(const char *key, json_t *value) {
  if (!value) return NULL;
  json_t *o = json_object();
  if (!o || json_object_set_new(o, key, value) != 0) {
    json_decref(o);
    return NULL;
  }
  return o;
}

im_status_t im__srv_ok_list(srv_ctx_t *c, const char *key, json_t *arr, const char *next_token) {
  json_t *j = json_object();
  if (j && arr) json_object_set_new(j, key, arr);
  else json_decref(arr);
  if (j && next_token) json_object_set_new(j, "next_page_token", json_string(next_token));
  return j ? im__srv_ok(c, j) : im_error(IM_ERR_NOMEM, "out of memory");
}

/* ---- arguments ---------------------------------------------------------------------- */

/* Numbers and booleans become strings, nulls disappear: the handlers then read a
 * JSON body and a query string the same way. */
static int normalize(json_t *v) {
  if (json_is_object(v)) {
    const char *k;
    json_t *x;
    void *tmp;
    json_object_foreach_safe(v, tmp, k, x) {
      if (json_is_null(x)) {
        json_object_del(v, k);
        continue;
      }
      json_t *n = NULL;
      if (json_is_integer(x) || json_is_real(x) || json_is_boolean(x)) {
        char buf[64];
        if (json_is_integer(x)) snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(x));
        else if (json_is_real(x)) snprintf(buf, sizeof buf, "%.17g", json_real_value(x));
        else snprintf(buf, sizeof buf, "%s", json_is_true(x) ? "true" : "false");
        if (!(n = json_string(buf)) || json_object_set_new(v, k, n) != 0) return -1;
      } else if (normalize(x) != 0) {
        return -1;
      }
    }
  } else if (json_is_array(v)) {
    for (size_t i = 0; i < json_array_size(v);) {
      json_t *x = json_array_get(v, i);
      if (json_is_null(x)) {
        json_array_remove(v, i);
        continue;
      }
      if (json_is_integer(x) || json_is_real(x) || json_is_boolean(x)) {
        char buf[64];
        if (json_is_integer(x)) snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(x));
        else if (json_is_real(x)) snprintf(buf, sizeof buf, "%.17g", json_real_value(x));
        else snprintf(buf, sizeof buf, "%s", json_is_true(x) ? "true" : "false");
        json_t *n = json_string(buf);
        if (!n || json_array_set_new(v, i, n) != 0) return -1;
      } else if (normalize(x) != 0) {
        return -1;
      }
      i++;
    }
  }
  return 0;
}

/* The query string as an object: repeated keys become arrays, "k[]" / "k[3]" answer to k. */
static im_status_t query_args(srv_ctx_t *c, json_t **out) {
  const im_http_form_t *f = im_http_req_query_form(c->req);
  json_t *o = json_object();
  if (!o) return im_error(IM_ERR_NOMEM, "out of memory");
  for (size_t i = 0; i < im_http_form_size(f); i++) {
    const im_http_part_t *p = im_http_form_at(f, i);
    size_t nl = strlen(p->name);
    if (nl >= 2 && p->name[nl - 1] == ']') {
      const char *lb = strrchr(p->name, '[');
      int digits = lb != NULL;
      for (const char *q = lb ? lb + 1 : NULL; q && q < p->name + nl - 1; q++)
        if (!isdigit((unsigned char)*q)) digits = 0;
      if (digits) nl = (size_t)(lb - p->name);
    }
    if (nl == 0) continue;
    if (strlen((const char *)p->data) != p->len) {
      json_decref(o);
      return im__srv_fail(c, SRV_INVALID, "query parameter '%.*s' contains a NUL byte", (int)nl, p->name);
    }
    json_t *val = json_stringn((const char *)p->data, p->len);
    if (!val) {
      json_decref(o);
      return im__srv_fail(c, SRV_INVALID, "query parameter '%.*s' is not valid UTF-8", (int)(nl > 64 ? 64 : nl),
                          p->name);
    }
    char key[256];
    if (nl >= sizeof key) {
      json_decref(val);
      json_decref(o);
      return im__srv_fail(c, SRV_INVALID, "query parameter name too long");
    }
    memcpy(key, p->name, nl);
    key[nl] = '\0';
    json_t *prev = json_object_get(o, key);
    int rc;
    if (!prev) {
      rc = json_object_set_new(o, key, val);
    } else if (json_is_array(prev)) {
      rc = json_array_append_new(prev, val);
    } else {
      json_t *a = json_array();
      rc = !a || json_array_append(a, prev) || json_array_append_new(a, val) || json_object_set_new(o, key, a);
      if (!a) json_decref(val);
    }
    if (rc) {
      json_decref(o);
      return im_error(IM_ERR_NOMEM, "out of memory");
    }
  }
  *out = o;
  return IM_OK;
}

/* The media type of a Content-Type value is application/json. */
static int is_json_type(const char *ct) {
  while (*ct == ' ' || *ct == '\t') ct++;
  size_t n = strcspn(ct, ";");
  while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t')) n--;
  return n == 16 && !strncasecmp(ct, "application/json", 16);
}

static im_status_t load_args(srv_ctx_t *c) {
  const char *m = im_http_req_method(c->req);
  int get = !strcmp(m, "GET") || !strcmp(m, "HEAD");
  size_t len;
  const uint8_t *body = im_http_req_body(c->req, &len);
  if (!get && (!strcmp(m, "POST") || !strcmp(m, "PUT"))) {
    const char *ct = im_http_req_content_type(c->req);
    if (!ct) return im__srv_fail(c, SRV_INVALID, "Bad Request. Content-Type header is missing.");
    if (!is_json_type(ct))
      return im__srv_fail(c, SRV_INVALID, "Bad Request. Content-Type must be one of ['application/json'].");
  }
  if (len > SRV_MAX_JSON_BODY)
    return im__srv_fail(c, SRV_INVALID, "the request body (%zu bytes) is over the limit of %zu bytes for this endpoint",
                        len, SRV_MAX_JSON_BODY);
  json_t *args = NULL;
  int blank = 1;
  for (size_t i = 0; i < len && blank; i++) blank = isspace(body[i]) != 0;
  if ((get && im_http_form_size(im_http_req_query_form(c->req)) > 0) || blank) {
    im_status_t st = query_args(c, &args);
    if (st) return st;
  } else {
    json_error_t e;
    args = json_loadb((const char *)body, len, JSON_DECODE_ANY, &e);
    if (!args) return im__srv_fail(c, SRV_INVALID, "Malformed JSON request body: %s (at byte %d)", e.text, e.position);
    if (json_is_string(args)) { /* old clients double-encode */
      json_t *inner = json_loads(json_string_value(args), JSON_DECODE_ANY, &e);
      json_decref(args);
      if (!inner)
        return im__srv_fail(c, SRV_INVALID, "Malformed JSON request body: %s (at byte %d)", e.text, e.position);
      args = inner;
    }
    if (!json_is_object(args)) {
      json_decref(args);
      return im__srv_fail(c, SRV_INVALID, "Malformed request: the JSON body must be an object");
    }
  }
  if (normalize(args) != 0) {
    json_decref(args);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  c->args = args;
  return IM_OK;
}

const char *im__srv_str(srv_ctx_t *c, const char *key) {
  json_t *v = c->args ? json_object_get(c->args, key) : NULL;
  if (json_is_array(v)) v = json_array_get(v, 0);
  return json_is_string(v) ? json_string_value(v) : NULL;
}

const char *im__srv_run_id(srv_ctx_t *c) {
  const char *r = im__srv_str(c, "run_id");
  return r && *r ? r : im__srv_str(c, "run_uuid");
}

im_status_t im__srv_req(srv_ctx_t *c, const char *key, const char **out) {
  *out = NULL;
  const char *v = im__srv_str(c, key);
  if (!v || !*v) return im__srv_fail(c, SRV_INVALID, "Missing value for required parameter '%s'.", key);
  *out = v;
  return IM_OK;
}

int im__srv_parse_i64(const char *s, int64_t *out) {
  if (!s || !*s) return -1;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end) {
    /* "1e3" or "3.0": a number written as a double with an integral value */
    double d;
    if (im__srv_parse_double(s, &d) || d != d || d < -9.2e18 || d > 9.2e18 || d != (double)(long long)d) return -1;
    v = (long long)d;
  }
  *out = v;
  return 0;
}

int im__srv_parse_double(const char *s, double *out) {
  if (!s || !*s || isspace((unsigned char)*s)) return -1;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || *end) return -1;
  *out = v; /* overflow gives +-HUGE_VAL: what Python's float() gives too */
  return 0;
}

im_status_t im__srv_i64(srv_ctx_t *c, const char *key, int64_t def, int64_t *out) {
  const char *v = im__srv_str(c, key);
  if (!v || !*v) {
    *out = def;
    return IM_OK;
  }
  if (im__srv_parse_i64(v, out))
    return im__srv_fail(c, SRV_INVALID, "Invalid value '%.100s' for parameter '%s': expected an integer.", v, key);
  return IM_OK;
}

im_status_t im__srv_req_i64(srv_ctx_t *c, const char *key, int64_t *out) {
  const char *v = im__srv_str(c, key);
  if (!v || !*v) return im__srv_fail(c, SRV_INVALID, "Missing value for required parameter '%s'.", key);
  return im__srv_i64(c, key, 0, out);
}

im_status_t im__srv_bool(srv_ctx_t *c, const char *key, int def, int *out) {
  const char *v = im__srv_str(c, key);
  *out = def;
  if (!v || !*v) return IM_OK;
  if (!strcasecmp(v, "true") || !strcmp(v, "1")) *out = 1;
  else if (!strcasecmp(v, "false") || !strcmp(v, "0")) *out = 0;
  else return im__srv_fail(c, SRV_INVALID, "Invalid value '%.100s' for parameter '%s': expected a boolean.", v, key);
  return IM_OK;
}

im_status_t im__srv_strs(srv_ctx_t *c, const char *key, const char ***out, int *n) {
  *out = NULL;
  *n = 0;
  json_t *v = c->args ? json_object_get(c->args, key) : NULL;
  if (!v) return IM_OK;
  size_t cnt = json_is_array(v) ? json_array_size(v) : 1;
  if (cnt > 100000) return im__srv_fail(c, SRV_INVALID, "too many values for parameter '%s'", key);
  const char **a = im_calloc(cnt ? cnt : 1, sizeof *a);
  if (!a) return im_error(IM_ERR_NOMEM, "out of memory");
  for (size_t i = 0; i < cnt; i++) {
    json_t *x = json_is_array(v) ? json_array_get(v, i) : v;
    if (!json_is_string(x)) {
      im_free(a);
      return im__srv_fail(c, SRV_INVALID, "Invalid value for parameter '%s': expected a list of strings.", key);
    }
    a[i] = json_string_value(x);
  }
  *out = a;
  *n = (int)cnt;
  return IM_OK;
}

im_status_t im__srv_kvs(srv_ctx_t *c, const char *key, im_track_kv_t **out, int *n) {
  *out = NULL;
  *n = 0;
  json_t *v = c->args ? json_object_get(c->args, key) : NULL;
  if (!v) return IM_OK;
  if (json_is_object(v)) { /* a single entry where a list was expected */
    json_t *a = json_array();
    if (!a || json_array_append(a, v) || json_object_set_new(c->args, key, a))
      return im_error(IM_ERR_NOMEM, "out of memory");
    v = a;
  }
  if (!json_is_array(v))
    return im__srv_fail(c, SRV_INVALID, "Invalid value for parameter '%s': expected a list of {key, value}.", key);
  size_t cnt = json_array_size(v);
  if (cnt > 100000) return im__srv_fail(c, SRV_INVALID, "too many entries in '%s'", key);
  im_track_kv_t *a = im_calloc(cnt ? cnt : 1, sizeof *a);
  if (!a) return im_error(IM_ERR_NOMEM, "out of memory");
  for (size_t i = 0; i < cnt; i++) {
    json_t *e = json_array_get(v, i);
    json_t *k = json_object_get(e, "key"), *val = json_object_get(e, "value");
    if (!json_is_object(e) || !json_is_string(k) || (val && !json_is_string(val))) {
      im_free(a);
      return im__srv_fail(c, SRV_INVALID, "Invalid value for parameter '%s': entry %zu needs a string 'key' and 'value'.",
                          key, i);
    }
    a[i].key = json_string_value(k);
    a[i].value = val ? json_string_value(val) : "";
  }
  *out = a;
  *n = (int)cnt;
  return IM_OK;
}

im_status_t im__srv_search_args(srv_ctx_t *c, im_track_search_t *q, const char ***alloc) {
  memset(q, 0, sizeof *q);
  *alloc = NULL;
  q->filter = im__srv_str(c, "filter");
  q->page_token = im__srv_str(c, "page_token");
  if (q->page_token && !*q->page_token) q->page_token = NULL;
  im_status_t st = im__srv_i64(c, "max_results", 0, &q->max_results);
  if (st) return st;
  if (im__srv_str(c, "max_results") && q->max_results <= 0)
    return im__srv_fail(c, SRV_INVALID, "Invalid value %" PRId64 " for parameter 'max_results': it must be at least 1.",
                        q->max_results);
  const char **ob;
  int n;
  if ((st = im__srv_strs(c, "order_by", &ob, &n))) return st;
  q->order_by = ob;
  q->n_order_by = n;
  *alloc = ob;
  return IM_OK;
}

im_status_t im__srv_view(srv_ctx_t *c, const char *key, im_track_view_t *out) {
  const char *v = im__srv_str(c, key);
  *out = IM_TRACK_ACTIVE_ONLY;
  if (!v || !*v) return IM_OK;
  if (!strcasecmp(v, "ACTIVE_ONLY") || !strcmp(v, "1")) *out = IM_TRACK_ACTIVE_ONLY;
  else if (!strcasecmp(v, "DELETED_ONLY") || !strcmp(v, "2")) *out = IM_TRACK_DELETED_ONLY;
  else if (!strcasecmp(v, "ALL") || !strcmp(v, "3")) *out = IM_TRACK_ALL;
  else
    return im__srv_fail(c, SRV_INVALID, "Invalid value '%.100s' for parameter '%s': expected ACTIVE_ONLY, DELETED_ONLY or ALL.",
                        v, key);
  return IM_OK;
}

im_status_t im__srv_version(srv_ctx_t *c, const char *key, int64_t *out) {
  const char *v;
  im_status_t st = im__srv_req(c, key, &v);
  if (st) return st;
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (errno || end == v || *end || x < 1)
    return im__srv_fail(c, SRV_INVALID, "Parameter '%s' must be a positive integer, got '%.100s'.", key, v);
  *out = x;
  return IM_OK;
}

/* ---- the store-handle pool ---------------------------------------------------------------- */

static im_status_t open_store(im_server_t *s, const char *home, im_track_store_t **out) {
  im_track_store_t *st = NULL;
  im_status_t r = im_track_open(home, &st);
  if (r == IM_OK) r = im_track_set_artifact_root(st, s->default_root ? s->default_root : "mlflow-artifacts:/");
  if (r) {
    im_track_close(st);
    return r;
  }
  *out = st;
  return IM_OK;
}

static im_status_t pool_get(srv_binding_t *b, im_track_store_t **out) {
  pthread_mutex_lock(&b->mu);
  if (b->npool > 0) {
    *out = b->pool[--b->npool];
    pthread_mutex_unlock(&b->mu);
    return IM_OK;
  }
  pthread_mutex_unlock(&b->mu);
  return open_store(b->srv, b->srv->home, out);
}

static void pool_put(srv_binding_t *b, im_track_store_t *st) {
  pthread_mutex_lock(&b->mu);
  if (b->npool == b->cappool) {
    int cap = b->cappool ? 2 * b->cappool : 4;
    im_track_store_t **p = im_realloc(b->pool, (size_t)cap * sizeof *p);
    if (!p) {
      pthread_mutex_unlock(&b->mu);
      im_track_close(st);
      return;
    }
    b->pool = p;
    b->cappool = cap;
  }
  b->pool[b->npool++] = st;
  pthread_mutex_unlock(&b->mu);
}

/* ---- routing and auth ---------------------------------------------------------------------- */

/* Compares in time that does not depend on where the strings differ. */
static int token_eq(const char *a, size_t alen, const char *b) {
  size_t blen = strlen(b);
  unsigned diff = (unsigned)(alen ^ blen);
  for (size_t i = 0; i < blen; i++) diff |= (unsigned)((i < alen ? (unsigned char)a[i] : 0) ^ (unsigned char)b[i]);
  return diff == 0;
}

static int authorized(const im_server_t *s, im_http_req_t *req) {
  const char *h = im_http_req_header(req, "Authorization");
  if (!h) return 0;
  while (*h == ' ') h++;
  if (strncasecmp(h, "Bearer", 6) || (h[6] != ' ' && h[6] != '\t')) return 0;
  h += 6;
  while (*h == ' ' || *h == '\t') h++;
  size_t n = strlen(h);
  while (n && (h[n - 1] == ' ' || h[n - 1] == '\t')) n--;
  return token_eq(h, n, s->token);
}

/* The http server's gate: a write without the token is refused as soon as its
 * headers are in, before an upload body is read. */
static im_status_t token_gate(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  const im_server_t *s = user;
  const char *m = im_http_req_method(req);
  int write = strcmp(m, "GET") && strcmp(m, "HEAD") && strcmp(m, "OPTIONS");
  if (!write || !s->token || authorized(s, req)) return IM_OK;
  im_status_t st = im_http_resp_error_json(resp, 401, "UNAUTHENTICATED",
                                           "This server needs a bearer token for writes: send 'Authorization: "
                                           "Bearer <token>' (MLFLOW_TRACKING_TOKEN for the mlflow client).");
  if (!st) st = im_http_resp_header(resp, "WWW-Authenticate", "Bearer realm=\"imops\"");
  if (st) im_http_resp_status(resp, 401);
  return IM_OK;
}

static im_status_t trampoline(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  srv_binding_t *b = user;
  srv_ctx_t c = {.srv = b->srv, .req = req, .resp = resp};
  const char *m = im_http_req_method(req);
  int write = strcmp(m, "GET") && strcmp(m, "HEAD") && strcmp(m, "OPTIONS");
  if (write && c.srv->token && !authorized(c.srv, req)) {
    im_status_t st = im_http_resp_header(resp, "WWW-Authenticate", "Bearer realm=\"imops\"");
    (void)st;
    return im__srv_fail(&c, SRV_UNAUTHENTICATED,
                        "This server needs a bearer token for writes: send 'Authorization: Bearer <token>' "
                        "(MLFLOW_TRACKING_TOKEN for the mlflow client).");
  }
  im_status_t st = IM_OK;
  if (!(b->flags & SRV_RAW) && (st = load_args(&c)) != IM_OK) return st;
  if (b->flags & SRV_STORE) {
    st = pool_get(b, &c.st);
    if (st) {
      json_decref(c.args);
      return im__srv_fail(&c, SRV_INTERNAL, "cannot open the tracking store: %s", im_last_error());
    }
  }
  st = b->fn(&c);
  if (c.st) pool_put(b, c.st);
  json_decref(c.args);
  return st;
}

im_status_t im__srv_add(im_server_t *s, const char *method, const char *path, srv_fn fn, int flags) {
  if (s->nbind == s->capbind) return im_error(IM_ERR_INTERNAL, "server: route table full");
  srv_binding_t *b = &s->bindings[s->nbind++];
  *b = (srv_binding_t){.srv = s, .fn = fn, .flags = flags};
  pthread_mutex_init(&b->mu, NULL);
  static const char *const prefixes[] = {"/api/2.0/", "/ajax-api/2.0/"};
  for (int i = 0; i < 2; i++) {
    char pattern[256];
    snprintf(pattern, sizeof pattern, "%s%s", prefixes[i], path);
    im_status_t st = (flags & SRV_SPOOL) ? im_http_server_route_spool(s->http, method, pattern, trampoline, b, s->spool_dir)
                                         : im_http_server_route(s->http, method, pattern, trampoline, b);
    if (st) return st;
  }
  return IM_OK;
}

im_status_t im__srv_add_routes(im_server_t *s, const srv_route_t *r, size_t n, int flags) {
  for (size_t i = 0; i < n; i++) {
    im_status_t st = im__srv_add(s, r[i].method, r[i].path, r[i].fn, flags);
    if (st) return st;
  }
  return IM_OK;
}

static im_status_t health(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  return im_http_resp_text(resp, 200, "text/plain; charset=utf-8", "OK");
}

static im_status_t version(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  return im_http_resp_text(resp, 200, "text/plain; charset=utf-8", IM_VERSION_STRING);
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

/* An absolute path for dir (relative to the current directory when not absolute). */
static char *absolute(const char *dir) {
  if (dir[0] == '/') return im_strdup(dir);
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) return NULL;
  return im_path_join(cwd, dir);
}

im_status_t im_server_new(const im_server_opts_t *opts, im_server_t **out) {
  *out = NULL;
  im_server_opts_t o = {0};
  if (opts) o = *opts;
  im_server_t *s = im_calloc(1, sizeof *s);
  if (!s) return im_error(IM_ERR_NOMEM, "out of memory");
  im_status_t st = IM_OK;
  im_track_store_t *first = NULL;
  if (o.default_artifact_root && *o.default_artifact_root) {
    size_t rn = strlen(o.default_artifact_root);
    while (rn > 1 && o.default_artifact_root[rn - 1] == '/' && o.default_artifact_root[rn - 2] != ':') rn--;
    if (!(s->default_root = im_strndup(o.default_artifact_root, rn))) {
      st = im_error(IM_ERR_NOMEM, "out of memory");
      goto fail;
    }
  }
  if (o.artifacts_destination && !strncasecmp(o.artifacts_destination, "s3://", 5)) {
    im_track_artifacts_t *probe = NULL; /* checks the URI and the S3 settings now, not at the first upload */
    if ((st = im_track_artifacts_open(o.artifacts_destination, &probe))) goto fail;
    im_track_artifacts_free(probe);
    if (!(s->dest_s3 = im_strdup(o.artifacts_destination))) {
      st = im_error(IM_ERR_NOMEM, "out of memory");
      goto fail;
    }
    o.artifacts_destination = NULL; /* artifact_dir stays the local store's folder */
  }
  if ((st = open_store(s, o.workspace, &first))) goto fail;
  s->home = im_strdup(im_track_home(first));
  s->local_root = s->home ? im_path_join(s->home, "artifacts") : NULL;
  s->spool_dir = s->home ? im_path_join(s->home, "tmp/uploads") : NULL;
  if (!s->home || !s->local_root || !s->spool_dir) {
    im_track_close(first);
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto fail;
  }
  im_track_close(first); /* it created the workspace; the routes open their own */
  first = NULL;
  s->artifact_dir = o.artifacts_destination && *o.artifacts_destination ? absolute(o.artifacts_destination)
                                                                          : im_strdup(s->local_root);
  if (!s->artifact_dir) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto fail;
  }
  size_t n = strlen(s->artifact_dir);
  while (n > 1 && s->artifact_dir[n - 1] == '/') s->artifact_dir[--n] = '\0';
  if ((st = im_mkdir_p(s->artifact_dir))) goto fail;
  char real[PATH_MAX];
  if (!realpath(s->artifact_dir, real)) {
    st = im_error(IM_ERR_IO, "cannot resolve the artifacts destination %s: %s", s->artifact_dir, strerror(errno));
    goto fail;
  }
  if (!(s->artifact_real = im_strdup(real))) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto fail;
  }
  if (o.token && *o.token && !(s->token = im_strdup(o.token))) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto fail;
  }
  im_http_server_opts_t ho = {
      .host = o.host,
      .port = o.port,
      .threads = o.threads,
      .max_body_bytes = o.max_upload_bytes ? o.max_upload_bytes : ((size_t)1 << 30),
      .timeout_s = 600, /* large uploads on slow links */
      .gate = s->token ? token_gate : NULL,
      .gate_user = s,
  };
  if ((st = im_http_server_new(&ho, &s->http))) goto fail;
  s->capbind = 128;
  if (!(s->bindings = im_calloc((size_t)s->capbind, sizeof *s->bindings))) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto fail;
  }
  if ((st = im_http_server_route(s->http, "GET", "/health", health, NULL)) ||
      (st = im_http_server_route(s->http, "GET", "/version", version, NULL)) ||
      (st = im__srv_routes_experiments(s)) || (st = im__srv_routes_runs(s)) || (st = im__srv_routes_registry(s)) ||
      (st = im__srv_routes_artifacts(s)) || (st = im__srv_routes_sweeps(s)))
    goto fail;
  *out = s;
  return IM_OK;
fail:
  im_server_free(s);
  return st;
}

im_status_t im_server_start(im_server_t *srv) {
  if (!srv) return im_error(IM_ERR_ARG, "NULL server");
  return im_http_server_start(srv->http);
}

int im_server_port(const im_server_t *srv) { return srv ? im_http_server_port(srv->http) : 0; }
const char *im_server_workspace(const im_server_t *srv) { return srv ? srv->home : NULL; }
const char *im_server_artifacts_dir(const im_server_t *srv) { return srv ? srv->artifact_dir : NULL; }

im_status_t im_server_stop(im_server_t *srv, double drain_timeout_s) {
  if (!srv) return IM_OK;
  return im_http_server_stop(srv->http, drain_timeout_s);
}

void im_server_free(im_server_t *srv) {
  if (!srv) return;
  im_http_server_free(srv->http); /* stops first: no handler holds a store after this */
  for (int k = 0; k < srv->nbind; k++) {
    srv_binding_t *b = &srv->bindings[k];
    for (int i = 0; i < b->npool; i++) im_track_close(b->pool[i]);
    im_free(b->pool);
    pthread_mutex_destroy(&b->mu);
  }
  im_free(srv->bindings);
  im_free(srv->home);
  im_free(srv->local_root);
  im_free(srv->artifact_dir);
  im_free(srv->artifact_real);
  im_free(srv->token);
  im_free(srv->dest_s3);
  im_free(srv->spool_dir);
  im_free(srv->default_root);
  im_free(srv);
}
