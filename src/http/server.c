/* The HTTP server: libmicrohttpd does the sockets and HTTP parsing; this file
 * adds the route table, the request-body buffer with its limit (413 before the
 * body is read when Content-Length says it is too big), request and response
 * objects, metrics hooks and the graceful stop.
 *
 * Threads: by default an MHD worker pool (N threads, each with its own epoll set
 * accepting from the shared listening socket). That serves many concurrent
 * short requests best: no thread is created per connection, thousands of
 * keep-alive connections cost no thread each, and the kernel spreads accepts
 * over idle workers. Its price is that a handler that blocks holds its worker
 * (and the other connections that worker owns), so servers whose handlers wait
 * for long (a micro-batcher) can ask for thread-per-connection instead.
 *
 * Request lifecycle in MHD terms: the URI-log callback allocates our request;
 * the first access call (headers in) routes it and checks Content-Length;
 * upload calls append to the buffer; the last call runs the handler and queues
 * the response; notify-completed runs the on_end hook and frees. A request MHD
 * drops without notify-completed (it does for some 431s) is freed when its
 * connection closes (notify-connection), so none leaks.
 *
 * The graceful stop (as Go's http.Server.Shutdown and nginx's graceful quit):
 * the listener stops accepting, the connections already waiting in its backlog
 * are accepted and served, then it is shut; every answer from then on says
 * "Connection: close". Open connections are served until they close: a request
 * that arrives on one during the drain is answered; a connection idle between
 * requests (nothing unread, no request begun) for drain_idle_s since the stop
 * began is closed; at the drain timeout whatever is left is cut off. Waiting
 * for the in-flight count alone is not enough: with keep-alive it touches 0
 * between one answer and the next request, which would then be reset. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "http_impl.h"

#define MAX_PATTERN_SEGS 64
#define HEADER_BYTES_DEFAULT (64u << 10)
#define BODY_RESERVE_MAX ((size_t)1 << 20)
#define BACKLOG_ADOPT_MAX 4096

typedef struct {
  char *method;   /* NULL: any */
  char *pattern;
  int nseg;
  char **seg;     /* literal text, or the parameter name for parameters */
  uint8_t *param; /* 1 where seg is a parameter */
  int prefix;     /* the pattern's last segment was "*" */
  int nlit;
  im_http_handler_fn fn;
  void *user;
  char *spool_dir; /* the body goes to a temporary file in this directory (NULL: memory) */
} route_t;

/* Per connection (libmicrohttpd's socket context): the request being handled, so that
 * one MHD never reports as completed (it drops requests it refuses for lack of memory
 * without notify-completed) is freed when the connection closes; and what the drain
 * needs to tell an idle connection from a busy one. cur is touched only on the
 * connection's own thread; the links and shut under the server's conns_mu. */
typedef struct conn_slot {
  im_http_req_t *cur;
  struct conn_slot *prev, *next;
  int fd;
  atomic_int busy;          /* a request has begun (its request line is in) and not ended */
  atomic_llong idle_since;  /* microseconds (im_time_now) when the last request ended, or the connection opened */
  int shut;                 /* the drain has shut it down */
} conn_slot_t;

struct im_http_server {
  im_http_server_opts_t o;
  char *host;
  route_t *routes;
  size_t nroutes, caproutes;
  struct MHD_Daemon *d;
  int listen_fd; /* after quiesce, ours to close */
  int port;
  int started, stopped;
  atomic_int inflight;
  atomic_int stopping; /* the listener is shut: answers say Connection: close */
  pthread_mutex_t conns_mu;
  conn_slot_t *conns; /* the open connections */
  int nconns;
};

struct im_http_req {
  im_http_server_t *srv;
  conn_slot_t *slot;
  struct MHD_Connection *conn;
  char *target;  /* raw request target */
  char *method;
  char *path;    /* decoded */
  im_http_form_t *query;
  const route_t *route;
  char **vals;   /* route->nseg + 1 values (the last: the prefix rest) */
  im_buf_t body;
  uint64_t bytes_in, bytes_out;
  double t0;
  int started;    /* the first access call happened (and on_start, inflight++) */
  int too_large;  /* body over the limit */
  int refused;    /* the gate answered before the body */
  int spool_fd;   /* spooled body: its file (-1 when not spooling) */
  char *spool_path;
  int discard;    /* no handler wants the body */
  int oom;
  int bad_status; /* answer this at once (400 on a bad target) */
  int status;     /* what was queued */
  char *allow;    /* no route for this method: the methods the path has */
};

typedef struct {
  char *name, *value;
} hdr_t;

struct im_http_resp {
  int status;
  hdr_t *hdrs;
  size_t nhdrs, caphdrs;
  uint8_t *body;
  size_t len;
  int fd; /* file body, or -1 */
  uint64_t fd_size;
};

/* ---- routes ------------------------------------------------------------------- */

static void route_deinit(route_t *r) {
  for (int i = 0; i < r->nseg; i++) im_free(r->seg[i]);
  im_free(r->seg);
  im_free(r->param);
  im_free(r->spool_dir);
  im_free(r->method);
  im_free(r->pattern);
}

static int valid_param_name(const char *s, size_t n) {
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
      return 0;
  }
  return 1;
}

