/* Artifact stores: one interface over a local directory and S3 (PutObject or
 * multipart upload, ListObjectsV2 with pagination, GetObject, DeleteObject;
 * SigV4 through the http module's client). Writes are atomic for readers in
 * both; directory up- and downloads and the fetch cache sit on top of the
 * per-store operations. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imops/http.h"
#include "track/client_impl.h"

#define MAX_DEPTH 64
#define MB ((size_t)1 << 20)

struct im_track_artifacts {
  int s3;
  char *root; /* local: absolute directory without trailing slash */
  /* S3 */
  im__s3_conf_t conf;
  char *bucket, *prefix; /* prefix without leading or trailing slashes ("" for none) */
  im_http_client_t *http;
  size_t multipart_min, part_size;
};

void im_track_file_list_free(im_track_file_list_t *l) {
  if (!l) return;
  for (int64_t i = 0; i < l->n; i++) im_free(l->items[i].path);
  im_free(l->items);
  im_free(l);
}

static im_status_t list_add(im_track_file_list_t *l, const char *path, size_t plen, int is_dir, int64_t size) {
  if (l->n % 64 == 0) {
    im_track_file_info_t *it = im_realloc(l->items, (size_t)(l->n + 64) * sizeof *it);
    if (!it) return im_error(IM_ERR_NOMEM, "out of memory");
    l->items = it;
  }
  char *p = im_strndup(path, plen);
  if (!p) return im_error(IM_ERR_NOMEM, "out of memory");
  l->items[l->n++] = (im_track_file_info_t){p, is_dir, size};
  return IM_OK;
}

static int cmp_info(const void *a, const void *b) {
  return strcmp(((const im_track_file_info_t *)a)->path, ((const im_track_file_info_t *)b)->path);
}

/* Checks and normalizes a relative artifact path ("a//b/" -> "a/b"). */
im_status_t im__trk_clean_rel(const char *rel, char **out) {
  *out = NULL;
  if (!rel) rel = "";
  if (rel[0] == '/') return im_error(IM_ERR_ARG, "artifact path '%.200s' must be relative", rel);
  size_t n = strlen(rel);
  if (n > 4096) return im_error(IM_ERR_ARG, "artifact path is longer than 4096 bytes");
  char *o = im_malloc(n + 1);
  if (!o) return im_error(IM_ERR_NOMEM, "out of memory");
  size_t k = 0;
  for (const char *s = rel; *s;) {
    size_t sl = strcspn(s, "/");
    if (sl == 0) {
      s++;
      continue;
    }
    int bad = (sl == 1 && s[0] == '.') || (sl == 2 && s[0] == '.' && s[1] == '.');
    for (size_t i = 0; i < sl && !bad; i++) bad = (unsigned char)s[i] < 0x20 || s[i] == '\\';
    if (bad) {
      im_free(o);
      return im_error(IM_ERR_ARG, "artifact path '%.200s' has '.', '..', a backslash or a control character", rel);
    }
    if (k) o[k++] = '/';
    memcpy(o + k, s, sl);
    k += sl;
    s += sl;
  }
  o[k] = '\0';
  *out = o;
  return IM_OK;
}

/* a + "/" + b, either may be "" (a new string). */
static char *join2(const char *a, const char *b) {
  if (!*a) return im_strdup(b);
  if (!*b) return im_strdup(a);
  return im_path_join(a, b);
}

/* ---- local files ------------------------------------------------------------------------ */

/* The core's atomic writes use ".<name>.tmp-<pid>-<n>" beside the target. */
static int is_temp_name(const char *name) { return name[0] == '.' && strstr(name, ".tmp-") != NULL; }

