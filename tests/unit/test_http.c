/* Unit tests of the src/http server and client against each other on
 * 127.0.0.1 (ephemeral ports): routing (exact, parameters, prefixes, 404 with
 * an empty body, 405), query parsing, JSON round trips, handler errors, the
 * body limit (413, and the server answers afterwards), concurrent clients,
 * graceful stop draining a slow handler (pool and thread-per-connection) and
 * keep-alive connections (requests arriving during the drain are answered with
 * Connection: close, idle ones are closed cleanly),
 * malformed and oversized requests on raw sockets, multipart uploads, client
 * retries, atomic downloads (no file on a 500 or a truncated body), uploads
 * from a file, auth headers and SigV4. Every server and thread a test starts,
 * it stops; every loop is bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "imops/core.h"
#include "imops/http.h"
#include "testutil.h"

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* ---- handlers ------------------------------------------------------------------ */

static atomic_int n_count, n_flaky, slow_entered, hooks_started, hooks_ended;
static atomic_int last_status_404;

static im_status_t h_text(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  return im_http_resp_text(resp, 200, "text/plain", user);
}

static im_status_t h_params(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  json_t *j = json_pack("{s:s?, s:s?, s:s?, s:s, s:s}", "name", im_http_req_param(req, "name"), "version",
                        im_http_req_param(req, "version"), "rest", im_http_req_param(req, "*"), "route",
                        im_http_req_route(req), "path", im_http_req_path(req));
  im_status_t st = im_http_resp_json(resp, 200, j);
  json_decref(j);
  return st;
}

static im_status_t h_query(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  json_t *ids = json_array();
  for (size_t i = 0; i < im_http_req_query_count(req, "experiment_ids"); i++)
    json_array_append_new(ids, json_string(im_http_req_query_at(req, "experiment_ids", i)));
  json_t *xs = json_array();
  for (size_t i = 0; i < im_http_req_query_count(req, "x"); i++)
    json_array_append_new(xs, json_string(im_http_req_query_at(req, "x", i)));
  json_t *j = json_pack("{s:o, s:o, s:s?, s:s?, s:i}", "experiment_ids", ids, "x", xs, "filter",
                        im_http_req_query(req, "filter"), "max_results", im_http_req_query(req, "max_results"), "n",
                        (int)im_http_form_size(im_http_req_query_form(req)));
  im_status_t st = im_http_resp_json(resp, 200, j);
  json_decref(j);
  return st;
}

/* Echoes the JSON body with "seen": true added. */
static im_status_t h_json(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  json_t *j;
  im_status_t st = im_http_req_json(req, &j);
  if (st) return st; /* 400 with the parser's message */
  if (json_is_object(j)) json_object_set_new(j, "seen", json_true());
  st = im_http_resp_json(resp, 200, j);
  json_decref(j);
  return st;
}

static im_status_t h_echo(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  size_t n;
  const uint8_t *b = im_http_req_body(req, &n);
  const char *ct = im_http_req_content_type(req);
  im_status_t st = im_http_resp_body(resp, b, n);
  if (!st && ct) st = im_http_resp_header(resp, "Content-Type", ct);
  if (!st) st = im_http_resp_header(resp, "X-Method", im_http_req_method(req));
  return st;
}

static im_status_t h_headers(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  json_t *j = json_object();
  static const char *names[] = {"Authorization", "X-Amz-Date", "x-amz-content-sha256", "X-AMZ-SECURITY-TOKEN",
                                "x-custom", "Content-Type", "User-Agent"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    const char *v = im_http_req_header(req, names[i]);
    if (v) json_object_set_new(j, names[i], json_string(v));
  }
  im_status_t st = im_http_resp_json(resp, 200, j);
  json_decref(j);
  return st;
}

static im_status_t h_missing(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  return im_error(IM_ERR_NOT_FOUND, "model %s not found", im_http_req_param(req, "name"));
}

static im_status_t h_count(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  atomic_fetch_add(&n_count, 1);
  return im_http_resp_text(resp, 200, "text/plain", "ok");
}

static im_status_t h_flaky(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  int k = atomic_fetch_add(&n_flaky, 1);
  if (k < 2) {
    im_status_t st = im_http_resp_error_json(resp, 503, "TEMPORARILY_UNAVAILABLE", "try again (%d)", k);
    if (!st) st = im_http_resp_header(resp, "Retry-After", "0");
    return st;
  }
  return im_http_resp_text(resp, 200, "text/plain", "finally");
}

static im_status_t h_slow(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  const char *ms = im_http_req_query(req, "ms");
  atomic_store(&slow_entered, 1);
  sleep_ms(ms ? atoi(ms) : 300);
  return im_http_resp_text(resp, 200, "text/plain", "slow done");
}

/* n bytes of a pattern */
static void pattern(uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)((i * 131 + (i >> 8)) & 0xff);
}

static im_status_t h_bytes(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  size_t n = (size_t)atol(im_http_req_param(req, "n"));
  uint8_t *b = im_malloc(n ? n : 1);
  if (!b) return im_error(IM_ERR_NOMEM, "oom");
  pattern(b, n);
  im_http_resp_body_owned(resp, b, n);
  return IM_OK;
}

static im_status_t h_err500(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  return im_http_resp_error_json(resp, 500, "INTERNAL_ERROR", "it broke");
}

static im_status_t h_file(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  return im_http_resp_file(resp, 200, user, "application/x-test");
}

/* The model server's /predict: lists the parts of a multipart upload. */
static im_status_t h_upload(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  im_http_form_t *f;
  im_http_form_limits_t lim = {.max_parts = 8, .max_part_bytes = 1 << 20};
  im_status_t st = im_http_req_form(req, &lim, &f);
  if (st) return st;
  json_t *parts = json_array();
  for (size_t i = 0; i < im_http_form_size(f); i++) {
    const im_http_part_t *p = im_http_form_at(f, i);
    json_array_append_new(parts, json_pack("{s:s, s:s?, s:s?, s:I, s:I}", "name", p->name, "filename", p->filename,
                                           "content_type", p->content_type, "len", (json_int_t)p->len, "hash",
                                           (json_int_t)(im_hash64(p->data, p->len, 0) & 0xffffffff)));
  }
  im_http_form_free(f);
  json_t *j = json_pack("{s:o}", "parts", parts);
  st = im_http_resp_json(resp, 200, j);
  json_decref(j);
  return st;
}

static void on_start(const im_http_req_info_t *info, void *user) { atomic_fetch_add(&hooks_started, 1); }

static void on_end(const im_http_req_info_t *info, void *user) {
  atomic_fetch_add(&hooks_ended, 1);
  if (info->status == 404 && info->route == NULL) atomic_fetch_add(&last_status_404, 1);
}

/* ---- fixture ------------------------------------------------------------------- */

typedef struct {
  im_http_server_t *srv;
  char base[64];
  const char *tmp;
  const char *served_file;
} fx_t;

