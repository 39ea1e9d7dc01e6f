/* Backends and the op set: the kernels that layers call, behind a handle, so
 * that a faster CPU backend (oneDNN/BLAS) or a CUDA backend can replace the
 * reference one without touching layers or models.
 *
 *   im_backend_t *be;
 *   im_backend_ref_new(&be);                     // plain C reference kernels
 *   im_conv2d_params_t cp = {.stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1};
 *   im_op_conv2d_forward(be, &cp, &x, &w, &bias, &y);
 *   im_backend_free(be);
 *
 * Conventions for every op below:
 * - Tensors are dense row-major (tensor.h); image tensors are NCHW [N,C,H,W]
 *   unless the op says NHWC. Float tensors are IM_F32.
 * - Arguments are inputs first, then in/out state, then outputs.
 * - Data gradients (dx, ...) are ASSIGNED (overwritten). Parameter gradients
 *   (dw, dbias, dgamma, dbeta) are ACCUMULATED (+=), like torch's .grad: zero
 *   them once per step (im_op_fill), then every backward adds to them.
 * - Optional tensors may be NULL where it says so.
 * - Outputs must not overlap inputs, except for the element-wise ops (relu,
 *   gelu, dropout, add, fill, batchnorm_forward_eval), which may run in place
 *   (y == x exactly; a partial overlap is refused), and conv2d_forward_fused_add,
 *   whose y may be its residual.
 * - Shapes and dtypes are checked before any kernel runs; a mismatch returns
 *   IM_ERR_ARG with both shapes in im_last_error() and touches nothing.
 * - Calls on one handle are not thread-safe; kernels may use threads inside.
 * - Blocked layout (IM_LAYOUT_NCHW16C, tensor.h): on a backend where
 *   im_backend_blocked_ok answers 1, these ops also take 4-D activations in it:
 *   conv2d_* (x, y, dx, dy, each in its own layout; a fused residual in y's),
 *   batchnorm_* (x, y, dx, dy in one layout), relu_*, add, add_backward and
 *   fill (all tensors in one layout), maxpool2d_* (x, y, indices, dy, dx in
 *   one layout; the indices keep their meaning, h * W + w within the plane),
 *   global_avgpool_* (x or dx blocked, the [N,C] side plain). Every other op,
 *   and every weight and per-channel tensor, is plain; anything else is
 *   IM_ERR_ARG. Results equal the plain ones up to float rounding of reductions.
 * - Channels-last layout (IM_LAYOUT_NHWC): on the same backends, conv2d_*,
 *   relu_*, add, add_backward, fill and global_avgpool_* take it as they take
 *   the blocked one (ConvNeXt's blocks run channels-last end to end).
 */
#ifndef IMOPS_BACKEND_H
#define IMOPS_BACKEND_H

#include <stdint.h>

#include "imops/core.h"
#include "imops/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- backends --------------------------------------------------------------- */
typedef struct im_backend im_backend_t;

/** The ops, for im_backend_supports. Append-only. */
typedef enum {
  IM_OP_CONV2D_FORWARD = 0,
  IM_OP_CONV2D_BACKWARD_DATA,
  IM_OP_CONV2D_BACKWARD_WEIGHT,
  IM_OP_BATCHNORM_FORWARD_TRAIN,
  IM_OP_BATCHNORM_FORWARD_EVAL,
  IM_OP_BATCHNORM_BACKWARD,
  IM_OP_LAYERNORM_FORWARD,
  IM_OP_LAYERNORM_BACKWARD,
  IM_OP_RELU_FORWARD,
  IM_OP_RELU_BACKWARD,
  IM_OP_GELU_FORWARD,
  IM_OP_GELU_BACKWARD,
  IM_OP_MAXPOOL2D_FORWARD,
  IM_OP_MAXPOOL2D_BACKWARD,
  IM_OP_AVGPOOL2D_FORWARD,
  IM_OP_AVGPOOL2D_BACKWARD,
  IM_OP_GLOBAL_AVGPOOL_FORWARD,
  IM_OP_GLOBAL_AVGPOOL_BACKWARD,
  IM_OP_LINEAR_FORWARD,
  IM_OP_LINEAR_BACKWARD_DATA,
  IM_OP_LINEAR_BACKWARD_WEIGHT,
  IM_OP_DROPOUT_FORWARD,
  IM_OP_DROPOUT_BACKWARD,
  IM_OP_ADD,
  IM_OP_ADD_BACKWARD,
  IM_OP_SOFTMAX_XENT_FORWARD,
  IM_OP_SOFTMAX_XENT_BACKWARD,
  IM_OP_NCHW_TO_NHWC,
  IM_OP_NHWC_TO_NCHW,
  IM_OP_FILL,
  IM_OP_CONV2D_FORWARD_FUSED,
  IM_OP_BATCHNORM_FORWARD_TRAIN_FUSED,
  IM_OP_BATCHNORM_BACKWARD_FUSED,
  IM_OP_CONV2D_FORWARD_FUSED_ADD,
  IM_OP_COUNT_ /* not an op */
} im_op_t;

