/* The backend contract (internal to src/backend): the vtable every backend
 * fills in, the handle, and helpers shared by the backends' kernels.
 *
 * The public im_op_* functions (backend.c) check every shape, dtype and
 * parameter, resolve defaults (stride 0 -> 1, ...), and only then call the
 * backend's member, so members may trust their arguments: params are
 * resolved, tensors are dense, non-NULL where the header says so, shaped as
 * documented in backend.h, and outputs do not overlap inputs except where the
 * header allows in-place use. A member must not write anything before it
 * decides to return IM_ERR_UNSUPPORTED (for a shape it does not handle): on a
 * host-memory backend the dispatcher then runs the reference kernel instead.
 *
 * Adding an op: append to im_op_t, add a member at the END of im_backend_i,
 * a reference kernel in ref/, a dispatcher in backend.c, and a gradient check.
 * Changing a member's meaning or order bumps IM_BACKEND_IFACE_VERSION. */
#ifndef IMOPS_BACKEND_IMPL_H
#define IMOPS_BACKEND_IMPL_H

#include <stdint.h>

#include "imops/backend.h"

/** The vtable layout version; im__backend_new refuses any other. */
#define IM_BACKEND_IFACE_VERSION 1

/** im_backend_i.flags */
enum {
  /** Tensor data are plain host pointers: the default memory members apply
   * and missing or declined ops fall back to the reference kernels. */
  IM_BACKEND_F_HOST = 1u << 0,
  /** The backend's members take IM_LAYOUT_NCHW16C activations where backend.h says so, and never
   * decline them (the reference kernels, which the dispatcher would fall back to, do not). */
  IM_BACKEND_F_BLOCKED = 1u << 1,
};

typedef struct im_backend_i im_backend_i;

struct im_backend {
  const im_backend_i *iface; /* static storage, never NULL */
  void *ctx;                 /* the backend's own state (owned; destroy frees it) */
};

/* Shorthands for member signatures. */
typedef const im_tensor_t im__ct;
typedef im_tensor_t im__t;

struct im_backend_i {
  /** Must be IM_BACKEND_IFACE_VERSION. */
  uint32_t version;
  /** Short lower-case name for logs and reports ("ref", "cpu"); static storage. */
  const char *name;
  /** IM_BACKEND_F_* bits. */
  uint32_t flags;

  /* ---- life cycle and memory: all optional ---- */
  /** Frees b->ctx. Default (NULL): nothing to free. The handle itself is freed by im_backend_free. */
  void (*destroy)(im_backend_t *b);
  /** Whether op runs natively on b. Default (NULL): the op's member is non-NULL.
   * im_backend_supports also answers 1 when the reference fallback applies. */
  int (*supports_op)(const im_backend_t *b, im_op_t op);
  /** Waits for queued work. Default: nothing to wait for. */
  im_status_t (*sync)(im_backend_t *b);
  /** Gives t (dtype and shape already set, data NULL) zeroed memory the ops can use, setting data and
   * owned. Default (host): im_tensor_alloc. */
  im_status_t (*tensor_alloc)(im_backend_t *b, im_tensor_t *t);
  /** Releases what tensor_alloc gave and clears t. Default (host): im_tensor_free. */
  void (*tensor_free)(im_backend_t *b, im_tensor_t *t);
  /** Copies nbytes (== t's size) from host memory into t. Default (host): memcpy. */
  im_status_t (*copy_in)(im_backend_t *b, im_tensor_t *t, const void *src, size_t nbytes);
  /** Copies nbytes (== t's size) from t to host memory. Default (host): memcpy. */
  im_status_t (*copy_out)(im_backend_t *b, const im_tensor_t *t, void *dst, size_t nbytes);

