/* Tensors, arenas and tensor files (safetensors).
 *
 * A tensor is a small value struct: dtype, shape and a pointer to dense
 * row-major data (the last dimension varies fastest). Image batches are 4-d
 * [N, C, H, W] (NCHW) unless an op says otherwise; a backend may keep its own
 * blocked layouts internally, but what crosses this API is always row-major.
 * The data is either owned (im_tensor_alloc, freed by im_tensor_free) or a
 * view (im_tensor_view, im_tensor_arena, im_safetensors_get) into memory that
 * someone else owns.
 *
 *   im_tensor_t x;
 *   im_tensor_alloc(&x, IM_F32, 4, (int64_t[]){64, 3, 112, 112});
 *   float *p = im_tensor_f32(&x);
 *   im_tensor_free(&x);
 *
 * Arenas hold a training step's activations and gradients: planned once per
 * model and batch size, reset every step, never malloc'd in the hot loop.
 *
 *   im_arena_t *a;
 *   im_arena_new(0, &a);                 // capacity 0: a measuring arena
 *   build_step(a);                       // every alloc only counts bytes
 *   im_arena_reserve(a, im_arena_peak(a)); // now allocate exactly that
 *   build_step(a);                       // same sequence, real pointers
 *
 * None of these objects is thread-safe; use one per thread or lock.
 */
#ifndef IMOPS_TENSOR_H
#define IMOPS_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "imops/core.h"
#include "imops/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- dtypes ---------------------------------------------------------------- */
/** Element types. Append-only: the numbers may be stored. */
typedef enum {
  IM_F32 = 0, /* float32: activations, weights, gradients */
  IM_U8 = 1,  /* uint8: image inputs, dropout masks */
  IM_I32 = 2, /* int32: labels, max-pool argmax indices */
} im_dtype_t;

/** Bytes per element (4, 1, 4), or 0 for an unknown dtype. */
size_t im_dtype_size(im_dtype_t dt);
/** The safetensors spelling: "F32", "U8", "I32"; "?" for an unknown dtype. Static storage. */
const char *im_dtype_name(im_dtype_t dt);

/* ---- tensors --------------------------------------------------------------- */
#define IM_TENSOR_MAX_DIMS 6
/** Byte alignment of every buffer this module allocates (owned tensors, arenas). */
#define IM_TENSOR_ALIGN 64

/** How a tensor's elements are laid out in memory. The shape is always the
 * logical one ([N,C,H,W] for images); only the order of the elements differs. */
typedef enum {
  IM_LAYOUT_PLAIN = 0,   /* dense row-major in the order of the shape (NCHW for images) */
  IM_LAYOUT_NCHW16C = 1, /* a 4-D F32 [N,C,H,W] with C a multiple of 16, stored as [N][C/16][H][W][16]
                          * (the blocked layout of oneDNN's fastest CPU kernels; same byte size).
                          * Only backends that say so take it (im_backend_blocked_ok), and only in
                          * the ops whose documentation in backend.h says so. */
  IM_LAYOUT_NHWC = 2,    /* a 4-D F32 [N,C,H,W] stored channels-last, as [N][H][W][C] (any C): the same
                          * bytes as a plain [N,H,W,C] tensor. Taken where IM_LAYOUT_NCHW16C is, in
                          * the ops whose documentation in backend.h says so. */
} im_layout_t;

typedef struct {
  im_dtype_t dtype;
  int ndim;                           /* 0..IM_TENSOR_MAX_DIMS; 0 is a scalar (one element) */
  int64_t shape[IM_TENSOR_MAX_DIMS];  /* sizes, >= 0; entries past ndim are 0 */
  void *data;                         /* dense, in the order layout says; NULL only when empty or measured */
  void *owned;                        /* the allocation to free when owned, else NULL */
  im_layout_t layout;                 /* IM_LAYOUT_PLAIN unless set after creation */
  uint64_t stamp;                     /* 0: no promise. Else a value from im_tensor_stamp_new that its owner
                                       * sets on data that stays unchanged until the owner drops or renews
                                       * the stamp: backends may then keep data derived from it (weights
                                       * reordered for a kernel) keyed by (data, stamp). */
} im_tensor_t;