static im_status_t copy_file(const char *src, const char *dst) {
  int in = open(src, O_RDONLY | O_CLOEXEC);
  if (in < 0) return im_error(errno == ENOENT ? IM_ERR_NOT_FOUND : IM_ERR_IO, "cannot open %s: %s", src, strerror(errno));
  char *slash = strrchr(dst, '/');
  im_status_t st = IM_OK;
  if (slash && slash != dst) {
    char *dir = im_strndup(dst, (size_t)(slash - dst));
    st = dir ? im_mkdir_p(dir) : im_error(IM_ERR_NOMEM, "out of memory");
    im_free(dir);
  }
  im_atomic_file_t *f = NULL;
  if (!st) st = im_atomic_file_open(dst, &f);
  char *buf = st ? NULL : im_malloc(MB);
  if (!st && !buf) st = im_error(IM_ERR_NOMEM, "out of memory");
  while (!st) {
    ssize_t r = read(in, buf, MB);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) st = im_error(IM_ERR_IO, "cannot read %s: %s", src, strerror(errno));
    if (r <= 0) break;
    for (ssize_t off = 0; off < r && !st;) {
      ssize_t w = write(im_atomic_file_fd(f), buf + off, (size_t)(r - off));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) st = im_error(IM_ERR_IO, "cannot write %s: %s", dst, strerror(errno));
      else off += w;
    }
  }
  im_free(buf);
  close(in);
  if (f) {
    if (st) im_atomic_file_abort(f);
    else st = im_atomic_file_commit(f);
  }
  return st;
}

static im_status_t walk_local(const char *root, const char *rel, int depth, im_track_file_list_t *l) {
  if (depth > MAX_DEPTH) return im_error(IM_ERR_LIMIT, "directory %s is nested too deeply", root);
  char *dir = *rel ? im_path_join(root, rel) : im_strdup(root);
  if (!dir) return im_error(IM_ERR_NOMEM, "out of memory");
  DIR *d = opendir(dir);
  im_status_t st = IM_OK;
  if (!d) {
    im_free(dir);
    return IM_OK;
  }
  struct dirent *e;
  while (!st && (e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || is_temp_name(e->d_name)) continue;
    char *full = im_path_join(dir, e->d_name), *sub = join2(rel, e->d_name);
    struct stat sb;
    if (!full || !sub) st = im_error(IM_ERR_NOMEM, "out of memory");
    else if (lstat(full, &sb) == 0 && S_ISREG(sb.st_mode)) st = list_add(l, sub, strlen(sub), 0, sb.st_size);
    else if (S_ISDIR(sb.st_mode)) st = walk_local(root, sub, depth + 1, l);
    im_free(full);
    im_free(sub);
  }
  closedir(d);
  im_free(dir);
  return st;
}