static im_status_t route_compile(route_t *r, const char *pattern) {
  if (!pattern || pattern[0] != '/') return im_error(IM_ERR_ARG, "route pattern \"%s\" must start with '/'", pattern ? pattern : "(null)");
  size_t len = strlen(pattern);
  const char *p = pattern + 1;
  size_t plen = len - 1;
  if (plen >= 1 && p[plen - 1] == '*' && (plen == 1 || p[plen - 2] == '/')) {
    r->prefix = 1;
    plen = plen == 1 ? 0 : plen - 2;
  }
  r->seg = im_calloc(MAX_PATTERN_SEGS, sizeof *r->seg);
  r->param = im_calloc(MAX_PATTERN_SEGS, 1);
  if (!r->seg || !r->param) return im_error(IM_ERR_NOMEM, "out of memory");
  if (r->prefix && plen == 0 && len == 2) return IM_OK; /* just "*": every path */
  size_t i = 0;
  for (;;) {
    const char *sl = memchr(p + i, '/', plen - i);
    size_t end = sl ? (size_t)(sl - p) : plen;
    const char *s = p + i;
    size_t n = end - i;
    if (r->nseg == MAX_PATTERN_SEGS) return im_error(IM_ERR_ARG, "route pattern %s has too many segments", pattern);
    if (memchr(s, '*', n)) return im_error(IM_ERR_ARG, "route pattern %s: '*' only as the final segment", pattern);
    if (n >= 2 && s[0] == '{' && s[n - 1] == '}') {
      if (!valid_param_name(s + 1, n - 2)) return im_error(IM_ERR_ARG, "route pattern %s: bad parameter name", pattern);
      for (int k = 0; k < r->nseg; k++)
        if (r->param[k] && strlen(r->seg[k]) == n - 2 && memcmp(r->seg[k], s + 1, n - 2) == 0)
          return im_error(IM_ERR_ARG, "route pattern %s: parameter %.*s twice", pattern, (int)(n - 2), s + 1);
      r->param[r->nseg] = 1;
      r->seg[r->nseg] = im_strndup(s + 1, n - 2);
    } else {
      if (memchr(s, '{', n) || memchr(s, '}', n))
        return im_error(IM_ERR_ARG, "route pattern %s: a parameter must be a whole segment", pattern);
      r->seg[r->nseg] = im_strndup(s, n);
      r->nlit++;
    }
    if (!r->seg[r->nseg]) return im_error(IM_ERR_NOMEM, "out of memory");
    r->nseg++;
    if (!sl) break;
    i = end + 1;
  }
  return IM_OK;
}

im_status_t im_http_server_route(im_http_server_t *srv, const char *method, const char *pattern,
                                 im_http_handler_fn fn, void *user) {
  if (!srv || !fn) return im_error(IM_ERR_ARG, "im_http_server_route: NULL server or handler");
  if (srv->started) return im_error(IM_ERR_STATE, "routes must be added before the server starts");
  if (method && strcmp(method, "*") == 0) method = NULL;
  if (method && (!*method || strpbrk(method, " \t\r\n/")))
    return im_error(IM_ERR_ARG, "bad HTTP method \"%s\"", method);
  for (size_t i = 0; i < srv->nroutes; i++) {
    const route_t *o = &srv->routes[i];
    int same_m = (!o->method && !method) || (o->method && method && strcmp(o->method, method) == 0);
    if (same_m && pattern && strcmp(o->pattern, pattern) == 0)
      return im_error(IM_ERR_EXISTS, "route %s %s is already registered", method ? method : "*", pattern);
  }
  route_t r = {0};
  im_status_t st = route_compile(&r, pattern);
  if (!st) {
    r.pattern = im_strdup(pattern);
    r.method = method ? im_strdup(method) : NULL;
    if (!r.pattern || (method && !r.method)) st = im_error(IM_ERR_NOMEM, "out of memory");
  }
  if (!st && srv->nroutes == srv->caproutes) {
    size_t cap = srv->caproutes ? srv->caproutes * 2 : 16;
    route_t *nr = im_realloc(srv->routes, cap * sizeof *nr);
    if (!nr) st = im_error(IM_ERR_NOMEM, "out of memory");
    else {
      srv->routes = nr;
      srv->caproutes = cap;
    }
  }
  if (st) {
    route_deinit(&r);
    return st;
  }
  r.fn = fn;
  r.user = user;
  srv->routes[srv->nroutes++] = r;
  return IM_OK;
}

im_status_t im_http_server_route_spool(im_http_server_t *srv, const char *method, const char *pattern,
                                       im_http_handler_fn fn, void *user, const char *dir) {
  if (!dir || !*dir) return im_error(IM_ERR_ARG, "im_http_server_route_spool: no directory");
  im_status_t st = im_mkdir_p(dir);
  if (st) return st;
  char *d = im_strdup(dir);
  if (!d) return im_error(IM_ERR_NOMEM, "out of memory");
  if ((st = im_http_server_route(srv, method, pattern, fn, user))) {
    im_free(d);
    return st;
  }
  srv->routes[srv->nroutes - 1].spool_dir = d;
  return IM_OK;
}

typedef struct {
  size_t start, end; /* raw offsets of a path segment */
} seg_t;

static int method_ok(const route_t *r, const char *m) {
  return !r->method || strcmp(r->method, m) == 0 || (strcmp(m, "HEAD") == 0 && strcmp(r->method, "GET") == 0);
}

/* Does r match the decoded segments? */
static int path_matches(const route_t *r, char *const *dec, int n) {
  if (r->prefix ? n < r->nseg : n != r->nseg) return 0;
  for (int i = 0; i < r->nseg; i++)
    if (!r->param[i] && strcmp(r->seg[i], dec[i]) != 0) return 0;
  return 1;
}

static long route_score(const route_t *r) { return r->prefix ? (long)r->nseg * 1000 + r->nlit : 1000000L + r->nlit; }

/* Routes req: sets req->route and req->vals, or leaves route NULL and fills allow with
 * the methods the path has (for 405). */
