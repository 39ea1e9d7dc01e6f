/* The HTTP client over one libcurl easy handle: requests with headers and a
 * body from memory or a file, responses in memory or streamed to a file that
 * appears atomically, bearer/basic auth, AWS SigV4 signing by libcurl, and
 * retries with exponential backoff on 429/502/503/504 and connection errors.
 * The handle is reset before every attempt, which keeps its connection cache,
 * so keep-alive connections are reused. One client is for one thread at a time. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "http_impl.h"
#include "imops/version.h"

#define DEFAULT_TIMEOUT_S 120.0
#define DEFAULT_CONNECT_TIMEOUT_S 10.0
#define DEFAULT_RETRIES 3
#define DEFAULT_BACKOFF_S 0.2
#define DEFAULT_BACKOFF_MAX_S 10.0
#define DEFAULT_MAX_RESPONSE ((size_t)1 << 30)

struct im_http_client {
  CURL *h;
  im_http_client_opts_t o;
  char *bearer, *user, *pass, *ua, *ca;
  char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;

static void global_init(void) { global_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

static char *dup_opt(const char *s, int *fail) {
  if (!s) return NULL;
  char *d = im_strdup(s);
  if (!d) *fail = 1;
  return d;
}

im_status_t im_http_client_new(const im_http_client_opts_t *opts, im_http_client_t **out) {
  *out = NULL;
  pthread_once(&global_once, global_init);
  if (global_rc != CURLE_OK) return im_error(IM_ERR_INTERNAL, "libcurl init failed: %s", curl_easy_strerror(global_rc));
  im_http_client_t *c = im_calloc(1, sizeof *c);
  if (!c) return im_error(IM_ERR_NOMEM, "out of memory");
  if (opts) c->o = *opts;
  int fail = 0;
  c->bearer = dup_opt(c->o.bearer_token, &fail);
  c->user = dup_opt(c->o.username, &fail);
  c->pass = dup_opt(c->o.password, &fail);
  c->ua = dup_opt(c->o.user_agent ? c->o.user_agent : "imops/" IM_VERSION_STRING, &fail);
  c->ca = dup_opt(c->o.ca_file, &fail);
  c->h = curl_easy_init();
  if (fail || !c->h) {
    im_http_client_free(c);
    return im_error(IM_ERR_NOMEM, "cannot create an HTTP client");
  }
  if (c->o.timeout_s == 0) c->o.timeout_s = DEFAULT_TIMEOUT_S;
  if (c->o.connect_timeout_s <= 0) c->o.connect_timeout_s = DEFAULT_CONNECT_TIMEOUT_S;
  if (c->o.max_retries == 0) c->o.max_retries = DEFAULT_RETRIES;
  if (c->o.max_retries < 0) c->o.max_retries = 0;
  if (c->o.backoff_s <= 0) c->o.backoff_s = DEFAULT_BACKOFF_S;
  if (c->o.backoff_max_s <= 0) c->o.backoff_max_s = DEFAULT_BACKOFF_MAX_S;
  if (!c->o.max_response_bytes) c->o.max_response_bytes = DEFAULT_MAX_RESPONSE;
  *out = c;
  return IM_OK;
}

void im_http_client_free(im_http_client_t *c) {
  if (!c) return;
  if (c->h) curl_easy_cleanup(c->h);
  im_free(c->bearer);
  im_free(c->user);
  im_free(c->pass);
  im_free(c->ua);
  im_free(c->ca);
  im_free(c);
}

/* ---- responses ------------------------------------------------------------------ */

static void free_headers(im_http_response_t *r) {
  for (size_t i = 0; i < r->n_headers; i++) {
    im_free((char *)(uintptr_t)r->headers[i].name);
    im_free((char *)(uintptr_t)r->headers[i].value);
  }
  im_free(r->headers);
  r->headers = NULL;
  r->n_headers = 0;
}

void im_http_response_deinit(im_http_response_t *r) {
  if (!r) return;
  free_headers(r);
  im_free(r->body);
  memset(r, 0, sizeof *r);
}

const char *im_http_response_header(const im_http_response_t *r, const char *name) {
  if (!r || !name) return NULL;
  for (size_t i = 0; i < r->n_headers; i++)
    if (im__http_ieq(r->headers[i].name, strlen(r->headers[i].name), name)) return r->headers[i].value;
  return NULL;
}