  /* ---- ops: each optional; NULL (or returning IM_ERR_UNSUPPORTED) means "use the reference kernel"
   * on an IM_BACKEND_F_HOST backend and "unsupported" elsewhere. Shapes and the assigned/accumulated
   * rule are in backend.h beside the matching im_op_* function. ---- */
  /** im_op_conv2d_forward: x [N,C,H,W], w [K,C/G,R,S], bias [K] or NULL -> y [N,K,P,Q]. */
  im_status_t (*conv2d_forward)(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *w, im__ct *bias,
                                im__t *y);
  /** im_op_conv2d_backward_data: dy, w -> dx (assigned). */
  im_status_t (*conv2d_backward_data)(im_backend_t *b, const im_conv2d_params_t *p, im__ct *dy, im__ct *w, im__t *dx);
  /** im_op_conv2d_backward_weight: x, dy -> dw (+=), dbias (+=) or NULL. */
  im_status_t (*conv2d_backward_weight)(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *dy,
                                        im__t *dw, im__t *dbias);
  /** im_op_batchnorm_forward_train; gamma/beta may be NULL. */
  im_status_t (*batchnorm_forward_train)(im_backend_t *b, const im_batchnorm_params_t *p, im__ct *x, im__ct *gamma,
                                         im__ct *beta, im__t *running_mean, im__t *running_var, im__t *y,
                                         im__t *save_mean, im__t *save_invstd);
  /** im_op_batchnorm_forward_eval; gamma/beta may be NULL. */
  im_status_t (*batchnorm_forward_eval)(im_backend_t *b, const im_batchnorm_params_t *p, im__ct *x, im__ct *gamma,
                                        im__ct *beta, im__ct *running_mean, im__ct *running_var, im__t *y);
  /** im_op_batchnorm_backward; gamma, dgamma, dbeta may be NULL. */
  im_status_t (*batchnorm_backward)(im_backend_t *b, im__ct *x, im__ct *dy, im__ct *gamma, im__ct *save_mean,
                                    im__ct *save_invstd, im__t *dx, im__t *dgamma, im__t *dbeta);
  /** im_op_layernorm_forward (last dim); gamma/beta may be NULL. */
  im_status_t (*layernorm_forward)(im_backend_t *b, const im_layernorm_params_t *p, im__ct *x, im__ct *gamma,
                                   im__ct *beta, im__t *y, im__t *save_mean, im__t *save_invstd);
  /** im_op_layernorm_backward; gamma, dgamma, dbeta may be NULL. */
  im_status_t (*layernorm_backward)(im_backend_t *b, im__ct *x, im__ct *dy, im__ct *gamma, im__ct *save_mean,
                                    im__ct *save_invstd, im__t *dx, im__t *dgamma, im__t *dbeta);
  /** im_op_relu_forward (in place allowed). */
  im_status_t (*relu_forward)(im_backend_t *b, im__ct *x, im__t *y);
  /** im_op_relu_backward, from relu's output y (in place allowed). */
  im_status_t (*relu_backward)(im_backend_t *b, im__ct *y, im__ct *dy, im__t *dx);
  /** im_op_gelu_forward, exact erf form (in place allowed). */
  im_status_t (*gelu_forward)(im_backend_t *b, im__ct *x, im__t *y);
  /** im_op_gelu_backward, from gelu's input x (in place allowed). */
  im_status_t (*gelu_backward)(im_backend_t *b, im__ct *x, im__ct *dy, im__t *dx);
  /** im_op_maxpool2d_forward; indices may be NULL. */
  im_status_t (*maxpool2d_forward)(im_backend_t *b, const im_pool2d_params_t *p, im__ct *x, im__t *y,
                                   im__t *indices);
  /** im_op_maxpool2d_backward (indices are already range-checked). */
  im_status_t (*maxpool2d_backward)(im_backend_t *b, const im_pool2d_params_t *p, im__ct *dy, im__ct *indices,
                                    im__t *dx);
  /** im_op_avgpool2d_forward. */
  im_status_t (*avgpool2d_forward)(im_backend_t *b, const im_pool2d_params_t *p, im__ct *x, im__t *y);
  /** im_op_avgpool2d_backward. */
  im_status_t (*avgpool2d_backward)(im_backend_t *b, const im_pool2d_params_t *p, im__ct *dy, im__t *dx);
  /** im_op_global_avgpool_forward: y has N*C elements. */
  im_status_t (*global_avgpool_forward)(im_backend_t *b, im__ct *x, im__t *y);
  /** im_op_global_avgpool_backward. */
  im_status_t (*global_avgpool_backward)(im_backend_t *b, im__ct *dy, im__t *dx);
  /** im_op_linear_forward: x is M rows of in, y M rows of out. */
  im_status_t (*linear_forward)(im_backend_t *b, im__ct *x, im__ct *w, im__ct *bias, im__t *y);
  /** im_op_linear_backward_data. */
  im_status_t (*linear_backward_data)(im_backend_t *b, im__ct *dy, im__ct *w, im__t *dx);
  /** im_op_linear_backward_weight; dbias may be NULL. */
  im_status_t (*linear_backward_weight)(im_backend_t *b, im__ct *x, im__ct *dy, im__t *dw, im__t *dbias);
  /** im_op_dropout_forward with the call's seed already drawn (mask from im__dropout_keep). */
  im_status_t (*dropout_forward)(im_backend_t *b, float p, uint64_t seed, im__ct *x, im__t *y, im__t *mask);
  /** im_op_dropout_backward. */
  im_status_t (*dropout_backward)(im_backend_t *b, float p, im__ct *mask, im__ct *dy, im__t *dx);
  /** im_op_add (y may be x1 or x2). */
  im_status_t (*add)(im_backend_t *b, im__ct *x1, im__ct *x2, im__t *y);
  /** im_op_add_backward; dx1/dx2 may be NULL or dy. */
  im_status_t (*add_backward)(im_backend_t *b, im__ct *dy, im__t *dx1, im__t *dx2);
  /** im_op_softmax_xent_forward (labels already range-checked); probs may be NULL. */
  im_status_t (*softmax_xent_forward)(im_backend_t *b, const im_xent_params_t *p, im__ct *logits, im__ct *labels,
                                      im__t *loss, im__t *probs);
  /** im_op_softmax_xent_backward (labels already range-checked). */
  im_status_t (*softmax_xent_backward)(im_backend_t *b, const im_xent_params_t *p, im__ct *logits, im__ct *labels,
                                       im__t *dlogits);
  /** im_op_nchw_to_nhwc (any dtype). */
  im_status_t (*nchw_to_nhwc)(im_backend_t *b, im__ct *x, im__t *y);
  /** im_op_nhwc_to_nchw (any dtype). */
  im_status_t (*nhwc_to_nchw)(im_backend_t *b, im__ct *x, im__t *y);
  /** im_op_fill (F32). */
  im_status_t (*fill)(im_backend_t *b, im__t *t, float v);
  /** im_op_conv2d_forward_fused: conv2d_forward then the activation (act is IM_ACT_NONE or IM_ACT_RELU). */
  im_status_t (*conv2d_forward_fused)(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *w,
                                      im__ct *bias, im_act_t act, im__t *y);
  /** im_op_batchnorm_forward_train_fused: batchnorm_forward_train, then act on y. */
  im_status_t (*batchnorm_forward_train_fused)(im_backend_t *b, const im_batchnorm_params_t *p, im__ct *x,
                                               im__ct *gamma, im__ct *beta, im__t *running_mean, im__t *running_var,
                                               im_act_t act, im__t *y, im__t *save_mean, im__t *save_invstd);
  /** im_op_batchnorm_backward_fused: batchnorm_backward with dy masked by y > 0 when act is IM_ACT_RELU. */
  im_status_t (*batchnorm_backward_fused)(im_backend_t *b, im__ct *x, im__ct *y, im_act_t act, im__ct *dy,
                                          im__ct *gamma, im__ct *save_mean, im__ct *save_invstd, im__t *dx,
                                          im__t *dgamma, im__t *dbeta);
  /** im_op_conv2d_forward_fused_add: act(conv2d_forward + residual); y is residual or does not overlap it. */
  im_status_t (*conv2d_forward_fused_add)(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *w,
                                          im__ct *bias, im__ct *residual, im_act_t act, im__t *y);