/** A fresh nonzero stamp (see im_tensor_t.stamp); thread-safe, never repeats within a process. */
uint64_t im_tensor_stamp_new(void);

/** Element count (product of the shape; 1 for ndim 0, 0 when any size is 0).
 * Meaningful for shapes that pass im_tensor_check_shape. */
int64_t im_tensor_numel(const im_tensor_t *t);
/** numel * dtype size. */
size_t im_tensor_nbytes(const im_tensor_t *t);
/** The data as float* (the caller checks dtype). */
static inline float *im_tensor_f32(const im_tensor_t *t) { return (float *)t->data; }

/** Checks dtype, ndim (0..6) and sizes (>= 0, total bytes fit in size_t and
 * int64). Returns IM_OK or IM_ERR_ARG with a message. */
im_status_t im_tensor_check_shape(im_dtype_t dt, int ndim, const int64_t *shape);

/** Allocates an owned tensor of zeros (64-byte aligned, through im_malloc).
 * On failure *t is left empty (all zero). Free with im_tensor_free. */
IM_NODISCARD im_status_t im_tensor_alloc(im_tensor_t *t, im_dtype_t dt, int ndim, const int64_t *shape);
/** Makes *t a view of caller-owned data (no copy, nothing to free). */
im_status_t im_tensor_view(im_tensor_t *t, im_dtype_t dt, int ndim, const int64_t *shape, void *data);
/** A view of src's data with another shape of the same element count (src must be plain). */
im_status_t im_tensor_reshape(const im_tensor_t *src, int ndim, const int64_t *shape, im_tensor_t *view);
/** Frees owned data and clears *t. A view is only cleared. NULL is a no-op. */
void im_tensor_free(im_tensor_t *t);

/** 1 if a and b have the same dtype and shape. */
int im_tensor_same_shape(const im_tensor_t *a, const im_tensor_t *b);
/** Copies src's elements into dst (same dtype, numel and layout; shapes may differ when plain). */
im_status_t im_tensor_copy(im_tensor_t *dst, const im_tensor_t *src);
/** Sets every element to zero. */
void im_tensor_zero(im_tensor_t *t);
/** Sets every element of an F32 tensor to v. */
void im_tensor_fill_f32(im_tensor_t *t, float v);

/* ---- arenas ----------------------------------------------------------------- */
/** A bump allocator over one reserved block: 64-byte aligned allocations,
 * no individual frees, reset (or rewind to a mark) in O(1). A measuring arena
 * (capacity 0) hands out no memory and only records how much would be used. */
typedef struct im_arena im_arena_t;

/** capacity > 0: reserves that many bytes now (the only allocation the arena
 * makes until the next im_arena_reserve). capacity 0: a measuring arena. */
IM_NODISCARD im_status_t im_arena_new(size_t capacity, im_arena_t **out);
/** Frees the block and the arena. NULL is a no-op. */
void im_arena_free(im_arena_t *a);
/** Makes a a real arena of capacity bytes (rounded up to 64; 0 counts as 64),
 * re-reserving if it was measuring or of another size, and resets it and its
 * peak. Pointers handed out before are invalid afterwards. On failure the
 * arena is unchanged. */
IM_NODISCARD im_status_t im_arena_reserve(im_arena_t *a, size_t capacity);
/** Hands out nbytes (rounded up to 64) aligned to 64. Measuring arenas set *p
 * to NULL and count. Returns IM_ERR_LIMIT when the block is full (then *p is
 * NULL and nothing changes). nbytes 0 gives a pointer to no usable bytes
 * (possibly equal to the next allocation's). */
im_status_t im_arena_alloc(im_arena_t *a, size_t nbytes, void **p);
/** Makes *t a view of arena memory for dtype and shape. The contents are not
 * cleared (whatever the last step left). In a measuring arena t->data is NULL. */