static void add_routes(im_http_server_t *s, fx_t *fx) {
  assert_int_equal(im_http_server_route(s, "GET", "/hello", h_text, "hello"), IM_OK);
  assert_int_equal(im_http_server_route(s, "GET", "/", h_text, "root"), IM_OK);
  assert_int_equal(im_http_server_route(s, "GET", "/v2/models/{name}", h_params, NULL), IM_OK);
  assert_int_equal(im_http_server_route(s, "GET", "/v2/models/special", h_text, "special"), IM_OK);
  assert_int_equal(im_http_server_route(s, "POST", "/v2/models/{name}/versions/{version}/infer", h_params, NULL),
                   IM_OK);
  assert_int_equal(im_http_server_route(s, "GET", "/static/*", h_params, NULL), IM_OK);
  assert_int_equal(im_http_server_route(s, "GET", "/static/special/*", h_text, "longer prefix"), IM_OK);
  assert_int_equal(im_http_server_route(s, "GET", "/query", h_query, NULL), IM_OK);
  assert_int_equal(im_http_server_route(s, "POST", "/json", h_json, NULL), IM_OK);
  assert_int_equal(im_http_server_route(s, "DELETE", "/json", h_json, NULL), IM_OK);
  assert_int_equal(im_http_server_route(s, NULL, "/echo", h_echo, NULL), IM_OK);
  assert_int_equal(im_http_server_route(s, "GET", "/headers", h_headers, NULL), IM_OK);
  assert_int_equal(im_http_server_route(s, "GET", "/missing/{name}", h_missing, NULL), IM_OK);
  assert_int_equal(im_http_server_route(s, "GET", "/count", h_count, NULL), IM_OK);
  assert_int_equal(im_http_server_route(s, "GET", "/flaky", h_flaky, NULL), IM_OK);
  assert_int_equal(im_http_server_route(s, "GET", "/slow", h_slow, NULL), IM_OK);
  assert_int_equal(im_http_server_route(s, "GET", "/bytes/{n}", h_bytes, NULL), IM_OK);
  assert_int_equal(im_http_server_route(s, "GET", "/err500", h_err500, NULL), IM_OK);
  assert_int_equal(im_http_server_route(s, "POST", "/upload", h_upload, NULL), IM_OK);
  if (fx->served_file) assert_int_equal(im_http_server_route(s, "GET", "/file", h_file, (void *)(uintptr_t)fx->served_file), IM_OK);
}

static void fx_start(fx_t *fx, const im_http_server_opts_t *o) {
  im_http_server_opts_t opts = o ? *o : (im_http_server_opts_t){0};
  opts.on_start = on_start;
  opts.on_end = on_end;
  if (!opts.drain_idle_s) opts.drain_idle_s = 0.05; /* the clients' idle connections do not hold up a stop */
  assert_int_equal(im_http_server_new(&opts, &fx->srv), IM_OK);
  add_routes(fx->srv, fx);
  assert_int_equal(im_http_server_port(fx->srv), 0);
  assert_int_equal(im_http_server_start(fx->srv), IM_OK);
  int port = im_http_server_port(fx->srv);
  assert_true(port > 0 && port < 65536);
  snprintf(fx->base, sizeof fx->base, "http://127.0.0.1:%d", port);
}

static void fx_stop(fx_t *fx) {
  assert_int_equal(im_http_server_stop(fx->srv, 5.0), IM_OK);
  im_http_server_free(fx->srv);
  fx->srv = NULL;
}

static const char *url(const fx_t *fx, const char *path) {
  static _Thread_local char buf[4][512];
  static _Thread_local int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s%s", fx->base, path);
  return buf[k];
}

static im_http_client_t *client(void) {
  im_http_client_opts_t o = {.backoff_s = 0.01, .backoff_max_s = 0.05, .timeout_s = 10};
  im_http_client_t *c;
  assert_int_equal(im_http_client_new(&o, &c), IM_OK);
  return c;
}

/* GET, returning the status and (optionally) the body as a new string. */
static long get(im_http_client_t *c, const char *u, char **body) {
  im_http_request_t rq = {.method = "GET", .url = u};
  im_http_response_t r = {0};
  im_status_t st = im_http_client_request(c, &rq, &r);
  if (st) fprintf(stderr, "GET %s: %s\n", u, im_last_error());
  assert_int_equal(st, IM_OK);
  long s = r.status;
  if (body) *body = im_strndup((const char *)r.body, r.body_len);
  im_http_response_deinit(&r);
  return s;
}

/* ---- raw sockets ------------------------------------------------------------- */

static int raw_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Sends req and reads until the server closes, cap bytes or 5 s pass. Returns bytes read. */
static size_t raw_exchange(int port, const void *req, size_t len, char *out, size_t cap) {
  int fd = raw_connect(port);
  assert_true(fd >= 0);
  size_t off = 0;
  while (off < len) {
    ssize_t w = send(fd, (const char *)req + off, len - off, MSG_NOSIGNAL);
    if (w <= 0) break; /* the server may close early: fine */
    off += (size_t)w;
  }
  size_t n = 0;
  while (n + 1 < cap) {
    ssize_t r = recv(fd, out + n, cap - 1 - n, 0);
    if (r <= 0) break;
    n += (size_t)r;
  }
  out[n] = '\0';
  close(fd);
  return n;
}

/* ---- tests ----------------------------------------------------------------------- */

