/* Artifacts: the run listing (GET mlflow/artifacts/list) and the
 * mlflow-artifacts proxy (PUT/GET/DELETE mlflow-artifacts/artifacts/<path>,
 * GET mlflow-artifacts/artifacts?path= listing) over the local artifacts
 * destination, plus the mapping between artifact URIs and local paths.
 * Client paths are checked before any file-system call (no "..", absolute
 * paths, backslashes, control characters or encoded variants) and resolved
 * paths must stay inside the destination, symbolic links included. Uploads
 * go to a temporary file beside the target and are renamed into place, and
 * listings hide those temporary files: a reader sees whole artifacts only.
 * With an S3 destination (s3://bucket/prefix) the proxy stores and reads
 * the bytes through the track module's artifact store instead; runs whose
 * artifact URI is s3:// are listed from S3 too. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/server_impl.h"

#define MAX_REL_PATH 4096
#define MAX_SEGMENT 255
#define MAX_LIST_ENTRIES 100000

/* ---- paths and URIs --------------------------------------------------------------------- */

im_status_t im__srv_clean_relpath(const char *p, char **out) {
  *out = NULL;
  size_t n = strlen(p);
  if (n > MAX_REL_PATH) return im_error(IM_ERR_ARG, "Invalid path: longer than %d bytes", MAX_REL_PATH);
  if (p[0] == '/') return im_error(IM_ERR_ARG, "Invalid path '%.200s': absolute paths are not allowed", p);
  if (n >= 2 && isalpha((unsigned char)p[0]) && p[1] == ':')
    return im_error(IM_ERR_ARG, "Invalid path '%.200s': drive paths are not allowed", p);
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)p[i];
    if (ch < 0x20 || ch == 0x7f || ch == '\\' || ch == '#')
      return im_error(IM_ERR_ARG, "Invalid path: it contains a backslash, '#' or a control character");
    if (ch == '%') { /* p[i + 1] may be the terminating NUL; then p[i + 2] is not read */
      char a = (char)tolower((unsigned char)p[i + 1]), b = a ? (char)tolower((unsigned char)p[i + 2]) : 0;
      if ((a == '2' && (b == 'e' || b == 'f' || b == '5')) || (a == '5' && b == 'c') || (a == '0' && b == '0'))
        return im_error(IM_ERR_ARG, "Invalid path '%.200s': encoded '.', '/', '\\\\', '%%' or NUL", p);
    }
  }
  char *o = im_malloc(n + 1);
  if (!o) return im_error(IM_ERR_NOMEM, "out of memory");
  size_t k = 0;
  const char *s = p;
  while (*s) {
    size_t sl = strcspn(s, "/");
    if (sl == 0) {
      s++;
      continue;
    }
    if ((sl == 1 && s[0] == '.') || (sl == 2 && s[0] == '.' && s[1] == '.')) {
      im_free(o);
      return im_error(IM_ERR_ARG, "Invalid path '%.200s': '.' and '..' are not allowed", p);
    }
    if (sl > MAX_SEGMENT) {
      im_free(o);
      return im_error(IM_ERR_ARG, "Invalid path: a name is longer than %d bytes", MAX_SEGMENT);
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

/* 1 when path is root or inside it (both without trailing slashes). */
static int under(const char *root, const char *path) {
  size_t n = strlen(root);
  return !strncmp(root, path, n) && (path[n] == '\0' || path[n] == '/');
}

int im__srv_contained(const im_server_t *s, const char *path) {
  char buf[PATH_MAX], real[PATH_MAX];
  if (strlen(path) >= sizeof buf) return 0;
  strcpy(buf, path);
  /* the deepest part that exists, resolved */
  while (!realpath(buf, real)) {
    if (errno != ENOENT && errno != ENOTDIR) return 0;
    char *sl = strrchr(buf, '/');
    if (!sl || sl == buf) return 0;
    *sl = '\0';
  }
  if (under(s->artifact_real, real)) return 1;
  char lr[PATH_MAX];
  return realpath(s->local_root, lr) && under(lr, real);
}

/* The local path of a file:// URI (NULL for anything else or on error). */
static char *file_uri_path(const char *uri) {
  if (strncasecmp(uri, "file:", 5)) return NULL;
  im_track_uri_t *u = NULL;
  if (im_track_uri_parse(uri, &u) != IM_OK) return NULL;
  char *p = u->is_local && u->location && u->location[0] == '/' ? im_strdup(u->location) : NULL;
  im_track_uri_free(u);
  return p;
}

char *im__srv_public_uri(const im_server_t *s, const char *uri) {
  char *p = file_uri_path(uri);
  if (p && under(s->artifact_dir, p)) {
    const char *rest = p + strlen(s->artifact_dir);
    while (*rest == '/') rest++;
    size_t n = strlen(rest) + 20;
    char *o = im_malloc(n);
    if (o) snprintf(o, n, "mlflow-artifacts:/%s", rest);
    im_free(p);
    return o;
  }
  im_free(p);
  return im_strdup(uri);
}

/* root + "/" + rel (rel "" gives root). */
static char *join(const char *root, const char *rel) { return *rel ? im_path_join(root, rel) : im_strdup(root); }

im_status_t im__srv_local_dir(const im_server_t *s, const char *uri, char **out) {
  *out = NULL;
  char *clean = NULL;
  const char *root = NULL;
  im_status_t st;
  if (!strncasecmp(uri, "mlflow-artifacts:", 17)) {
    const char *rest = uri + 17;
    if (!strncmp(rest, "//", 2)) { /* mlflow-artifacts://host:port/path */
      rest += 2;
      rest += strcspn(rest, "/");
    }
    while (*rest == '/') rest++;
    if ((st = im__srv_clean_relpath(rest, &clean))) return st;
    root = s->artifact_dir;
  } else if (!strncasecmp(uri, "file:", 5)) {
    char *p = file_uri_path(uri);
    if (!p) return im_error(IM_ERR_ARG, "invalid file URI '%.200s'", uri);
    if (under(s->artifact_dir, p)) root = s->artifact_dir;
    else if (under(s->local_root, p)) root = s->local_root;
    if (!root) {
      im_free(p);
      return im_error(IM_ERR_UNSUPPORTED, "the artifact location %.300s is not served by this server", uri);
    }
    const char *rest = p + strlen(root);
    while (*rest == '/') rest++;
    st = im__srv_clean_relpath(rest, &clean);
    im_free(p);
    if (st) return st;
  } else {
    return im_error(IM_ERR_UNSUPPORTED, "the artifact location %.300s is not served by this server", uri);
  }
  *out = join(root, clean);
  im_free(clean);
  return *out ? IM_OK : im_error(IM_ERR_NOMEM, "out of memory");
}

/* ---- listings ------------------------------------------------------------------------------- */

/* The core's atomic writes use ".<name>.tmp-<pid>-<n>" beside the target. */
static int is_temp_name(const char *name) {
  if (name[0] != '.') return 0;
  const char *t = strstr(name, ".tmp-");
  if (!t) return 0;
  const char *q = t + 5;
  if (!isdigit((unsigned char)*q)) return 0;
  while (isdigit((unsigned char)*q)) q++;
  if (*q++ != '-' || !isdigit((unsigned char)*q)) return 0;
  while (isdigit((unsigned char)*q)) q++;
  return *q == '\0';
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The entries of dir as FileInfo objects, sorted by name; path is prefix + "/" +
 * name (or the bare name when prefix is NULL or ""). A missing directory or a
 * file gives an empty list, as MLflow's local repository does. */
static im_status_t list_dir(const char *dir, const char *prefix, json_t **out) {
  *out = json_array();
  if (!*out) return im_error(IM_ERR_NOMEM, "out of memory");
  DIR *d = opendir(dir);
  if (!d) return IM_OK;
  char **names = NULL;
  size_t n = 0, cap = 0;
  im_status_t st = IM_OK;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || is_temp_name(e->d_name)) continue;
    if (n == MAX_LIST_ENTRIES) break;
    if (n == cap) {
      size_t nc = cap ? cap * 2 : 32;
      char **nn = im_realloc(names, nc * sizeof *nn);
      if (!nn) {
        st = im_error(IM_ERR_NOMEM, "out of memory");
        break;
      }
      names = nn;
      cap = nc;
    }
    if (!(names[n] = im_strdup(e->d_name))) {
      st = im_error(IM_ERR_NOMEM, "out of memory");
      break;
    }
    n++;
  }
  closedir(d);
  if (n) qsort(names, n, sizeof *names, cmp_str);
  for (size_t i = 0; st == IM_OK && i < n; i++) {
    char *full = im_path_join(dir, names[i]);
    struct stat sb;
    if (!full) {
      st = im_error(IM_ERR_NOMEM, "out of memory");
      break;
    }
    int ok = lstat(full, &sb) == 0 && (S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode));
    im_free(full);
    if (!ok) continue; /* vanished, or a link or special file: not an artifact */
    char *path = prefix && *prefix ? im_path_join(prefix, names[i]) : im_strdup(names[i]);
    json_t *fi = json_object(), *ps = path ? json_string(path) : NULL;
    int not_utf8 = path && !ps;
    im_free(path);
    if (!fi || !ps) {
      json_decref(fi);
      json_decref(ps);
      if (not_utf8 && fi) continue; /* a name that is not UTF-8: not listable through JSON */
      st = im_error(IM_ERR_NOMEM, "out of memory");
      break;
    }
    json_object_set_new(fi, "path", ps);
    json_object_set_new(fi, "is_dir", json_boolean(S_ISDIR(sb.st_mode)));
    if (!S_ISDIR(sb.st_mode)) json_object_set_new(fi, "file_size", json_integer((json_int_t)sb.st_size));
    json_array_append_new(*out, fi);
  }
  for (size_t i = 0; i < n; i++) im_free(names[i]);
  im_free(names);
  if (st) {
    json_decref(*out);
    *out = NULL;
  }
  return st;
}