static im_status_t route_request(im_http_server_t *srv, im_http_req_t *req, const char *raw, size_t rawlen,
                                 im_buf_t *allow) {
  /* split the raw path ("/a/b" -> "a", "b"; "/" -> "") */
  int n = 1;
  for (size_t i = 1; i < rawlen; i++) n += raw[i] == '/';
  seg_t *segs = im_malloc((size_t)n * sizeof *segs);
  char **dec = im_calloc((size_t)n, sizeof *dec);
  im_status_t st = IM_OK;
  if (!segs || !dec) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto done;
  }
  size_t s0 = 1;
  for (int k = 0; k < n; k++) {
    const char *sl = memchr(raw + s0, '/', rawlen - s0);
    size_t e = sl ? (size_t)(sl - raw) : rawlen;
    segs[k] = (seg_t){s0, e};
    dec[k] = im_malloc(e - s0 + 1);
    if (!dec[k]) {
      st = im_error(IM_ERR_NOMEM, "out of memory");
      goto done;
    }
    im__http_pct_decode(dec[k], raw + s0, e - s0, 0);
    s0 = e + 1;
  }
  const route_t *best = NULL;
  long best_score = -1;
  for (size_t i = 0; i < srv->nroutes; i++) {
    const route_t *r = &srv->routes[i];
    if (!path_matches(r, dec, n)) continue;
    if (!method_ok(r, req->method)) {
      if (allow && r->method && !strstr(allow->data ? allow->data : "", r->method)) {
        if (allow->len) st = im_buf_append(allow, ", ", 2);
        if (!st) st = im_buf_append(allow, r->method, strlen(r->method));
        if (!st && strcmp(r->method, "GET") == 0) st = im_buf_append(allow, ", HEAD", 6);
        if (st) goto done;
      }
      continue;
    }
    long sc = route_score(r);
    if (sc > best_score) {
      best = r;
      best_score = sc;
    }
  }
  if (best) {
    req->vals = im_calloc((size_t)best->nseg + 1, sizeof *req->vals);
    if (!req->vals) {
      st = im_error(IM_ERR_NOMEM, "out of memory");
      goto done;
    }
    for (int k = 0; k < best->nseg; k++) {
      if (best->param[k]) {
        req->vals[k] = dec[k];
        dec[k] = NULL;
      }
    }
    if (best->prefix) {
      size_t from = best->nseg < n ? segs[best->nseg].start : rawlen;
      char *rest = im_malloc(rawlen - from + 1);
      if (!rest) {
        st = im_error(IM_ERR_NOMEM, "out of memory");
        goto done;
      }
      im__http_pct_decode(rest, raw + from, rawlen - from, 0);
      req->vals[best->nseg] = rest;
    }
    req->route = best;
  }
done:
  if (dec)
    for (int k = 0; k < n; k++) im_free(dec[k]);
  im_free(dec);
  im_free(segs);
  return st;
}

/* ---- responses ------------------------------------------------------------------ */

static void resp_clear(im_http_resp_t *r) {
  for (size_t i = 0; i < r->nhdrs; i++) {
    im_free(r->hdrs[i].name);
    im_free(r->hdrs[i].value);
  }
  im_free(r->hdrs);
  im_free(r->body);
  if (r->fd >= 0) close(r->fd);
  memset(r, 0, sizeof *r);
  r->fd = -1;
}

static void resp_drop_body(im_http_resp_t *r) {
  im_free(r->body);
  r->body = NULL;
  r->len = 0;
  if (r->fd >= 0) close(r->fd);
  r->fd = -1;
}

void im_http_resp_status(im_http_resp_t *resp, int status) { resp->status = status; }

static int bad_header_text(const char *s) {
  for (; *s; s++)
    if (*s == '\r' || *s == '\n') return 1;
  return 0;
}