static void test_routing(void **state) {
  fx_t fx = {0};
  atomic_store(&last_status_404, 0);
  fx_start(&fx, NULL);
  im_http_client_t *c = client();
  char *b;
  json_t *j;
  long status;

  assert_int_equal(get(c, url(&fx, "/hello"), &b), 200);
  assert_string_equal(b, "hello");
  im_free(b);
  assert_int_equal(get(c, url(&fx, "/"), &b), 200);
  assert_string_equal(b, "root");
  im_free(b);

  /* parameters are decoded; %2F does not split a segment */
  assert_int_equal(im_http_client_json(c, "GET", url(&fx, "/v2/models/my%20model%2Fx"), NULL, &j, &status), IM_OK);
  assert_int_equal(status, 200);
  assert_string_equal(json_string_value(json_object_get(j, "name")), "my model/x");
  assert_string_equal(json_string_value(json_object_get(j, "route")), "/v2/models/{name}");
  assert_string_equal(json_string_value(json_object_get(j, "path")), "/v2/models/my model/x");
  json_decref(j);
  /* the exact route beats the parameter */
  assert_int_equal(get(c, url(&fx, "/v2/models/special"), &b), 200);
  assert_string_equal(b, "special");
  im_free(b);
  /* two parameters, POST */
  assert_int_equal(im_http_client_json(c, "POST", url(&fx, "/v2/models/cnn/versions/3/infer"), NULL, &j, &status),
                   IM_OK);
  assert_int_equal(status, 200);
  assert_string_equal(json_string_value(json_object_get(j, "name")), "cnn");
  assert_string_equal(json_string_value(json_object_get(j, "version")), "3");
  json_decref(j);
  /* prefixes: the rest, and the longer prefix wins */
  assert_int_equal(im_http_client_json(c, "GET", url(&fx, "/static/js/app%20x.js"), NULL, &j, &status), IM_OK);
  assert_string_equal(json_string_value(json_object_get(j, "rest")), "js/app x.js");
  json_decref(j);
  assert_int_equal(im_http_client_json(c, "GET", url(&fx, "/static"), NULL, &j, &status), IM_OK);
  assert_int_equal(status, 200);
  assert_string_equal(json_string_value(json_object_get(j, "rest")), "");
  json_decref(j);
  assert_int_equal(get(c, url(&fx, "/static/special/a/b"), &b), 200);
  assert_string_equal(b, "longer prefix");
  im_free(b);

  /* unknown route: 404 with an empty body; strict about trailing slashes */
  im_http_request_t rq = {.method = "GET", .url = url(&fx, "/nope")};
  im_http_response_t r = {0};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_int_equal(r.status, 404);
  assert_int_equal(r.body_len, 0);
  im_http_response_deinit(&r);
  assert_int_equal(get(c, url(&fx, "/hello/"), NULL), 404);
  assert_int_equal(get(c, url(&fx, "/v2/models/a/b"), NULL), 404);

  /* the path exists with another method: 405 and Allow */
  rq = (im_http_request_t){.method = "PUT", .url = url(&fx, "/hello"), .body = "x", .body_len = 1};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_int_equal(r.status, 405);
  assert_int_equal(r.body_len, 0);
  assert_string_equal(im_http_response_header(&r, "allow"), "GET, HEAD");
  im_http_response_deinit(&r);
  rq = (im_http_request_t){.method = "GET", .url = url(&fx, "/json")};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_int_equal(r.status, 405);
  assert_non_null(strstr(im_http_response_header(&r, "Allow"), "POST"));
  assert_non_null(strstr(im_http_response_header(&r, "Allow"), "DELETE"));
  im_http_response_deinit(&r);

  /* HEAD on a GET route; any-method route */
  rq = (im_http_request_t){.method = "HEAD", .url = url(&fx, "/hello")};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body_len, 0);
  assert_string_equal(im_http_response_header(&r, "Content-Length"), "5");
  im_http_response_deinit(&r);
  rq = (im_http_request_t){.method = "PATCH", .url = url(&fx, "/echo"), .body = "abc", .body_len = 3,
                           .content_type = "text/x-abc"};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_int_equal(r.status, 200);
  assert_string_equal((const char *)r.body, "abc");
  assert_string_equal(im_http_response_header(&r, "X-Method"), "PATCH");
  assert_string_equal(im_http_response_header(&r, "Content-Type"), "text/x-abc");
  im_http_response_deinit(&r);

  /* a handler error becomes an MLflow-shaped JSON error */
  assert_int_equal(im_http_client_json(c, "GET", url(&fx, "/missing/m1"), NULL, &j, &status), IM_OK);
  assert_int_equal(status, 404);
  assert_string_equal(json_string_value(json_object_get(j, "error_code")), "RESOURCE_DOES_NOT_EXIST");
  assert_string_equal(json_string_value(json_object_get(j, "message")), "model m1 not found");
  json_decref(j);
  /* ... which the JSON client turns into an error when no status is asked for */
  j = (json_t *)1;
  assert_int_equal(im_http_client_json(c, "GET", url(&fx, "/missing/m2"), NULL, &j, NULL), IM_ERR_NOT_FOUND);
  assert_null(j);
  assert_non_null(strstr(im_last_error(), "model m2 not found"));

  im_http_client_free(c);
  fx_stop(&fx);
  assert_true(atomic_load(&last_status_404) >= 3); /* hooks saw unmatched routes as NULL */
}

static void test_route_registration(void **state) {
  im_http_server_t *s;
  assert_int_equal(im_http_server_new(NULL, &s), IM_OK);
  assert_int_equal(im_http_server_route(s, "GET", "no-slash", h_count, NULL), IM_ERR_ARG);
  assert_int_equal(im_http_server_route(s, "GET", "/a/*/b", h_count, NULL), IM_ERR_ARG);
  assert_int_equal(im_http_server_route(s, "GET", "/a/x{y}", h_count, NULL), IM_ERR_ARG);
  assert_int_equal(im_http_server_route(s, "GET", "/a/{}", h_count, NULL), IM_ERR_ARG);
  assert_int_equal(im_http_server_route(s, "GET", "/a/{x}/{x}", h_count, NULL), IM_ERR_ARG);
  assert_int_equal(im_http_server_route(s, "GE T", "/a", h_count, NULL), IM_ERR_ARG);
  assert_int_equal(im_http_server_route(s, "GET", "/a/{x}", h_count, NULL), IM_OK);
  assert_int_equal(im_http_server_route(s, "GET", "/a/{x}", h_count, NULL), IM_ERR_EXISTS);
  assert_int_equal(im_http_server_route(s, "POST", "/a/{x}", h_count, NULL), IM_OK);
  assert_int_equal(im_http_server_route(s, "*", "/*", h_count, NULL), IM_OK);
  assert_int_equal(im_http_server_start(s), IM_OK);
  assert_int_equal(im_http_server_route(s, "GET", "/late", h_count, NULL), IM_ERR_STATE);
  assert_int_equal(im_http_server_start(s), IM_ERR_STATE);
  im_http_server_free(s); /* stops without drain */
  im_http_server_free(NULL);

  im_http_server_opts_t o = {.port = 70000};
  assert_int_equal(im_http_server_new(&o, &s), IM_ERR_ARG);
  /* a port in use */
  fx_t fx = {0};
  fx_start(&fx, NULL);
  o = (im_http_server_opts_t){.port = im_http_server_port(fx.srv)};
  assert_int_equal(im_http_server_new(&o, &s), IM_OK);
  assert_int_equal(im_http_server_start(s), IM_ERR_IO);
  im_http_server_free(s);
  fx_stop(&fx);
}

static void test_query_and_json(void **state) {
  fx_t fx = {0};
  fx_start(&fx, NULL);
  im_http_client_t *c = client();
  json_t *j;
  long status;
  assert_int_equal(im_http_client_json(c, "GET",
                                       url(&fx, "/query?experiment_ids=1&experiment_ids=2&filter=name%3D%27surface%27"
                                                "&x[]=a+b&x[]=%E2%82%AC&x[7]=c&max_results=1000"),
                                       NULL, &j, &status),
                   IM_OK);
  assert_int_equal(status, 200);
  json_t *ids = json_object_get(j, "experiment_ids");
  assert_int_equal(json_array_size(ids), 2);
  assert_string_equal(json_string_value(json_array_get(ids, 0)), "1");
  assert_string_equal(json_string_value(json_array_get(ids, 1)), "2");
  assert_string_equal(json_string_value(json_object_get(j, "filter")), "name='surface'");
  json_t *xs = json_object_get(j, "x");
  assert_int_equal(json_array_size(xs), 3);
  assert_string_equal(json_string_value(json_array_get(xs, 0)), "a b");
  assert_string_equal(json_string_value(json_array_get(xs, 1)), "\xe2\x82\xac");
  assert_string_equal(json_string_value(json_array_get(xs, 2)), "c");
  json_decref(j);

  /* the JSON client sends a GET's object as query parameters, arrays as repeated keys */
  json_t *req = json_pack("{s:[s,s,s], s:s, s:i, s:n}", "experiment_ids", "0", "5", "a&b=c", "filter",
                          "metrics.acc > 0.9", "max_results", 50, "page_token");
  assert_int_equal(im_http_client_json(c, "GET", url(&fx, "/query"), req, &j, &status), IM_OK);
  json_decref(req);
  ids = json_object_get(j, "experiment_ids");
  assert_int_equal(json_array_size(ids), 3);
  assert_string_equal(json_string_value(json_array_get(ids, 2)), "a&b=c");
  assert_string_equal(json_string_value(json_object_get(j, "filter")), "metrics.acc > 0.9");
  assert_string_equal(json_string_value(json_object_get(j, "max_results")), "50");
  assert_int_equal(json_integer_value(json_object_get(j, "n")), 5);
  json_decref(j);

  /* POST round trip with unicode, numbers and nesting; DELETE with a body (MLflow sends them) */
  req = json_pack("{s:s, s:f, s:I, s:{s:[i,i]}}", "name", "surface \xe2\x9c\x93", "value", 0.25, "ts",
                  (json_int_t)1700000000123LL, "nested", "a", 1, 2);
  assert_int_equal(im_http_client_json(c, "POST", url(&fx, "/json"), req, &j, &status), IM_OK);
  assert_int_equal(status, 200);
  assert_true(json_is_true(json_object_get(j, "seen")));
  json_object_del(j, "seen");
  assert_true(json_equal(req, j));
  json_decref(j);
  json_decref(req);
  req = json_pack("{s:s, s:s}", "name", "m", "alias", "champion");
  assert_int_equal(im_http_client_json(c, "DELETE", url(&fx, "/json"), req, &j, &status), IM_OK);
  assert_int_equal(status, 200);
  assert_string_equal(json_string_value(json_object_get(j, "alias")), "champion");
  json_decref(j);
  json_decref(req);
  assert_int_equal(im_http_client_json(c, "DELETE", url(&fx, "/json"), NULL, &j, &status), IM_OK);
  assert_int_equal(status, 400); /* empty body: not JSON */
  assert_string_equal(json_string_value(json_object_get(j, "error_code")), "INVALID_PARAMETER_VALUE");
  json_decref(j);

  /* invalid JSON: 400 with the parser's message */
  im_http_request_t rq = {.method = "POST", .url = url(&fx, "/json"), .body = "{\"a\": ", .body_len = 6,
                          .content_type = "application/json"};
  im_http_response_t r = {0};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_int_equal(r.status, 400);
  assert_non_null(strstr((const char *)r.body, "not valid JSON"));
  assert_string_equal(im_http_response_header(&r, "content-type"), "application/json");
  im_http_response_deinit(&r);

  /* a non-JSON 2xx answer is a format error for the JSON client */
  assert_int_equal(im_http_client_json(c, "GET", url(&fx, "/hello"), NULL, &j, &status), IM_ERR_FORMAT);
  im_http_client_free(c);
  fx_stop(&fx);
}