/* ---- S3 ------------------------------------------------------------------------------------------ */

/* FileInfo objects of a store listing; path is prefix + "/" + name (or the name). */
static im_status_t files_json(const im_track_file_list_t *l, const char *prefix, json_t **out) {
  json_t *a = json_array();
  for (int64_t i = 0; a && i < l->n; i++) {
    char *path = prefix && *prefix ? im_path_join(prefix, l->items[i].path) : im_strdup(l->items[i].path);
    json_t *fi = path ? json_pack("{s:s,s:b}", "path", path, "is_dir", l->items[i].is_dir) : NULL;
    im_free(path);
    if (fi && !l->items[i].is_dir) json_object_set_new(fi, "file_size", json_integer((json_int_t)l->items[i].size));
    if (!fi || json_array_append_new(a, fi)) {
      json_decref(a);
      a = NULL;
    }
  }
  *out = a;
  return a ? IM_OK : im_error(IM_ERR_NOMEM, "out of memory");
}

/* Lists directory rel of the store at root (an S3 URI) as FileInfo with prefix. */
static im_status_t s3_list_json(srv_ctx_t *c, const char *root, const char *rel, const char *prefix, json_t **out) {
  *out = NULL;
  im_track_artifacts_t *a = NULL;
  im_track_file_list_t *l = NULL;
  im_status_t st = im_track_artifacts_open(root, &a);
  if (!st) st = im_track_artifacts_list(a, rel, &l);
  if (!st) st = files_json(l, prefix, out);
  else st = im__srv_fail(c, SRV_INTERNAL, "Cannot list artifacts: %s", im_last_error());
  im_track_file_list_free(l);
  im_track_artifacts_free(a);
  return st;
}