/* Replaces a header of the same name (so Content-Type set twice is set once). */
static im_status_t set_header(im_http_resp_t *resp, const char *name, const char *value, int replace) {
  if (!name || !*name || !value || bad_header_text(name) || bad_header_text(value) || strchr(name, ':'))
    return im_error(IM_ERR_ARG, "bad response header");
  if (im__http_ieq(name, strlen(name), "content-length"))
    return im_error(IM_ERR_ARG, "Content-Length is set by the server");
  char *v = im_strdup(value);
  if (!v) return im_error(IM_ERR_NOMEM, "out of memory");
  if (replace) {
    for (size_t i = 0; i < resp->nhdrs; i++) {
      if (im__http_ieq(resp->hdrs[i].name, strlen(resp->hdrs[i].name), name)) {
        im_free(resp->hdrs[i].value);
        resp->hdrs[i].value = v;
        return IM_OK;
      }
    }
  }
  if (resp->nhdrs == resp->caphdrs) {
    size_t cap = resp->caphdrs ? resp->caphdrs * 2 : 8;
    hdr_t *h = im_realloc(resp->hdrs, cap * sizeof *h);
    if (!h) {
      im_free(v);
      return im_error(IM_ERR_NOMEM, "out of memory");
    }
    resp->hdrs = h;
    resp->caphdrs = cap;
  }
  char *n = im_strdup(name);
  if (!n) {
    im_free(v);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  resp->hdrs[resp->nhdrs++] = (hdr_t){n, v};
  return IM_OK;
}

im_status_t im_http_resp_header(im_http_resp_t *resp, const char *name, const char *value) {
  return set_header(resp, name, value, 0);
}

void im_http_resp_body_owned(im_http_resp_t *resp, void *data, size_t len) {
  resp_drop_body(resp);
  resp->body = data;
  resp->len = data ? len : 0;
}

im_status_t im_http_resp_body(im_http_resp_t *resp, const void *data, size_t len) {
  uint8_t *b = NULL;
  if (len) {
    b = im_malloc(len);
    if (!b) return im_error(IM_ERR_NOMEM, "out of memory for a %zu-byte response", len);
    memcpy(b, data, len);
  }
  im_http_resp_body_owned(resp, b, len);
  return IM_OK;
}

im_status_t im_http_resp_text(im_http_resp_t *resp, int status, const char *content_type, const char *text) {
  im_status_t st = im_http_resp_body(resp, text, text ? strlen(text) : 0);
  if (!st && content_type) st = set_header(resp, "Content-Type", content_type, 1);
  if (!st) resp->status = status;
  return st;
}

im_status_t im_http_resp_json(im_http_resp_t *resp, int status, const json_t *j) {
  if (!j) return im_http_resp_error_json(resp, 500, "INTERNAL_ERROR", "the response could not be built");
  size_t n = json_dumpb(j, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
  if (n == 0) return im_http_resp_error_json(resp, 500, "INTERNAL_ERROR", "the response could not be serialized");
  char *b = im_malloc(n);
  if (!b) return im_error(IM_ERR_NOMEM, "out of memory for a %zu-byte response", n);
  json_dumpb(j, b, n, JSON_COMPACT | JSON_ENCODE_ANY);
  im_http_resp_body_owned(resp, b, n);
  resp->status = status;
  return set_header(resp, "Content-Type", "application/json", 1);
}

im_status_t im_http_resp_error_json(im_http_resp_t *resp, int status, const char *code, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  json_t *j = json_object();
  if (j) {
    json_object_set_new(j, "error_code", json_string(code ? code : "INTERNAL_ERROR"));
    /* json_string rejects invalid UTF-8 (a message may quote client bytes) */
    json_t *m = json_string(msg);
    json_object_set_new(j, "message", m ? m : json_string("(message not valid UTF-8)"));
  }
  if (!j) {
    resp->status = status;
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  size_t n = json_dumpb(j, NULL, 0, JSON_COMPACT);
  char *b = n ? im_malloc(n) : NULL;
  if (b) json_dumpb(j, b, n, JSON_COMPACT);
  json_decref(j);
  resp->status = status;
  if (!b) return im_error(IM_ERR_NOMEM, "out of memory");
  im_http_resp_body_owned(resp, b, n);
  return set_header(resp, "Content-Type", "application/json", 1);
}

im_status_t im_http_resp_file(im_http_resp_t *resp, int status, const char *path, const char *content_type) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return im_error(errno == ENOENT ? IM_ERR_NOT_FOUND : IM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    close(fd);
    return im_error(IM_ERR_NOT_FOUND, "%s is not a regular file", path);
  }
  im_status_t st = set_header(resp, "Content-Type", content_type ? content_type : "application/octet-stream", 1);
  if (st) {
    close(fd);
    return st;
  }
  resp_drop_body(resp);
  resp->fd = fd;
  resp->fd_size = (uint64_t)sb.st_size;
  resp->status = status;
  return IM_OK;
}

/* ---- the request ---------------------------------------------------------------- */

const char *im_http_req_method(const im_http_req_t *req) { return req->method; }
const char *im_http_req_path(const im_http_req_t *req) { return req->path; }
const char *im_http_req_target(const im_http_req_t *req) { return req->target; }
const char *im_http_req_route(const im_http_req_t *req) { return req->route ? req->route->pattern : NULL; }
im_http_server_t *im_http_req_server(const im_http_req_t *req) { return req->srv; }

const char *im_http_req_param(const im_http_req_t *req, const char *name) {
  const route_t *r = req->route;
  if (!r || !name) return NULL;
  if (strcmp(name, "*") == 0) return r->prefix ? req->vals[r->nseg] : NULL;
  for (int i = 0; i < r->nseg; i++)
    if (r->param[i] && strcmp(r->seg[i], name) == 0) return req->vals[i];
  return NULL;
}

const im_http_form_t *im_http_req_query_form(const im_http_req_t *req) { return req->query; }

const char *im_http_req_query_at(const im_http_req_t *req, const char *key, size_t nth) {
  const im_http_part_t *p = im_http_form_find(req->query, key, nth);
  return p ? (const char *)p->data : NULL;
}

const char *im_http_req_query(const im_http_req_t *req, const char *key) { return im_http_req_query_at(req, key, 0); }

size_t im_http_req_query_count(const im_http_req_t *req, const char *key) { return im_http_form_count(req->query, key); }

const char *im_http_req_header(const im_http_req_t *req, const char *name) {
  if (!req->conn || !name) return NULL;
  return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *im_http_req_content_type(const im_http_req_t *req) { return im_http_req_header(req, "Content-Type"); }

const char *im_http_req_body_file(const im_http_req_t *req) { return req->spool_path; }

const uint8_t *im_http_req_body(const im_http_req_t *req, size_t *len) {
  if (len) *len = req->body.data ? req->body.len : 0; /* a spooled body is in its file */
  return req->body.data ? (const uint8_t *)req->body.data : (const uint8_t *)"";
}

im_status_t im_http_req_json(const im_http_req_t *req, json_t **out) {
  *out = NULL;
  if (req->body.len == 0) return im_error(IM_ERR_FORMAT, "the request body is empty; expected JSON");
  json_error_t e;
  json_t *j = json_loadb(req->body.data, req->body.len, JSON_DECODE_ANY, &e);
  if (!j) return im_error(IM_ERR_FORMAT, "the request body is not valid JSON: %s (at byte %d)", e.text, e.position);
  *out = j;
  return IM_OK;
}

im_status_t im_http_req_form(const im_http_req_t *req, const im_http_form_limits_t *lim, im_http_form_t **out) {
  size_t n;
  const uint8_t *b = im_http_req_body(req, &n);
  return im_http_form_parse(im_http_req_content_type(req), b, n, lim, out);
}

static void req_free(im_http_req_t *req) {
  if (!req) return;
  if (req->spool_fd >= 0) close(req->spool_fd);
  if (req->spool_path) unlink(req->spool_path); /* unless the handler moved it away */
  im_free(req->spool_path);
  if (req->vals && req->route)
    for (int i = 0; i <= req->route->nseg; i++) im_free(req->vals[i]);
  im_free(req->vals);
  im_http_form_free(req->query);
  im_buf_free(&req->body);
  im_free(req->target);
  im_free(req->method);
  im_free(req->path);
  im_free(req->allow);
  im_free(req);
}

/* Splits the target into the decoded path and the parsed query; routes. Sets
 * req->bad_status for targets we refuse. */
static im_status_t prepare(im_http_server_t *srv, im_http_req_t *req, im_buf_t *allow) {
  const char *t = req->target;
  const char *path = t;
  if (t[0] != '/') {
    const char *sch = strstr(t, "://");
    if (strcmp(t, "*") == 0) {
      path = t;
    } else if (sch && sch == strpbrk(t, ":/?")) { /* absolute form: http://host/path */
      path = strchr(sch + 3, '/');
      if (!path) path = "/";
    } else {
      req->bad_status = 400;
      return IM_OK;
    }
  }
  size_t plen = strcspn(path, "?#");
  req->path = im_malloc(plen + 1);
  if (!req->path) return im_error(IM_ERR_NOMEM, "out of memory");
  size_t dl = im__http_pct_decode(req->path, path, plen, 0);
  if (dl != strlen(req->path)) {
    req->bad_status = 400; /* %00 in the path */
    return IM_OK;
  }
  const char *q = path[plen] == '?' ? path + plen + 1 : NULL;
  im_status_t st = im_http_query_parse(q, q ? strcspn(q, "#") : 0, NULL, &req->query);
  if (st == IM_ERR_LIMIT) {
    req->bad_status = 400;
    return im_http_query_parse(NULL, 0, NULL, &req->query);
  }
  if (st) return st;
  if (path[0] != '/') return IM_OK; /* "*": no route */
  return route_request(srv, req, path, plen, allow);
}

static void hook(im_http_server_t *srv, im_http_req_t *req, im_http_hook_fn fn, int completed) {
  if (!fn) return;
  im_http_req_info_t info = {
      .method = req->method ? req->method : "",
      .route = req->route ? req->route->pattern : NULL,
      .path = req->path ? req->path : "",
      .status = req->status,
      .duration_s = im_time_now() - req->t0,
      .bytes_in = req->bytes_in,
      .bytes_out = req->bytes_out,
      .completed = completed,
  };
  fn(&info, srv->o.hook_user);
}

/* ---- MHD callbacks ------------------------------------------------------------ */

static enum MHD_Result queue(im_http_server_t *srv, im_http_req_t *req, im_http_resp_t *resp) {
  int status = resp->status ? resp->status : 200;
  if (status < 100 || status > 599) status = 500;
  struct MHD_Response *r = NULL;
  uint64_t out = 0;
  if (resp->fd >= 0) {
    r = MHD_create_response_from_fd64(resp->fd_size, resp->fd);
    if (r) {
      resp->fd = -1; /* MHD closes it */
      out = resp->fd_size;
    }
  } else if (resp->body && resp->len) {
    r = MHD_create_response_from_buffer_with_free_callback(resp->len, resp->body, im_free);
    if (r) {
      resp->body = NULL; /* MHD frees it */
      out = resp->len;
    }
  } else {
    r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
  }
  if (!r) {
    resp_clear(resp);
    r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    status = 500;
    out = 0;
    if (!r) return MHD_NO;
  } else {
    for (size_t i = 0; i < resp->nhdrs; i++) {
      if (MHD_add_response_header(r, resp->hdrs[i].name, resp->hdrs[i].value) != MHD_YES)
        im_log(IM_LOG_WARN, "http: response header %s refused", resp->hdrs[i].name);
    }
  }
  /* close after refusing a malformed or oversized request (its framing cannot be trusted)
   * and once the stop has shut the listener */
  if (atomic_load(&srv->stopping) || req->bad_status || req->too_large || req->refused)
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
  enum MHD_Result ret = MHD_queue_response(req->conn, (unsigned)status, r);
  MHD_destroy_response(r);
  req->status = status;
  req->bytes_out = out;
  resp_clear(resp);
  return ret;
}

/* The server's own error answer, in the shape the server was set up with. */
static void error_body(const im_http_server_t *srv, im_http_resp_t *resp, int status, const char *code,
                       const char *msg) {
  im_status_t st;
  if (srv->o.error_style == 1) {
    json_t *m = json_string(msg);
    json_t *j = json_pack("{s:o}", "error", m ? m : json_string("(message not valid UTF-8)"));
    st = im_http_resp_json(resp, status, j);
    json_decref(j);
  } else {
    st = im_http_resp_error_json(resp, status, code, "%s", msg);
  }
  if (st != IM_OK) resp->status = status;
}

static enum MHD_Result answer_error(im_http_server_t *srv, im_http_req_t *req, int status, const char *code,
                                    const char *msg) {
  im_http_resp_t resp = {.fd = -1};
  error_body(srv, &resp, status, code, msg);
  return queue(srv, req, &resp);
}

static enum MHD_Result answer_empty(im_http_server_t *srv, im_http_req_t *req, int status, const char *allow) {
  im_http_resp_t resp = {.fd = -1, .status = status};
  if (allow && *allow && set_header(&resp, "Allow", allow, 1) != IM_OK) resp.status = 500;
  return queue(srv, req, &resp);
}

static enum MHD_Result dispatch(im_http_server_t *srv, im_http_req_t *req) {
  if (req->bad_status) return answer_error(srv, req, req->bad_status, "BAD_REQUEST", "malformed request");
  if (req->too_large) {
    char msg[160];
    snprintf(msg, sizeof msg, "the request body is over the limit of %zu bytes", srv->o.max_body_bytes);
    return answer_error(srv, req, 413, "REQUEST_LIMIT_EXCEEDED", msg);
  }
  if (req->oom) return answer_error(srv, req, 503, "TEMPORARILY_UNAVAILABLE", "out of memory buffering the request");
  im_http_handler_fn fn = req->route ? req->route->fn : srv->o.fallback;
  void *user = req->route ? req->route->user : srv->o.fallback_user;
  if (!fn) return answer_empty(srv, req, req->allow ? 405 : 404, req->allow);
  im_http_resp_t resp = {.fd = -1};
  im_error_clear();
  im_status_t st = fn(req, &resp, user);
  if (st != IM_OK && resp.status == 0) {
    const char *code;
    int hs = im_http_status_for(st, &code);
    const char *msg = im_last_error()[0] ? im_last_error() : im_strerror(st);
    resp_clear(&resp);
    error_body(srv, &resp, hs, code, msg);
  }
  return queue(srv, req, &resp);
}

typedef struct {
  int n_cl, cl_differ, n_te;
  const char *cl;
} framing_t;

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
  framing_t *f = cls;
  if (!key) return MHD_YES;
  if (im__http_ieq(key, strlen(key), MHD_HTTP_HEADER_CONTENT_LENGTH)) {
    if (f->n_cl++ && (!value || !f->cl || strcmp(value, f->cl) != 0)) f->cl_differ = 1;
    f->cl = value;
  } else if (im__http_ieq(key, strlen(key), MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
    f->n_te++;
  }
  return MHD_YES;
}

/* Conflicting Content-Length headers, or Content-Length with Transfer-Encoding, are how
 * requests get smuggled past proxies (RFC 7230 3.3.3): refuse them. */
static int ambiguous_framing(struct MHD_Connection *conn) {
  framing_t f = {0};
  MHD_get_connection_values(conn, MHD_HEADER_KIND, count_framing, &f);
  return f.cl_differ || (f.n_cl && f.n_te) || f.n_te > 1;
}

static long long now_us(void) { return (long long)(im_time_now() * 1e6); }

/* The end of a request: the on_end hook (if on_start saw it), the in-flight count, free;
 * its connection is idle from now. */
static void finish(im_http_server_t *srv, im_http_req_t *req, int completed) {
  if (req->slot && req->slot->cur == req) {
    req->slot->cur = NULL;
    atomic_store(&req->slot->idle_since, now_us());
    atomic_store(&req->slot->busy, 0);
  }
  if (req->started) {
    hook(srv, req, srv->o.on_end, completed);
    atomic_fetch_sub(&srv->inflight, 1);
  }
  req_free(req);
}

static conn_slot_t *slot_of(struct MHD_Connection *conn) {
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return ci ? ci->socket_context : NULL;
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn) {
  im_http_server_t *srv = cls;
  conn_slot_t *slot = slot_of(conn);
  if (slot && slot->cur) finish(srv, slot->cur, 0); /* never reported complete: orphaned */
  im_http_req_t *req = im_calloc(1, sizeof *req);
  if (!req) return NULL;
  req->spool_fd = -1;
  req->srv = srv;
  req->target = im_strdup(uri ? uri : "");
  if (!req->target) {
    im_free(req);
    return NULL;
  }
  req->slot = slot;
  if (slot) {
    slot->cur = req;
    atomic_store(&slot->busy, 1);
  }
  return req;
}

/* MHD reports a connection closed before it closes the socket, so a slot's fd is
 * valid while the slot is in the list. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
  im_http_server_t *srv = cls;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    conn_slot_t *slot = im_calloc(1, sizeof *slot); /* NULL: untracked (cut off at the end of a drain) */
    *socket_context = slot;
    const union MHD_ConnectionInfo *ci = slot ? MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD) : NULL;
    if (!ci) return;
    slot->fd = ci->connect_fd;
    atomic_init(&slot->busy, 0);
    atomic_init(&slot->idle_since, now_us());
    pthread_mutex_lock(&srv->conns_mu);
    slot->next = srv->conns;
    if (srv->conns) srv->conns->prev = slot;
    srv->conns = slot;
    srv->nconns++;
    pthread_mutex_unlock(&srv->conns_mu);
    return;
  }
  conn_slot_t *slot = *socket_context;
  *socket_context = NULL;
  if (!slot) return;
  pthread_mutex_lock(&srv->conns_mu);
  if (slot->prev || srv->conns == slot) { /* linked */
    if (slot->prev) slot->prev->next = slot->next;
    else srv->conns = slot->next;
    if (slot->next) slot->next->prev = slot->prev;
    srv->nconns--;
  }
  pthread_mutex_unlock(&srv->conns_mu);
  if (slot->cur) finish(srv, slot->cur, 0);
  im_free(slot);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls) {
  im_http_server_t *srv = cls;
  im_http_req_t *req = *con_cls;
  if (!req) { /* allocation failed in on_uri */
    struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    enum MHD_Result ret = MHD_queue_response(conn, 503, r);
    MHD_destroy_response(r);
    return ret;
  }
  if (!req->started) {
    req->started = 1;
    req->conn = conn;
    req->t0 = im_time_now();
    atomic_fetch_add(&srv->inflight, 1);
    req->method = im_strdup(method ? method : "");
    im_buf_t allow = {0};
    if (!req->method || prepare(srv, req, &allow) != IM_OK) req->oom = 1;
    if (!req->route && allow.len) req->allow = allow.data; /* for the 405's Allow header */
    else im_buf_free(&allow);
    if (!req->query && im_http_query_parse(NULL, 0, NULL, &req->query) != IM_OK) req->oom = 1;
    if (!req->bad_status && ambiguous_framing(conn)) req->bad_status = 400;
    hook(srv, req, srv->o.on_start, 0);
    if (req->oom || req->bad_status) {
      req->discard = 1;
      return dispatch(srv, req);
    }
    if (!req->route && !srv->o.fallback) req->discard = 1; /* 404/405: the body is not wanted */
    if (req->route && srv->o.gate) {
      im_http_resp_t g = {.fd = -1};
      im_error_clear();
      im_status_t gs = srv->o.gate(req, &g, srv->o.gate_user);
      if (gs != IM_OK || g.status) {
        if (!g.status) {
          const char *code;
          int hs = im_http_status_for(gs, &code);
          resp_clear(&g);
          g.fd = -1;
          error_body(srv, &g, hs, code, *im_last_error() ? im_last_error() : "refused");
        }
        req->discard = 1;
        req->refused = 1;
        return queue(srv, req, &g);
      }
      resp_clear(&g);
    }
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
      char *end;
      errno = 0;
      unsigned long long v = strtoull(cl, &end, 10);
      if (errno == 0 && end != cl && v > srv->o.max_body_bytes) {
        /* Answer before reading the body: MHD then closes the connection instead of
         * reading it (a client that sent Expect: 100-continue never sends it). */
        req->too_large = 1;
        return dispatch(srv, req);
      }
      if (!req->discard && v > 0 && errno == 0 && !(req->route && req->route->spool_dir)) {
        size_t want = (size_t)v + 1 < BODY_RESERVE_MAX ? (size_t)v + 1 : BODY_RESERVE_MAX;
        req->body.data = im_malloc(want);
        if (req->body.data) {
          req->body.cap = want;
          req->body.data[0] = '\0';
        }
      }
    }
    if (!req->discard && req->route && req->route->spool_dir) {
      size_t n = strlen(req->route->spool_dir) + 32;
      if ((req->spool_path = im_malloc(n))) {
        snprintf(req->spool_path, n, "%s/.upload-XXXXXX", req->route->spool_dir);
        req->spool_fd = mkostemp(req->spool_path, O_CLOEXEC);
        if (req->spool_fd < 0) {
          im_free(req->spool_path);
          req->spool_path = NULL;
        }
      }
      if (!req->spool_path) req->oom = 1; /* answered 503 once the body is in */
    }
    return MHD_YES;
  }
  if (*upload_data_size) {
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    req->bytes_in += n;
    if (req->too_large) {
      /* a chunked body over the limit: read on (bounded) to answer 413, or cut it off */
      return req->bytes_in > srv->o.max_body_bytes + (16u << 20) ? MHD_NO : MHD_YES;
    }
    if (req->body.len + n > srv->o.max_body_bytes) {
      req->too_large = 1;
      im_buf_free(&req->body);
      return MHD_YES;
    }
    if (req->discard || req->oom) return MHD_YES;
    if (req->spool_fd >= 0) {
      req->body.len += n; /* counted for the limit; the bytes go to the file */
      for (size_t off = 0; off < n;) {
        ssize_t w = write(req->spool_fd, upload_data + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
          req->oom = 1;
          break;
        }
        off += (size_t)w;
      }
      return MHD_YES;
    }
    if (im_buf_append(&req->body, upload_data, n) != IM_OK) {
      req->oom = 1;
      im_buf_free(&req->body);
    }
    return MHD_YES;
  }
  return dispatch(srv, req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
  im_http_req_t *req = *con_cls;
  *con_cls = NULL;
  if (req) finish(cls, req, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
}

static void on_log(void *cls, const char *fmt, va_list ap) {
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
  im_log(IM_LOG_DEBUG, "http server: %s", msg);
}

/* ---- lifecycle ------------------------------------------------------------------ */

im_status_t im_http_server_new(const im_http_server_opts_t *opts, im_http_server_t **out) {
  *out = NULL;
  im_http_server_t *s = im_calloc(1, sizeof *s);
  if (!s) return im_error(IM_ERR_NOMEM, "out of memory");
  if (opts) s->o = *opts;
  if (s->o.port < 0 || s->o.port > 65535) {
    int port = s->o.port;
    im_free(s);
    return im_error(IM_ERR_ARG, "port %d is out of range", port);
  }
  s->host = im_strdup(s->o.host ? s->o.host : "127.0.0.1");
  if (!s->host) {
    im_free(s);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  s->o.host = s->host;
  if (s->o.threads <= 0) {
    int n = im_num_threads();
    s->o.threads = n < 4 ? 4 : n;
  }
  if (!s->o.max_connections) s->o.max_connections = 1024;
  if (!s->o.timeout_s) s->o.timeout_s = 60;
  if (!(s->o.drain_idle_s > 0)) s->o.drain_idle_s = 1.0;
  if (!s->o.max_body_bytes) s->o.max_body_bytes = IM_HTTP_MAX_BODY_DEFAULT;
  if (!s->o.max_header_bytes) s->o.max_header_bytes = HEADER_BYTES_DEFAULT;
  s->listen_fd = -1;
  atomic_init(&s->inflight, 0);
  atomic_init(&s->stopping, 0);
  pthread_mutex_init(&s->conns_mu, NULL);
  *out = s;
  return IM_OK;
}

im_status_t im_http_server_start(im_http_server_t *srv) {
  if (!srv) return im_error(IM_ERR_ARG, "NULL server");
  if (srv->started) return im_error(IM_ERR_STATE, "the server was already started");
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
  struct addrinfo *ai = NULL;
  char portstr[16];
  snprintf(portstr, sizeof portstr, "%d", srv->o.port);
  int gai = getaddrinfo(srv->host, portstr, &hints, &ai);
  if (gai != 0 || !ai)
    return im_error(IM_ERR_ARG, "cannot resolve the listen address %s: %s", srv->host, gai_strerror(gai));
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  memcpy(&ss, ai->ai_addr, ai->ai_addrlen < sizeof ss ? ai->ai_addrlen : sizeof ss);
  int v6 = ai->ai_family == AF_INET6;
  freeaddrinfo(ai);

  unsigned flags = MHD_USE_ERROR_LOG | MHD_USE_ITC | MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD;
  if (srv->o.thread_per_connection) flags |= MHD_USE_THREAD_PER_CONNECTION;
  if (v6) flags |= MHD_USE_IPv6;
  struct MHD_OptionItem ops[8];
  int k = 0;
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, (intptr_t)srv->o.max_connections, NULL};
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)srv->o.timeout_s, NULL};
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)srv->o.max_header_bytes, NULL};
  if (!srv->o.thread_per_connection && srv->o.threads > 1)
    ops[k++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)srv->o.threads, NULL};
  ops[k++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};

  srv->d = MHD_start_daemon(flags, (uint16_t)srv->o.port, NULL, NULL, on_access, srv,
                            MHD_OPTION_EXTERNAL_LOGGER, on_log, srv, /* first, so all messages come here */
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_URI_LOG_CALLBACK, on_uri, srv,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv,
                            MHD_OPTION_ARRAY, ops,
                            MHD_OPTION_END);
  if (!srv->d)
    return im_error(IM_ERR_IO, "cannot start the HTTP server on %s:%d (address in use or not available?)",
                    srv->host, srv->o.port);
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv->d, MHD_DAEMON_INFO_BIND_PORT);
  srv->port = di ? (int)di->port : srv->o.port;
  srv->started = 1;
  return IM_OK;
}

