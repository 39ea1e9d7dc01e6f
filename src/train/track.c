/* Tracking helpers for training and evaluation: opening the tracking client
 * (embedded store or REST, src/track), logging generated files as run
 * artifacts wherever the run's artifact URI points, the user name, and
 * metric keys MLflow accepts. */
#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "train/train_impl.h"

im_status_t im__train_store_open(const char *uri, im_track_client_t **out) { return im_track_client_open(uri, out); }

const char *im__train_user(char *buf, size_t n) {
  const char *u = getenv("USER");
  if (!u || !*u) {
    struct passwd *pw = getpwuid(getuid());
    u = pw && pw->pw_name ? pw->pw_name : "unknown";
  }
  snprintf(buf, n, "%s", u);
  return buf;
}

im_status_t im__train_log_bytes(im_track_client_t *c, const char *run_id, const char *artifact_path,
                                const void *data, size_t len) {
  char tmpl[] = "/tmp/imops-artifact-XXXXXX";
  if (!mkdtemp(tmpl)) return im_error(IM_ERR_IO, "cannot make a temporary directory: %s", strerror(errno));
  const char *base = strrchr(artifact_path, '/');
  char *path = im_path_join(tmpl, base ? base + 1 : artifact_path);
  im_status_t st = path ? im_file_write_atomic_ex(path, data, len, 0) : im_error(IM_ERR_NOMEM, "out of memory");
  if (!st) st = im_track_client_log_artifacts(c, run_id, path, artifact_path);
  if (path) unlink(path);
  rmdir(tmpl);
  im_free(path);
  return st;
}

const char *im__train_metric_key(char *buf, size_t n, const char *prefix, const char *name) {
  snprintf(buf, n, "%s%s", prefix, name);
  for (char *p = buf; *p; p++)
    if (!isalnum((unsigned char)*p) && !strchr("_-. /", *p)) *p = '_';
  return buf;
}