static int remove_tree(const char *path, int depth) {
  struct stat sb;
  if (lstat(path, &sb) != 0) return errno == ENOENT ? 0 : -1;
  if (!S_ISDIR(sb.st_mode)) return unlink(path) == 0 || errno == ENOENT ? 0 : -1;
  if (depth > MAX_DEPTH) return -1;
  DIR *d = opendir(path);
  if (!d) return -1;
  int rc = 0;
  struct dirent *e;
  while (rc == 0 && (e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char *c = im_path_join(path, e->d_name);
    rc = c ? remove_tree(c, depth + 1) : -1;
    im_free(c);
  }
  closedir(d);
  return rc == 0 && rmdir(path) != 0 && errno != ENOENT ? -1 : rc;
}

/* ---- S3 requests ---------------------------------------------------------------------------- */

typedef struct {
  const char *method, *key, *query;
  const void *body;
  size_t body_len;
  const char *content_type, *upload_path, *download_path;
  int no_retry;
} s3_call_t;

static im_status_t s3_do(im_track_artifacts_t *a, const s3_call_t *c, im_http_response_t *resp) {
  char *url = NULL;
  im_status_t st = im__s3_url(a->conf.endpoint, a->bucket, c->key, c->query, &url);
  if (st) return st;
  im_http_sigv4_t sig = {.region = a->conf.region, .service = "s3", .access_key = a->conf.access_key,
                         .secret_key = a->conf.secret_key, .session_token = a->conf.session_token};
  im_http_request_t rq = {.method = c->method, .url = url, .body = c->body, .body_len = c->body_len,
                          .content_type = c->content_type, .upload_path = c->upload_path,
                          .download_path = c->download_path, .sigv4 = &sig, .no_retry = c->no_retry};
  st = im_http_client_request(a->http, &rq, resp);
  if (!st && (resp->status < 200 || resp->status >= 300)) {
    char *code = NULL, *msg = NULL;
    if (resp->body_len) (void)im__s3_parse_error((const char *)resp->body, resp->body_len, &code, &msg);
    st = im_error(resp->status == 404 ? IM_ERR_NOT_FOUND : IM_ERR_IO, "S3 %s s3://%s/%s: HTTP %ld%s%s%s%s", c->method,
                  a->bucket, c->key, resp->status, code ? " " : "", code ? code : "", msg ? ": " : "", msg ? msg : "");
    im_free(code);
    im_free(msg);
  } else if (st) {
    st = im_error(st, "S3 %s s3://%s/%s: %s", c->method, a->bucket, c->key, im_last_error());
  }
  im_free(url);
  return st;
}

static im_status_t s3_simple(im_track_artifacts_t *a, const s3_call_t *c) {
  im_http_response_t r = {0};
  im_status_t st = s3_do(a, c, &r);
  im_http_response_deinit(&r);
  return st;
}

/* One ListObjectsV2 walk below prefix (with delimiter "/" or without). */
static im_status_t s3_list(im_track_artifacts_t *a, const char *prefix, int delim, im_track_file_list_t *l,
                           int max_pages) {
  char *token = NULL;
  im_status_t st = IM_OK;
  size_t plen = strlen(prefix);
  for (int page = 0; !st && page < max_pages; page++) {
    char *q = NULL;
    if ((st = im__s3_list_query(prefix, delim ? "/" : NULL, token, &q))) break;
    im_http_response_t r = {0};
    s3_call_t c = {.method = "GET", .key = "", .query = q};
    st = s3_do(a, &c, &r);
    im_free(q);
    im__s3_list_t pg;
    if (!st) st = im__s3_parse_list((const char *)r.body, r.body_len, &pg);
    im_http_response_deinit(&r);
    if (st) break;
    for (size_t i = 0; !st && i < pg.n; i++) {
      const char *k = pg.keys[i];
      if (strncmp(k, prefix, plen) || !k[plen] || k[strlen(k) - 1] == '/') continue; /* folder markers */
      st = list_add(l, k + plen, strlen(k + plen), 0, pg.sizes[i]);
    }
    for (size_t i = 0; !st && i < pg.n_prefixes; i++) {
      const char *p = pg.prefixes[i];
      size_t n = strlen(p);
      if (strncmp(p, prefix, plen) || n <= plen + 1) continue;
      st = list_add(l, p + plen, n - plen - 1, 1, 0);
    }
    im_free(token);
    token = pg.truncated ? pg.next_token : NULL;
    pg.next_token = NULL;
    im__s3_list_clear(&pg);
    if (!token) break;
  }
  im_free(token);
  return st;
}

static char *s3_key(const im_track_artifacts_t *a, const char *rel) { return join2(a->prefix, rel); }

static im_status_t s3_abort(im_track_artifacts_t *a, const char *key, const char *upload_id) {
  im_buf_t q = {0};
  im_status_t st = im_buf_printf(&q, "uploadId=");
  if (!st) st = im_http_url_encode(&q, upload_id, strlen(upload_id), NULL);
  if (!st) st = im_buf_append(&q, "", 1);
  if (!st) {
    s3_call_t c = {.method = "DELETE", .key = key, .query = q.data, .no_retry = 1};
    st = s3_simple(a, &c);
  }
  im_buf_free(&q);
  return st;
}

/* Multipart upload: the object appears only when CompleteMultipartUpload
 * succeeds; any failure aborts the upload (its parts are discarded). */
static im_status_t s3_put_multipart(im_track_artifacts_t *a, const char *key, const char *local, int64_t size) {
  im_http_response_t r = {0};
  s3_call_t c = {.method = "POST", .key = key, .query = "uploads="};
  char *upload_id = NULL;
  im_status_t st = s3_do(a, &c, &r);
  if (!st) st = im__s3_parse_upload_id((const char *)r.body, r.body_len, &upload_id);
  im_http_response_deinit(&r);
  if (st) return st;
  int fd = open(local, O_RDONLY | O_CLOEXEC);
  char *buf = im_malloc(a->part_size);
  im_buf_t done = {0}, q = {0};
  if (fd < 0) st = im_error(IM_ERR_IO, "cannot open %s: %s", local, strerror(errno));
  else if (!buf) st = im_error(IM_ERR_NOMEM, "out of memory");
  if (!st) st = im_buf_printf(&done, "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
  int64_t off = 0;
  for (int part = 1; !st && (off < size || part == 1); part++) {
    size_t want = (size_t)(size - off) < a->part_size ? (size_t)(size - off) : a->part_size, got = 0;
    while (got < want) {
      ssize_t n = pread(fd, buf + got, want - got, off + (off_t)got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += (size_t)n;
    }
    if (got != want) {
      st = im_error(IM_ERR_IO, "cannot read %s (it changed while uploading?)", local);
      break;
    }
    q.len = 0;
    st = im_buf_printf(&q, "partNumber=%d&uploadId=", part);
    if (!st) st = im_http_url_encode(&q, upload_id, strlen(upload_id), NULL);
    if (!st) st = im_buf_append(&q, "", 1);
    if (st) break;
    s3_call_t pc = {.method = "PUT", .key = key, .query = q.data, .body = buf, .body_len = got};
    im_http_response_t pr = {0};
    st = s3_do(a, &pc, &pr);
    const char *etag = st ? NULL : im_http_response_header(&pr, "ETag");
    if (!st && !etag) st = im_error(IM_ERR_FORMAT, "S3 PUT part %d of s3://%s/%s: no ETag in the answer", part, a->bucket, key);
    if (!st) st = im_buf_printf(&done, "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>", part, etag);
    im_http_response_deinit(&pr);
    off += (int64_t)got;
  }
  if (!st) st = im_buf_printf(&done, "</CompleteMultipartUpload>");
  if (!st) {
    q.len = 0;
    st = im_buf_printf(&q, "uploadId=");
    if (!st) st = im_http_url_encode(&q, upload_id, strlen(upload_id), NULL);
    if (!st) st = im_buf_append(&q, "", 1);
  }
  if (!st) {
    s3_call_t cc = {.method = "POST", .key = key, .query = q.data, .body = done.data, .body_len = done.len,
                    .content_type = "application/xml"};
    im_http_response_t cr = {0};
    st = s3_do(a, &cc, &cr);
    char *code = NULL, *msg = NULL; /* S3 may answer 200 with an <Error> body */
    if (!st && im__s3_parse_error((const char *)cr.body, cr.body_len, &code, &msg) == IM_OK)
      st = im_error(IM_ERR_IO, "S3 CompleteMultipartUpload s3://%s/%s: %s: %s", a->bucket, key, code ? code : "",
                    msg ? msg : "");
    im_free(code);
    im_free(msg);
    im_http_response_deinit(&cr);
  }
  if (st) {
    char saved[1024];
    snprintf(saved, sizeof saved, "%s", im_last_error());
    (void)s3_abort(a, key, upload_id);
    st = im_error(st, "%s", saved);
  }
  if (fd >= 0) close(fd);
  im_free(buf);
  im_buf_free(&done);
  im_buf_free(&q);
  im_free(upload_id);
  return st;
}

/* ---- the interface ---------------------------------------------------------------------------- */

static size_t env_mb(const char *name, size_t def, size_t min) {
  const char *v = getenv(name);
  char *end;
  long long x = v && *v ? strtoll(v, &end, 10) : 0;
  if (!v || !*v || *end || x <= 0) return def * MB;
  return (size_t)x < min ? min * MB : (size_t)x * MB;
}

im_status_t im_track_artifacts_open(const char *root_uri, im_track_artifacts_t **out) {
  *out = NULL;
  if (!root_uri || !*root_uri) return im_error(IM_ERR_ARG, "no artifact root given");
  im_track_artifacts_t *a = im_calloc(1, sizeof *a);
  if (!a) return im_error(IM_ERR_NOMEM, "out of memory");
  im_status_t st = IM_OK;
  if (!strncasecmp(root_uri, "s3://", 5)) {
    a->s3 = 1;
    a->multipart_min = env_mb("IMOPS_S3_MULTIPART_MB", 64, 5);
    a->part_size = env_mb("IMOPS_S3_PART_MB", 16, 5);
    im_http_client_opts_t ho = {.timeout_s = 3600, .max_retries = 3};
    if (!(st = im__s3_split(root_uri, &a->bucket, &a->prefix)) && !(st = im__s3_conf_from_env(&a->conf)))
      st = im_http_client_new(&ho, &a->http);
  } else {
    im_track_uri_t *u = NULL;
    st = im_track_uri_parse(root_uri, &u);
    if (!st && (!u->is_local || !u->location))
      st = im_error(IM_ERR_UNSUPPORTED, "artifact root '%s': only local directories and s3:// are supported", root_uri);
    if (!st) {
      const char *p = u->location;
      char cwd[PATH_MAX];
      if (p[0] == '/') a->root = im_strdup(p);
      else if (getcwd(cwd, sizeof cwd)) a->root = im_path_join(cwd, p);
      if (!a->root) st = im_error(IM_ERR_NOMEM, "out of memory");
      else {
        size_t n = strlen(a->root);
        while (n > 1 && a->root[n - 1] == '/') a->root[--n] = '\0';
      }
    }
    im_track_uri_free(u);
  }
  if (st) {
    im_track_artifacts_free(a);
    return st;
  }
  *out = a;
  return IM_OK;
}

void im_track_artifacts_free(im_track_artifacts_t *a) {
  if (!a) return;
  im_free(a->root);
  im__s3_conf_clear(&a->conf);
  im_free(a->bucket);
  im_free(a->prefix);
  im_http_client_free(a->http);
  im_free(a);
}

int im_track_artifacts_is_remote(const im_track_artifacts_t *a) { return a && a->s3; }

/* Resolves rel: *key (S3) or *path (local), both new strings. */
static im_status_t locate(const im_track_artifacts_t *a, const char *rel, char **where) {
  char *clean = NULL;
  im_status_t st = im__trk_clean_rel(rel, &clean);
  if (st) return st;
  *where = a->s3 ? s3_key(a, clean) : (*clean ? im_path_join(a->root, clean) : im_strdup(a->root));
  im_free(clean);
  return *where ? IM_OK : im_error(IM_ERR_NOMEM, "out of memory");
}

im_status_t im_track_artifacts_put_file(im_track_artifacts_t *a, const char *rel, const char *local_path) {
  char *w = NULL;
  im_status_t st = locate(a, rel, &w);
  if (st) return st;
  if (!*w) st = im_error(IM_ERR_ARG, "an artifact file needs a path below the root");
  else if (!a->s3) st = copy_file(local_path, w);
  else {
    struct stat sb;
    if (stat(local_path, &sb) != 0 || !S_ISREG(sb.st_mode))
      st = im_error(IM_ERR_IO, "cannot upload %s: not a readable file", local_path);
    else if ((size_t)sb.st_size >= a->multipart_min)
      st = s3_put_multipart(a, w, local_path, sb.st_size);
    else {
      s3_call_t c = {.method = "PUT", .key = w, .upload_path = local_path};
      st = s3_simple(a, &c);
    }
  }
  im_free(w);
  return st;
}

im_status_t im_track_artifacts_put_bytes(im_track_artifacts_t *a, const char *rel, const void *data, size_t len) {
  char *w = NULL;
  im_status_t st = locate(a, rel, &w);
  if (st) return st;
  if (!*w) {
    st = im_error(IM_ERR_ARG, "an artifact file needs a path below the root");
  } else if (a->s3) {
    s3_call_t c = {.method = "PUT", .key = w, .body = data ? data : "", .body_len = len};
    st = s3_simple(a, &c);
  } else {
    char *slash = strrchr(w, '/');
    *slash = '\0';
    st = im_mkdir_p(w);
    *slash = '/';
    if (!st) st = im_file_write_atomic(w, data, len);
  }
  im_free(w);
  return st;
}

im_status_t im_track_artifacts_put_dir(im_track_artifacts_t *a, const char *rel, const char *local_dir) {
  if (!im_is_dir(local_dir)) return im_error(IM_ERR_NOT_FOUND, "%s is not a directory", local_dir);
  im_track_file_list_t l = {0};
  im_status_t st = walk_local(local_dir, "", 0, &l);
  for (int64_t i = 0; !st && i < l.n; i++) {
    char *src = im_path_join(local_dir, l.items[i].path), *dst = join2(rel ? rel : "", l.items[i].path);
    st = src && dst ? im_track_artifacts_put_file(a, dst, src) : im_error(IM_ERR_NOMEM, "out of memory");
    im_free(src);
    im_free(dst);
  }
  for (int64_t i = 0; i < l.n; i++) im_free(l.items[i].path);
  im_free(l.items);
  return st;
}

static im_status_t do_list(im_track_artifacts_t *a, const char *rel, int recursive, im_track_file_list_t **out) {
  *out = NULL;
  char *w = NULL;
  im_status_t st = locate(a, rel, &w);
  if (st) return st;
  im_track_file_list_t *l = im_calloc(1, sizeof *l);
  if (!l) st = im_error(IM_ERR_NOMEM, "out of memory");
  else if (a->s3) {
    char *pre = *w ? im_malloc(strlen(w) + 2) : im_strdup("");
    if (!pre) st = im_error(IM_ERR_NOMEM, "out of memory");
    else {
      if (*w) sprintf(pre, "%s/", w);
      st = s3_list(a, pre, !recursive, l, 100000);
    }
    im_free(pre);
  } else if (recursive) {
    st = walk_local(w, "", 0, l);
  } else {
    DIR *d = opendir(w);
    struct dirent *e;
    while (d && !st && (e = readdir(d))) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || is_temp_name(e->d_name)) continue;
      char *full = im_path_join(w, e->d_name);
      struct stat sb;
      if (!full) st = im_error(IM_ERR_NOMEM, "out of memory");
      else if (lstat(full, &sb) == 0 && (S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode)))
        st = list_add(l, e->d_name, strlen(e->d_name), S_ISDIR(sb.st_mode), S_ISDIR(sb.st_mode) ? 0 : sb.st_size);
      im_free(full);
    }
    if (d) closedir(d);
  }
  im_free(w);
  if (st) {
    im_track_file_list_free(l);
    return st;
  }
  if (l->n) qsort(l->items, (size_t)l->n, sizeof *l->items, cmp_info);
  *out = l;
  return IM_OK;
}

