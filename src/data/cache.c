/* The decoded-image cache: layout, header (de)serialization and the
 * memory-mapped reader. Writing happens in preprocess.c. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data_impl.h"

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
  return v;
}
static uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}
static void putf64(uint8_t *p, double d) {
  uint64_t v;
  memcpy(&v, &d, 8);
  put64(p, v);
}
static double getf64(const uint8_t *p) {
  uint64_t v = get64(p);
  double d;
  memcpy(&d, &v, 8);
  return d;
}

uint64_t im__cache_layout(im__cache_header_t *h) {
  h->labels_off = IM__CACHE_HEADER;
  h->split_off = h->labels_off + 2 * h->n;
  uint64_t p = h->split_off + h->n;
  h->pixels_off = (p + 4095) & ~(uint64_t)4095;
  return h->pixels_off + h->n * (uint64_t)h->size * h->size * h->channels;
}

void im__cache_header_write(const im__cache_header_t *h, uint8_t *b) {
  memset(b, 0, IM__CACHE_HEADER);
  memcpy(b, IM__CACHE_MAGIC, 8);
  put32(b + 8, IM__CACHE_VERSION);
  put32(b + 12, IM__CACHE_HEADER);
  put64(b + 16, h->n);
  put32(b + 24, h->size);
  put32(b + 28, h->channels);
  put32(b + 32, h->n_classes);
  put64(b + 40, h->content_hash);
  put64(b + 48, h->split_hash);
  for (int c = 0; c < 3; c++) {
    putf64(b + 56 + 8 * c, h->mean[c]);
    putf64(b + 80 + 8 * c, h->std[c]);
  }
  put64(b + 104, h->labels_off);
  put64(b + 112, h->split_off);
  put64(b + 120, h->pixels_off);
}

im_status_t im__cache_header_read(const uint8_t *b, uint64_t file_size, const char *path, im__cache_header_t *h) {
  memset(h, 0, sizeof *h);
  if (file_size < IM__CACHE_HEADER || memcmp(b, IM__CACHE_MAGIC, 8) != 0)
    return im_error(IM_ERR_FORMAT, "%s is not an imops cache file; run 'imops preprocess' again", path);
  uint32_t version = get32(b + 8);
  if (version != IM__CACHE_VERSION)
    return im_error(IM_ERR_FORMAT, "%s has cache format version %u, this imops reads version %u; run 'imops preprocess' again",
                    path, version, IM__CACHE_VERSION);
  h->n = get64(b + 16);
  h->size = get32(b + 24);
  h->channels = get32(b + 28);
  h->n_classes = get32(b + 32);
  h->content_hash = get64(b + 40);
  h->split_hash = get64(b + 48);
  for (int c = 0; c < 3; c++) {
    h->mean[c] = getf64(b + 56 + 8 * c);
    h->std[c] = getf64(b + 80 + 8 * c);
  }
  if (h->size == 0 || h->size > 8192 || (h->channels != 1 && h->channels != 3) || h->n > (1ULL << 40) ||
      h->n_classes == 0 || h->n_classes > 65535)
    return im_error(IM_ERR_FORMAT, "%s: cache header is corrupt", path);
  im__cache_header_t expect = *h;
  uint64_t size = im__cache_layout(&expect);
  if (get64(b + 104) != expect.labels_off || get64(b + 112) != expect.split_off || get64(b + 120) != expect.pixels_off ||
      size != file_size)
    return im_error(IM_ERR_FORMAT, "%s: cache file is truncated or corrupt (size %llu, expected %llu)", path,
                    (unsigned long long)file_size, (unsigned long long)size);
  *h = expect;
  return IM_OK;
}

struct im_cache {
  uint8_t *map;
  size_t map_len;
  im__cache_header_t h;
};

im_status_t im_cache_open(const char *path, im_cache_t **out) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return im_error(errno == ENOENT ? IM_ERR_NOT_FOUND : IM_ERR_IO, "cannot open cache %s: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    close(fd);
    return im_error(IM_ERR_IO, "cannot stat %s", path);
  }
  if ((uint64_t)sb.st_size < IM__CACHE_HEADER) {
    close(fd);
    return im_error(IM_ERR_FORMAT, "%s is too short to be an imops cache", path);
  }
  void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (m == MAP_FAILED) return im_error(IM_ERR_IO, "cannot map %s: %s", path, strerror(errno));
  im_cache_t *c = im_calloc(1, sizeof *c);
  if (!c) {
    munmap(m, (size_t)sb.st_size);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  c->map = m;
  c->map_len = (size_t)sb.st_size;
  im_status_t st = im__cache_header_read(c->map, (uint64_t)sb.st_size, path, &c->h);
  if (st == IM_OK) { /* labels and split must be in range */
    for (uint64_t i = 0; i < c->h.n && st == IM_OK; i++) {
      uint16_t l;
      memcpy(&l, c->map + c->h.labels_off + 2 * i, 2);
      uint8_t s = c->map[c->h.split_off + i];
      if (l >= c->h.n_classes || (s > IM_SPLIT_TEST && s != IM__SPLIT_NONE))
        st = im_error(IM_ERR_FORMAT, "%s: label or split of image %llu out of range", path, (unsigned long long)i);
    }
  }
  if (st) {
    im_cache_close(c);
    return st;
  }
  *out = c;
  return IM_OK;
}

void im_cache_close(im_cache_t *c) {
  if (!c) return;
  munmap(c->map, c->map_len);
  im_free(c);
}

void im_cache_get_info(const im_cache_t *c, im_cache_info_t *info) {
  info->n = (int64_t)c->h.n;
  info->size = (int)c->h.size;
  info->channels = (int)c->h.channels;
  info->n_classes = (int)c->h.n_classes;
  info->content_hash = c->h.content_hash;
}

const uint8_t *im_cache_pixels(const im_cache_t *c, int64_t i) {
  return c->map + c->h.pixels_off + (uint64_t)i * c->h.size * c->h.size * c->h.channels;
}

int im_cache_label(const im_cache_t *c, int64_t i) {
  uint16_t l;
  memcpy(&l, c->map + c->h.labels_off + 2 * (uint64_t)i, 2);
  return l;
}

int im_cache_split(const im_cache_t *c, int64_t i) { return c->map[c->h.split_off + (uint64_t)i]; }
