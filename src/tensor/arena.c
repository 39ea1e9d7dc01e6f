/* Arenas: one reserved, 64-byte aligned block handed out by bumping an
 * offset; reset and rewind are O(1). A measuring arena (capacity 0) hands out
 * no memory and records the peak, so a step's allocation sequence can be run
 * once to plan and then again against exactly that much memory. */
#include <string.h>

#include "imops/tensor.h"
#include "tensor/tensor_impl.h"

struct im_arena {
  unsigned char *block; /* aligned start; NULL when measuring */
  void *base;           /* what to im_free */
  size_t capacity;      /* 0: measuring */
  size_t used, peak;
};

static size_t round_up(size_t n) { return (n + IM_TENSOR_ALIGN - 1) & ~(size_t)(IM_TENSOR_ALIGN - 1); }

im_status_t im_arena_new(size_t capacity, im_arena_t **out) {
  *out = NULL;
  im_arena_t *a = im_calloc(1, sizeof *a);
  if (!a) return im_error(IM_ERR_NOMEM, "out of memory");
  if (capacity) {
    im_status_t st = im_arena_reserve(a, capacity);
    if (st != IM_OK) {
      im_free(a);
      return st;
    }
  }
  *out = a;
  return IM_OK;
}

void im_arena_free(im_arena_t *a) {
  if (!a) return;
  im_free(a->base);
  im_free(a);
}

im_status_t im_arena_reserve(im_arena_t *a, size_t capacity) {
  if (capacity == 0) capacity = IM_TENSOR_ALIGN; /* a plan that allocated nothing */
  if (capacity > IM__TENSOR_MAX_BYTES) return im_error(IM_ERR_LIMIT, "arena of %zu bytes is too large", capacity);
  capacity = round_up(capacity);
  if (a->block && a->capacity == capacity) {
    im_arena_reset(a);
    a->peak = 0;
    return IM_OK;
  }
  void *base;
  unsigned char *block = im__aligned_alloc(capacity, &base);
  if (!block) return im_error(IM_ERR_NOMEM, "out of memory reserving an arena of %zu bytes", capacity);
  im_free(a->base);
  a->block = block;
  a->base = base;
  a->capacity = capacity;
  a->used = a->peak = 0;
  return IM_OK;
}

im_status_t im_arena_alloc(im_arena_t *a, size_t nbytes, void **p) {
  *p = NULL;
  if (nbytes > IM__TENSOR_MAX_BYTES) return im_error(IM_ERR_LIMIT, "arena allocation of %zu bytes", nbytes);
  size_t n = round_up(nbytes);
  if (a->block) {
    if (n > a->capacity - a->used)
      return im_error(IM_ERR_LIMIT, "arena full: %zu of %zu bytes used, %zu more asked", a->used, a->capacity, n);
    *p = a->block + a->used;
  } else if (n > IM__TENSOR_MAX_BYTES - a->used) {
    return im_error(IM_ERR_LIMIT, "measured arena grows past %llu bytes", (unsigned long long)IM__TENSOR_MAX_BYTES);
  }
  a->used += n;
  if (a->used > a->peak) a->peak = a->used;
  return IM_OK;
}

im_status_t im_tensor_arena(im_arena_t *a, im_tensor_t *t, im_dtype_t dt, int ndim, const int64_t *shape) {
  memset(t, 0, sizeof *t);
  im_tensor_t v;
  im_status_t st = im_tensor_view(&v, dt, ndim, shape, NULL);
  if (st != IM_OK) return st;
  void *p;
  st = im_arena_alloc(a, im_tensor_nbytes(&v), &p);
  if (st != IM_OK) return st;
  v.data = p;
  *t = v;
  return IM_OK;
}

void im_arena_reset(im_arena_t *a) { a->used = 0; }

size_t im_arena_mark(const im_arena_t *a) { return a->used; }

void im_arena_rewind(im_arena_t *a, size_t mark) {
  if (mark < a->used) a->used = mark;
}

size_t im_arena_used(const im_arena_t *a) { return a->used; }
size_t im_arena_peak(const im_arena_t *a) { return a->peak; }
size_t im_arena_capacity(const im_arena_t *a) { return a->capacity; }
int im_arena_is_measuring(const im_arena_t *a) { return a->block == NULL; }