im_status_t im_track_artifacts_list(im_track_artifacts_t *a, const char *rel, im_track_file_list_t **out) {
  return do_list(a, rel, 0, out);
}

im_status_t im_track_artifacts_list_all(im_track_artifacts_t *a, const char *rel, im_track_file_list_t **out) {
  return do_list(a, rel, 1, out);
}

im_status_t im_track_artifacts_stat(im_track_artifacts_t *a, const char *rel, int *kind) {
  *kind = 0;
  char *w = NULL;
  im_status_t st = locate(a, rel, &w);
  if (st) return st;
  if (!a->s3) {
    struct stat sb;
    if (stat(w, &sb) == 0) *kind = S_ISDIR(sb.st_mode) ? 2 : S_ISREG(sb.st_mode) ? 1 : 0;
  } else {
    if (*w) {
      s3_call_t c = {.method = "HEAD", .key = w};
      st = s3_simple(a, &c);
      if (!st) *kind = 1;
      if (st == IM_ERR_NOT_FOUND) st = IM_OK;
    }
    if (!st && !*kind) {
      im_track_file_list_t l = {0};
      char *pre = im_malloc(strlen(w) + 2);
      if (!pre) st = im_error(IM_ERR_NOMEM, "out of memory");
      else {
        sprintf(pre, "%s%s", w, *w ? "/" : "");
        st = s3_list(a, pre, 1, &l, 1);
      }
      if (!st && l.n) *kind = 2;
      for (int64_t i = 0; i < l.n; i++) im_free(l.items[i].path);
      im_free(l.items);
      im_free(pre);
    }
  }
  im_free(w);
  return st;
}

