/* Files: whole-file reads with a size cap, atomic writes (temporary file
 * beside the target, fsync, rename, fsync of the directory), mkdir -p. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imops/core.h"

im_status_t im_file_read(const char *path, size_t max_bytes, uint8_t **data, size_t *len) {
  *data = NULL;
  *len = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return im_error(errno == ENOENT ? IM_ERR_NOT_FOUND : IM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
  }
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    close(fd);
    return im_error(IM_ERR_IO, "%s is not a regular file", path);
  }
  if (max_bytes && (uint64_t)sb.st_size > max_bytes) {
    close(fd);
    return im_error(IM_ERR_LIMIT, "%s is %lld bytes, over the limit of %zu", path, (long long)sb.st_size, max_bytes);
  }
  size_t cap = (size_t)sb.st_size + 1, n = 0;
  uint8_t *buf = im_malloc(cap);
  if (!buf) {
    close(fd);
    return im_error(IM_ERR_NOMEM, "out of memory reading %s", path);
  }
  for (;;) {
    if (n + 1 >= cap) { /* the file grew while we read it */
      if (max_bytes && n >= max_bytes) {
        im_free(buf);
        close(fd);
        return im_error(IM_ERR_LIMIT, "%s grew over the limit of %zu bytes", path, max_bytes);
      }
      uint8_t *nb = im_realloc(buf, cap * 2);
      if (!nb) {
        im_free(buf);
        close(fd);
        return im_error(IM_ERR_NOMEM, "out of memory reading %s", path);
      }
      buf = nb;
      cap *= 2;
    }
    ssize_t r = read(fd, buf + n, cap - 1 - n);
    if (r < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      im_free(buf);
      close(fd);
      return im_error(IM_ERR_IO, "cannot read %s: %s", path, strerror(e));
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  close(fd);
  buf[n] = '\0';
  *data = buf;
  *len = n;
  return IM_OK;
}

static int write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

struct im_atomic_file {
  int fd;
  char *path, *tmp;
};

static atomic_uint tmp_counter;

im_status_t im_atomic_file_open(const char *path, im_atomic_file_t **out) {
  *out = NULL;
  im_atomic_file_t *f = im_calloc(1, sizeof *f);
  if (!f) return im_error(IM_ERR_NOMEM, "out of memory");
  const char *slash = strrchr(path, '/');
  size_t dirlen = slash ? (size_t)(slash - path + 1) : 0;
  const char *base = path + dirlen;
  size_t tlen = strlen(path) + 64;
  f->path = im_strdup(path);
  f->tmp = im_malloc(tlen);
  if (!f->path || !f->tmp) {
    im_free(f->path);
    im_free(f->tmp);
    im_free(f);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  /* Hidden, so that folder scans never take it for data. */
  snprintf(f->tmp, tlen, "%.*s.%s.tmp-%ld-%u", (int)dirlen, path, base, (long)getpid(),
           atomic_fetch_add(&tmp_counter, 1));
  f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (f->fd < 0) {
    im_status_t st = im_error(IM_ERR_IO, "cannot create %s: %s", f->tmp, strerror(errno));
    im_free(f->path);
    im_free(f->tmp);
    im_free(f);
    return st;
  }
  *out = f;
  return IM_OK;
}

int im_atomic_file_fd(const im_atomic_file_t *f) { return f->fd; }

static void free_af(im_atomic_file_t *f) {
  im_free(f->path);
  im_free(f->tmp);
  im_free(f);
}

void im_atomic_file_abort(im_atomic_file_t *f) {
  if (!f) return;
  if (f->fd >= 0) close(f->fd);
  unlink(f->tmp);
  free_af(f);
}

static im_status_t commit(im_atomic_file_t *f, int durable) {
  if (durable && fsync(f->fd) != 0) {
    im_status_t st = im_error(IM_ERR_IO, "cannot sync %s: %s", f->tmp, strerror(errno));
    im_atomic_file_abort(f);
    return st;
  }
  if (close(f->fd) != 0) {
    f->fd = -1;
    im_status_t st = im_error(IM_ERR_IO, "cannot close %s: %s", f->tmp, strerror(errno));
    im_atomic_file_abort(f);
    return st;
  }
  f->fd = -1;
  if (rename(f->tmp, f->path) != 0) {
    im_status_t st = im_error(IM_ERR_IO, "cannot rename %s to %s: %s", f->tmp, f->path, strerror(errno));
    im_atomic_file_abort(f);
    return st;
  }
  if (!durable) {
    free_af(f);
    return IM_OK;
  }
  /* Make the rename itself durable. */
  const char *slash = strrchr(f->path, '/');
  char *dir = slash ? im_strndup(f->path, (size_t)(slash - f->path) + (slash == f->path)) : im_strdup(".");
  if (dir) {
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      fsync(dfd);
      close(dfd);
    }
    im_free(dir);
  }
  free_af(f);
  return IM_OK;
}

im_status_t im_atomic_file_commit(im_atomic_file_t *f) { return commit(f, 1); }

im_status_t im_file_write_atomic_ex(const char *path, const void *data, size_t len, int durable) {
  im_atomic_file_t *f;
  im_status_t st = im_atomic_file_open(path, &f);
  if (st) return st;
  if (write_all(f->fd, data, len) != 0) {
    st = im_error(IM_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    im_atomic_file_abort(f);
    return st;
  }
  return commit(f, durable);
}

im_status_t im_file_write_atomic(const char *path, const void *data, size_t len) {
  return im_file_write_atomic_ex(path, data, len, 1);
}

int im_is_dir(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

im_status_t im_mkdir_p(const char *path) {
  char *p = im_strdup(path);
  if (!p) return im_error(IM_ERR_NOMEM, "out of memory");
  size_t n = strlen(p);
  while (n > 1 && p[n - 1] == '/') p[--n] = '\0';
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = '\0';
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
      im_status_t st = im_error(IM_ERR_IO, "cannot create directory %s: %s", p, strerror(errno));
      im_free(p);
      return st;
    }
    *s = '/';
  }
  if (mkdir(p, 0755) != 0 && errno != EEXIST) {
    im_status_t st = im_error(IM_ERR_IO, "cannot create directory %s: %s", p, strerror(errno));
    im_free(p);
    return st;
  }
  int ok = im_is_dir(p);
  im_status_t st = ok ? IM_OK : im_error(IM_ERR_IO, "%s exists and is not a directory", p);
  im_free(p);
  return st;
}

char *im_path_join(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  while (la > 1 && a[la - 1] == '/') la--;
  char *r = im_malloc(la + lb + 2);
  if (!r) return NULL;
  memcpy(r, a, la);
  r[la] = '/';
  memcpy(r + la + 1, b, lb + 1);
  return r;
}
