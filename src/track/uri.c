/* Model URIs: parsing runs:/<run_id>/<path>, models:/<name>/<version|stage|latest>,
 * models:/<name>@<alias>, s3://bucket/key, file:///path and plain paths, and
 * resolving them through the store to a location (a local path or an URI)
 * plus, for the registry forms, the model name, version and run id. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "track/track_impl.h"

#define IM__URI_MAX_DEPTH 4

void im_track_uri_free(im_track_uri_t *u) {
  if (!u) return;
  im_free(u->run_id);
  im_free(u->path);
  im_free(u->name);
  im_free(u->alias);
  im_free(u->stage);
  im_free(u->location);
  im_free(u->source);
  im_free(u);
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* %XX-decodes s (invalid escapes are kept as they are). */
static char *pct_decode(const char *s) {
  char *out = im_malloc(strlen(s) + 1), *o = out;
  if (!out) return NULL;
  for (const char *p = s; *p; p++) {
    int h, l;
    if (*p == '%' && (h = hexval((unsigned char)p[1])) >= 0 && (l = hexval((unsigned char)p[2])) >= 0) {
      char c = (char)(h * 16 + l);
      if (c == '\0') c = '%'; /* never cut the string short */
      *o++ = c;
      p += 2;
    } else {
      *o++ = *p;
    }
  }
  *o = '\0';
  return out;
}

static int has_prefix(const char *s, const char *pre) { return !strncasecmp(s, pre, strlen(pre)); }

/* "scheme:" followed by '/', with a scheme of two or more characters (so a
 * Windows drive letter does not count). */