static void test_body_limit(void **state) {
  fx_t fx = {0};
  im_http_server_opts_t o = {.max_body_bytes = 1024};
  fx_start(&fx, &o);
  int port = im_http_server_port(fx.srv);
  im_http_client_t *c = client();
  /* at the limit: fine */
  uint8_t *big = im_malloc(256 << 10);
  pattern(big, 256 << 10);
  im_http_request_t rq = {.method = "POST", .url = url(&fx, "/echo"), .body = big, .body_len = 1024};
  im_http_response_t r = {0};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body_len, 1024);
  assert_memory_equal(r.body, big, 1024);
  im_http_response_deinit(&r);

  /* over it, with Expect: 100-continue: 413 before the body is sent */
  im_http_header_t expect = {"Expect", "100-continue"};
  rq = (im_http_request_t){.method = "POST", .url = url(&fx, "/echo"), .body = big, .body_len = 256 << 10,
                           .headers = &expect, .n_headers = 1, .no_retry = 1};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_int_equal(r.status, 413);
  assert_non_null(strstr((const char *)r.body, "\"error_code\":\"REQUEST_LIMIT_EXCEEDED\""));
  im_http_response_deinit(&r);

  /* a Content-Length of 10 GB and no body: the answer comes without reading anything */
  static const char huge[] = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n";
  char out[4096];
  raw_exchange(port, huge, sizeof huge - 1, out, sizeof out);
  assert_true(strncmp(out, "HTTP/1.1 413", 12) == 0);
  assert_non_null(strstr(out, "over the limit of 1024 bytes"));

  /* a chunked body that grows over the limit */
  im_buf_t ch = {0};
  assert_int_equal(im_buf_printf(&ch, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                      "Connection: close\r\n\r\n"),
                   IM_OK);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(im_buf_printf(&ch, "200\r\n"), IM_OK);
    assert_int_equal(im_buf_append(&ch, big, 0x200), IM_OK);
    assert_int_equal(im_buf_printf(&ch, "\r\n"), IM_OK);
  }
  assert_int_equal(im_buf_printf(&ch, "0\r\n\r\n"), IM_OK);
  raw_exchange(port, ch.data, ch.len, out, sizeof out);
  assert_true(strncmp(out, "HTTP/1.1 413", 12) == 0);
  im_buf_free(&ch);

  /* and the server still answers */
  char *b;
  assert_int_equal(get(c, url(&fx, "/hello"), &b), 200);
  assert_string_equal(b, "hello");
  im_free(b);
  im_free(big);
  im_http_client_free(c);
  fx_stop(&fx);
}

typedef struct {
  const fx_t *fx;
  int ok, bad;
} worker_t;

static void *count_worker(void *arg) {
  worker_t *w = arg;
  im_http_client_opts_t o = {.timeout_s = 30};
  im_http_client_t *c;
  if (im_http_client_new(&o, &c) != IM_OK) return NULL;
  for (int i = 0; i < 200; i++) {
    im_http_request_t rq = {.method = "GET", .url = url(w->fx, "/count")};
    im_http_response_t r = {0};
    if (im_http_client_request(c, &rq, &r) == IM_OK && r.status == 200 && r.body_len == 2) w->ok++;
    else w->bad++;
    im_http_response_deinit(&r);
  }
  im_http_client_free(c);
  return NULL;
}

static void run_concurrent(const im_http_server_opts_t *o) {
  fx_t fx = {0};
  fx_start(&fx, o);
  atomic_store(&n_count, 0);
  int started0 = atomic_load(&hooks_started), ended0 = atomic_load(&hooks_ended);
  pthread_t th[8];
  worker_t w[8];
  for (int i = 0; i < 8; i++) {
    w[i] = (worker_t){.fx = &fx};
    assert_int_equal(pthread_create(&th[i], NULL, count_worker, &w[i]), 0);
  }
  int ok = 0, bad = 0;
  for (int i = 0; i < 8; i++) {
    pthread_join(th[i], NULL);
    ok += w[i].ok;
    bad += w[i].bad;
  }
  assert_int_equal(bad, 0);
  assert_int_equal(ok, 1600);
  assert_int_equal(atomic_load(&n_count), 1600);
  /* on_end runs after the answer went out: wait (bounded) for the last ones */
  for (int i = 0; i < 500 && im_http_server_inflight(fx.srv) > 0; i++) sleep_ms(2);
  fx_stop(&fx);
  assert_int_equal(atomic_load(&hooks_started) - started0, 1600);
  assert_int_equal(atomic_load(&hooks_ended) - ended0, 1600);
}

static void test_concurrent_clients(void **state) {
  run_concurrent(NULL);
  im_http_server_opts_t o = {.thread_per_connection = 1};
  run_concurrent(&o);
}

typedef struct {
  const char *u;
  im_status_t st;
  long status;
  char body[64];
} slow_call_t;

static void *slow_caller(void *arg) {
  slow_call_t *s = arg;
  im_http_client_opts_t o = {.timeout_s = 10, .max_retries = -1};
  im_http_client_t *c;
  if (im_http_client_new(&o, &c) != IM_OK) return NULL;
  im_http_request_t rq = {.method = "GET", .url = s->u};
  im_http_response_t r = {0};
  s->st = im_http_client_request(c, &rq, &r);
  s->status = r.status;
  snprintf(s->body, sizeof s->body, "%s", r.body ? (const char *)r.body : "");
  im_http_response_deinit(&r);
  im_http_client_free(c);
  return NULL;
}

