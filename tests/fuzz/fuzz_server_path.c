/* libFuzzer target for the tracking server's artifact path checks: the bytes
 * as a client's relative artifact path (im__srv_clean_relpath) and inside
 * mlflow-artifacts:/ and file:// URIs (im__srv_local_dir). Checks that an
 * accepted path never climbs out ("..", ".", absolute, backslash, control
 * characters) and that a mapped URI always lands under an artifact root.
 *
 *   ./fuzz_server_path -max_total_time=30 tests/fuzz/corpus/server_path
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/server_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_clean(const char *p) {
  if (p[0] == '/' || strstr(p, "//") || strchr(p, '\\') || strchr(p, '#')) abort();
  size_t n = strlen(p);
  if (n && p[n - 1] == '/') abort();
  for (const char *s = p; *s;) {
    size_t sl = strcspn(s, "/");
    if (sl == 0 || (sl == 1 && s[0] == '.') || (sl == 2 && s[0] == '.' && s[1] == '.')) abort();
    for (size_t i = 0; i < sl; i++)
      if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) abort();
    s += sl;
    if (*s == '/') s++;
  }
}

static int under(const char *root, const char *path) {
  size_t n = strlen(root);
  return !strncmp(root, path, n) && (path[n] == '\0' || path[n] == '/');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = malloc(size + 1);
  if (!text) return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  char *clean = NULL;
  if (im__srv_clean_relpath(text, &clean) == IM_OK) {
    if (!clean) abort();
    check_clean(clean);
  } else if (clean) {
    abort();
  }
  im_free(clean);

  static char dest[] = "/srv/dest", local[] = "/srv/ws/artifacts";
  im_server_t s;
  memset(&s, 0, sizeof s);
  s.artifact_dir = dest;
  s.local_root = local;
  static const char *const prefixes[] = {"mlflow-artifacts:/", "mlflow-artifacts://host:5000/", "file:///srv/dest/",
                                         "file:///srv/ws/artifacts/", "file://"};
  for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
    size_t pl = strlen(prefixes[i]);
    char *uri = malloc(pl + size + 1);
    if (!uri) break;
    memcpy(uri, prefixes[i], pl);
    memcpy(uri + pl, text, size + 1);
    char *dir = NULL;
    if (im__srv_local_dir(&s, uri, &dir) == IM_OK) {
      if (!dir || !(under(dest, dir) || under(local, dir)) || strstr(dir, "/../") || strstr(dir, "/./")) abort();
    }
    im_free(dir);
    char *pub = im__srv_public_uri(&s, uri);
    im_free(pub);
    free(uri);
  }
  free(text);
  return 0;
}