/* The S3 root and relative path of a run's artifact URI when its bytes are in
 * S3 (*root NULL otherwise). */
static im_status_t s3_location(srv_ctx_t *c, const char *uri, const char *rel, char **root, char **path) {
  *root = *path = NULL;
  char *base = NULL;
  im_status_t st = IM_OK;
  if (!strncasecmp(uri, "s3://", 5)) {
    *root = im_strdup(uri);
    base = im_strdup("");
  } else if (c->srv->dest_s3 && !strncasecmp(uri, "mlflow-artifacts:", 17)) {
    const char *rest = uri + 17;
    if (!strncmp(rest, "//", 2)) rest += 2 + strcspn(rest + 2, "/");
    while (*rest == '/') rest++;
    if ((st = im__srv_clean_relpath(rest, &base))) return im__srv_fail(c, SRV_INVALID, "%s", im_last_error());
    *root = im_strdup(c->srv->dest_s3);
  } else {
    return IM_OK;
  }
  *path = base && *root ? (*base && *rel ? im_path_join(base, rel) : im_strdup(*base ? base : rel)) : NULL;
  im_free(base);
  if (!*root || !*path) {
    im_free(*root);
    im_free(*path);
    *root = *path = NULL;
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  return IM_OK;
}

/* GET mlflow/artifacts/list?run_id=&path=: run-relative FileInfo paths. */
static im_status_t run_list(srv_ctx_t *c) {
  const char *id = im__srv_run_id(c);
  if (!id || !*id) return im__srv_fail(c, SRV_INVALID, "Missing value for required parameter 'run_id'.");
  const char *path = im__srv_str(c, "path");
  char *rel = NULL;
  im_status_t st = im__srv_clean_relpath(path ? path : "", &rel);
  if (st) return im__srv_fail(c, SRV_INVALID, "%s", im_last_error());
  im_track_run_t *r = NULL;
  if ((st = im_track_run_get(c->st, id, &r))) {
    im_free(rel);
    return im__srv_store_fail(c, st);
  }
  char *root = NULL, *dir = NULL, *pub = NULL, *s3root = NULL, *s3path = NULL;
  json_t *files = NULL, *j = NULL;
  if ((st = s3_location(c, r->artifact_uri, rel, &s3root, &s3path))) goto out;
  if (s3root) {
    if (!(pub = im__srv_public_uri(c->srv, r->artifact_uri))) st = im_error(IM_ERR_NOMEM, "out of memory");
    if (!st) st = s3_list_json(c, s3root, s3path, rel, &files);
    if (st) goto out;
    goto answer;
  }
  st = im__srv_local_dir(c->srv, r->artifact_uri, &root);
  if (st == IM_ERR_UNSUPPORTED) {
    st = im__srv_fail(c, SRV_NOT_IMPLEMENTED, "%s", im_last_error());
    goto out;
  }
  if (st) {
    st = im__srv_fail(c, SRV_INVALID, "%s", im_last_error());
    goto out;
  }
  if (!(dir = join(root, rel)) || !(pub = im__srv_public_uri(c->srv, r->artifact_uri))) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto out;
  }
  if (!im__srv_contained(c->srv, dir)) {
    st = im__srv_fail(c, SRV_INVALID, "Invalid path: it leaves the artifact root");
    goto out;
  }
  if ((st = list_dir(dir, rel, &files))) goto out;
answer:
  j = json_object();
  if (!j || json_object_set_new(j, "root_uri", json_string(pub)) || json_object_set_new(j, "files", files)) {
    if (!j) json_decref(files);
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto out;
  }
  st = im__srv_ok(c, j);
  j = NULL;
out:
  json_decref(j);
  im_free(rel);
  im_free(root);
  im_free(dir);
  im_free(pub);
  im_free(s3root);
  im_free(s3path);
  im_track_run_free(r);
  return st;
}