static int has_scheme(const char *s) {
  if (!isalpha((unsigned char)s[0])) return 0;
  const char *p = s + 1;
  while (isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.') p++;
  return *p == ':' && p - s >= 2 && p[1] == '/';
}

static im_status_t fail(im_track_store_t *s, im_status_t st, const char *fmt, const char *a, const char *b) {
  return im__trk_fail(s, st, NULL, fmt, a, b ? b : "");
}

/* Sets location / is_local for an URI that is not runs:/ or models:/. */
static im_status_t set_location(im_track_store_t *s, im_track_uri_t *u, const char *uri) {
  im_free(u->location);
  u->location = NULL;
  if (has_prefix(uri, "file:")) {
    const char *p = uri + 5;
    if (!strncmp(p, "//", 2)) {
      p += 2;
      if (has_prefix(p, "localhost/"))
        p += 9;
      else if (*p != '/')
        return fail(s, IM_ERR_ARG, "file URI '%s' names a remote host; only local files are supported%s", uri, NULL);
    }
    if (*p != '/') return fail(s, IM_ERR_ARG, "file URI '%s' needs an absolute path (file:///path)%s", uri, NULL);
    u->location = pct_decode(p);
    u->is_local = 1;
  } else if (s && has_prefix(uri, "mlflow-artifacts:")) {
    /* Served by `imops server` from this workspace's artifact folder (its default
     * --artifacts-destination): mlflow-artifacts:/<exp>/<run>/... is <home>/artifacts/<exp>/<run>/... */
    const char *p = uri + strlen("mlflow-artifacts:");
    while (*p == '/') p++;
    if (strstr(p, "..")) return fail(s, IM_ERR_ARG, "artifact URI '%s' leaves the artifact folder%s", uri, NULL);
    char *dec = pct_decode(p);
    if (!dec) return IM__TRK_NOMEM(s);
    size_t n = strlen(s->home) + strlen(dec) + 16;
    u->location = im_malloc(n);
    if (u->location) snprintf(u->location, n, "%s/artifacts/%s", s->home, dec);
    im_free(dec);
    u->is_local = 1;
  } else if (has_scheme(uri)) {
    u->location = im_strdup(uri);
    u->is_local = 0;
  } else {
    u->location = im_strdup(uri);
    u->is_local = 1;
  }
  return u->location ? IM_OK : IM__TRK_NOMEM(s);
}

static im_status_t parse(im_track_store_t *s, const char *uri, im_track_uri_t *u) {
  if (!uri || !*uri) return im__trk_fail(s, IM_ERR_ARG, NULL, "empty model URI");
  if (has_prefix(uri, "runs:")) {
    u->kind = IM_TRACK_URI_RUNS;
    const char *p = uri + 5;
    if (*p != '/') return fail(s, IM_ERR_ARG, "invalid runs URI '%s': expected runs:/<run_id>/<path>%s", uri, NULL);
    while (*p == '/') p++;
    const char *slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (n == 0 || n > 256)
      return fail(s, IM_ERR_ARG, "invalid runs URI '%s': no run id (runs:/<run_id>/<path>)%s", uri, NULL);
    for (size_t i = 0; i < n; i++)
      if (!(isalnum((unsigned char)p[i]) || p[i] == '_' || p[i] == '-'))
        return fail(s, IM_ERR_ARG, "invalid runs URI '%s': bad character in the run id%s", uri, NULL);
    u->run_id = im_strndup(p, n);
    const char *rest = slash ? slash + 1 : "";
    while (*rest == '/') rest++;
    size_t rn = strlen(rest);
    while (rn > 0 && rest[rn - 1] == '/') rn--;
    u->path = im_strndup(rest, rn);
    if (!u->run_id || !u->path) return IM__TRK_NOMEM(s);
    return IM_OK;
  }
  if (has_prefix(uri, "models:")) {
    u->kind = IM_TRACK_URI_MODELS;
    const char *p = uri + 7;
    if (*p != '/')
      return fail(s, IM_ERR_ARG,
                  "invalid models URI '%s': expected models:/<name>/<version> or models:/<name>@<alias>%s", uri, NULL);
    while (*p == '/') p++;
    const char *slash = strchr(p, '/');
    if (slash) {
      const char *spec = slash + 1;
      size_t sn = strlen(spec);
      while (sn > 0 && spec[sn - 1] == '/') sn--;
      if (slash == p || sn == 0 || memchr(spec, '/', sn))
        return fail(
            s, IM_ERR_ARG,
            "invalid models URI '%s': expected models:/<name>/<version|stage|latest> or models:/<name>@<alias>%s", uri,
            NULL);
      if (!(u->name = im_strndup(p, (size_t)(slash - p)))) return IM__TRK_NOMEM(s);
      int digits = sn <= 18;
      for (size_t i = 0; i < sn; i++)
        if (!isdigit((unsigned char)spec[i])) digits = 0;
      if (digits) {
        int64_t v = 0;
        for (size_t i = 0; i < sn; i++) v = v * 10 + (spec[i] - '0');
        if (v < 1) return fail(s, IM_ERR_ARG, "invalid models URI '%s': versions start at 1%s", uri, NULL);
        u->version = v;
        return IM_OK;
      }
      static const char *const stages[] = {"latest", IM_TRACK_STAGE_NONE, IM_TRACK_STAGE_STAGING,
                                           IM_TRACK_STAGE_PRODUCTION, IM_TRACK_STAGE_ARCHIVED};
      for (size_t i = 0; i < sizeof stages / sizeof stages[0]; i++) {
        if (strlen(stages[i]) == sn && !strncasecmp(spec, stages[i], sn)) {
          u->stage = im_strdup(stages[i]);
          return u->stage ? IM_OK : IM__TRK_NOMEM(s);
        }
      }
      return fail(s, IM_ERR_ARG,
                  "invalid models URI '%s': '%s' is not a version number, a stage (None, Staging, Production, "
                  "Archived) or 'latest'",
                  uri, spec);
    }
    const char *at = strrchr(p, '@');
    if (!at || at == p || !at[1])
      return fail(s, IM_ERR_ARG,
                  "invalid models URI '%s': expected models:/<name>/<version|stage|latest> or models:/<name>@<alias>%s",
                  uri, NULL);
    u->name = im_strndup(p, (size_t)(at - p));
    u->alias = im_strdup(at + 1);
    return u->name && u->alias ? IM_OK : IM__TRK_NOMEM(s);
  }
  if (has_prefix(uri, "s3:")) {
    u->kind = IM_TRACK_URI_S3;
    if (strncmp(uri + 3, "//", 2) || !uri[5] || uri[5] == '/')
      return fail(s, IM_ERR_ARG, "invalid S3 URI '%s': expected s3://bucket/key%s", uri, NULL);
    return set_location(s, u, uri);
  }
  if (has_prefix(uri, "file:")) {
    u->kind = IM_TRACK_URI_FILE;
    return set_location(s, u, uri);
  }
  u->kind = has_scheme(uri) ? IM_TRACK_URI_OTHER : IM_TRACK_URI_PATH;
  return set_location(s, u, uri);
}

im_status_t im_track_uri_parse(const char *uri, im_track_uri_t **out) {
  if (!out) return im_error(IM_ERR_ARG, "im_track_uri_parse: out is NULL");
  *out = NULL;
  im_track_uri_t *u = im_calloc(1, sizeof *u);
  if (!u) return im_error(IM_ERR_NOMEM, "out of memory");
  im_status_t r = parse(NULL, uri, u);
  if (r != IM_OK) {
    im_track_uri_free(u);
    return r;
  }
  *out = u;
  return IM_OK;
}

static im_status_t resolve(im_track_store_t *s, const char *uri, im_track_uri_t *u, int depth);

/* The location of <artifact_uri>/<path>. */
static im_status_t resolve_run(im_track_store_t *s, im_track_uri_t *u) {
  im_track_run_t *run = NULL;
  im_status_t r = im_track_run_get(s, u->run_id, &run);
  if (r) return r;
  size_t n = strlen(run->artifact_uri) + strlen(u->path) + 2;
  char *full = im_malloc(n);
  if (!full)
    r = IM__TRK_NOMEM(s);
  else {
    snprintf(full, n, "%s%s%s", run->artifact_uri, *u->path ? "/" : "", u->path);
    r = set_location(s, u, full);
  }
  im_free(full);
  im_track_run_free(run);
  return r;
}

static im_status_t resolve_model(im_track_store_t *s, const char *uri, im_track_uri_t *u, int depth) {
  im_track_model_version_t *v = NULL;
  im_status_t r = IM_OK;
  if (u->alias) {
    r = im_track_model_version_get_by_alias(s, u->name, u->alias, &v);
  } else if (u->version > 0) {
    r = im_track_model_version_get(s, u->name, u->version, &v);
  } else {
    const char *stage = u->stage;
    int latest = !strcmp(stage, "latest");
    im_track_model_version_list_t *l = NULL;
    r = im_track_model_latest_versions(s, u->name, latest ? NULL : &stage, latest ? 0 : 1, &l);
    if (r == IM_OK) {
      int64_t best = -1;
      for (int64_t i = 0; i < l->n; i++)
        if (best < 0 || l->items[i].version > l->items[best].version) best = i;
      if (best < 0) {
        r = latest ? im__trk_fail(s, IM_ERR_NOT_FOUND, NULL, "Registered model %s has no versions", u->name)
                   : im__trk_fail(s, IM_ERR_NOT_FOUND, NULL, "Registered model %s has no version in stage %s", u->name,
                                  stage);
      } else {
        v = im_malloc(sizeof *v);
        if (!v)
          r = IM__TRK_NOMEM(s);
        else {
          *v = l->items[best]; /* take it over */
          memset(&l->items[best], 0, sizeof l->items[best]);
        }
      }
    }
    im_track_model_version_list_free(l);
  }
  if (r) {
    im_track_model_version_free(v);
    return r;
  }
  u->version = v->version;
  u->source = im_strdup(v->source);
  if (!u->source) r = IM__TRK_NOMEM(s);
  if (r == IM_OK && v->run_id && *v->run_id && !u->run_id && !(u->run_id = im_strdup(v->run_id))) r = IM__TRK_NOMEM(s);
  if (r == IM_OK) {
    /* the source may itself be runs:/... (or, rarely, another models:/ URI) */
    im_track_uri_t inner = {0};
    r = resolve(s, v->source, &inner, depth + 1);
    if (r == IM_OK) {
      im_free(u->location);
      u->location = inner.location;
      u->is_local = inner.is_local;
      inner.location = NULL;
      if (!u->run_id && inner.run_id) {
        u->run_id = inner.run_id;
        inner.run_id = NULL;
      }
    } else {
      r = im__trk_fail(s, r, s->errcode, "model %s version %" PRId64 " (from %s): source '%s': %s", u->name, v->version,
                       uri, v->source, s->errmsg);
    }
    im_free(inner.run_id);
    im_free(inner.path);
    im_free(inner.name);
    im_free(inner.alias);
    im_free(inner.stage);
    im_free(inner.location);
    im_free(inner.source);
  }
  im_track_model_version_free(v);
  return r;
}

static im_status_t resolve(im_track_store_t *s, const char *uri, im_track_uri_t *u, int depth) {
  if (depth > IM__URI_MAX_DEPTH)
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "model URI '%s' refers to itself through its sources", uri);
  im_status_t r = parse(s, uri, u);
  if (r) return r;
  if (u->kind == IM_TRACK_URI_RUNS) return resolve_run(s, u);
  if (u->kind == IM_TRACK_URI_MODELS) return resolve_model(s, uri, u, depth);
  return IM_OK;
}

im_status_t im_track_resolve_uri(im_track_store_t *s, const char *uri, im_track_uri_t **out) {
  if (!out) return im_error(IM_ERR_ARG, "im_track_resolve_uri: out is NULL");
  *out = NULL;
  im_track_uri_t *u = im_calloc(1, sizeof *u);
  if (!u) return s ? IM__TRK_NOMEM(s) : im_error(IM_ERR_NOMEM, "out of memory");
  im_status_t r;
  if (!s && uri && (has_prefix(uri, "runs:") || has_prefix(uri, "models:")))
    r = im_error(IM_ERR_ARG, "resolving '%s' needs a store", uri);
  else
    r = resolve(s, uri, u, 0);
  if (r != IM_OK) {
    im_track_uri_free(u);
    return r;
  }
  *out = u;
  return IM_OK;
}