im_status_t im_track_artifacts_get_file(im_track_artifacts_t *a, const char *rel, const char *local_path) {
  char *w = NULL;
  im_status_t st = locate(a, rel, &w);
  if (st) return st;
  if (!a->s3) {
    st = copy_file(w, local_path);
  } else {
    s3_call_t c = {.method = "GET", .key = w, .download_path = local_path};
    st = s3_simple(a, &c);
  }
  im_free(w);
  return st;
}

im_status_t im_track_artifacts_get_dir(im_track_artifacts_t *a, const char *rel, const char *local_dir) {
  if (im_is_dir(local_dir)) return IM_OK;
  im_track_file_list_t *l = NULL;
  im_status_t st = im_track_artifacts_list_all(a, rel, &l);
  if (st) return st;
  if (l->n == 0) {
    im_track_file_list_free(l);
    return im_error(IM_ERR_NOT_FOUND, "no artifacts below '%s'", rel && *rel ? rel : "(the root)");
  }
  size_t n = strlen(local_dir) + 64;
  char *tmp = im_malloc(n);
  if (!tmp) st = im_error(IM_ERR_NOMEM, "out of memory");
  else {
    char hex[33];
    im__trk_uuid_hex(hex);
    snprintf(tmp, n, "%s.tmp-%ld-%.8s", local_dir, (long)getpid(), hex);
  }
  for (int64_t i = 0; !st && i < l->n; i++) {
    char *src = join2(rel ? rel : "", l->items[i].path), *dst = im_path_join(tmp, l->items[i].path);
    if (!src || !dst) st = im_error(IM_ERR_NOMEM, "out of memory");
    if (!st) {
      char *slash = strrchr(dst, '/');
      *slash = '\0';
      st = im_mkdir_p(dst);
      *slash = '/';
    }
    if (!st) st = im_track_artifacts_get_file(a, src, dst);
    im_free(src);
    im_free(dst);
  }
  if (!st && rename(tmp, local_dir) != 0 && !im_is_dir(local_dir))
    st = im_error(IM_ERR_IO, "cannot move %s into place: %s", local_dir, strerror(errno));
  if (tmp) remove_tree(tmp, 0); /* left over when someone else finished first, or on failure */
  im_free(tmp);
  im_track_file_list_free(l);
  return st;
}

