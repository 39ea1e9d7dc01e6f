/* Internal to src/tensor: the aligned-allocation helper shared by tensors and
 * arenas, and the size cap used by shape checks. */
#ifndef IMOPS_TENSOR_IMPL_H
#define IMOPS_TENSOR_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "imops/tensor.h"

/** No tensor is larger than this (2^62 bytes): sizes always fit int64 and size_t sums. */
#define IM__TENSOR_MAX_BYTES ((uint64_t)1 << 62)

/** n bytes aligned to IM_TENSOR_ALIGN through im_malloc; *base is what to im_free. */
void *im__aligned_alloc(size_t n, void **base);

#endif