/** The op's name, e.g. "conv2d_forward"; "?" when out of range. Static storage. */
const char *im_op_name(im_op_t op);

/** The reference backend: plain C loops, single-threaded, double-precision
 * accumulation. It is the spec the other backends are tested against, and
 * the fallback of host-memory backends for ops or shapes they do not
 * optimize. Free with im_backend_free. */
IM_NODISCARD im_status_t im_backend_ref_new(im_backend_t **out);
/** The fast CPU backend: oneDNN primitives (convolution, layer norm, average pooling,
 * GELU), oneDNN's sgemm (linear) and OpenMP loops (batch norm, max pooling with torch's
 * indices, ReLU and the other element-wise ops), on im_num_threads() threads
 * (IMOPS_NUM_THREADS, else all online CPUs; the calling thread's OpenMP thread count is
 * set to it).
 * Ops and shapes it does not accelerate run the reference kernels. It caches the
 * primitives of every (op, shape, parameters) it has seen and keeps one workspace
 * (blocked copies of activations, oneDNN scratchpads) as large as the largest op
 * needed; both live until im_backend_free. Free with im_backend_free. */
IM_NODISCARD im_status_t im_backend_cpu_new(im_backend_t **out);
/** Frees a backend of any kind. NULL is a no-op. */
void im_backend_free(im_backend_t *b);
/** "ref", "cpu", ...; static storage. */
const char *im_backend_name(const im_backend_t *b);
/** The number of threads b's kernels run on (1 for the reference backend). */
int im_backend_num_threads(const im_backend_t *b);
/** A new backend of b's kind whose kernels run on nthreads threads, for callers that run
 * independent streams of work side by side, one handle per thread (the batch lanes of
 * im_nn_plan). IM_ERR_UNSUPPORTED for kinds without a thread count (ref). Free with
 * im_backend_free. */
IM_NODISCARD im_status_t im_backend_new_like(const im_backend_t *b, int nthreads, im_backend_t **out);
/** 1 if op can run on b (natively or through the reference fallback). */
int im_backend_supports(const im_backend_t *b, im_op_t op);
/** 1 if b's kernels take blocked-layout and channels-last activations (see the conventions above). */
int im_backend_blocked_ok(const im_backend_t *b);
/** Copies x into y, the same shape in another layout (plain, blocked or channels-last). */
im_status_t im_op_relayout(im_backend_t *b, const im_tensor_t *x, im_tensor_t *y);
/** Waits for queued work (a no-op for CPU backends). */
im_status_t im_backend_sync(im_backend_t *b);

/** Tensors whose memory the backend's ops can use (host memory for ref and
 * cpu, device memory for cuda later). Free them with im_backend_tensor_free,
 * not im_tensor_free. Contents start zeroed. */
IM_NODISCARD im_status_t im_backend_tensor_alloc(im_backend_t *b, im_tensor_t *t, im_dtype_t dt, int ndim,
                                                 const int64_t *shape);
void im_backend_tensor_free(im_backend_t *b, im_tensor_t *t);
/** Copies nbytes (== the tensor's size) from host memory into t, or from t out to host memory. */
im_status_t im_backend_tensor_set(im_backend_t *b, im_tensor_t *t, const void *src, size_t nbytes);
im_status_t im_backend_tensor_get(im_backend_t *b, const im_tensor_t *t, void *dst, size_t nbytes);