/* ---- one transfer ------------------------------------------------------------------ */

typedef struct {
  im_http_client_t *c;
  im_http_response_t *resp;
  size_t hcap;
  im_buf_t body;
  size_t max;
  int over_limit, nomem;
  const char *download_path;
  im_atomic_file_t *af;
  int file_errno;
  int up_fd;
} xfer_t;

static size_t on_header(char *buf, size_t size, size_t n, void *ud) {
  xfer_t *x = ud;
  size_t len = size * n;
  im_http_response_t *r = x->resp;
  if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) { /* a new response (after 100 Continue or a redirect) */
    free_headers(r);
    x->hcap = 0;
    return len;
  }
  const char *colon = memchr(buf, ':', len);
  if (!colon) return len; /* the empty line that ends the headers */
  size_t nl = (size_t)(colon - buf);
  const char *v = colon + 1, *e = buf + len;
  while (v < e && (*v == ' ' || *v == '\t')) v++;
  while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t')) e--;
  if (r->n_headers == x->hcap) {
    size_t cap = x->hcap ? x->hcap * 2 : 16;
    im_http_header_t *h = im_realloc(r->headers, cap * sizeof *h);
    if (!h) {
      x->nomem = 1;
      return 0;
    }
    r->headers = h;
    x->hcap = cap;
  }
  char *name = im_strndup(buf, nl), *val = im_strndup(v, (size_t)(e - v));
  if (!name || !val) {
    im_free(name);
    im_free(val);
    x->nomem = 1;
    return 0;
  }
  r->headers[r->n_headers++] = (im_http_header_t){name, val};
  return len;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static size_t on_body(char *buf, size_t size, size_t n, void *ud) {
  xfer_t *x = ud;
  size_t len = size * n;
  long status = 0;
  curl_easy_getinfo(x->c->h, CURLINFO_RESPONSE_CODE, &status);
  if (x->download_path && status >= 200 && status < 300) {
    if (!x->af && im_atomic_file_open(x->download_path, &x->af) != IM_OK) {
      x->file_errno = errno ? errno : EIO;
      return 0;
    }
    if (write_all(im_atomic_file_fd(x->af), buf, len) != 0) {
      x->file_errno = errno;
      return 0;
    }
    return len;
  }
  if (x->body.len + len > x->max) {
    x->over_limit = 1;
    return 0;
  }
  if (im_buf_append(&x->body, buf, len) != IM_OK) {
    x->nomem = 1;
    return 0;
  }
  return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *ud) {
  xfer_t *x = ud;
  for (;;) {
    ssize_t r = read(x->up_fd, buf, size * n);
    if (r >= 0) return (size_t)r;
    if (errno != EINTR) return CURL_READFUNC_ABORT;
  }
}

static int on_seek(void *ud, curl_off_t offset, int origin) {
  xfer_t *x = ud;
  return lseek(x->up_fd, (off_t)offset, origin) < 0 ? CURL_SEEKFUNC_FAIL : CURL_SEEKFUNC_OK;
}

static int has_crlf(const char *s) { return s && (strchr(s, '\r') || strchr(s, '\n')); }

static int user_has_header(const im_http_request_t *rq, const char *name) {
  for (size_t i = 0; i < rq->n_headers; i++)
    if (rq->headers[i].name && im__http_ieq(rq->headers[i].name, strlen(rq->headers[i].name), name)) return 1;
  return 0;
}

static im_status_t add_header(struct curl_slist **l, const char *name, const char *value) {
  size_t n = strlen(name) + strlen(value) + 3;
  char *line = im_malloc(n);
  if (!line) return im_error(IM_ERR_NOMEM, "out of memory");
  /* "Name;" sends an empty header; "Name:" would remove it */
  if (*value) snprintf(line, n, "%s: %s", name, value);
  else snprintf(line, n, "%s;", name);
  struct curl_slist *nl = curl_slist_append(*l, line);
  im_free(line);
  if (!nl) return im_error(IM_ERR_NOMEM, "out of memory");
  *l = nl;
  return IM_OK;
}