/* ---- the mlflow-artifacts proxy -------------------------------------------------------------- */

/* The checked local path of the proxy path rel (relative to the destination). */
static im_status_t proxy_path(srv_ctx_t *c, const char *rel, int allow_root, char **clean_out, char **out) {
  *out = NULL;
  char *clean = NULL;
  if (im__srv_clean_relpath(rel ? rel : "", &clean)) return im__srv_fail(c, SRV_INVALID, "%s", im_last_error());
  if (!*clean && !allow_root) {
    im_free(clean);
    return im__srv_fail(c, SRV_INVALID, "Invalid path: an artifact path is required");
  }
  char *p = join(c->srv->artifact_dir, clean);
  if (!p) {
    im_free(clean);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  if (!im__srv_contained(c->srv, p)) {
    im_free(clean);
    im_free(p);
    return im__srv_fail(c, SRV_INVALID, "Invalid path: it leaves the artifact root");
  }
  if (clean_out) *clean_out = clean;
  else im_free(clean);
  *out = p;
  return IM_OK;
}

static im_status_t proxy_list_path(srv_ctx_t *c, const char *rel) {
  char *dir;
  if (c->srv->dest_s3) {
    char *clean = NULL;
    json_t *files = NULL;
    if (im__srv_clean_relpath(rel ? rel : "", &clean)) return im__srv_fail(c, SRV_INVALID, "%s", im_last_error());
    im_status_t st = s3_list_json(c, c->srv->dest_s3, clean, NULL, &files);
    im_free(clean);
    return st ? st : im__srv_ok(c, im__srv_obj1("files", files));
  }
  im_status_t st = proxy_path(c, rel, 1, NULL, &dir);
  if (st) return st;
  json_t *files = NULL;
  st = list_dir(dir, NULL, &files);
  im_free(dir);
  if (st) return st;
  return im__srv_ok(c, im__srv_obj1("files", files));
}

/* GET mlflow-artifacts/artifacts?path=<dir>: basenames, as MLflow answers. */
static im_status_t proxy_list(srv_ctx_t *c) { return proxy_list_path(c, im__srv_str(c, "path")); }

static const char *mime_type(const char *name) {
  static const struct {
    const char *ext, *type;
  } map[] = {
      {".json", "application/json"}, {".txt", "text/plain"},  {".log", "text/plain"},    {".csv", "text/csv"},
      {".yaml", "application/x-yaml"}, {".yml", "application/x-yaml"}, {".png", "image/png"}, {".jpg", "image/jpeg"},
      {".jpeg", "image/jpeg"},       {".gif", "image/gif"},   {".svg", "image/svg+xml"}, {".html", "text/html"},
      {".pdf", "application/pdf"},   {".zip", "application/zip"}, {".gz", "application/gzip"},
      {".tar", "application/x-tar"}, {".md", "text/markdown"},
  };
  const char *dot = strrchr(name, '.');
  if (dot)
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
      if (!strcasecmp(dot, map[i].ext)) return map[i].type;
  return "application/octet-stream";
}

/* Fetches proxy path rel from the S3 destination into a private temporary
 * file (*p; a missing object leaves no file, so the caller answers 404). */
static im_status_t s3_fetch(srv_ctx_t *c, const char *rel, char **clean_out, char **p) {
  *p = NULL;
  char *clean = NULL;
  if (im__srv_clean_relpath(rel ? rel : "", &clean)) return im__srv_fail(c, SRV_INVALID, "%s", im_last_error());
  char *tmpdir = im_path_join(c->srv->home, "tmp");
  char hex[20];
  snprintf(hex, sizeof hex, "%016llx", (unsigned long long)im_hash64(clean, strlen(clean), (uint64_t)im_time_now()));
  char name[96];
  static atomic_uint counter;
  snprintf(name, sizeof name, "proxy-%ld-%s-%u", (long)getpid(), hex, atomic_fetch_add(&counter, 1));
  im_status_t st = tmpdir ? im_mkdir_p(tmpdir) : im_error(IM_ERR_NOMEM, "out of memory");
  if (!st && !(*p = im_path_join(tmpdir, name))) st = im_error(IM_ERR_NOMEM, "out of memory");
  im_track_artifacts_t *a = NULL;
  if (!st) st = im_track_artifacts_open(c->srv->dest_s3, &a);
  if (!st) {
    st = im_track_artifacts_get_file(a, clean, *p);
    if (st == IM_ERR_NOT_FOUND) st = IM_OK; /* answered as 404 by the caller */
    else if (st) st = im__srv_fail(c, SRV_INTERNAL, "Cannot read '%.300s': %s", clean, im_last_error());
  }
  im_track_artifacts_free(a);
  im_free(tmpdir);
  if (st) {
    im_free(*p);
    *p = NULL;
    im_free(clean);
    return st;
  }
  *clean_out = clean;
  return IM_OK;
}

static im_status_t proxy_get(srv_ctx_t *c) {
  const char *rel = im_http_req_param(c->req, "*");
  if (!rel || !*rel) return proxy_list_path(c, im_http_req_query(c->req, "path")); /* ".../artifacts/" */
  char *p, *clean;
  im_status_t st = c->srv->dest_s3 ? s3_fetch(c, rel, &clean, &p) : proxy_path(c, rel, 0, &clean, &p);
  if (st) return st;
  struct stat sb;
  if (stat(p, &sb) != 0) {
    st = im__srv_fail(c, SRV_NOT_FOUND, "Artifact '%.300s' does not exist.", clean);
  } else if (S_ISDIR(sb.st_mode)) {
    st = im__srv_fail(c, SRV_INVALID, "Artifact '%.300s' is a directory: list it instead.", clean);
  } else {
    const char *base = strrchr(clean, '/');
    base = base ? base + 1 : clean;
    st = im_http_resp_file(c->resp, 200, p, mime_type(base));
    if (st == IM_ERR_NOT_FOUND) st = im__srv_fail(c, SRV_NOT_FOUND, "Artifact '%.300s' does not exist.", clean);
    if (st == IM_OK) {
      char disp[320], safe[256];
      size_t k = 0;
      for (const char *q = base; *q && k < sizeof safe - 1; q++)
        safe[k++] = ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f || *q == '"' || *q == '\\') ? '_' : *q;
      safe[k] = '\0';
      snprintf(disp, sizeof disp, "attachment; filename=\"%s\"", safe);
      st = im_http_resp_header(c->resp, "Content-Disposition", disp);
      if (st == IM_OK) st = im_http_resp_header(c->resp, "X-Content-Type-Options", "nosniff");
    }
  }
  if (c->srv->dest_s3) unlink(p); /* the response holds it open */
  im_free(p);
  im_free(clean);
  return st;
}