/* ---- convolution ---------------------------------------------------------------
 * y[n,k,p,q] = bias[k] + sum_{c,r,s} x[n, g*C/G + c, p*sh - ph + r*dh, q*sw - pw + s*dw] * w[k,c,r,s]
 * with g = k / (K/G), out-of-range x reading as 0 (zero padding, symmetric per dimension).
 * Output size P = (H + 2 ph - dh (R-1) - 1) / sh + 1, and likewise Q. */
typedef struct {
  int stride_h, stride_w;     /* >= 1; 0 means 1 */
  int pad_h, pad_w;           /* >= 0, added on both sides */
  int dilation_h, dilation_w; /* >= 1; 0 means 1 */
  int groups;                 /* >= 1, divides C and K; C == K == groups is depthwise; 0 means 1 */
} im_conv2d_params_t;

/** Output size of one spatial dimension, or -1 when the window does not fit. */
int64_t im_conv_out_dim(int64_t in, int kernel, int stride, int pad, int dilation);
/** y's shape [N,K,P,Q] from x [N,C,H,W] and w [K,C/G,R,S]; IM_ERR_ARG when they do not fit together. */
im_status_t im_conv2d_output_shape(const im_conv2d_params_t *p, const int64_t x_shape[4], const int64_t w_shape[4],
                                   int64_t y_shape[4]);

/** x [N,C,H,W], w [K,C/G,R,S], bias [K] or NULL -> y [N,K,P,Q] (assigned). */
im_status_t im_op_conv2d_forward(im_backend_t *b, const im_conv2d_params_t *p, const im_tensor_t *x,
                                 const im_tensor_t *w, const im_tensor_t *bias, im_tensor_t *y);
/** dy [N,K,P,Q], w [K,C/G,R,S] -> dx [N,C,H,W] (assigned; dx's shape gives H, W). */
im_status_t im_op_conv2d_backward_data(im_backend_t *b, const im_conv2d_params_t *p, const im_tensor_t *dy,
                                       const im_tensor_t *w, im_tensor_t *dx);
/** x [N,C,H,W], dy [N,K,P,Q] -> dw [K,C/G,R,S] (+=), dbias [K] (+=, or NULL). */
im_status_t im_op_conv2d_backward_weight(im_backend_t *b, const im_conv2d_params_t *p, const im_tensor_t *x,
                                         const im_tensor_t *dy, im_tensor_t *dw, im_tensor_t *dbias);

/** Activation applied after a fused convolution. */
typedef enum { IM_ACT_NONE = 0, IM_ACT_RELU = 1 } im_act_t;
/** Inference convolution with its activation fused: y = act(conv2d(x, w) + bias), as
 * im_op_conv2d_forward followed by im_op_relu_forward, in one pass (oneDNN post-op on cpu).
 * For folded batch norm: w and bias already carry the normalization. */
im_status_t im_op_conv2d_forward_fused(im_backend_t *b, const im_conv2d_params_t *p, const im_tensor_t *x,
                                       const im_tensor_t *w, const im_tensor_t *bias, im_act_t act, im_tensor_t *y);
/** Inference convolution with a residual add and its activation fused: y = act(conv2d(x, w) + bias + residual),
 * as im_op_conv2d_forward, im_op_add and im_op_relu_forward in one pass (ResNet's conv -> add(identity) -> ReLU;
 * oneDNN's sum and ReLU post-ops on cpu). residual is shaped as y and in y's layout; y may be residual itself
 * (the same memory: the result overwrites the identity, as a post-op sum does), any other overlap is refused.
 * x may be in its own layout, as for the other forward convolutions. */
im_status_t im_op_conv2d_forward_fused_add(im_backend_t *b, const im_conv2d_params_t *p, const im_tensor_t *x,
                                           const im_tensor_t *w, const im_tensor_t *bias, const im_tensor_t *residual,
                                           im_act_t act, im_tensor_t *y);

/* ---- batch norm (NCHW; also [N,C] and [N,C,L]: statistics per channel over all other dims) ----
 * Training: mean and biased variance over the batch normalize x;
 * running_mean = (1-m) running_mean + m mean, running_var = (1-m) running_var + m var * n/(n-1)
 * (unbiased, n = elements per channel), as torch.nn.BatchNorm2d. Eval: the running stats normalize x. */
typedef struct {
  float eps;      /* added to the variance; torch's default 1e-5 */
  float momentum; /* weight of the new batch in the running stats; torch's default 0.1 */
} im_batchnorm_params_t;
#define IM_BATCHNORM_DEFAULTS ((im_batchnorm_params_t){1e-5f, 0.1f})