static im_status_t build_headers(im_http_client_t *c, const im_http_request_t *rq, int has_body,
                                 struct curl_slist **out) {
  struct curl_slist *l = NULL;
  im_status_t st = IM_OK;
  for (size_t i = 0; i < rq->n_headers && !st; i++) {
    const char *nm = rq->headers[i].name, *v = rq->headers[i].value;
    if (!nm || !*nm || !v || has_crlf(nm) || has_crlf(v) || strchr(nm, ':'))
      st = im_error(IM_ERR_ARG, "bad request header \"%s\"", nm ? nm : "(null)");
    else
      st = add_header(&l, nm, v);
  }
  if (!st && !user_has_header(rq, "Content-Type")) {
    if (rq->content_type) {
      if (has_crlf(rq->content_type)) st = im_error(IM_ERR_ARG, "bad content type");
      else st = add_header(&l, "Content-Type", rq->content_type);
    } else if (has_body) {
      st = add_header(&l, "Content-Type", "application/octet-stream");
    } else if (!rq->sigv4) { /* SigV4 would sign the removed header, which is then not sent */
      struct curl_slist *nl = curl_slist_append(l, "Content-Type:"); /* no form-urlencoded default */
      if (!nl) st = im_error(IM_ERR_NOMEM, "out of memory");
      else l = nl;
    }
  }
  if (!st && rq->sigv4) {
    if (rq->sigv4->session_token && !st) {
      if (has_crlf(rq->sigv4->session_token)) st = im_error(IM_ERR_ARG, "bad session token");
      else st = add_header(&l, "x-amz-security-token", rq->sigv4->session_token);
    }
    if (!st && !user_has_header(rq, "x-amz-content-sha256"))
      st = add_header(&l, "x-amz-content-sha256", "UNSIGNED-PAYLOAD");
  } else if (!st && c->bearer && !user_has_header(rq, "Authorization")) {
    if (has_crlf(c->bearer)) st = im_error(IM_ERR_ARG, "bad bearer token");
    else {
      size_t n = strlen(c->bearer) + 8;
      char *v = im_malloc(n);
      if (!v) st = im_error(IM_ERR_NOMEM, "out of memory");
      else {
        snprintf(v, n, "Bearer %s", c->bearer);
        st = add_header(&l, "Authorization", v);
        im_free(v);
      }
    }
  }
  if (st) {
    curl_slist_free_all(l);
    return st;
  }
  *out = l;
  return IM_OK;
}

static int retryable_curl(CURLcode rc) {
  switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
      return 1;
    default:
      return 0;
  }
}

static int retryable_status(long s) { return s == 429 || s == 502 || s == 503 || s == 504; }