  /* ---- threads: optional (default: one thread, and no siblings) ---- */
  /** The number of threads b's kernels run on. */
  int (*num_threads)(const im_backend_t *b);
  /** A new backend of b's kind whose kernels run on nthreads threads (im_backend_new_like). */
  im_status_t (*new_like)(const im_backend_t *b, int nthreads, im_backend_t **out);
};

/** Wraps iface and ctx in a new handle (for backends' constructors). Fails with
 * IM_ERR_UNSUPPORTED when iface->version is not IM_BACKEND_IFACE_VERSION. On
 * failure ctx is not freed. */
im_status_t im__backend_new(const im_backend_i *iface, void *ctx, im_backend_t **out);

/** The reference kernels (ref/): the spec, and the fallback of host backends. */
extern const im_backend_i im__ref_iface;

/** Dropout's mask rule, shared by every backend so that masks agree: element i
 * of a call seeded with seed is kept when this returns 1. A splitmix64 hash of
 * (seed, i) compared with p scaled to 2^32. */
static inline int im__dropout_keep(uint64_t seed, uint64_t i, float p) {
  uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  uint64_t threshold = (uint64_t)((double)p * 4294967296.0); /* p in [0,1] -> [0, 2^32] */
  return (z >> 32) >= threshold;
}

#endif
