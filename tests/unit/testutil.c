/* Helpers shared by the C unit tests: temporary directories and fixture files. */
#include "testutil.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Strings handed out live until exit; they are kept here so that leak
 * checkers see them freed. */
static char **keep;
static size_t nkeep, capkeep;

static void free_kept(void) {
  for (size_t i = 0; i < nkeep; i++) free(keep[i]);
  free(keep);
  keep = NULL;
  nkeep = capkeep = 0;
}

static char *kept(size_t n) {
  if (nkeep == capkeep) {
    if (!keep) atexit(free_kept);
    capkeep = capkeep ? capkeep * 2 : 64;
    keep = realloc(keep, capkeep * sizeof *keep);
    if (!keep) abort();
  }
  char *p = malloc(n);
  if (!p) abort();
  keep[nkeep++] = p;
  return p;
}

const char *tu_tmpdir(void) {
  const char *base = getenv("IM_TEST_TMP");
  if (!base || !*base) base = "/tmp";
  mkdir(base, 0755);
  size_t n = strlen(base) + 32;
  char *t = kept(n);
  snprintf(t, n, "%s/imt-XXXXXX", base);
  if (!mkdtemp(t)) {
    fprintf(stderr, "tu_tmpdir: mkdtemp(%s): %s\n", t, strerror(errno));
    abort();
  }
  return t;
}

int tu_write_file(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  size_t w = len ? fwrite(data, 1, len, f) : 0;
  int rc = fclose(f);
  return (w == len && rc == 0) ? 0 : -1;
}

const char *tu_path(const char *a, const char *b) {
  size_t n = strlen(a) + strlen(b) + 2;
  char *p = kept(n);
  snprintf(p, n, "%s/%s", a, b);
  return p;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  return remove(path);
}

void tu_rmtree(const char *path) { nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS); }