im_status_t im_track_artifacts_delete(im_track_artifacts_t *a, const char *rel) {
  char *w = NULL;
  im_status_t st = locate(a, rel, &w);
  if (st) return st;
  if (!a->s3 && !strcmp(w, a->root)) st = im_error(IM_ERR_ARG, "refusing to delete the whole artifact root");
  else if (!a->s3) {
    if (remove_tree(w, 0) != 0) st = im_error(IM_ERR_IO, "cannot delete %s: %s", w, strerror(errno));
  } else {
    if (*w) {
      s3_call_t c = {.method = "DELETE", .key = w};
      st = s3_simple(a, &c);
      if (st == IM_ERR_NOT_FOUND) st = IM_OK;
    }
    im_track_file_list_t *l = NULL;
    if (!st) st = im_track_artifacts_list_all(a, rel, &l);
    for (int64_t i = 0; !st && i < l->n; i++) {
      char *k = join2(w, l->items[i].path);
      s3_call_t c = {.method = "DELETE", .key = k};
      st = k ? s3_simple(a, &c) : im_error(IM_ERR_NOMEM, "out of memory");
      im_free(k);
    }
    im_track_file_list_free(l);
  }
  im_free(w);
  return st;
}

char *im__trk_cache_dir(const char *cache_dir) {
  if (cache_dir) return im_strdup(cache_dir);
  const char *home = getenv("IMOPS_HOME");
  char *base = im_path_join(home && *home ? home : "imops-workspace", "cache");
  char *cache = base ? im_path_join(base, "artifacts") : NULL;
  im_free(base);
  return cache;
}

