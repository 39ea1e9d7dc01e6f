/* Tracking helpers for training and evaluation: opening the workspace store
 * (remote tracking URIs are not supported here yet), experiments by name,
 * the local directory of a run's artifacts, copying a bundle there, and
 * metric keys MLflow accepts. */
#include <ctype.h>
#include <dirent.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "train/train_impl.h"

im_status_t im__train_store_open(const char *home, im_track_store_t **out) {
  *out = NULL;
  if (home && (!strncasecmp(home, "http://", 7) || !strncasecmp(home, "https://", 8) ||
               !strncasecmp(home, "databricks", 10)))
    return im_error(IM_ERR_UNSUPPORTED,
                    "logging to a remote tracking server (%s) is not supported yet; leave out --tracking-uri to log "
                    "into the workspace store ($IMOPS_HOME), or use --no-track",
                    home);
  if (home && !strncasecmp(home, "file://", 7)) home += 7;
  if (home && !strncasecmp(home, "sqlite:///", 10)) home += 9;
  return im_track_open(home && *home ? home : NULL, out);
}

im_status_t im__train_experiment_id(im_track_store_t *s, const char *name, char **id) {
  *id = NULL;
  if (!name || !*name) name = "Default";
  im_track_experiment_t *e = NULL;
  im_status_t st = im_track_experiment_get_by_name(s, name, &e);
  if (st == IM_ERR_NOT_FOUND) {
    st = im_track_experiment_create(s, name, NULL, NULL, 0, id);
    if (st == IM_ERR_EXISTS) st = im_track_experiment_get_by_name(s, name, &e); /* created meanwhile */
    if (st == IM_OK && *id) return IM_OK;
  }
  if (st) return st;
  if (strcmp(e->lifecycle_stage, "active") != 0) {
    im_track_experiment_free(e);
    return im_error(IM_ERR_STATE, "experiment '%s' is deleted; restore it ('imops experiments restore') or pick another name",
                    name);
  }
  *id = im_strdup(e->experiment_id);
  im_track_experiment_free(e);
  return *id ? IM_OK : im_error(IM_ERR_NOMEM, "out of memory");
}

const char *im__train_user(char *buf, size_t n) {
  const char *u = getenv("USER");
  if (!u || !*u) {
    struct passwd *pw = getpwuid(getuid());
    u = pw && pw->pw_name ? pw->pw_name : "unknown";
  }
  snprintf(buf, n, "%s", u);
  return buf;
}

char *im__train_artifact_dir(im_track_store_t *s, const char *run_id, const char *sub) {
  im_track_run_t *run = NULL;
  if (im_track_run_get(s, run_id, &run) != IM_OK) return NULL;
  size_t n = strlen(run->artifact_uri) + strlen(sub) + 2;
  char *uri = im_malloc(n);
  char *dir = NULL;
  if (uri) {
    snprintf(uri, n, "%s/%s", run->artifact_uri, sub);
    im_track_uri_t *u = NULL;
    if (im_track_uri_parse(uri, &u) == IM_OK && u->location && u->is_local) {
      dir = im_strdup(u->location);
    } else {
      im_error(IM_ERR_UNSUPPORTED, "the run's artifact location %s is not a local directory; artifacts were not copied",
               run->artifact_uri);
    }
    im_track_uri_free(u);
  }
  im_free(uri);
  im_track_run_free(run);
  return dir;
}

im_status_t im__train_copy_dir(const char *src_dir, const char *dst_dir) {
  im_status_t st = im_mkdir_p(dst_dir);
  if (st) return st;
  DIR *d = opendir(src_dir);
  if (!d) return im_error(IM_ERR_IO, "cannot read directory %s", src_dir);
  struct dirent *e;
  while (st == IM_OK && (e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char *src = im_path_join(src_dir, e->d_name), *dst = im_path_join(dst_dir, e->d_name);
    struct stat sb;
    if (!src || !dst) {
      st = im_error(IM_ERR_NOMEM, "out of memory");
    } else if (stat(src, &sb) == 0 && S_ISREG(sb.st_mode)) {
      uint8_t *data = NULL;
      size_t len = 0;
      st = im_file_read(src, 0, &data, &len);
      if (st == IM_OK) st = im_file_write_atomic(dst, data, len);
      im_free(data);
    }
    im_free(src);
    im_free(dst);
  }
  closedir(d);
  return st;
}

const char *im__train_metric_key(char *buf, size_t n, const char *prefix, const char *name) {
  snprintf(buf, n, "%s%s", prefix, name);
  for (char *p = buf; *p; p++)
    if (!isalnum((unsigned char)*p) && !strchr("_-. /", *p)) *p = '_';
  return buf;
}