typedef struct {
  im_http_server_t *srv;
  double drain;
  im_status_t st;
} stopper_t;

static void *stopper(void *arg) {
  stopper_t *s = arg;
  s->st = im_http_server_stop(s->srv, s->drain);
  return NULL;
}

static void run_drain(const im_http_server_opts_t *o) {
  fx_t fx = {0};
  fx_start(&fx, o);
  int port = im_http_server_port(fx.srv);
  atomic_store(&slow_entered, 0);
  slow_call_t sc = {.u = url(&fx, "/slow?ms=500")};
  pthread_t th, ths;
  assert_int_equal(pthread_create(&th, NULL, slow_caller, &sc), 0);
  for (int i = 0; i < 2500 && !atomic_load(&slow_entered); i++) sleep_ms(2);
  assert_true(atomic_load(&slow_entered));
  assert_int_equal(im_http_server_inflight(fx.srv), 1);
  stopper_t sp = {.srv = fx.srv, .drain = 10.0, .st = IM_ERR_INTERNAL};
  assert_int_equal(pthread_create(&ths, NULL, stopper, &sp), 0);
  for (int i = 0; i < 2500 && !im_http_server_stopping(fx.srv); i++) sleep_ms(1);
  sleep_ms(20);
  /* while the slow request drains, a new connection is refused */
  im_http_client_t *c = client();
  im_http_request_t rq = {.method = "GET", .url = url(&fx, "/hello"), .no_retry = 1};
  im_http_response_t r = {0};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_ERR_IO);
  assert_int_equal(r.status, 0);
  im_http_response_deinit(&r);
  im_http_client_free(c);
  pthread_join(ths, NULL);
  assert_int_equal(sp.st, IM_OK); /* it waited for the handler */
  pthread_join(th, NULL);
  assert_int_equal(sc.st, IM_OK);
  assert_int_equal(sc.status, 200);
  assert_string_equal(sc.body, "slow done");
  /* stopped: new connections are refused */
  int fd = raw_connect(port);
  if (fd >= 0) { /* the port may have been taken by someone else meanwhile; then it is not ours */
    char out[64];
    ssize_t r = recv(fd, out, sizeof out, 0);
    assert_true(r <= 0);
    close(fd);
  }
  assert_int_equal(im_http_server_stop(fx.srv, 1.0), IM_OK); /* idempotent */
  im_http_server_free(fx.srv);

  /* a drain timeout shorter than the handler: the stop reports it and still frees */
  fx_start(&fx, o);
  atomic_store(&slow_entered, 0);
  sc = (slow_call_t){.u = url(&fx, "/slow?ms=600")};
  assert_int_equal(pthread_create(&th, NULL, slow_caller, &sc), 0);
  for (int i = 0; i < 2500 && !atomic_load(&slow_entered); i++) sleep_ms(2);
  assert_true(atomic_load(&slow_entered));
  assert_int_equal(im_http_server_stop(fx.srv, 0.05), IM_ERR_CANCELLED);
  assert_non_null(strstr(im_last_error(), "in flight"));
  pthread_join(th, NULL);
  im_http_server_free(fx.srv);
}

static void test_graceful_stop(void **state) {
  run_drain(NULL);
  im_http_server_opts_t o = {.thread_per_connection = 1};
  run_drain(&o);
}

/* Reads one response (headers and its Content-Length body) from fd into out: its length,
 * or 0 when the connection ended or failed before a whole response. */