/** im_op_batchnorm_forward_train followed by act (IM_ACT_NONE or IM_ACT_RELU) on y in one pass: a
 * training step's BN + ReLU. Its gradient: im_op_batchnorm_backward_fused (or relu_backward from y, then
 * batchnorm_backward from x). */
im_status_t im_op_batchnorm_forward_train_fused(im_backend_t *b, const im_batchnorm_params_t *p,
                                                const im_tensor_t *x, const im_tensor_t *gamma,
                                                const im_tensor_t *beta, im_tensor_t *running_mean,
                                                im_tensor_t *running_var, im_act_t act, im_tensor_t *y,
                                                im_tensor_t *save_mean, im_tensor_t *save_invstd);
/** x [N,C,...], gamma [C], beta [C] (each may be NULL: 1 and 0), running_mean [C], running_var [C] (updated)
 * -> y like x, save_mean [C], save_invstd [C] (1/sqrt(var+eps), for backward), all assigned. Needs n > 1. */
im_status_t im_op_batchnorm_forward_train(im_backend_t *b, const im_batchnorm_params_t *p, const im_tensor_t *x,
                                          const im_tensor_t *gamma, const im_tensor_t *beta, im_tensor_t *running_mean,
                                          im_tensor_t *running_var, im_tensor_t *y, im_tensor_t *save_mean,
                                          im_tensor_t *save_invstd);
/** x [N,C,...], gamma, beta (or NULL), running_mean [C], running_var [C] -> y like x (assigned). */
im_status_t im_op_batchnorm_forward_eval(im_backend_t *b, const im_batchnorm_params_t *p, const im_tensor_t *x,
                                         const im_tensor_t *gamma, const im_tensor_t *beta,
                                         const im_tensor_t *running_mean, const im_tensor_t *running_var,
                                         im_tensor_t *y);
/** The training-mode gradient. x, dy [N,C,...], gamma [C] (or NULL), save_mean, save_invstd [C] from
 * forward_train -> dx like x (assigned), dgamma [C] (+=, or NULL), dbeta [C] (+=, or NULL). */
im_status_t im_op_batchnorm_backward(im_backend_t *b, const im_tensor_t *x, const im_tensor_t *dy,
                                     const im_tensor_t *gamma, const im_tensor_t *save_mean,
                                     const im_tensor_t *save_invstd, im_tensor_t *dx, im_tensor_t *dgamma,
                                     im_tensor_t *dbeta);
/** The gradient of act(batchnorm(x)) (act IM_ACT_NONE or IM_ACT_RELU), as im_op_batchnorm_backward with, for
 * IM_ACT_RELU, dy replaced by relu_backward's (y > 0 ? dy : 0; a NaN y gives 0) in the same pass, written
 * nowhere. y [like x] is batchnorm_forward_train_fused's output (required; read only for IM_ACT_RELU),
 * dy the gradient w.r.t. y; dx must not overlap y, dy or x. */
im_status_t im_op_batchnorm_backward_fused(im_backend_t *b, const im_tensor_t *x, const im_tensor_t *y, im_act_t act,
                                           const im_tensor_t *dy, const im_tensor_t *gamma,
                                           const im_tensor_t *save_mean, const im_tensor_t *save_invstd,
                                           im_tensor_t *dx, im_tensor_t *dgamma, im_tensor_t *dbeta);

/* ---- layer norm over the LAST dimension (channels-last: NHWC [N,H,W,C] for ConvNeXt blocks) ----
 * Each row of C values (each pixel's channels) is normalized by its own mean and biased variance,
 * as torch.nn.functional.layer_norm(x, (C,)). For NCHW data permute first (im_op_nchw_to_nhwc). */
typedef struct {
  float eps; /* torch's default 1e-5; ConvNeXt uses 1e-6 */
} im_layernorm_params_t;
#define IM_LAYERNORM_DEFAULTS ((im_layernorm_params_t){1e-5f})

/** x [..., C] (M rows), gamma [C], beta [C] (or NULL) -> y like x, save_mean, save_invstd (M elements,
 * any shape), all assigned. */
im_status_t im_op_layernorm_forward(im_backend_t *b, const im_layernorm_params_t *p, const im_tensor_t *x,
                                    const im_tensor_t *gamma, const im_tensor_t *beta, im_tensor_t *y,
                                    im_tensor_t *save_mean, im_tensor_t *save_invstd);