im_status_t im_track_artifacts_fetch(const char *uri, const char *cache_dir, char **local_out) {
  *local_out = NULL;
  if (strncasecmp(uri, "s3://", 5)) {
    im_track_uri_t *u = NULL;
    im_status_t st = im_track_uri_parse(uri, &u);
    if (!st && (!u->is_local || !u->location))
      st = im_error(IM_ERR_UNSUPPORTED, "cannot fetch '%s': only s3:// and local artifacts are supported here", uri);
    if (!st && !(*local_out = im_strdup(u->location))) st = im_error(IM_ERR_NOMEM, "out of memory");
    im_track_uri_free(u);
    return st;
  }
  char *cache = im__trk_cache_dir(cache_dir);
  if (!cache) return im_error(IM_ERR_NOMEM, "out of memory");
  im_track_artifacts_t *a = NULL;
  im_status_t st = im_track_artifacts_open(uri, &a);
  int kind = 0;
  if (!st) st = im_track_artifacts_stat(a, "", &kind);
  if (!st && !kind) st = im_error(IM_ERR_NOT_FOUND, "nothing at %s", uri);
  char *dir = NULL, *dst = NULL;
  if (!st) {
    size_t n = strlen(uri);
    while (n > 5 && uri[n - 1] == '/') n--;
    char hx[32];
    snprintf(hx, sizeof hx, "%016" PRIx64, im_hash64(uri, n, 0x696d6f7073ULL));
    const char *base = uri + n;
    while (base > uri + 5 && base[-1] != '/') base--;
    char *name = im_strndup(base, (size_t)(uri + n - base));
    dir = im_path_join(cache, hx);
    dst = dir && name ? im_path_join(dir, name) : NULL;
    im_free(name);
    if (!dst) st = im_error(IM_ERR_NOMEM, "out of memory");
  }
  if (!st) st = im_mkdir_p(dir);
  if (!st) {
    struct stat sb;
    if (stat(dst, &sb) != 0) st = kind == 2 ? im_track_artifacts_get_dir(a, "", dst) : im_track_artifacts_get_file(a, "", dst);
  }
  if (!st) {
    *local_out = dst;
    dst = NULL;
  }
  im_free(dst);
  im_free(dir);
  im_free(cache);
  im_track_artifacts_free(a);
  return st;
}
