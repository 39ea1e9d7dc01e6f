/* Tensors: dtype sizes, shape checks, owned (64-byte aligned) and view
 * tensors, copies and fills. The data is always dense row-major. */
#include <stdatomic.h>
#include <string.h>

#include "imops/tensor.h"
#include "tensor/tensor_impl.h"

size_t im_dtype_size(im_dtype_t dt) {
  switch (dt) {
    case IM_F32: return 4;
    case IM_U8: return 1;
    case IM_I32: return 4;
  }
  return 0;
}

const char *im_dtype_name(im_dtype_t dt) {
  switch (dt) {
    case IM_F32: return "F32";
    case IM_U8: return "U8";
    case IM_I32: return "I32";
  }
  return "?";
}

_Static_assert(sizeof(size_t) >= 8, "imops needs a 64-bit size_t");

int64_t im_tensor_numel(const im_tensor_t *t) {
  /* A zero anywhere makes the product 0 even when the other sizes would overflow. */
  for (int i = 0; i < t->ndim; i++)
    if (t->shape[i] == 0) return 0;
  uint64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= (uint64_t)t->shape[i];
  return (int64_t)n;
}

size_t im_tensor_nbytes(const im_tensor_t *t) { return (size_t)im_tensor_numel(t) * im_dtype_size(t->dtype); }

im_status_t im_tensor_check_shape(im_dtype_t dt, int ndim, const int64_t *shape) {
  size_t es = im_dtype_size(dt);
  if (!es) return im_error(IM_ERR_ARG, "unknown dtype %d", (int)dt);
  if (ndim < 0 || ndim > IM_TENSOR_MAX_DIMS)
    return im_error(IM_ERR_ARG, "%d dimensions (at most %d)", ndim, IM_TENSOR_MAX_DIMS);
  if (ndim > 0 && !shape) return im_error(IM_ERR_ARG, "no shape given");
  uint64_t bytes = es;
  int zero = 0;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return im_error(IM_ERR_ARG, "dimension %d is negative (%lld)", i, (long long)shape[i]);
    if (shape[i] == 0) zero = 1;
  }
  if (zero) return IM_OK;
  for (int i = 0; i < ndim; i++) {
    if ((uint64_t)shape[i] > IM__TENSOR_MAX_BYTES / bytes)
      return im_error(IM_ERR_ARG, "tensor too large (dimension %d is %lld)", i, (long long)shape[i]);
    bytes *= (uint64_t)shape[i];
  }
  return IM_OK;
}

static void set_shape(im_tensor_t *t, im_dtype_t dt, int ndim, const int64_t *shape) {
  memset(t, 0, sizeof *t);
  t->dtype = dt;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
}

void *im__aligned_alloc(size_t n, void **base) {
  /* im_malloc aligns to 16; over-allocate and round up. */
  if (n > SIZE_MAX - IM_TENSOR_ALIGN) return NULL;
  unsigned char *b = im_malloc(n + IM_TENSOR_ALIGN);
  if (!b) return NULL;
  uintptr_t p = ((uintptr_t)b + IM_TENSOR_ALIGN - 1) & ~(uintptr_t)(IM_TENSOR_ALIGN - 1);
  *base = b;
  return b + (p - (uintptr_t)b);
}

im_status_t im_tensor_alloc(im_tensor_t *t, im_dtype_t dt, int ndim, const int64_t *shape) {
  memset(t, 0, sizeof *t);
  im_status_t st = im_tensor_check_shape(dt, ndim, shape);
  if (st != IM_OK) return st;
  set_shape(t, dt, ndim, shape);
  size_t n = im_tensor_nbytes(t);
  void *base;
  void *p = im__aligned_alloc(n, &base);
  if (!p) {
    memset(t, 0, sizeof *t);
    return im_error(IM_ERR_NOMEM, "out of memory allocating a tensor of %zu bytes", n);
  }
  memset(p, 0, n);
  t->data = p;
  t->owned = base;
  return IM_OK;
}

im_status_t im_tensor_view(im_tensor_t *t, im_dtype_t dt, int ndim, const int64_t *shape, void *data) {
  memset(t, 0, sizeof *t);
  im_status_t st = im_tensor_check_shape(dt, ndim, shape);
  if (st != IM_OK) return st;
  set_shape(t, dt, ndim, shape);
  t->data = data;
  return IM_OK;
}

im_status_t im_tensor_reshape(const im_tensor_t *src, int ndim, const int64_t *shape, im_tensor_t *view) {
  if (src->layout != IM_LAYOUT_PLAIN) return im_error(IM_ERR_ARG, "reshape of a blocked-layout tensor");
  im_tensor_t v;
  im_status_t st = im_tensor_view(&v, src->dtype, ndim, shape, src->data);
  if (st != IM_OK) return st;
  if (im_tensor_numel(&v) != im_tensor_numel(src))
    return im_error(IM_ERR_ARG, "reshape from %lld to %lld elements", (long long)im_tensor_numel(src),
                    (long long)im_tensor_numel(&v));
  *view = v;
  return IM_OK;
}

void im_tensor_free(im_tensor_t *t) {
  if (!t) return;
  im_free(t->owned);
  memset(t, 0, sizeof *t);
}

int im_tensor_same_shape(const im_tensor_t *a, const im_tensor_t *b) {
  if (a->dtype != b->dtype || a->ndim != b->ndim) return 0;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return 0;
  return 1;
}

im_status_t im_tensor_copy(im_tensor_t *dst, const im_tensor_t *src) {
  if (dst->dtype != src->dtype || im_tensor_numel(dst) != im_tensor_numel(src))
    return im_error(IM_ERR_ARG, "copy between tensors of different dtype or size (%s %lld, %s %lld)",
                    im_dtype_name(dst->dtype), (long long)im_tensor_numel(dst), im_dtype_name(src->dtype),
                    (long long)im_tensor_numel(src));
  if (dst->layout != src->layout ||
      (src->layout != IM_LAYOUT_PLAIN && !im_tensor_same_shape(dst, src)))
    return im_error(IM_ERR_ARG, "copy between tensors of different layouts or blocked shapes");
  size_t n = im_tensor_nbytes(src);
  if (n && dst->data != src->data) memmove(dst->data, src->data, n);
  return IM_OK;
}

void im_tensor_zero(im_tensor_t *t) {
  size_t n = im_tensor_nbytes(t);
  if (n && t->data) memset(t->data, 0, n);
}

void im_tensor_fill_f32(im_tensor_t *t, float v) {
  if (t->dtype != IM_F32 || !t->data) return;
  float *p = t->data;
  int64_t n = im_tensor_numel(t);
  for (int64_t i = 0; i < n; i++) p[i] = v;
}

uint64_t im_tensor_stamp_new(void) {
  static atomic_uint_fast64_t next = 1;
  return (uint64_t)atomic_fetch_add(&next, 1);
}