/* The checked, non-empty proxy path of a PUT or DELETE. */
static im_status_t s3_rel(srv_ctx_t *c, char **clean) {
  const char *rel = im_http_req_param(c->req, "*");
  if (im__srv_clean_relpath(rel ? rel : "", clean)) return im__srv_fail(c, SRV_INVALID, "%s", im_last_error());
  if (**clean) return IM_OK;
  im_free(*clean);
  *clean = NULL;
  return im__srv_fail(c, SRV_INVALID, "Invalid path: an artifact path is required");
}

static im_status_t s3_put(srv_ctx_t *c) {
  char *clean = NULL;
  im_status_t st = s3_rel(c, &clean);
  if (st) return st;
  const char *body = im_http_req_body_file(c->req); /* spooled: streamed (in parts when large) */
  im_track_artifacts_t *a = NULL;
  st = body ? im_track_artifacts_open(c->srv->dest_s3, &a) : im_error(IM_ERR_INTERNAL, "upload body not spooled");
  if (!st) st = im_track_artifacts_put_file(a, clean, body);
  st = st ? im__srv_fail(c, SRV_INTERNAL, "Cannot store '%.300s': %s", clean, im_last_error()) : im__srv_ok(c, NULL);
  im_track_artifacts_free(a);
  im_free(clean);
  return st;
}