im_status_t im_tensor_arena(im_arena_t *a, im_tensor_t *t, im_dtype_t dt, int ndim, const int64_t *shape);
/** Forgets every allocation (the block stays reserved). The peak stays. */
void im_arena_reset(im_arena_t *a);
/** The current fill level, to rewind to later with im_arena_rewind (scoped scratch). */
size_t im_arena_mark(const im_arena_t *a);
/** Forgets every allocation made after mark. */
void im_arena_rewind(im_arena_t *a, size_t mark);
/** Bytes in use now, the most ever in use since creation or reserve, and the
 * reserved capacity (0 for a measuring arena). */
size_t im_arena_used(const im_arena_t *a);
size_t im_arena_peak(const im_arena_t *a);
size_t im_arena_capacity(const im_arena_t *a);
/** 1 for a measuring arena. */
int im_arena_is_measuring(const im_arena_t *a);

/* ---- safetensors files -------------------------------------------------------
 * The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian
 * header length N, N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "value", ...}}
 * then the data; offsets are relative to the data's start. The reader is
 * strict: offsets must tile the data exactly (sorted by begin they start at 0,
 * touch, and end at the file's end), each tensor's byte size must match its
 * dtype and shape, the header must be one JSON object with no duplicate or
 * unknown keys, and dtypes other than F32, U8 and I32 are IM_ERR_UNSUPPORTED.
 * Other malformed input is IM_ERR_FORMAT. */
typedef struct im_safetensors im_safetensors_t;

/** Reads and validates path (at most max_bytes, 0: no limit). */
IM_NODISCARD im_status_t im_safetensors_load(const char *path, size_t max_bytes, im_safetensors_t **out);
/** Validates an in-memory file; the bytes are copied, the caller keeps its buffer. */
IM_NODISCARD im_status_t im_safetensors_parse(const void *data, size_t len, im_safetensors_t **out);
/** Frees a loaded file; views obtained from it become invalid. NULL is a no-op. */
void im_safetensors_free(im_safetensors_t *s);
/** Number of tensors, and the name of the i-th (in header order), owned by s. */
size_t im_safetensors_count(const im_safetensors_t *s);
const char *im_safetensors_name(const im_safetensors_t *s, size_t i);
/** A view of the named tensor (aligned for its dtype; valid until s is freed).
 * IM_ERR_NOT_FOUND when there is no such tensor. */
im_status_t im_safetensors_get(const im_safetensors_t *s, const char *name, im_tensor_t *view);
/** Copies the named tensor into dst, which must have the same dtype and shape
 * (IM_ERR_ARG with both shapes in the message otherwise). */
im_status_t im_safetensors_read_into(const im_safetensors_t *s, const char *name, im_tensor_t *dst);
/** A "__metadata__" value, or NULL when absent; owned by s. */
const char *im_safetensors_metadata(const im_safetensors_t *s, const char *key);
/** Number of metadata entries, and the i-th key (NULL past the end); owned by s. */
size_t im_safetensors_metadata_count(const im_safetensors_t *s);
const char *im_safetensors_metadata_key(const im_safetensors_t *s, size_t i);

/** One named tensor, and one metadata entry, for the writer. */
typedef struct {
  const char *name;
  const im_tensor_t *tensor;
} im_named_tensor_t;
typedef struct {
  const char *key, *value;
} im_safetensors_meta_t;

/** Writes the tensors (names unique, not "__metadata__") and metadata to
 * path atomically: readers see the old file or the new one. Data are laid out
 * by dtype size (largest first) then in the given order, so every tensor is
 * aligned; the header is padded with spaces to a multiple of 8. */
IM_NODISCARD im_status_t im_safetensors_write(const char *path, const im_named_tensor_t *tensors, size_t n,
                                              const im_safetensors_meta_t *meta, size_t n_meta);
/** The same bytes into a new im_malloc'd buffer (*data, *len); free with im_free. */
IM_NODISCARD im_status_t im_safetensors_serialize(const im_named_tensor_t *tensors, size_t n,
                                                  const im_safetensors_meta_t *meta, size_t n_meta, uint8_t **data,
                                                  size_t *len);

#ifdef __cplusplus
}
#endif
#endif