static size_t raw_response(int fd, char *out, size_t cap) {
  size_t n = 0;
  for (;;) {
    out[n] = '\0';
    const char *end = strstr(out, "\r\n\r\n");
    if (end) {
      const char *cl = strcasestr(out, "\r\nContent-Length:");
      size_t want = (size_t)(end + 4 - out) + (cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
      if (n >= want) return n;
    }
    if (n + 1 >= cap) return 0;
    ssize_t r = recv(fd, out + n, cap - 1 - n, 0);
    if (r <= 0) return 0;
    n += (size_t)r;
  }
}

static void send_text(int fd, const char *s) {
  assert_int_equal(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

static const char GET_HELLO[] = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";

/* A keep-alive connection the server has answered once (and kept open). */
static int answered_once(int port) {
  char buf[2048];
  int fd = raw_connect(port);
  assert_true(fd >= 0);
  send_text(fd, GET_HELLO);
  assert_true(raw_response(fd, buf, sizeof buf) > 0);
  assert_null(strcasestr(buf, "Connection: close"));
  return fd;
}

/* The drain's answer on fd: complete, 200, Connection: close, then a clean close. */
static void closing_answer(int fd) {
  char buf[2048];
  assert_true(raw_response(fd, buf, sizeof buf) > 0);
  assert_true(strncmp(buf, "HTTP/1.1 200", 12) == 0);
  assert_non_null(strcasestr(buf, "\r\nConnection: close\r\n"));
  assert_non_null(strstr(buf, "\r\n\r\nhello"));
  assert_int_equal(recv(fd, buf, sizeof buf, 0), 0);
  close(fd);
}

static void start_stop(im_http_server_t *srv, stopper_t *sp, pthread_t *th) {
  *sp = (stopper_t){.srv = srv, .drain = 30.0, .st = IM_ERR_INTERNAL};
  assert_int_equal(pthread_create(th, NULL, stopper, sp), 0);
  for (int i = 0; i < 5000 && !im_http_server_stopping(srv); i++) sleep_ms(1);
  assert_true(im_http_server_stopping(srv));
}

/* A stop under keep-alive: in-flight counts touch 0 between one answer and the next
 * request, so the drain must serve open connections, not just requests in flight. */
static void run_drain_keepalive(const im_http_server_opts_t *base) {
  /* a long idle grace: requests arriving during the drain on connections opened before it
   * (idle keep-alive, opened with nothing sent, a request begun) are all answered */
  im_http_server_opts_t o = *base;
  o.drain_idle_s = 60;
  fx_t fx = {0};
  fx_start(&fx, &o);
  int port = im_http_server_port(fx.srv);
  int idle = answered_once(port);
  int fresh = raw_connect(port);
  int begun = raw_connect(port);
  assert_true(fresh >= 0 && begun >= 0);
  send_text(begun, "GET /hello HTTP/1.1\r\nHost: x\r\n");
  stopper_t sp;
  pthread_t th;
  start_stop(fx.srv, &sp, &th);
  assert_int_equal(raw_connect(port), -1); /* new connections are refused */
  send_text(idle, GET_HELLO);
  closing_answer(idle);
  send_text(fresh, GET_HELLO);
  closing_answer(fresh);
  send_text(begun, "\r\n");
  closing_answer(begun);
  pthread_join(th, NULL);
  assert_int_equal(sp.st, IM_OK); /* it returned once the connections had closed */
  im_http_server_free(fx.srv);

  /* a short idle grace: an idle connection is closed cleanly (no reset), a begun request is not */
  o.drain_idle_s = 0.05;
  fx_start(&fx, &o);
  port = im_http_server_port(fx.srv);
  idle = answered_once(port);
  begun = raw_connect(port);
  assert_true(begun >= 0);
  send_text(begun, "GET /hello HTTP/1.1\r\nHost: x\r\n");
  start_stop(fx.srv, &sp, &th);
  char buf[256];
  assert_int_equal(recv(idle, buf, sizeof buf, 0), 0);
  close(idle);
  send_text(begun, "\r\n");
  closing_answer(begun);
  pthread_join(th, NULL);
  assert_int_equal(sp.st, IM_OK);
  im_http_server_free(fx.srv);
}

static void test_drain_keepalive(void **state) {
  im_http_server_opts_t o = {0};
  run_drain_keepalive(&o);
  o.thread_per_connection = 1;
  run_drain_keepalive(&o);
}

/* A connection still in the listen backlog when the stop begins (the one server thread
 * is busy in a slow handler, so nothing accepts it) had its request sent: shutting the
 * listener would reset it; the stop accepts it and answers it. */
static void test_drain_backlog(void **state) {
  im_http_server_opts_t o = {.threads = 1};
  fx_t fx = {0};
  fx_start(&fx, &o);
  int port = im_http_server_port(fx.srv);
  atomic_store(&slow_entered, 0);
  slow_call_t sc = {.u = url(&fx, "/slow?ms=1500")};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, slow_caller, &sc), 0);
  for (int i = 0; i < 2500 && !atomic_load(&slow_entered); i++) sleep_ms(2);
  assert_true(atomic_load(&slow_entered));
  int waiting = raw_connect(port); /* the kernel completes it; the busy thread does not accept it */
  assert_true(waiting >= 0);
  send_text(waiting, GET_HELLO);
  stopper_t sp;
  pthread_t ths;
  start_stop(fx.srv, &sp, &ths);
  closing_answer(waiting);
  pthread_join(th, NULL);
  assert_int_equal(sc.status, 200);
  pthread_join(ths, NULL);
  assert_int_equal(sp.st, IM_OK);
  im_http_server_free(fx.srv);
}

static void test_malformed_requests(void **state) {
  fx_t fx = {0};
  im_http_server_opts_t o = {.max_header_bytes = 16 << 10, .timeout_s = 1};
  fx_start(&fx, &o);
  int port = im_http_server_port(fx.srv);
  char out[8192];
  static const char *bad[] = {
      "GARBAGE\r\n\r\n",
      "GET\r\n\r\n",
      "GET /hello HTTP/9.9\r\nHost: x\r\n\r\n",
      "GET /hello HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
      "GET /hello HTTP/1.1\r\nHost: x\r\n: empty name\r\nConnection: close\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
      "GET foo HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /v2/models/a%00b HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /%%%%/%zz?%%=%&&== HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      "GET http://example.com/hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      "\x01\x02\x03\x04\xff\xfe\r\n\r\n",
      "GET /hello HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    size_t len = strlen(bad[i]);
    if (i == sizeof bad / sizeof *bad - 1) len = 40; /* with the NUL and what follows it */
    size_t n = raw_exchange(port, bad[i], len, out, sizeof out);
    /* either a 4xx/5xx answer or a closed connection; never a crash */
    if (n >= 12 && strncmp(out, "HTTP/1.", 7) == 0) {
      int code = atoi(out + 9);
      if (i == 12) assert_int_equal(code, 200);     /* absolute form is valid */
      else if (i == 4 || i == 14) /* libmicrohttpd skips a nameless header, cuts a value at a NUL */
        assert_true(code == 200 || code >= 400);
      else {
        if (code < 400) fprintf(stderr, "request %zu: %d\n", i, code);
        assert_true(code >= 400 && code < 600);
      }
    }
  }
  /* "%00" in the path and a target without '/' are ours to refuse: 400 */
  raw_exchange(port, bad[10], strlen(bad[10]), out, sizeof out);
  assert_true(strncmp(out, "HTTP/1.1 400", 12) == 0);
  raw_exchange(port, bad[9], strlen(bad[9]), out, sizeof out);
  assert_true(strncmp(out, "HTTP/1.1 400", 12) == 0);

  /* headers over the connection memory: answered by libmicrohttpd, or closed */
  im_buf_t b = {0};
  assert_int_equal(im_buf_printf(&b, "GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: "), IM_OK);
  for (int i = 0; i < 100000; i++) assert_int_equal(im_buf_append(&b, "a", 1), IM_OK);
  assert_int_equal(im_buf_printf(&b, "\r\n\r\n"), IM_OK);
  size_t n = raw_exchange(port, b.data, b.len, out, sizeof out);
  if (n >= 12) assert_true(atoi(out + 9) >= 400);
  im_buf_free(&b);
  /* a URI of 64 KiB */
  assert_int_equal(im_buf_printf(&b, "GET /query?"), IM_OK);
  for (int i = 0; i < 8000; i++) assert_int_equal(im_buf_printf(&b, "a=%d&", i), IM_OK);
  assert_int_equal(im_buf_printf(&b, " HTTP/1.1\r\nHost: x\r\n\r\n"), IM_OK);
  n = raw_exchange(port, b.data, b.len, out, sizeof out);
  if (n >= 12) assert_true(atoi(out + 9) >= 400);
  im_buf_free(&b);
  /* more query parameters than the parser takes (1024): 400, unless libmicrohttpd's own
   * argument table ran out of connection memory first and it closed the connection */
  assert_int_equal(im_buf_printf(&b, "GET /query?"), IM_OK);
  for (int i = 0; i < 1100; i++) assert_int_equal(im_buf_printf(&b, "a&"), IM_OK);
  assert_int_equal(im_buf_printf(&b, " HTTP/1.1\r\nHost: x\r\n\r\n"), IM_OK);
  n = raw_exchange(port, b.data, b.len, out, sizeof out);
  assert_true(n == 0 || atoi(out + 9) >= 400);
  im_buf_free(&b);
  /* a client that connects and says nothing, and one that stops mid-headers */
  int idle = raw_connect(port);
  int half = raw_connect(port);
  assert_true(idle >= 0 && half >= 0);
  assert_true(send(half, "GET /hel", 8, MSG_NOSIGNAL) == 8);

  /* the server is fine */
  im_http_client_t *c = client();
  char *body;
  assert_int_equal(get(c, url(&fx, "/hello"), &body), 200);
  assert_string_equal(body, "hello");
  im_free(body);
  im_http_client_free(c);
  close(idle);
  close(half);
  fx_stop(&fx);
}

/* A body as python-requests builds it for files={...}, data={...}. */
static void test_multipart_upload(void **state) {
  fx_t fx = {0};
  fx_start(&fx, NULL);
  im_http_client_t *c = client();
  uint8_t img[3000];
  pattern(img, sizeof img);
  memcpy(img + 100, "\r\n--0123abcd\r\n", 14); /* boundary-like bytes inside, not a delimiter... */
  img[104] = 'X';                            /* ...because it is broken */
  im_buf_t b = {0};
  assert_int_equal(im_buf_printf(&b, "--0123abcd\r\nContent-Disposition: form-data; name=\"top_k\"\r\n\r\n3\r\n"
                                     "--0123abcd\r\nContent-Disposition: form-data; name=\"file\"; "
                                     "filename=\"crack.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"),
                   IM_OK);
  assert_int_equal(im_buf_append(&b, img, sizeof img), IM_OK);
  assert_int_equal(im_buf_printf(&b, "\r\n--0123abcd--\r\n"), IM_OK);
  im_http_request_t rq = {.method = "POST", .url = url(&fx, "/upload"), .body = b.data, .body_len = b.len,
                          .content_type = "multipart/form-data; boundary=0123abcd"};
  im_http_response_t r = {0};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_int_equal(r.status, 200);
  json_t *j = json_loadb((const char *)r.body, r.body_len, 0, NULL);
  assert_non_null(j);
  json_t *parts = json_object_get(j, "parts");
  assert_int_equal(json_array_size(parts), 2);
  json_t *f = json_array_get(parts, 1);
  assert_string_equal(json_string_value(json_object_get(f, "name")), "file");
  assert_string_equal(json_string_value(json_object_get(f, "filename")), "crack.jpg");
  assert_string_equal(json_string_value(json_object_get(f, "content_type")), "image/jpeg");
  assert_int_equal(json_integer_value(json_object_get(f, "len")), sizeof img);
  assert_int_equal(json_integer_value(json_object_get(f, "hash")), im_hash64(img, sizeof img, 0) & 0xffffffff);
  json_decref(j);
  im_http_response_deinit(&r);

  /* a malformed upload (cut short): 400 with a clear message */
  rq.body_len = b.len - 20;
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_int_equal(r.status, 400);
  assert_non_null(strstr((const char *)r.body, "not terminated by a boundary"));
  im_http_response_deinit(&r);
  /* not multipart at all */
  rq.content_type = "application/json";
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_int_equal(r.status, 501);
  im_http_response_deinit(&r);
  im_buf_free(&b);
  im_http_client_free(c);
  fx_stop(&fx);
}

static void test_client_retries(void **state) {
  fx_t fx = {0};
  fx_start(&fx, NULL);
  im_http_client_t *c = client();
  atomic_store(&n_flaky, 0);
  im_http_request_t rq = {.method = "GET", .url = url(&fx, "/flaky")};
  im_http_response_t r = {0};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.attempts, 3);
  assert_string_equal((const char *)r.body, "finally");
  im_http_response_deinit(&r);
  assert_int_equal(atomic_load(&n_flaky), 3);

  /* without retries the 503 comes back as it is */
  atomic_store(&n_flaky, 0);
  rq.no_retry = 1;
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_int_equal(r.status, 503);
  assert_int_equal(r.attempts, 1);
  im_http_response_deinit(&r);
  /* a bounded count: 1 retry is not enough */
  im_http_client_opts_t o = {.max_retries = 1, .backoff_s = 0.01};
  im_http_client_t *c1;
  assert_int_equal(im_http_client_new(&o, &c1), IM_OK);
  atomic_store(&n_flaky, 0);
  rq.no_retry = 0;
  assert_int_equal(im_http_client_request(c1, &rq, &r), IM_OK);
  assert_int_equal(r.status, 503);
  assert_int_equal(r.attempts, 2);
  im_http_response_deinit(&r);
  im_http_client_free(c1);
  /* 500 is not retried */
  rq = (im_http_request_t){.method = "GET", .url = url(&fx, "/err500")};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_int_equal(r.status, 500);
  assert_int_equal(r.attempts, 1);
  im_http_response_deinit(&r);

  /* connection refused: retried, then an error */
  int port = im_http_server_port(fx.srv);
  fx_stop(&fx);
  char u[64];
  snprintf(u, sizeof u, "http://127.0.0.1:%d/hello", port);
  rq = (im_http_request_t){.method = "GET", .url = u};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_ERR_IO);
  assert_int_equal(r.attempts, 4);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(im_last_error(), "GET http://127.0.0.1:"));
  im_http_response_deinit(&r);
  /* bad input */
  rq = (im_http_request_t){.method = "GET", .url = "file:///etc/passwd", .no_retry = 1};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_ERR_IO);
  im_http_response_deinit(&r);
  im_http_header_t evil = {"X-Evil", "a\r\nInjected: 1"};
  rq = (im_http_request_t){.method = "GET", .url = u, .headers = &evil, .n_headers = 1};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_ERR_ARG);
  im_http_response_deinit(&r);
  im_http_client_free(c);
}