/** x, dy [..., C], gamma [C] (or NULL), save_mean, save_invstd -> dx (assigned), dgamma, dbeta [C] (+=, or NULL). */
im_status_t im_op_layernorm_backward(im_backend_t *b, const im_tensor_t *x, const im_tensor_t *dy,
                                     const im_tensor_t *gamma, const im_tensor_t *save_mean,
                                     const im_tensor_t *save_invstd, im_tensor_t *dx, im_tensor_t *dgamma,
                                     im_tensor_t *dbeta);

/* ---- activations (element-wise, any shape, in place allowed) -------------------- */
/** y = max(x, 0). */
im_status_t im_op_relu_forward(im_backend_t *b, const im_tensor_t *x, im_tensor_t *y);
/** dx = dy where y > 0, else 0 (y is relu's OUTPUT; the gradient at 0 is 0, as torch). dx assigned. */
im_status_t im_op_relu_backward(im_backend_t *b, const im_tensor_t *y, const im_tensor_t *dy, im_tensor_t *dx);
/** y = x/2 (1 + erf(x/sqrt 2)): the exact GELU, torch's default (approximate='none'). */
im_status_t im_op_gelu_forward(im_backend_t *b, const im_tensor_t *x, im_tensor_t *y);
/** dx = dy (Phi(x) + x phi(x)) (x is gelu's INPUT). dx assigned. */
im_status_t im_op_gelu_backward(im_backend_t *b, const im_tensor_t *x, const im_tensor_t *dy, im_tensor_t *dx);

/* ---- pooling (NCHW; no dilation, floor mode) -------------------------------------
 * P = (H + 2 ph - kh) / sh + 1. Padding is at most half the kernel (as torch). */
typedef struct {
  int kernel_h, kernel_w; /* >= 1 */
  int stride_h, stride_w; /* >= 1; 0 means the kernel size (torch's default) */
  int pad_h, pad_w;       /* 0 <= pad <= kernel/2 */
  int exclude_pad;        /* avg pool only: 0 divides by the window including padding
                             (count_include_pad=True, torch's default); 1 by the valid elements */
} im_pool2d_params_t;

/** y's shape [N,C,P,Q] from x [N,C,H,W]; IM_ERR_ARG when they do not fit. */
im_status_t im_pool2d_output_shape(const im_pool2d_params_t *p, const int64_t x_shape[4], int64_t y_shape[4]);

/** x [N,C,H,W] -> y [N,C,P,Q] (assigned), indices I32 [N,C,P,Q] (or NULL): the argmax as h*W + w
 * within its (n,c) plane, as torch's return_indices. Ties pick the first in row-major window
 * order; NaN wins. */
im_status_t im_op_maxpool2d_forward(im_backend_t *b, const im_pool2d_params_t *p, const im_tensor_t *x,
                                    im_tensor_t *y, im_tensor_t *indices);
/** dy [N,C,P,Q], indices from forward -> dx [N,C,H,W] (assigned: zeroed, then each dy added at its argmax). */
im_status_t im_op_maxpool2d_backward(im_backend_t *b, const im_pool2d_params_t *p, const im_tensor_t *dy,
                                     const im_tensor_t *indices, im_tensor_t *dx);
/** x [N,C,H,W] -> y [N,C,P,Q] (assigned). */
im_status_t im_op_avgpool2d_forward(im_backend_t *b, const im_pool2d_params_t *p, const im_tensor_t *x,
                                    im_tensor_t *y);
/** dy [N,C,P,Q] -> dx [N,C,H,W] (assigned). */
im_status_t im_op_avgpool2d_backward(im_backend_t *b, const im_pool2d_params_t *p, const im_tensor_t *dy,
                                     im_tensor_t *dx);
/** x [N,C,H,W] -> y [N,C] or [N,C,1,1]: the mean of each plane (assigned). */
im_status_t im_op_global_avgpool_forward(im_backend_t *b, const im_tensor_t *x, im_tensor_t *y);
/** dy [N,C] or [N,C,1,1] -> dx [N,C,H,W] = dy / (H W) (assigned). */
im_status_t im_op_global_avgpool_backward(im_backend_t *b, const im_tensor_t *dy, im_tensor_t *dx);

