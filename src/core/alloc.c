/* The allocation funnel: every library allocation passes here, so live bytes
 * can be reported and tests can make the Nth allocation fail. A 16-byte
 * header in front of each block records its size. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "imops/core.h"

#define IM__HDR 16

static atomic_llong live_bytes;
static atomic_llong fail_countdown;

static int should_fail(void) {
  long long c = atomic_load(&fail_countdown);
  while (c > 0) {
    if (atomic_compare_exchange_weak(&fail_countdown, &c, c - 1)) return c == 1;
  }
  return 0;
}

void *im_malloc(size_t n) {
  if (n > SIZE_MAX - IM__HDR || should_fail()) return NULL;
  unsigned char *p = malloc(n + IM__HDR);
  if (!p) return NULL;
  memcpy(p, &n, sizeof n);
  atomic_fetch_add(&live_bytes, (long long)n);
  return p + IM__HDR;
}

void *im_calloc(size_t count, size_t size) {
  if (size && count > SIZE_MAX / size) return NULL;
  void *p = im_malloc(count * size);
  if (p) memset(p, 0, count * size);
  return p;
}

void *im_realloc(void *p, size_t n) {
  if (!p) return im_malloc(n);
  if (n > SIZE_MAX - IM__HDR || should_fail()) return NULL;
  unsigned char *base = (unsigned char *)p - IM__HDR;
  size_t old;
  memcpy(&old, base, sizeof old);
  unsigned char *q = realloc(base, n + IM__HDR);
  if (!q) return NULL;
  memcpy(q, &n, sizeof n);
  atomic_fetch_add(&live_bytes, (long long)n - (long long)old);
  return q + IM__HDR;
}

void im_free(void *p) {
  if (!p) return;
  unsigned char *base = (unsigned char *)p - IM__HDR;
  size_t n;
  memcpy(&n, base, sizeof n);
  atomic_fetch_sub(&live_bytes, (long long)n);
  free(base);
}

char *im_strndup(const char *s, size_t n) {
  size_t len = strnlen(s, n);
  char *d = im_malloc(len + 1);
  if (!d) return NULL;
  memcpy(d, s, len);
  d[len] = '\0';
  return d;
}

char *im_strdup(const char *s) { return s ? im_strndup(s, strlen(s)) : NULL; }

int64_t im_alloc_live_bytes(void) { return atomic_load(&live_bytes); }

void im_alloc_fail_after(int64_t countdown) { atomic_store(&fail_countdown, countdown); }