/* A one-shot server that answers with a declared length longer than what it sends. */
typedef struct {
  int lfd, port;
} trunc_srv_t;

static void *trunc_serve(void *arg) {
  trunc_srv_t *t = arg;
  for (int k = 0; k < 8; k++) { /* at most 8 connections (the client's retries) */
    int fd = accept(t->lfd, NULL, NULL);
    if (fd < 0) return NULL;
    char buf[4096];
    (void)!recv(fd, buf, sizeof buf, 0);
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly ten b";
    (void)!send(fd, resp, sizeof resp - 1, MSG_NOSIGNAL);
    close(fd);
  }
  return NULL;
}

static int count_entries(const char *dir) {
  DIR *d = opendir(dir);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

static void test_download_atomic(void **state) {
  const char *dir = tu_tmpdir();
  fx_t fx = {0};
  fx_start(&fx, NULL);
  im_http_client_t *c = client();
  const char *path = tu_path(dir, "model.safetensors");
  /* 2xx: the file has the body, the in-memory body is empty */
  im_http_request_t rq = {.method = "GET", .url = url(&fx, "/bytes/300000"), .download_path = path};
  im_http_response_t r = {0};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body_len, 0);
  im_http_response_deinit(&r);
  uint8_t *got;
  size_t n;
  assert_int_equal(im_file_read(path, 0, &got, &n), IM_OK);
  assert_int_equal(n, 300000);
  uint8_t *want = im_malloc(300000);
  pattern(want, 300000);
  assert_memory_equal(got, want, n);
  im_free(got);
  im_free(want);
  /* an empty 2xx body is an empty file */
  const char *empty = tu_path(dir, "empty.bin");
  rq = (im_http_request_t){.method = "GET", .url = url(&fx, "/bytes/0"), .download_path = empty};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  im_http_response_deinit(&r);
  assert_int_equal(im_file_read(empty, 0, &got, &n), IM_OK);
  assert_int_equal(n, 0);
  im_free(got);

  /* a 500: no file; the old file stays as it was; the error body is in memory */
  const char *p500 = tu_path(dir, "never.bin");
  rq = (im_http_request_t){.method = "GET", .url = url(&fx, "/err500"), .download_path = p500};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_int_equal(r.status, 500);
  assert_non_null(strstr((const char *)r.body, "it broke"));
  im_http_response_deinit(&r);
  assert_int_equal(access(p500, F_OK), -1);
  rq.download_path = path;
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  im_http_response_deinit(&r);
  assert_int_equal(im_file_read(path, 0, &got, &n), IM_OK);
  assert_int_equal(n, 300000);
  im_free(got);
  /* a missing route with a download path: no file either */
  rq = (im_http_request_t){.method = "GET", .url = url(&fx, "/nope"), .download_path = p500};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_int_equal(r.status, 404);
  im_http_response_deinit(&r);
  assert_int_equal(access(p500, F_OK), -1);
  fx_stop(&fx);

  /* a truncated body: an error, no file, no temporary left behind */
  trunc_srv_t t = {0};
  t.lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(t.lfd, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t al = sizeof a;
  getsockname(t.lfd, (struct sockaddr *)&a, &al);
  assert_int_equal(listen(t.lfd, 8), 0);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, trunc_serve, &t), 0);
  char u[64];
  snprintf(u, sizeof u, "http://127.0.0.1:%d/x", ntohs(a.sin_port));
  const char *ptr = tu_path(dir, "truncated.bin");
  int before = count_entries(dir);
  rq = (im_http_request_t){.method = "GET", .url = u, .download_path = ptr, .no_retry = 1};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_ERR_IO);
  im_http_response_deinit(&r);
  assert_int_equal(access(ptr, F_OK), -1);
  /* and with retries (a partial body is retryable), still nothing */
  assert_int_equal(im_http_client_request(c, &(im_http_request_t){.method = "GET", .url = u, .download_path = ptr},
                                          &r),
                   IM_ERR_IO);
  assert_int_equal(r.attempts, 4);
  im_http_response_deinit(&r);
  assert_int_equal(access(ptr, F_OK), -1);
  assert_int_equal(count_entries(dir), before);
  /* the same truncation into memory is an error too */
  rq.download_path = NULL;
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_ERR_IO);
  im_http_response_deinit(&r);
  shutdown(t.lfd, SHUT_RDWR); /* ends accept() in the thread */
  pthread_join(th, NULL);
  close(t.lfd);
  im_http_client_free(c);
  tu_rmtree(dir);
}

