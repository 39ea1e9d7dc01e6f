/* Step caching and outputs: content hashes of input files and trees, the
 * cache key of a step (command line after substitution, referenced parameter
 * values, imops version, input hashes, upstream keys), and reading a step's
 * declared outputs from its --json stdout or from files it wrote. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imops/version.h"
#include "pipeline/pipeline_impl.h"

#define HASH_SEED_A 0x696d6f7073706970ull /* "imopspip" */
#define HASH_SEED_B 0x63616368656b6579ull /* "cachekey" */
#define MAX_OUTPUT_FILE (1u << 20)
#define MAX_TREE_FILES 5000000

typedef struct {
  char **v;
  size_t n, cap;
} names_t;

static void names_free(names_t *n) {
  for (size_t i = 0; i < n->n; i++) im_free(n->v[i]);
  im_free(n->v);
}

static im_status_t names_add(names_t *n, char *s) {
  if (!s) return im_error(IM_ERR_NOMEM, "out of memory");
  if (n->n == n->cap) {
    size_t cap = n->cap ? n->cap * 2 : 64;
    char **v = im_realloc(n->v, cap * sizeof *v);
    if (!v) {
      im_free(s);
      return im_error(IM_ERR_NOMEM, "out of memory");
    }
    n->v = v, n->cap = cap;
  }
  n->v[n->n++] = s;
  return IM_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Relative paths of the regular files under root/rel, recursively (dot names skipped). */
static im_status_t walk(const char *root, const char *rel, names_t *out, int depth) {
  if (depth > 64) return im_error(IM_ERR_LIMIT, "%s: directories nested too deeply", root);
  char *dir = *rel ? im_path_join(root, rel) : im_strdup(root);
  if (!dir) return im_error(IM_ERR_NOMEM, "out of memory");
  DIR *d = opendir(dir);
  if (!d) {
    im_status_t st = im_error(IM_ERR_IO, "cannot read directory %s: %s", dir, strerror(errno));
    im_free(dir);
    return st;
  }
  im_status_t st = IM_OK;
  struct dirent *e;
  while (!st && (e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char *sub = *rel ? im_path_join(rel, e->d_name) : im_strdup(e->d_name);
    char *full = sub ? im_path_join(root, sub) : NULL;
    struct stat sb;
    if (!sub || !full) st = im_error(IM_ERR_NOMEM, "out of memory");
    else if (stat(full, &sb) != 0) st = IM_OK; /* vanished or a dangling link */
    else if (S_ISDIR(sb.st_mode)) st = walk(root, sub, out, depth + 1);
    else if (S_ISREG(sb.st_mode)) {
      if (out->n >= MAX_TREE_FILES) st = im_error(IM_ERR_LIMIT, "%s: more than %d files", root, MAX_TREE_FILES);
      else st = names_add(out, sub), sub = NULL;
    }
    im_free(sub);
    im_free(full);
  }
  closedir(d);
  im_free(dir);
  return st;
}

static im_status_t hash_file(const char *path, im_hash_t *a, im_hash_t *b) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return im_error(IM_ERR_IO, "cannot read %s: %s", path, strerror(errno));
  static __thread char buf[1 << 16];
  ssize_t r;
  uint64_t total = 0;
  while ((r = read(fd, buf, sizeof buf)) > 0) {
    im_hash_update(a, buf, (size_t)r);
    im_hash_update(b, buf, (size_t)r);
    total += (uint64_t)r;
  }
  int e = errno;
  close(fd);
  if (r < 0) return im_error(IM_ERR_IO, "cannot read %s: %s", path, strerror(e));
  im_hash_update(a, &total, sizeof total);
  im_hash_update(b, &total, sizeof total);
  return IM_OK;
}

static int matches_any(const char *rel, const char *const *globs, int n) {
  const char *base = strrchr(rel, '/');
  base = base ? base + 1 : rel;
  for (int i = 0; i < n; i++)
    if (fnmatch(globs[i], rel, 0) == 0 || fnmatch(globs[i], base, 0) == 0) return 1;
  return 0;
}

static void hex128(const im_hash_t *a, const im_hash_t *b, char hex[33]) {
  snprintf(hex, 33, "%016llx%016llx", (unsigned long long)im_hash_final(a), (unsigned long long)im_hash_final(b));
}

im_status_t im_pipeline_hash_path(const char *path, const char *const *include, int n_include,
                                  const char *const *exclude, int n_exclude, char hex[33]) {
  hex[0] = '\0';
  struct stat sb;
  if (stat(path, &sb) != 0) return im_error(IM_ERR_NOT_FOUND, "input %s: %s", path, strerror(errno));
  im_hash_t a, b;
  im_hash_init(&a, HASH_SEED_A);
  im_hash_init(&b, HASH_SEED_B);
  if (!S_ISDIR(sb.st_mode)) {
    im_status_t st = hash_file(path, &a, &b);
    if (!st) hex128(&a, &b, hex);
    return st;
  }
  names_t files = {0};
  im_status_t st = walk(path, "", &files, 0);
  if (!st) qsort(files.v, files.n, sizeof *files.v, cmp_str);
  for (size_t i = 0; i < files.n && !st; i++) {
    const char *rel = files.v[i];
    if (n_include && !matches_any(rel, include, n_include)) continue;
    if (n_exclude && matches_any(rel, exclude, n_exclude)) continue;
    im_hash_update(&a, rel, strlen(rel) + 1);
    im_hash_update(&b, rel, strlen(rel) + 1);
    char *full = im_path_join(path, rel);
    st = full ? hash_file(full, &a, &b) : im_error(IM_ERR_NOMEM, "out of memory");
    im_free(full);
  }
  names_free(&files);
  if (!st) hex128(&a, &b, hex);
  return st;
}

static char *dumps_dup(const json_t *j, size_t flags) {
  char *s = json_dumps(j, flags);
  char *d = s ? im_strdup(s) : NULL;
  free(s);
  return d;
}

im_status_t im_pipeline_step_cache_key(const im_pipeline_t *p, int i, const char *params_json,
                                       const char *outputs_json, const char *const *dep_keys, char key[33],
                                       char **details_json) {
  key[0] = '\0';
  if (details_json) *details_json = NULL;
  const im__pstep_t *s = &p->steps[i];
  json_t *pj = im__json_obj(params_json), *oj = pj ? im__json_obj(outputs_json) : NULL;
  if (!pj || !oj) {
    json_decref(pj);
    return IM_ERR_ARG;
  }
  json_t *d = json_object(), *argv = json_array(), *params = json_object(), *inputs = json_object(), *deps = json_array();
  im_status_t st = d && argv && params && inputs && deps ? IM_OK : im_error(IM_ERR_NOMEM, "out of memory");
  for (int k = 0; k < s->n_args && !st; k++) {
    char *a = NULL;
    if (!(st = im__tmpl_render(&s->args[k], pj, oj, &a))) json_array_append_new(argv, json_string(a));
    im_free(a);
  }
  for (int k = 0; k < s->n_refs_params && !st; k++) {
    json_t *v = json_object_get(pj, s->refs_params[k]);
    if (v) json_object_set(params, s->refs_params[k], v);
  }
  for (int k = 0; k < s->n_inputs && !st; k++) {
    const im__pinput_t *in = &s->inputs[k];
    char *path = NULL;
    char hex[33];
    if ((st = im__tmpl_render(&in->path, pj, oj, &path))) break;
    st = im_pipeline_hash_path(path, (const char *const *)in->include, in->n_include, (const char *const *)in->exclude,
                               in->n_exclude, hex);
    if (!st) json_object_set_new(inputs, path, json_string(hex));
    im_free(path);
  }
  for (int k = 0; k < s->n_deps && !st; k++)
    json_array_append_new(deps, json_string(dep_keys && dep_keys[k] ? dep_keys[k] : ""));
  if (!st) {
    json_object_set_new(d, "version", json_string(IM_VERSION_STRING));
    json_object_set(d, "argv", argv);
    json_object_set(d, "params", params);
    json_object_set(d, "inputs", inputs);
    json_object_set(d, "deps", deps);
    char *text = dumps_dup(d, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text) st = im_error(IM_ERR_NOMEM, "out of memory");
    else {
      char hex[33];
      im_hash_t a, b;
      im_hash_init(&a, HASH_SEED_A);
      im_hash_init(&b, HASH_SEED_B);
      im_hash_update(&a, text, strlen(text));
      im_hash_update(&b, text, strlen(text));
      hex128(&a, &b, hex);
      memcpy(key, hex, 33);
      if (details_json) *details_json = text;
      else im_free(text);
    }
  }
  json_decref(argv);
  json_decref(params);
  json_decref(inputs);
  json_decref(deps);
  json_decref(d);
  json_decref(pj);
  json_decref(oj);
  return st;
}

/* ---- outputs ------------------------------------------------------------------------------ */
/* The JSON document at the end of a command's stdout. */
static json_t *trailing_json(const char *text, size_t len) {
  json_t *j = json_loadb(text, len, 0, NULL);
  if (j) return j;
  for (size_t i = len; i-- > 0;) {
    if (text[i] == '{' && (i == 0 || text[i - 1] == '\n')) {
      if ((j = json_loadb(text + i, len - i, 0, NULL))) return j;
    }
  }
  return NULL;
}

static im_status_t lookup(const json_t *j, const char *key, const char *where, char **value) {
  const json_t *cur = j;
  const char *p = key;
  while (cur && *p) {
    const char *dot = strchr(p, '.');
    size_t n = dot ? (size_t)(dot - p) : strlen(p);
    char part[256];
    snprintf(part, sizeof part, "%.*s", (int)(n < sizeof part ? n : sizeof part - 1), p);
    if (json_is_array(cur)) {
      char *end;
      long idx = strtol(part, &end, 10);
      cur = *part && !*end && idx >= 0 ? json_array_get(cur, (size_t)idx) : NULL;
    } else {
      cur = json_object_get(cur, part);
    }
    p += n;
    if (*p == '.') p++;
  }
  if (!cur || json_is_null(cur)) return im_error(IM_ERR_NOT_FOUND, "%s has no key '%s'", where, key);
  char *s = json_is_string(cur) ? im_strdup(json_string_value(cur)) : dumps_dup(cur, JSON_COMPACT | JSON_ENCODE_ANY);
  if (!s) return im_error(IM_ERR_NOMEM, "out of memory");
  *value = s;
  return IM_OK;
}

im_status_t im_pipeline_read_output(const char *stdout_text, size_t len, const char *json_key, const char *file,
                                    char **value) {
  *value = NULL;
  if (file) {
    uint8_t *data = NULL;
    size_t n = 0;
    im_status_t st = im_file_read(file, MAX_OUTPUT_FILE, &data, &n);
    if (st) return st;
    if (json_key) {
      json_t *j = json_loadb((const char *)data, n, 0, NULL);
      im_free(data);
      if (!j) return im_error(IM_ERR_FORMAT, "output file %s is not JSON", file);
      st = lookup(j, json_key, file, value);
      json_decref(j);
      return st;
    }
    while (n && (data[n - 1] == '\n' || data[n - 1] == '\r')) n--;
    *value = im_strndup((const char *)data, n);
    im_free(data);
    return *value ? IM_OK : im_error(IM_ERR_NOMEM, "out of memory");
  }
  if (!json_key) return im_error(IM_ERR_ARG, "an output needs a JSON key or a file");
  json_t *j = trailing_json(stdout_text ? stdout_text : "", stdout_text ? len : 0);
  if (!j) return im_error(IM_ERR_FORMAT, "the step printed no JSON on stdout to read '%s' from (is --json in its args?)",
                          json_key);
  im_status_t st = lookup(j, json_key, "the step's JSON output", value);
  json_decref(j);
  return st;
}