/* The spooled body becomes the artifact at path: fsync'd and renamed into place
 * (atomic for readers), or copied atomically when the spool is on another
 * file system than the destination. */
static im_status_t move_into_place(srv_ctx_t *c, const char *body, const char *path, const char *clean) {
  if (!body) return im_error(IM_ERR_INTERNAL, "upload body not spooled");
  int fd = open(body, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0) {
    if (fd >= 0) close(fd);
    return im_error(IM_ERR_IO, "cannot sync the upload %s: %s", body, strerror(errno));
  }
  close(fd);
  if (rename(body, path) == 0) return IM_OK;
  if (errno != EXDEV) return im_error(IM_ERR_IO, "cannot move the upload into place: %s", strerror(errno));
  im_track_artifacts_t *a = NULL;
  im_status_t st = im_track_artifacts_open(c->srv->artifact_dir, &a);
  if (!st) st = im_track_artifacts_put_file(a, clean, body);
  im_track_artifacts_free(a);
  return st;
}

static im_status_t proxy_put(srv_ctx_t *c) {
  if (c->srv->dest_s3) return s3_put(c);
  char *p, *clean;
  im_status_t st = proxy_path(c, im_http_req_param(c->req, "*"), 0, &clean, &p);
  if (st) return st;
  const char *body = im_http_req_body_file(c->req); /* the spooled upload */
  struct stat sb;
  char *slash = strrchr(p, '/');
  if (stat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
    st = im__srv_fail(c, SRV_INVALID, "Cannot upload '%.300s': a directory of that name exists.", clean);
  } else {
    *slash = '\0';
    st = im_mkdir_p(p);
    *slash = '/';
    if (st) st = im__srv_fail(c, SRV_INVALID, "Cannot upload '%.300s': %s", clean, im_last_error());
    else if (!im__srv_contained(c->srv, p)) /* a link raced in while the directories were made */
      st = im__srv_fail(c, SRV_INVALID, "Invalid path: it leaves the artifact root");
    else if ((st = move_into_place(c, body, p, clean)))
      st = im__srv_fail(c, SRV_INTERNAL, "Cannot store '%.300s': %s", clean, im_last_error());
    else
      st = im__srv_ok(c, NULL);
  }
  im_free(p);
  im_free(clean);
  return st;
}