int im_http_server_port(const im_http_server_t *srv) { return srv ? srv->port : 0; }
int im_http_server_inflight(const im_http_server_t *srv) { return srv ? atomic_load(&srv->inflight) : 0; }
int im_http_server_stopping(const im_http_server_t *srv) { return srv ? atomic_load(&srv->stopping) : 0; }

/* Connections that completed the handshake but were not accepted yet: shutting the
 * listener would reset them although their clients may have sent a request already.
 * They are accepted and handed to MHD to be served with the others. */
static void adopt_backlog(im_http_server_t *srv, int lfd) {
  int fl = fcntl(lfd, F_GETFL);
  if (fl < 0 || fcntl(lfd, F_SETFL, fl | O_NONBLOCK) != 0) return;
  for (int i = 0; i < BACKLOG_ADOPT_MAX; i++) {
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    int c = accept4(lfd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return; /* EAGAIN: the backlog is empty */
    }
    (void)MHD_add_connection(srv->d, c, (struct sockaddr *)&sa, len); /* on failure MHD closes it */
  }
}

/* Shuts down the connections idle between requests since `since` (the stop's start, or
 * later) for grace seconds with nothing unread; the shut-down side ends them as a client
 * closing would. Returns the connections still open. */
static int close_idle(im_http_server_t *srv, double since, double grace) {
  long long cutoff = (long long)((im_time_now() - grace) * 1e6), since_us = (long long)(since * 1e6);
  pthread_mutex_lock(&srv->conns_mu);
  for (conn_slot_t *c = srv->conns; c; c = c->next) {
    long long idle = atomic_load(&c->idle_since);
    if (c->shut || atomic_load(&c->busy) || (idle > since_us ? idle : since_us) > cutoff) continue;
    int unread = 0;
    if (ioctl(c->fd, FIONREAD, &unread) != 0 || unread > 0) continue; /* a request is arriving */
    /* SHUT_RD only: MHD still reads what is queued before the end, so a request racing in
     * ahead of that read is answered (with Connection: close) rather than reset */
    shutdown(c->fd, SHUT_RD);
    c->shut = 1;
  }
  int n = srv->nconns;
  pthread_mutex_unlock(&srv->conns_mu);
  return n;
}