static void test_upload_and_file_response(void **state) {
  const char *dir = tu_tmpdir();
  const char *src = tu_path(dir, "artifact.bin");
  uint8_t *data = im_malloc(200000);
  pattern(data, 200000);
  assert_int_equal(tu_write_file(src, data, 200000), 0);
  fx_t fx = {.served_file = src};
  fx_start(&fx, NULL);
  im_http_client_t *c = client();
  /* PUT and POST from a file */
  const char *methods[] = {"PUT", "POST"};
  for (int i = 0; i < 2; i++) {
    im_http_request_t rq = {.method = methods[i], .url = url(&fx, "/echo"), .upload_path = src};
    im_http_response_t r = {0};
    assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 200000);
    assert_memory_equal(r.body, data, 200000);
    assert_string_equal(im_http_response_header(&r, "Content-Type"), "application/octet-stream");
    assert_string_equal(im_http_response_header(&r, "X-Method"), methods[i]);
    im_http_response_deinit(&r);
  }
  im_http_request_t rq = {.method = "PUT", .url = url(&fx, "/echo"), .upload_path = tu_path(dir, "absent")};
  im_http_response_t r = {0};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_ERR_NOT_FOUND);
  im_http_response_deinit(&r);
  /* a file served from its descriptor */
  rq = (im_http_request_t){.method = "GET", .url = url(&fx, "/file")};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body_len, 200000);
  assert_memory_equal(r.body, data, 200000);
  assert_string_equal(im_http_response_header(&r, "Content-Type"), "application/x-test");
  im_http_response_deinit(&r);
  /* the response size cap of the client */
  im_http_client_opts_t o = {.max_response_bytes = 1000};
  im_http_client_t *small;
  assert_int_equal(im_http_client_new(&o, &small), IM_OK);
  assert_int_equal(im_http_client_request(small, &rq, &r), IM_ERR_LIMIT);
  im_http_response_deinit(&r);
  im_http_client_free(small);
  im_free(data);
  im_http_client_free(c);
  fx_stop(&fx);
  tu_rmtree(dir);
}

static void test_auth_and_sigv4(void **state) {
  fx_t fx = {0};
  fx_start(&fx, NULL);
  json_t *j;
  long status;
  im_http_client_opts_t o = {.bearer_token = "tok123", .user_agent = "test-agent"};
  im_http_client_t *c;
  assert_int_equal(im_http_client_new(&o, &c), IM_OK);
  assert_int_equal(im_http_client_json(c, "GET", url(&fx, "/headers"), NULL, &j, &status), IM_OK);
  assert_string_equal(json_string_value(json_object_get(j, "Authorization")), "Bearer tok123");
  assert_string_equal(json_string_value(json_object_get(j, "User-Agent")), "test-agent");
  json_decref(j);
  im_http_client_free(c);

  o = (im_http_client_opts_t){.username = "user", .password = "pass"};
  assert_int_equal(im_http_client_new(&o, &c), IM_OK);
  assert_int_equal(im_http_client_json(c, "GET", url(&fx, "/headers"), NULL, &j, &status), IM_OK);
  assert_string_equal(json_string_value(json_object_get(j, "Authorization")), "Basic dXNlcjpwYXNz");
  json_decref(j);

  /* SigV4 as libcurl does it; the S3 store will use this */
  im_http_sigv4_t sig = {.region = "us-east-1", .access_key = "AKIDEXAMPLE",
                         .secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", .session_token = "sess"};
  im_http_header_t custom = {"x-custom", "v"};
  im_http_request_t rq = {.method = "GET", .url = url(&fx, "/headers"), .sigv4 = &sig, .headers = &custom,
                          .n_headers = 1};
  im_http_response_t r = {0};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_int_equal(r.status, 200);
  j = json_loadb((const char *)r.body, r.body_len, 0, NULL);
  const char *auth = json_string_value(json_object_get(j, "Authorization"));
  assert_non_null(auth);
  assert_true(strncmp(auth, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/", 40) == 0);
  assert_non_null(strstr(auth, "/us-east-1/s3/aws4_request"));
  assert_non_null(strstr(auth, "SignedHeaders="));
  assert_non_null(strstr(auth, "x-amz-content-sha256"));
  assert_non_null(strstr(auth, "x-amz-security-token"));
  assert_non_null(strstr(auth, "Signature="));
  assert_non_null(json_object_get(j, "X-Amz-Date"));
  assert_string_equal(json_string_value(json_object_get(j, "x-amz-content-sha256")), "UNSIGNED-PAYLOAD");
  assert_string_equal(json_string_value(json_object_get(j, "X-AMZ-SECURITY-TOKEN")), "sess");
  json_decref(j);
  im_http_response_deinit(&r);
  sig.region = NULL;
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_ERR_ARG);
  im_http_response_deinit(&r);
  im_http_client_free(c);
  fx_stop(&fx);
}

static im_status_t h_fallback(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  size_t n;
  im_http_req_body(req, &n);
  char msg[128];
  snprintf(msg, sizeof msg, "fallback %s %s %zu", im_http_req_method(req), im_http_req_path(req), n);
  return im_http_resp_text(resp, 200, "text/plain", msg);
}

static void test_fallback(void **state) {
  fx_t fx = {0};
  im_http_server_opts_t o = {.fallback = h_fallback};
  fx_start(&fx, &o);
  im_http_client_t *c = client();
  char *b;
  assert_int_equal(get(c, url(&fx, "/anything/else"), &b), 200);
  assert_string_equal(b, "fallback GET /anything/else 0");
  im_free(b);
  im_http_request_t rq = {.method = "POST", .url = url(&fx, "/x"), .body = "abc", .body_len = 3};
  im_http_response_t r = {0};
  assert_int_equal(im_http_client_request(c, &rq, &r), IM_OK);
  assert_string_equal((const char *)r.body, "fallback POST /x 3");
  im_http_response_deinit(&r);
  im_http_client_free(c);
  fx_stop(&fx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_routing),
      cmocka_unit_test(test_route_registration),
      cmocka_unit_test(test_query_and_json),
      cmocka_unit_test(test_body_limit),
      cmocka_unit_test(test_concurrent_clients),
      cmocka_unit_test(test_graceful_stop),
      cmocka_unit_test(test_drain_keepalive),
      cmocka_unit_test(test_drain_backlog),
      cmocka_unit_test(test_malformed_requests),
      cmocka_unit_test(test_multipart_upload),
      cmocka_unit_test(test_client_retries),
      cmocka_unit_test(test_download_atomic),
      cmocka_unit_test(test_upload_and_file_response),
      cmocka_unit_test(test_auth_and_sigv4),
      cmocka_unit_test(test_fallback),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