/* Removes a file, or a directory with everything in it; links are removed, not followed. */
static int remove_tree(const char *path, int depth) {
  struct stat sb;
  if (lstat(path, &sb) != 0) return errno == ENOENT ? 0 : -1;
  if (!S_ISDIR(sb.st_mode)) return unlink(path) == 0 || errno == ENOENT ? 0 : -1;
  if (depth > 512) return -1;
  DIR *d = opendir(path);
  if (!d) return -1;
  int rc = 0;
  struct dirent *e;
  while (rc == 0 && (e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char *child = im_path_join(path, e->d_name);
    rc = child ? remove_tree(child, depth + 1) : -1;
    im_free(child);
  }
  closedir(d);
  if (rc == 0 && rmdir(path) != 0 && errno != ENOENT) rc = -1;
  return rc;
}

static im_status_t s3_delete(srv_ctx_t *c) {
  char *clean = NULL;
  im_status_t st = s3_rel(c, &clean);
  if (st) return st;
  im_track_artifacts_t *a = NULL;
  st = im_track_artifacts_open(c->srv->dest_s3, &a);
  if (!st) st = im_track_artifacts_delete(a, clean);
  st = st ? im__srv_fail(c, SRV_INTERNAL, "Cannot delete '%.300s': %s", clean, im_last_error()) : im__srv_ok(c, NULL);
  im_track_artifacts_free(a);
  im_free(clean);
  return st;
}

static im_status_t proxy_delete(srv_ctx_t *c) {
  if (c->srv->dest_s3) return s3_delete(c);
  char *p, *clean;
  im_status_t st = proxy_path(c, im_http_req_param(c->req, "*"), 0, &clean, &p);
  if (st) return st;
  if (remove_tree(p, 0) != 0)
    st = im__srv_fail(c, SRV_INTERNAL, "Cannot delete '%.300s': %s", clean, strerror(errno));
  else
    st = im__srv_ok(c, NULL);
  im_free(p);
  im_free(clean);
  return st;
}

im_status_t im__srv_routes_artifacts(im_server_t *s) {
  im_status_t st;
  if ((st = im__srv_add(s, "GET", "mlflow/artifacts/list", run_list, SRV_STORE)) ||
      (st = im__srv_add(s, "GET", "mlflow-artifacts/artifacts", proxy_list, 0)) ||
      (st = im__srv_add(s, "GET", "mlflow-artifacts/artifacts/*", proxy_get, SRV_RAW)) ||
      (st = im__srv_add(s, "PUT", "mlflow-artifacts/artifacts/*", proxy_put, SRV_RAW | SRV_SPOOL)) ||
      (st = im__srv_add(s, "DELETE", "mlflow-artifacts/artifacts/*", proxy_delete, SRV_RAW)))
    return st;
  return IM_OK;
}