/* ---- linear: y = x W^T + b, torch's layout W [out, in] --------------------------- */
/** x [..., in] (M rows), w [out, in], bias [out] (or NULL) -> y [..., out] (assigned). */
im_status_t im_op_linear_forward(im_backend_t *b, const im_tensor_t *x, const im_tensor_t *w,
                                 const im_tensor_t *bias, im_tensor_t *y);
/** dy [..., out], w [out, in] -> dx [..., in] = dy W (assigned). */
im_status_t im_op_linear_backward_data(im_backend_t *b, const im_tensor_t *dy, const im_tensor_t *w,
                                       im_tensor_t *dx);
/** x [..., in], dy [..., out] -> dw [out, in] += dy^T x, dbias [out] += column sums of dy (or NULL). */
im_status_t im_op_linear_backward_weight(im_backend_t *b, const im_tensor_t *x, const im_tensor_t *dy,
                                         im_tensor_t *dw, im_tensor_t *dbias);

/* ---- dropout (training mode; in eval mode a layer simply passes x on) -------------
 * One 64-bit draw from rng seeds the call; element i is kept when a counter-based
 * hash of (seed, i) is at or above p (im__dropout_keep in backend_impl.h), so every
 * backend and thread count makes the same mask. Kept elements are scaled by 1/(1-p);
 * p == 1 drops everything (y = 0). */
/** x (any shape), 0 <= p <= 1, rng (advanced by one draw) -> y like x, mask U8 like x (1 kept, 0 dropped). */
im_status_t im_op_dropout_forward(im_backend_t *b, float p, im_rng_t *rng, const im_tensor_t *x, im_tensor_t *y,
                                  im_tensor_t *mask);
/** mask, dy -> dx = dy * mask / (1-p) (assigned). */
im_status_t im_op_dropout_backward(im_backend_t *b, float p, const im_tensor_t *mask, const im_tensor_t *dy,
                                   im_tensor_t *dx);

/* ---- residual add ------------------------------------------------------------------ */
/** y = x1 + x2 (same shapes; y may be x1 or x2, so y == x1 accumulates). */
im_status_t im_op_add(im_backend_t *b, const im_tensor_t *x1, const im_tensor_t *x2, im_tensor_t *y);
/** The pass-through gradient: dx1 = dy, dx2 = dy (assigned; either may be NULL or be dy itself). */
im_status_t im_op_add_backward(im_backend_t *b, const im_tensor_t *dy, im_tensor_t *dx1, im_tensor_t *dx2);

/* ---- softmax cross-entropy with label smoothing -----------------------------------
 * As torch.nn.CrossEntropyLoss(label_smoothing=eps), reduction mean: with q = (1-eps) onehot(label) + eps/K,
 * loss = mean over the batch of -sum_k q_k log softmax(z)_k. */
typedef struct {
  float label_smoothing; /* eps in [0, 1] */
} im_xent_params_t;

/** logits [N,K], labels I32 [N] (each in [0,K), else IM_ERR_ARG) -> loss (one element, any shape),
 * probs [N,K] softmax (or NULL); assigned. */
im_status_t im_op_softmax_xent_forward(im_backend_t *b, const im_xent_params_t *p, const im_tensor_t *logits,
                                       const im_tensor_t *labels, im_tensor_t *loss, im_tensor_t *probs);
/** logits [N,K], labels [N] -> dlogits [N,K] = (softmax - q) / N, the gradient of the mean loss (assigned). */
im_status_t im_op_softmax_xent_backward(im_backend_t *b, const im_xent_params_t *p, const im_tensor_t *logits,
                                        const im_tensor_t *labels, im_tensor_t *dlogits);

/* ---- layout and fills ----------------------------------------------------------------- */
/** x [N,C,H,W] -> y [N,H,W,C] (any dtype; the gradient of one is the other). */
im_status_t im_op_nchw_to_nhwc(im_backend_t *b, const im_tensor_t *x, im_tensor_t *y);
/** x [N,H,W,C] -> y [N,C,H,W]. */
im_status_t im_op_nhwc_to_nchw(im_backend_t *b, const im_tensor_t *x, im_tensor_t *y);
/** Every element of an F32 tensor set to v (zeroing gradients). */
im_status_t im_op_fill(im_backend_t *b, im_tensor_t *t, float v);

#ifdef __cplusplus
}
#endif
#endif