static void sleep_s(double s) {
  if (s <= 0) return;
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

#define SETOPT(h, opt, val)                                          \
  do {                                                               \
    CURLcode e_ = curl_easy_setopt((h), (opt), (val));               \
    if (e_ != CURLE_OK && st == IM_OK)                               \
      st = im_error(IM_ERR_ARG, "libcurl refused option %s: %s", #opt, curl_easy_strerror(e_)); \
  } while (0)

/* Sets the options of one attempt on the (reset) handle. */
static im_status_t setup(im_http_client_t *c, const im_http_request_t *rq, xfer_t *x, struct curl_slist *hdrs,
                         curl_off_t up_size, char *sigv4_param) {
  CURL *h = c->h;
  im_status_t st = IM_OK;
  const char *m = rq->method ? rq->method : "GET";
  SETOPT(h, CURLOPT_URL, rq->url);
#if LIBCURL_VERSION_NUM >= 0x075500
  SETOPT(h, CURLOPT_PROTOCOLS_STR, "http,https");
  SETOPT(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
  SETOPT(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
  SETOPT(h, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  SETOPT(h, CURLOPT_NOSIGNAL, 1L);
  SETOPT(h, CURLOPT_ERRORBUFFER, c->errbuf);
  SETOPT(h, CURLOPT_HEADERFUNCTION, on_header);
  SETOPT(h, CURLOPT_HEADERDATA, x);
  SETOPT(h, CURLOPT_WRITEFUNCTION, on_body);
  SETOPT(h, CURLOPT_WRITEDATA, x);
  double to = rq->timeout_s != 0 ? rq->timeout_s : c->o.timeout_s;
  if (to > 0) SETOPT(h, CURLOPT_TIMEOUT_MS, (long)(to * 1000));
  SETOPT(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->o.connect_timeout_s * 1000));
  SETOPT(h, CURLOPT_USERAGENT, c->ua);
  if (c->o.insecure) {
    SETOPT(h, CURLOPT_SSL_VERIFYPEER, 0L);
    SETOPT(h, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (c->ca) SETOPT(h, CURLOPT_CAINFO, c->ca);
  if (c->o.follow_redirects) {
    SETOPT(h, CURLOPT_FOLLOWLOCATION, 1L);
    SETOPT(h, CURLOPT_MAXREDIRS, 5L);
  }
  SETOPT(h, CURLOPT_HTTPHEADER, hdrs);

  int is_post = strcmp(m, "POST") == 0, is_put = strcmp(m, "PUT") == 0;
  if (strcmp(m, "HEAD") == 0) {
    SETOPT(h, CURLOPT_NOBODY, 1L);
  } else if (rq->upload_path) {
    SETOPT(h, CURLOPT_READFUNCTION, on_read);
    SETOPT(h, CURLOPT_READDATA, x);
    SETOPT(h, CURLOPT_SEEKFUNCTION, on_seek);
    SETOPT(h, CURLOPT_SEEKDATA, x);
    if (is_post) {
      SETOPT(h, CURLOPT_POST, 1L);
      SETOPT(h, CURLOPT_POSTFIELDSIZE_LARGE, up_size);
    } else {
      SETOPT(h, CURLOPT_UPLOAD, 1L);
      SETOPT(h, CURLOPT_INFILESIZE_LARGE, up_size);
      if (!is_put) SETOPT(h, CURLOPT_CUSTOMREQUEST, m);
    }
  } else if (rq->body || is_post || is_put || strcmp(m, "PATCH") == 0) {
    SETOPT(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(rq->body ? rq->body_len : 0));
    SETOPT(h, CURLOPT_POSTFIELDS, rq->body ? (const char *)rq->body : "");
    if (!is_post) SETOPT(h, CURLOPT_CUSTOMREQUEST, m);
  } else if (strcmp(m, "GET") != 0) {
    SETOPT(h, CURLOPT_CUSTOMREQUEST, m);
  }

  if (rq->sigv4) {
    SETOPT(h, CURLOPT_AWS_SIGV4, sigv4_param);
    SETOPT(h, CURLOPT_USERNAME, rq->sigv4->access_key);
    SETOPT(h, CURLOPT_PASSWORD, rq->sigv4->secret_key);
  } else if (c->user) {
    SETOPT(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    SETOPT(h, CURLOPT_USERNAME, c->user);
    SETOPT(h, CURLOPT_PASSWORD, c->pass ? c->pass : "");
  }
  return st;
}

/* Seconds from a Retry-After header given in seconds (HTTP dates are ignored); -1 if none. */
static double retry_after(const im_http_response_t *r) {
  const char *v = im_http_response_header(r, "Retry-After");
  if (!v) return -1;
  char *end;
  long s = strtol(v, &end, 10);
  return (end != v && s >= 0) ? (double)s : -1;
}

im_status_t im_http_client_request(im_http_client_t *c, const im_http_request_t *rq, im_http_response_t *resp) {
  memset(resp, 0, sizeof *resp);
  if (!c || !rq || !rq->url) return im_error(IM_ERR_ARG, "im_http_client_request: NULL client, request or URL");
  const char *m = rq->method ? rq->method : "GET";
  if (!*m || strpbrk(m, " \t\r\n")) return im_error(IM_ERR_ARG, "bad HTTP method \"%s\"", m);
  if (has_crlf(rq->url)) return im_error(IM_ERR_ARG, "bad URL");
  if (rq->sigv4 && (!rq->sigv4->region || !rq->sigv4->access_key || !rq->sigv4->secret_key))
    return im_error(IM_ERR_ARG, "SigV4 needs a region, an access key and a secret key");

  im_status_t st = IM_OK;
  xfer_t x = {.c = c, .resp = resp, .max = c->o.max_response_bytes, .download_path = rq->download_path, .up_fd = -1};
  curl_off_t up_size = 0;
  if (rq->upload_path) {
    x.up_fd = open(rq->upload_path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (x.up_fd < 0 || fstat(x.up_fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
      st = im_error(x.up_fd < 0 && errno == ENOENT ? IM_ERR_NOT_FOUND : IM_ERR_IO, "cannot read %s for upload",
                    rq->upload_path);
      if (x.up_fd >= 0) close(x.up_fd);
      return st;
    }
    up_size = (curl_off_t)sb.st_size;
  }
  struct curl_slist *hdrs = NULL;
  st = build_headers(c, rq, rq->body != NULL || rq->upload_path != NULL, &hdrs);
  char sigv4_param[256] = "";
  if (!st && rq->sigv4) {
    const char *svc = rq->sigv4->service ? rq->sigv4->service : "s3";
    int n = snprintf(sigv4_param, sizeof sigv4_param, "aws:amz:%s:%s", rq->sigv4->region, svc);
    if (n < 0 || (size_t)n >= sizeof sigv4_param) st = im_error(IM_ERR_ARG, "SigV4 region or service too long");
  }
  int max_attempts = rq->no_retry ? 1 : 1 + c->o.max_retries;
  CURLcode rc = CURLE_OK;
  long status = 0;
  for (int a = 0; !st && a < max_attempts; a++) {
    /* a fresh start for this attempt */
    free_headers(resp);
    x.hcap = 0;
    im_buf_free(&x.body);
    im_atomic_file_abort(x.af);
    x.af = NULL;
    x.file_errno = 0;
    if (x.up_fd >= 0 && lseek(x.up_fd, 0, SEEK_SET) < 0) {
      st = im_error(IM_ERR_IO, "cannot rewind %s", rq->upload_path);
      break;
    }
    curl_easy_reset(c->h);
    c->errbuf[0] = '\0';
    st = setup(c, rq, &x, hdrs, up_size, sigv4_param);
    if (st) break;
    rc = curl_easy_perform(c->h);
    status = 0;
    curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &status);
    resp->attempts = a + 1;
    if (x.over_limit || x.nomem || x.file_errno) break;
    int again = rc != CURLE_OK ? retryable_curl(rc) : retryable_status(status);
    if (!again || a + 1 >= max_attempts) break;
    double delay = c->o.backoff_s;
    for (int i = 0; i < a && delay < c->o.backoff_max_s; i++) delay *= 2;
    double ra = rc == CURLE_OK ? retry_after(resp) : -1;
    if (ra > delay) delay = ra;
    if (delay > c->o.backoff_max_s) delay = c->o.backoff_max_s;
    im_log(IM_LOG_DEBUG, "http: %s %s: %s, retrying in %.2f s (attempt %d of %d)", m, rq->url,
           rc != CURLE_OK ? curl_easy_strerror(rc) : "retryable status", delay, a + 2, max_attempts);
    sleep_s(delay);
  }
  curl_slist_free_all(hdrs);
  if (x.up_fd >= 0) close(x.up_fd);
  resp->status = status;

  if (!st) {
    if (x.over_limit)
      st = im_error(IM_ERR_LIMIT, "%s %s: the response body is over the limit of %zu bytes", m, rq->url, x.max);
    else if (x.nomem)
      st = im_error(IM_ERR_NOMEM, "%s %s: out of memory receiving the response", m, rq->url);
    else if (x.file_errno)
      st = im_error(IM_ERR_IO, "%s %s: cannot write %s: %s", m, rq->url, rq->download_path, strerror(x.file_errno));
    else if (rc != CURLE_OK)
      st = im_error(IM_ERR_IO, "%s %s: %s%s%s", m, rq->url, curl_easy_strerror(rc), c->errbuf[0] ? ": " : "",
                    c->errbuf);
  }
  if (!st && rq->download_path && status >= 200 && status < 300) {
    if (!x.af) st = im_atomic_file_open(rq->download_path, &x.af); /* an empty body is still a file */
    if (!st) {
      st = im_atomic_file_commit(x.af);
      x.af = NULL;
    }
  }
  im_atomic_file_abort(x.af);
  if (!x.body.data && im_buf_append(&x.body, "", 0) != IM_OK && !st) st = IM_ERR_NOMEM;
  resp->body = (uint8_t *)x.body.data;
  resp->body_len = x.body.len;
  return st;
}

/* ---- JSON --------------------------------------------------------------------------- */

static im_status_t add_query_value(im_buf_t *u, const char *key, const json_t *v, char *sep) {
  char num[64];
  const char *s = NULL;
  char *dumped = NULL;
  switch (json_typeof(v)) {
    case JSON_STRING: s = json_string_value(v); break;
    case JSON_INTEGER: snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); s = num; break;
    case JSON_REAL: snprintf(num, sizeof num, "%.17g", json_real_value(v)); s = num; break;
    case JSON_TRUE: s = "true"; break;
    case JSON_FALSE: s = "false"; break;
    case JSON_NULL: return IM_OK;
    default:
      dumped = json_dumps(v, JSON_COMPACT);
      if (!dumped) return im_error(IM_ERR_NOMEM, "out of memory");
      s = dumped;
  }
  im_status_t st = im_buf_append(u, sep, 1);
  if (!st) st = im_http_url_encode(u, key, strlen(key), NULL);
  if (!st) st = im_buf_append(u, "=", 1);
  if (!st) st = im_http_url_encode(u, s, json_typeof(v) == JSON_STRING ? json_string_length(v) : strlen(s), NULL);
  free(dumped);
  *sep = '&';
  return st;
}

im_status_t im_http_client_json(im_http_client_t *c, const char *method, const char *url, const json_t *req,
                                json_t **out, long *status) {
  if (out) *out = NULL;
  if (status) *status = 0;
  if (!c || !url) return im_error(IM_ERR_ARG, "im_http_client_json: NULL client or URL");
  const char *m = method ? method : "GET";
  int as_query = req && json_is_object(req) && (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0);
  im_buf_t u = {0};
  char *body = NULL;
  size_t blen = 0;
  im_status_t st = im_buf_append(&u, url, strlen(url));
  if (!st && as_query) {
    char sep = strchr(url, '?') ? '&' : '?';
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)(uintptr_t)req, key, v) {
      if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v) && !st; i++) st = add_query_value(&u, key, json_array_get(v, i), &sep);
      } else {
        st = add_query_value(&u, key, v, &sep);
      }
      if (st) break;
    }
  } else if (!st && req) {
    blen = json_dumpb(req, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
    body = blen ? im_malloc(blen) : NULL;
    if (!body) st = im_error(IM_ERR_NOMEM, "cannot serialize the JSON request");
    else json_dumpb(req, body, blen, JSON_COMPACT | JSON_ENCODE_ANY);
  }
  im_http_response_t r = {0};
  if (!st) {
    im_http_header_t accept = {"Accept", "application/json"};
    im_http_request_t rq = {.method = m, .url = u.data, .headers = &accept, .n_headers = 1, .body = body,
                            .body_len = blen, .content_type = body ? "application/json" : NULL};
    st = im_http_client_request(c, &rq, &r);
  }
  im_free(body);
  if (st) {
    im_buf_free(&u);
    im_http_response_deinit(&r);
    return st;
  }
  json_t *j = NULL;
  json_error_t e;
  int ok2xx = r.status >= 200 && r.status < 300;
  if (r.body_len) {
    j = json_loadb((const char *)r.body, r.body_len, JSON_DECODE_ANY, &e);
    if (!j && ok2xx)
      st = im_error(IM_ERR_FORMAT, "%s %s: the answer is not JSON: %s", m, u.data, e.text);
  }
  if (!st && !status && !ok2xx) {
    const char *msg = NULL;
    if (json_is_object(j)) {
      msg = json_string_value(json_object_get(j, "message"));
      if (!msg) msg = json_string_value(json_object_get(j, "error"));
    }
    st = im_error(r.status == 404 ? IM_ERR_NOT_FOUND : IM_ERR_IO, "%s %s: HTTP %ld%s%.300s", m, u.data, r.status,
                  msg || r.body_len ? ": " : "", msg ? msg : (const char *)r.body);
  }
  if (status) *status = r.status;
  if (!st && out) *out = j;
  else json_decref(j);
  im_buf_free(&u);
  im_http_response_deinit(&r);
  return st;
}