im_status_t im_http_server_stop(im_http_server_t *srv, double drain_timeout_s) {
  if (!srv || !srv->started || srv->stopped) return IM_OK;
  im_status_t st = IM_OK;
  const double t0 = im_time_now(), drain = drain_timeout_s > 0 ? drain_timeout_s : 0;
  MHD_socket fd = MHD_quiesce_daemon(srv->d);
  if (fd != MHD_INVALID_SOCKET) {
    srv->listen_fd = fd;
    if (drain > 0) adopt_backlog(srv, fd);
    shutdown(fd, SHUT_RDWR); /* refuse new connections now; closed after MHD has stopped */
  }
  /* only now: a client told to close before the listener was shut could have reconnected into its backlog */
  atomic_store(&srv->stopping, 1);
  const double grace = drain < srv->o.drain_idle_s ? drain : srv->o.drain_idle_s;
  for (;;) {
    int open = close_idle(srv, t0, grace);
    int inflight = atomic_load(&srv->inflight);
    if (open == 0 && inflight == 0) break;
    if (im_time_now() >= t0 + drain) {
      if (inflight > 0)
        st = im_error(IM_ERR_CANCELLED, "HTTP server stopped with %d request(s) still in flight after %.3g s",
                      inflight, drain_timeout_s);
      break;
    }
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  MHD_stop_daemon(srv->d);
  srv->d = NULL;
  if (srv->listen_fd >= 0) close(srv->listen_fd);
  srv->listen_fd = -1;
  srv->stopped = 1;
  return st;
}

void im_http_server_free(im_http_server_t *srv) {
  if (!srv) return;
  (void)im_http_server_stop(srv, 0);
  for (size_t i = 0; i < srv->nroutes; i++) route_deinit(&srv->routes[i]);
  im_free(srv->routes);
  im_free(srv->host);
  pthread_mutex_destroy(&srv->conns_mu);
  im_free(srv);
}
