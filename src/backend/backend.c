/* The op layer: backend handles, memory through the backend, and one public
 * im_op_* function per op that checks shapes, dtypes and parameters, resolves
 * defaults, and dispatches through the backend's vtable (falling back to the
 * reference kernel on host backends that leave an op out or decline it). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "backend/backend_impl.h"

/* ---- names ---------------------------------------------------------------------- */

static const char *const op_names[IM_OP_COUNT_] = {
    "conv2d_forward",         "conv2d_backward_data",    "conv2d_backward_weight",  "batchnorm_forward_train",
    "batchnorm_forward_eval", "batchnorm_backward",      "layernorm_forward",       "layernorm_backward",
    "relu_forward",           "relu_backward",           "gelu_forward",            "gelu_backward",
    "maxpool2d_forward",      "maxpool2d_backward",      "avgpool2d_forward",       "avgpool2d_backward",
    "global_avgpool_forward", "global_avgpool_backward", "linear_forward",          "linear_backward_data",
    "linear_backward_weight", "dropout_forward",         "dropout_backward",        "add",
    "add_backward",           "softmax_xent_forward",    "softmax_xent_backward",   "nchw_to_nhwc",
    "nhwc_to_nchw",           "fill",                    "conv2d_forward_fused",    "batchnorm_forward_train_fused",
    "batchnorm_backward_fused", "conv2d_forward_fused_add",
};
_Static_assert(sizeof op_names / sizeof *op_names == IM_OP_COUNT_, "one name per op");

const char *im_op_name(im_op_t op) { return (unsigned)op < (unsigned)IM_OP_COUNT_ ? op_names[op] : "?"; }

/* ---- handles ---------------------------------------------------------------------- */

im_status_t im__backend_new(const im_backend_i *iface, void *ctx, im_backend_t **out) {
  *out = NULL;
  if (!iface || iface->version != IM_BACKEND_IFACE_VERSION)
    return im_error(IM_ERR_UNSUPPORTED, "backend interface version %u, this library speaks %u",
                    iface ? iface->version : 0u, (unsigned)IM_BACKEND_IFACE_VERSION);
  im_backend_t *b = im_calloc(1, sizeof *b);
  if (!b) return im_error(IM_ERR_NOMEM, "out of memory");
  b->iface = iface;
  b->ctx = ctx;
  *out = b;
  return IM_OK;
}

void im_backend_free(im_backend_t *b) {
  if (!b) return;
  if (b->iface->destroy) b->iface->destroy(b);
  im_free(b);
}

const char *im_backend_name(const im_backend_t *b) { return b->iface->name; }

int im_backend_num_threads(const im_backend_t *b) { return b->iface->num_threads ? b->iface->num_threads(b) : 1; }

im_status_t im_backend_new_like(const im_backend_t *b, int nthreads, im_backend_t **out) {
  if (!out) return im_error(IM_ERR_ARG, "im_backend_new_like: no output pointer");
  *out = NULL;
  if (!b) return im_error(IM_ERR_ARG, "im_backend_new_like: no backend");
  if (nthreads < 1 || nthreads > 1024)
    return im_error(IM_ERR_ARG, "im_backend_new_like: %d threads is out of range [1, 1024]", nthreads);
  if (!b->iface->new_like)
    return im_error(IM_ERR_UNSUPPORTED, "im_backend_new_like: the %s backend has no thread count", b->iface->name);
  return b->iface->new_like(b, nthreads, out);
}

static int has_member(const im_backend_i *i, im_op_t op) {
  switch (op) {
    case IM_OP_CONV2D_FORWARD: return i->conv2d_forward != NULL;
    case IM_OP_CONV2D_BACKWARD_DATA: return i->conv2d_backward_data != NULL;
    case IM_OP_CONV2D_BACKWARD_WEIGHT: return i->conv2d_backward_weight != NULL;
    case IM_OP_BATCHNORM_FORWARD_TRAIN: return i->batchnorm_forward_train != NULL;
    case IM_OP_BATCHNORM_FORWARD_EVAL: return i->batchnorm_forward_eval != NULL;
    case IM_OP_BATCHNORM_BACKWARD: return i->batchnorm_backward != NULL;
    case IM_OP_LAYERNORM_FORWARD: return i->layernorm_forward != NULL;
    case IM_OP_LAYERNORM_BACKWARD: return i->layernorm_backward != NULL;
    case IM_OP_RELU_FORWARD: return i->relu_forward != NULL;
    case IM_OP_RELU_BACKWARD: return i->relu_backward != NULL;
    case IM_OP_GELU_FORWARD: return i->gelu_forward != NULL;
    case IM_OP_GELU_BACKWARD: return i->gelu_backward != NULL;
    case IM_OP_MAXPOOL2D_FORWARD: return i->maxpool2d_forward != NULL;
    case IM_OP_MAXPOOL2D_BACKWARD: return i->maxpool2d_backward != NULL;
    case IM_OP_AVGPOOL2D_FORWARD: return i->avgpool2d_forward != NULL;
    case IM_OP_AVGPOOL2D_BACKWARD: return i->avgpool2d_backward != NULL;
    case IM_OP_GLOBAL_AVGPOOL_FORWARD: return i->global_avgpool_forward != NULL;
    case IM_OP_GLOBAL_AVGPOOL_BACKWARD: return i->global_avgpool_backward != NULL;
    case IM_OP_LINEAR_FORWARD: return i->linear_forward != NULL;
    case IM_OP_LINEAR_BACKWARD_DATA: return i->linear_backward_data != NULL;
    case IM_OP_LINEAR_BACKWARD_WEIGHT: return i->linear_backward_weight != NULL;
    case IM_OP_DROPOUT_FORWARD: return i->dropout_forward != NULL;
    case IM_OP_DROPOUT_BACKWARD: return i->dropout_backward != NULL;
    case IM_OP_ADD: return i->add != NULL;
    case IM_OP_ADD_BACKWARD: return i->add_backward != NULL;
    case IM_OP_SOFTMAX_XENT_FORWARD: return i->softmax_xent_forward != NULL;
    case IM_OP_SOFTMAX_XENT_BACKWARD: return i->softmax_xent_backward != NULL;
    case IM_OP_NCHW_TO_NHWC: return i->nchw_to_nhwc != NULL;
    case IM_OP_NHWC_TO_NCHW: return i->nhwc_to_nchw != NULL;
    case IM_OP_FILL: return i->fill != NULL;
    case IM_OP_CONV2D_FORWARD_FUSED: return i->conv2d_forward_fused != NULL;
    case IM_OP_BATCHNORM_FORWARD_TRAIN_FUSED: return i->batchnorm_forward_train_fused != NULL;
    case IM_OP_BATCHNORM_BACKWARD_FUSED: return i->batchnorm_backward_fused != NULL;
    case IM_OP_CONV2D_FORWARD_FUSED_ADD: return i->conv2d_forward_fused_add != NULL;
    case IM_OP_COUNT_: break;
  }
  return 0;
}

int im_backend_supports(const im_backend_t *b, im_op_t op) {
  if (!b || (unsigned)op >= (unsigned)IM_OP_COUNT_) return 0;
  if (b->iface->flags & IM_BACKEND_F_HOST) return 1; /* the reference kernels cover every op */
  return b->iface->supports_op ? b->iface->supports_op(b, op) : has_member(b->iface, op);
}

im_status_t im_backend_sync(im_backend_t *b) { return b->iface->sync ? b->iface->sync(b) : IM_OK; }

/* ---- memory ----------------------------------------------------------------------- */

im_status_t im_backend_tensor_alloc(im_backend_t *b, im_tensor_t *t, im_dtype_t dt, int ndim, const int64_t *shape) {
  if (!b->iface->tensor_alloc) return im_tensor_alloc(t, dt, ndim, shape);
  im_status_t st = im_tensor_view(t, dt, ndim, shape, NULL);
  if (st != IM_OK) return st;
  st = b->iface->tensor_alloc(b, t);
  if (st != IM_OK) memset(t, 0, sizeof *t);
  return st;
}

void im_backend_tensor_free(im_backend_t *b, im_tensor_t *t) {
  if (!t) return;
  if (b->iface->tensor_free) b->iface->tensor_free(b, t);
  else im_tensor_free(t);
}

im_status_t im_backend_tensor_set(im_backend_t *b, im_tensor_t *t, const void *src, size_t nbytes) {
  if (nbytes != im_tensor_nbytes(t))
    return im_error(IM_ERR_ARG, "tensor_set: %zu bytes for a tensor of %zu", nbytes, im_tensor_nbytes(t));
  if (b->iface->copy_in) return b->iface->copy_in(b, t, src, nbytes);
  if (nbytes) memmove(t->data, src, nbytes);
  return IM_OK;
}

im_status_t im_backend_tensor_get(im_backend_t *b, const im_tensor_t *t, void *dst, size_t nbytes) {
  if (nbytes != im_tensor_nbytes(t))
    return im_error(IM_ERR_ARG, "tensor_get: %zu bytes from a tensor of %zu", nbytes, im_tensor_nbytes(t));
  if (b->iface->copy_out) return b->iface->copy_out(b, t, dst, nbytes);
  if (nbytes) memmove(dst, t->data, nbytes);
  return IM_OK;
}

/* ---- argument checks ------------------------------------------------------------------ */

#define ANY (-1)
#define TRY(e)                        \
  do {                                \
    im_status_t st_ = (e);            \
    if (st_ != IM_OK) return st_;     \
  } while (0)

static void fmt_shape(char *buf, size_t n, im_dtype_t dt, int ndim, const int64_t *shape) {
  size_t at = (size_t)snprintf(buf, n, "%s[", im_dtype_name(dt));
  for (int i = 0; i < ndim && at < n; i++) {
    if (shape[i] == ANY) at += (size_t)snprintf(buf + at, n - at, i ? ",?" : "?");
    else at += (size_t)snprintf(buf + at, n - at, i ? ",%lld" : "%lld", (long long)shape[i]);
  }
  if (at < n) snprintf(buf + at, n - at, "]");
}

/* t is a well-formed tensor with data (when it has elements); a blocked one is 4-D, F32 or I32,
 * with a multiple of 16 channels; a channels-last one is 4-D F32. */
static im_status_t chk_valid(const char *op, const char *what, const im_tensor_t *t) {
  if (!t) return im_error(IM_ERR_ARG, "%s: %s is missing", op, what);
  if (t->ndim < 0 || t->ndim > IM_TENSOR_MAX_DIMS || im_tensor_check_shape(t->dtype, t->ndim, t->shape) != IM_OK)
    return im_error(IM_ERR_ARG, "%s: %s is not a valid tensor", op, what);
  if (t->layout != IM_LAYOUT_PLAIN && t->layout != IM_LAYOUT_NHWC &&
      (t->layout != IM_LAYOUT_NCHW16C || t->ndim != 4 || t->shape[1] % 16 || (t->dtype != IM_F32 && t->dtype != IM_I32)))
    return im_error(IM_ERR_ARG, "%s: %s has layout %d, which needs a 4-D F32 or I32 tensor with a multiple of 16 channels",
                    op, what, (int)t->layout);
  if (t->layout == IM_LAYOUT_NHWC && (t->ndim != 4 || t->dtype != IM_F32))
    return im_error(IM_ERR_ARG, "%s: %s is channels-last, which needs a 4-D F32 tensor", op, what);
  if (!t->data && im_tensor_numel(t) > 0) return im_error(IM_ERR_ARG, "%s: %s has no data", op, what);
  return IM_OK;
}

/* t has dtype dt, ndim dims and the given sizes (ANY matches any size). */
static im_status_t chk(const char *op, const char *what, const im_tensor_t *t, im_dtype_t dt, int ndim,
                       const int64_t *dims) {
  TRY(chk_valid(op, what, t));
  int ok = t->dtype == dt && t->ndim == ndim;
  for (int i = 0; ok && i < ndim; i++) ok = dims[i] == ANY || dims[i] == t->shape[i];
  if (ok) return IM_OK;
  char a[128], e[128];
  fmt_shape(a, sizeof a, t->dtype, t->ndim, t->shape);
  fmt_shape(e, sizeof e, dt, ndim, dims);
  return im_error(IM_ERR_ARG, "%s: %s is %s, expected %s", op, what, a, e);
}

/* t has the same dtype and shape as like. */
static im_status_t chk_like(const char *op, const char *what, const im_tensor_t *t, const im_tensor_t *like) {
  return chk(op, what, t, like->dtype, like->ndim, like->shape);
}

/* t is F32 with n elements (any shape). */
static im_status_t chk_numel(const char *op, const char *what, const im_tensor_t *t, im_dtype_t dt, int64_t n) {
  TRY(chk_valid(op, what, t));
  if (t->dtype == dt && im_tensor_numel(t) == n) return IM_OK;
  char a[128];
  fmt_shape(a, sizeof a, t->dtype, t->ndim, t->shape);
  return im_error(IM_ERR_ARG, "%s: %s is %s, expected %s with %lld elements", op, what, a, im_dtype_name(dt),
                  (long long)n);
}

static int overlap(const im_tensor_t *a, const im_tensor_t *b) {
  if (!a || !b || !a->data || !b->data) return 0;
  size_t na = im_tensor_nbytes(a), nb = im_tensor_nbytes(b);
  if (!na || !nb) return 0;
  uintptr_t pa = (uintptr_t)a->data, pb = (uintptr_t)b->data;
  return pa < pb + nb && pb < pa + na;
}

/* Output out must not overlap input in (when inplace, it may be exactly the same tensor memory). */
static im_status_t chk_alias(const char *op, const char *o, const im_tensor_t *out, const char *i,
                             const im_tensor_t *in, int inplace) {
  if (!overlap(out, in)) return IM_OK;
  if (inplace && out->data == in->data && im_tensor_nbytes(out) == im_tensor_nbytes(in)) return IM_OK;
  return im_error(IM_ERR_ARG, "%s: %s overlaps %s", op, o, i);
}

/* ---- layouts ------------------------------------------------------------------------------ */

int im_backend_blocked_ok(const im_backend_t *b) { return b && (b->iface->flags & IM_BACKEND_F_BLOCKED) != 0; }

/* The tensors ts[0..n) (NULL skipped) share one layout; *blocked says whether it is not the plain
 * one (blocked or channels-last), which b must take: no reference kernel does. nhwc: the op also
 * takes channels-last tensors. */
static im_status_t layout_of(const char *op, const im_backend_t *b, int n, const im_tensor_t *const *ts, int nhwc,
                             int *blocked) {
  *blocked = 0;
  int first = -1;
  for (int i = 0; i < n; i++) {
    if (!ts[i]) continue;
    if (first < 0) first = (int)ts[i]->layout;
    else if ((int)ts[i]->layout != first) return im_error(IM_ERR_ARG, "%s: the tensors' layouts differ", op);
  }
  if (first == IM_LAYOUT_NHWC && !nhwc) return im_error(IM_ERR_ARG, "%s: takes no channels-last tensors", op);
  *blocked = first > IM_LAYOUT_PLAIN;
  if (*blocked && !im_backend_blocked_ok(b))
    return im_error(IM_ERR_ARG, "%s: the %s backend does not take blocked-layout tensors", op, b->iface->name);
  return IM_OK;
}

/* layout_of for ops without a channels-last kernel, and for those with one. */
static im_status_t one_layout(const char *op, const im_backend_t *b, int n, const im_tensor_t *const *ts,
                              int *blocked) {
  return layout_of(op, b, n, ts, 0, blocked);
}
static im_status_t one_layout_cl(const char *op, const im_backend_t *b, int n, const im_tensor_t *const *ts,
                                 int *blocked) {
  return layout_of(op, b, n, ts, 1, blocked);
}

/* The tensors ts[0..n) (NULL skipped) are plain. */
static im_status_t all_plain(const char *op, int n, const im_tensor_t *const *ts) {
  for (int i = 0; i < n; i++)
    if (ts[i] && ts[i]->layout != IM_LAYOUT_PLAIN)
      return im_error(IM_ERR_ARG, "%s: takes plain-layout tensors only", op);
  return IM_OK;
}
#define PLAIN(op, ...) \
  TRY(all_plain(op, (int)(sizeof((const im_tensor_t *[]){__VA_ARGS__}) / sizeof(const im_tensor_t *)), \
                (const im_tensor_t *[]){__VA_ARGS__}))

/* ---- dispatch ---------------------------------------------------------------------------- */

/* Calls the backend's member, or the reference kernel when the member is
 * missing or declines (IM_ERR_UNSUPPORTED) on a host-memory backend. */
#define DISPATCH(member, opname, ...)                                                                           \
  do {                                                                                                          \
    im_status_t st_ = IM_ERR_UNSUPPORTED;                                                                       \
    if (b->iface->member) st_ = b->iface->member(b, __VA_ARGS__);                                               \
    if (st_ == IM_ERR_UNSUPPORTED && b->iface != &im__ref_iface && (b->iface->flags & IM_BACKEND_F_HOST))       \
      st_ = im__ref_iface.member(b, __VA_ARGS__);                                                               \
    if (st_ == IM_ERR_UNSUPPORTED && !b->iface->member)                                                         \
      return im_error(st_, "%s is not supported by the %s backend", opname, b->iface->name);                    \
    return st_;                                                                                                 \
  } while (0)

/* DISPATCH, except that a call with blocked tensors (blk) never falls back to the reference
 * kernels, which take plain tensors only. */
#define DISPATCH_L(blk, member, opname, ...)                                                                 \
  do {                                                                                                       \
    if (blk) {                                                                                               \
      im_status_t st_ = b->iface->member ? b->iface->member(b, __VA_ARGS__) : IM_ERR_UNSUPPORTED;            \
      if (st_ == IM_ERR_UNSUPPORTED)                                                                         \
        return im_error(st_, "%s: the %s backend has no blocked-layout kernel for this call", opname,       \
                        b->iface->name);                                                                     \
      return st_;                                                                                            \
    }                                                                                                        \
    DISPATCH(member, opname, __VA_ARGS__);                                                                   \
  } while (0)

#define NEED_B(opname) \
  if (!b) return im_error(IM_ERR_ARG, "%s: no backend", opname)

/* ---- convolution --------------------------------------------------------------------------- */

int64_t im_conv_out_dim(int64_t in, int kernel, int stride, int pad, int dilation) {
  if (in < 0 || kernel < 1 || stride < 1 || pad < 0 || dilation < 1) return -1;
  const int64_t eff = (int64_t)dilation * (kernel - 1) + 1, span = in + 2 * (int64_t)pad;
  if (span < eff) return -1;
  return (span - eff) / stride + 1;
}

static im_status_t conv_resolve(const char *op, const im_conv2d_params_t *in, im_conv2d_params_t *p) {
  im_conv2d_params_t z = {0};
  *p = in ? *in : z;
  if (!p->stride_h) p->stride_h = 1;
  if (!p->stride_w) p->stride_w = 1;
  if (!p->dilation_h) p->dilation_h = 1;
  if (!p->dilation_w) p->dilation_w = 1;
  if (!p->groups) p->groups = 1;
  const int lim = 1 << 20;
  if (p->stride_h < 1 || p->stride_w < 1 || p->dilation_h < 1 || p->dilation_w < 1 || p->groups < 1 ||
      p->pad_h < 0 || p->pad_w < 0 || p->stride_h > lim || p->stride_w > lim || p->dilation_h > lim ||
      p->dilation_w > lim || p->pad_h > lim || p->pad_w > lim)
    return im_error(IM_ERR_ARG, "%s: bad parameters (stride %dx%d, pad %dx%d, dilation %dx%d, groups %d)", op,
                    p->stride_h, p->stride_w, p->pad_h, p->pad_w, p->dilation_h, p->dilation_w, p->groups);
  return IM_OK;
}

/* x [N,C,H,W] and w [K,C/G,R,S] with resolved p: y's shape. */
static im_status_t conv_shape(const char *op, const im_conv2d_params_t *p, const int64_t *xs, const int64_t *ws,
                              int64_t *ys) {
  const int64_t C = xs[1], K = ws[0], G = p->groups;
  if (C < 1 || K < 1 || ws[2] < 1 || ws[3] < 1 || C % G || K % G || ws[1] != C / G)
    return im_error(IM_ERR_ARG,
                    "%s: input channels %lld, weight [%lld,%lld,%lld,%lld] and %lld groups do not fit together", op,
                    (long long)C, (long long)ws[0], (long long)ws[1], (long long)ws[2], (long long)ws[3],
                    (long long)G);
  if (ws[2] > INT32_MAX || ws[3] > INT32_MAX) return im_error(IM_ERR_ARG, "%s: kernel too large", op);
  const int64_t P = im_conv_out_dim(xs[2], (int)ws[2], p->stride_h, p->pad_h, p->dilation_h);
  const int64_t Q = im_conv_out_dim(xs[3], (int)ws[3], p->stride_w, p->pad_w, p->dilation_w);
  if (P < 1 || Q < 1)
    return im_error(IM_ERR_ARG, "%s: a %lldx%lld kernel (dilation %dx%d) does not fit a %lldx%lld input padded by %dx%d",
                    op, (long long)ws[2], (long long)ws[3], p->dilation_h, p->dilation_w, (long long)xs[2],
                    (long long)xs[3], p->pad_h, p->pad_w);
  ys[0] = xs[0];
  ys[1] = K;
  ys[2] = P;
  ys[3] = Q;
  return IM_OK;
}

im_status_t im_conv2d_output_shape(const im_conv2d_params_t *p, const int64_t x_shape[4], const int64_t w_shape[4],
                                   int64_t y_shape[4]) {
  im_conv2d_params_t r;
  TRY(conv_resolve("conv2d", p, &r));
  return conv_shape("conv2d", &r, x_shape, w_shape, y_shape);
}

static const int64_t any4[4] = {ANY, ANY, ANY, ANY};

/* The checks of both forward convolutions; *r gets the resolved params. */
static im_status_t conv_forward_check(const char *op, const im_conv2d_params_t *p, const im_tensor_t *x,
                                      const im_tensor_t *w, const im_tensor_t *bias, const im_tensor_t *y,
                                      im_conv2d_params_t *r) {
  int64_t ys[4];
  TRY(conv_resolve(op, p, r));
  TRY(chk(op, "x", x, IM_F32, 4, any4));
  TRY(chk(op, "w", w, IM_F32, 4, any4));
  TRY(conv_shape(op, r, x->shape, w->shape, ys));
  if (bias) TRY(chk(op, "bias", bias, IM_F32, 1, &ys[1]));
  TRY(chk(op, "y", y, IM_F32, 4, ys));
  TRY(chk_alias(op, "y", y, "x", x, 0));
  TRY(chk_alias(op, "y", y, "w", w, 0));
  TRY(chk_alias(op, "y", y, "bias", bias, 0));
  PLAIN(op, w, bias);
  return IM_OK;
}

/* Each of the activations ts[0..n) may be blocked, independently; 1 when any is (b must take it). */
static im_status_t conv_layouts(const char *op, const im_backend_t *b, int n, const im_tensor_t *const *ts,
                                int *blocked) {
  *blocked = 0;
  for (int i = 0; i < n; i++) {
    int k;
    TRY(one_layout_cl(op, b, 1, &ts[i], &k));
    *blocked |= k;
  }
  return IM_OK;
}

im_status_t im_op_conv2d_forward(im_backend_t *b, const im_conv2d_params_t *p, const im_tensor_t *x,
                                 const im_tensor_t *w, const im_tensor_t *bias, im_tensor_t *y) {
  const char *op = "conv2d_forward";
  NEED_B(op);
  im_conv2d_params_t r;
  TRY(conv_forward_check(op, p, x, w, bias, y, &r));
  int blk;
  TRY(conv_layouts(op, b, 2, (const im_tensor_t *[]){x, y}, &blk));
  DISPATCH_L(blk, conv2d_forward, op, &r, x, w, bias, y);
}

im_status_t im_op_conv2d_forward_fused(im_backend_t *b, const im_conv2d_params_t *p, const im_tensor_t *x,
                                       const im_tensor_t *w, const im_tensor_t *bias, im_act_t act, im_tensor_t *y) {
  const char *op = "conv2d_forward_fused";
  NEED_B(op);
  im_conv2d_params_t r;
  if (act != IM_ACT_NONE && act != IM_ACT_RELU) return im_error(IM_ERR_ARG, "%s: unknown activation %d", op, (int)act);
  TRY(conv_forward_check(op, p, x, w, bias, y, &r));
  int blk;
  TRY(conv_layouts(op, b, 2, (const im_tensor_t *[]){x, y}, &blk));
  DISPATCH_L(blk, conv2d_forward_fused, op, &r, x, w, bias, act, y);
}

im_status_t im_op_conv2d_forward_fused_add(im_backend_t *b, const im_conv2d_params_t *p, const im_tensor_t *x,
                                           const im_tensor_t *w, const im_tensor_t *bias, const im_tensor_t *residual,
                                           im_act_t act, im_tensor_t *y) {
  const char *op = "conv2d_forward_fused_add";
  NEED_B(op);
  im_conv2d_params_t r;
  if (act != IM_ACT_NONE && act != IM_ACT_RELU) return im_error(IM_ERR_ARG, "%s: unknown activation %d", op, (int)act);
  TRY(conv_forward_check(op, p, x, w, bias, y, &r));
  TRY(chk_like(op, "residual", residual, y));
  TRY(chk_alias(op, "y", y, "residual", residual, 1));
  int blk, blk_y;
  TRY(conv_layouts(op, b, 1, (const im_tensor_t *[]){x}, &blk));
  TRY(one_layout_cl(op, b, 2, (const im_tensor_t *[]){residual, y}, &blk_y));
  DISPATCH_L(blk | blk_y, conv2d_forward_fused_add, op, &r, x, w, bias, residual, act, y);
}

im_status_t im_op_conv2d_backward_data(im_backend_t *b, const im_conv2d_params_t *p, const im_tensor_t *dy,
                                       const im_tensor_t *w, im_tensor_t *dx) {
  const char *op = "conv2d_backward_data";
  NEED_B(op);
  im_conv2d_params_t r;
  int64_t ys[4];
  TRY(conv_resolve(op, p, &r));
  TRY(chk(op, "dx", dx, IM_F32, 4, any4));
  TRY(chk(op, "w", w, IM_F32, 4, any4));
  TRY(conv_shape(op, &r, dx->shape, w->shape, ys));
  TRY(chk(op, "dy", dy, IM_F32, 4, ys));
  TRY(chk_alias(op, "dx", dx, "dy", dy, 0));
  TRY(chk_alias(op, "dx", dx, "w", w, 0));
  PLAIN(op, w);
  int blk;
  TRY(conv_layouts(op, b, 2, (const im_tensor_t *[]){dy, dx}, &blk));
  DISPATCH_L(blk, conv2d_backward_data, op, &r, dy, w, dx);
}

im_status_t im_op_conv2d_backward_weight(im_backend_t *b, const im_conv2d_params_t *p, const im_tensor_t *x,
                                         const im_tensor_t *dy, im_tensor_t *dw, im_tensor_t *dbias) {
  const char *op = "conv2d_backward_weight";
  NEED_B(op);
  im_conv2d_params_t r;
  int64_t ys[4];
  TRY(conv_resolve(op, p, &r));
  TRY(chk(op, "x", x, IM_F32, 4, any4));
  TRY(chk(op, "dw", dw, IM_F32, 4, any4));
  TRY(conv_shape(op, &r, x->shape, dw->shape, ys));
  TRY(chk(op, "dy", dy, IM_F32, 4, ys));
  if (dbias) TRY(chk(op, "dbias", dbias, IM_F32, 1, &ys[1]));
  TRY(chk_alias(op, "dw", dw, "x", x, 0));
  TRY(chk_alias(op, "dw", dw, "dy", dy, 0));
  TRY(chk_alias(op, "dbias", dbias, "dy", dy, 0));
  TRY(chk_alias(op, "dbias", dbias, "dw", dw, 0));
  PLAIN(op, dw, dbias);
  int blk;
  TRY(conv_layouts(op, b, 2, (const im_tensor_t *[]){x, dy}, &blk));
  DISPATCH_L(blk, conv2d_backward_weight, op, &r, x, dy, dw, dbias);
}

/* ---- batch norm ------------------------------------------------------------------------------ */

/* x is F32 [N,C,...] with ndim >= 2; *C its channels, *n the elements per channel. */
static im_status_t bn_input(const char *op, const im_tensor_t *x, int64_t *C, int64_t *n) {
  TRY(chk_valid(op, "x", x));
  if (x->dtype != IM_F32 || x->ndim < 2) return im_error(IM_ERR_ARG, "%s: x must be F32 [N,C,...]", op);
  *C = x->shape[1];
  *n = im_tensor_numel(x) / (*C ? *C : 1);
  return IM_OK;
}

static im_status_t bn_params(const char *op, const im_batchnorm_params_t *p) {
  if (!p || !(p->eps >= 0.0f) || !(p->momentum >= 0.0f && p->momentum <= 1.0f) || isinf(p->eps))
    return im_error(IM_ERR_ARG, "%s: needs eps >= 0 and momentum in [0, 1]", op);
  return IM_OK;
}

/* An optional per-channel vector (gamma, beta, dgamma, dbeta) of C elements. */
static im_status_t opt_vec(const char *op, const char *what, const im_tensor_t *t, int64_t C) {
  return t ? chk_numel(op, what, t, IM_F32, C) : IM_OK;
}

/* The checks of both training forwards; *blk: the activations are blocked. */
static im_status_t bn_train_check(const char *op, im_backend_t *b, const im_batchnorm_params_t *p,
                                  const im_tensor_t *x, const im_tensor_t *gamma, const im_tensor_t *beta,
                                  im_tensor_t *running_mean, im_tensor_t *running_var, im_tensor_t *y,
                                  im_tensor_t *save_mean, im_tensor_t *save_invstd, int *blk) {
  int64_t C, n;
  TRY(bn_params(op, p));
  TRY(bn_input(op, x, &C, &n));
  if (n < 2) return im_error(IM_ERR_ARG, "%s: training needs more than one value per channel", op);
  TRY(opt_vec(op, "gamma", gamma, C));
  TRY(opt_vec(op, "beta", beta, C));
  TRY(chk_numel(op, "running_mean", running_mean, IM_F32, C));
  TRY(chk_numel(op, "running_var", running_var, IM_F32, C));
  TRY(chk_numel(op, "save_mean", save_mean, IM_F32, C));
  TRY(chk_numel(op, "save_invstd", save_invstd, IM_F32, C));
  TRY(chk_like(op, "y", y, x));
  const im_tensor_t *ins[] = {x, gamma, beta};
  const char *in_names[] = {"x", "gamma", "beta"};
  im_tensor_t *outs[] = {y, save_mean, save_invstd, running_mean, running_var};
  const char *out_names[] = {"y", "save_mean", "save_invstd", "running_mean", "running_var"};
  for (int o = 0; o < 5; o++) {
    for (int i = 0; i < 3; i++) TRY(chk_alias(op, out_names[o], outs[o], in_names[i], ins[i], 0));
    for (int j = 0; j < o; j++) TRY(chk_alias(op, out_names[o], outs[o], out_names[j], outs[j], 0));
  }
  PLAIN(op, gamma, beta, running_mean, running_var, save_mean, save_invstd);
  return one_layout(op, b, 2, (const im_tensor_t *[]){x, y}, blk);
}

im_status_t im_op_batchnorm_forward_train(im_backend_t *b, const im_batchnorm_params_t *p, const im_tensor_t *x,
                                          const im_tensor_t *gamma, const im_tensor_t *beta, im_tensor_t *running_mean,
                                          im_tensor_t *running_var, im_tensor_t *y, im_tensor_t *save_mean,
                                          im_tensor_t *save_invstd) {
  const char *op = "batchnorm_forward_train";
  NEED_B(op);
  int blk;
  TRY(bn_train_check(op, b, p, x, gamma, beta, running_mean, running_var, y, save_mean, save_invstd, &blk));
  DISPATCH_L(blk, batchnorm_forward_train, op, p, x, gamma, beta, running_mean, running_var, y, save_mean,
             save_invstd);
}

im_status_t im_op_batchnorm_forward_train_fused(im_backend_t *b, const im_batchnorm_params_t *p,
                                                const im_tensor_t *x, const im_tensor_t *gamma,
                                                const im_tensor_t *beta, im_tensor_t *running_mean,
                                                im_tensor_t *running_var, im_act_t act, im_tensor_t *y,
                                                im_tensor_t *save_mean, im_tensor_t *save_invstd) {
  const char *op = "batchnorm_forward_train_fused";
  NEED_B(op);
  if (act != IM_ACT_NONE && act != IM_ACT_RELU) return im_error(IM_ERR_ARG, "%s: unknown activation %d", op, (int)act);
  int blk;
  TRY(bn_train_check(op, b, p, x, gamma, beta, running_mean, running_var, y, save_mean, save_invstd, &blk));
  DISPATCH_L(blk, batchnorm_forward_train_fused, op, p, x, gamma, beta, running_mean, running_var, act, y,
             save_mean, save_invstd);
}

im_status_t im_op_batchnorm_forward_eval(im_backend_t *b, const im_batchnorm_params_t *p, const im_tensor_t *x,
                                         const im_tensor_t *gamma, const im_tensor_t *beta,
                                         const im_tensor_t *running_mean, const im_tensor_t *running_var,
                                         im_tensor_t *y) {
  const char *op = "batchnorm_forward_eval";
  NEED_B(op);
  int64_t C, n;
  TRY(bn_params(op, p));
  TRY(bn_input(op, x, &C, &n));
  TRY(opt_vec(op, "gamma", gamma, C));
  TRY(opt_vec(op, "beta", beta, C));
  TRY(chk_numel(op, "running_mean", running_mean, IM_F32, C));
  TRY(chk_numel(op, "running_var", running_var, IM_F32, C));
  TRY(chk_like(op, "y", y, x));
  TRY(chk_alias(op, "y", y, "x", x, 1)); /* per element: in place is fine */
  TRY(chk_alias(op, "y", y, "gamma", gamma, 0));
  TRY(chk_alias(op, "y", y, "beta", beta, 0));
  TRY(chk_alias(op, "y", y, "running_mean", running_mean, 0));
  TRY(chk_alias(op, "y", y, "running_var", running_var, 0));
  PLAIN(op, gamma, beta, running_mean, running_var);
  int blk;
  TRY(one_layout(op, b, 2, (const im_tensor_t *[]){x, y}, &blk));
  DISPATCH_L(blk, batchnorm_forward_eval, op, p, x, gamma, beta, running_mean, running_var, y);
}

/* The backward of a normalization: x, dy (and y, the fused activation's output, when not NULL) alike;
 * stats of n elements; dx like x; optional gamma/dgamma/dbeta of C elements; no output overlapping any
 * input or another output. */
static im_status_t norm_backward_check(const char *op, const im_tensor_t *x, const im_tensor_t *y,
                                       const im_tensor_t *dy, const im_tensor_t *gamma, const im_tensor_t *save_mean,
                                       const im_tensor_t *save_invstd, im_tensor_t *dx, im_tensor_t *dgamma,
                                       im_tensor_t *dbeta, int64_t C, int64_t nstats) {
  if (y) TRY(chk_like(op, "y", y, x));
  TRY(chk_like(op, "dy", dy, x));
  TRY(opt_vec(op, "gamma", gamma, C));
  TRY(chk_numel(op, "save_mean", save_mean, IM_F32, nstats));
  TRY(chk_numel(op, "save_invstd", save_invstd, IM_F32, nstats));
  TRY(chk_like(op, "dx", dx, x));
  TRY(opt_vec(op, "dgamma", dgamma, C));
  TRY(opt_vec(op, "dbeta", dbeta, C));
  const im_tensor_t *ins[] = {x, dy, gamma, save_mean, save_invstd, y};
  const char *in_names[] = {"x", "dy", "gamma", "save_mean", "save_invstd", "y"};
  im_tensor_t *outs[] = {dx, dgamma, dbeta};
  const char *out_names[] = {"dx", "dgamma", "dbeta"};
  for (int o = 0; o < 3; o++) {
    for (int i = 0; i < 6; i++) TRY(chk_alias(op, out_names[o], outs[o], in_names[i], ins[i], 0));
    for (int j = 0; j < o; j++) TRY(chk_alias(op, out_names[o], outs[o], out_names[j], outs[j], 0));
  }
  return IM_OK;
}

/* The checks of both batch norm backwards (y: the fused one's, or NULL); *blk: the activations are blocked. */
static im_status_t bn_backward_check(const char *op, im_backend_t *b, const im_tensor_t *x, const im_tensor_t *y,
                                     const im_tensor_t *dy, const im_tensor_t *gamma, const im_tensor_t *save_mean,
                                     const im_tensor_t *save_invstd, im_tensor_t *dx, im_tensor_t *dgamma,
                                     im_tensor_t *dbeta, int *blk) {
  int64_t C, n;
  TRY(bn_input(op, x, &C, &n));
  TRY(norm_backward_check(op, x, y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, C, C));
  PLAIN(op, gamma, save_mean, save_invstd, dgamma, dbeta);
  return one_layout(op, b, 4, (const im_tensor_t *[]){x, y, dy, dx}, blk);
}

im_status_t im_op_batchnorm_backward(im_backend_t *b, const im_tensor_t *x, const im_tensor_t *dy,
                                     const im_tensor_t *gamma, const im_tensor_t *save_mean,
                                     const im_tensor_t *save_invstd, im_tensor_t *dx, im_tensor_t *dgamma,
                                     im_tensor_t *dbeta) {
  const char *op = "batchnorm_backward";
  NEED_B(op);
  int blk;
  TRY(bn_backward_check(op, b, x, NULL, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, &blk));
  DISPATCH_L(blk, batchnorm_backward, op, x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
}

im_status_t im_op_batchnorm_backward_fused(im_backend_t *b, const im_tensor_t *x, const im_tensor_t *y, im_act_t act,
                                           const im_tensor_t *dy, const im_tensor_t *gamma,
                                           const im_tensor_t *save_mean, const im_tensor_t *save_invstd,
                                           im_tensor_t *dx, im_tensor_t *dgamma, im_tensor_t *dbeta) {
  const char *op = "batchnorm_backward_fused";
  NEED_B(op);
  if (act != IM_ACT_NONE && act != IM_ACT_RELU) return im_error(IM_ERR_ARG, "%s: unknown activation %d", op, (int)act);
  if (!y) return im_error(IM_ERR_ARG, "%s: y is missing", op);
  int blk;
  TRY(bn_backward_check(op, b, x, y, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, &blk));
  DISPATCH_L(blk, batchnorm_backward_fused, op, x, y, act, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
}

/* ---- layer norm --------------------------------------------------------------------------------- */

static im_status_t ln_input(const char *op, const im_tensor_t *x, int64_t *C, int64_t *M) {
  TRY(chk_valid(op, "x", x));
  if (x->dtype != IM_F32 || x->ndim < 1 || x->shape[x->ndim - 1] < 1)
    return im_error(IM_ERR_ARG, "%s: x must be F32 [..., C] with C >= 1", op);
  *C = x->shape[x->ndim - 1];
  *M = im_tensor_numel(x) / *C;
  return IM_OK;
}

im_status_t im_op_layernorm_forward(im_backend_t *b, const im_layernorm_params_t *p, const im_tensor_t *x,
                                    const im_tensor_t *gamma, const im_tensor_t *beta, im_tensor_t *y,
                                    im_tensor_t *save_mean, im_tensor_t *save_invstd) {
  const char *op = "layernorm_forward";
  NEED_B(op);
  int64_t C, M;
  if (!p || !(p->eps >= 0.0f) || isinf(p->eps)) return im_error(IM_ERR_ARG, "%s: needs eps >= 0", op);
  TRY(ln_input(op, x, &C, &M));
  TRY(opt_vec(op, "gamma", gamma, C));
  TRY(opt_vec(op, "beta", beta, C));
  TRY(chk_like(op, "y", y, x));
  TRY(chk_numel(op, "save_mean", save_mean, IM_F32, M));
  TRY(chk_numel(op, "save_invstd", save_invstd, IM_F32, M));
  const im_tensor_t *ins[] = {x, gamma, beta};
  const char *in_names[] = {"x", "gamma", "beta"};
  im_tensor_t *outs[] = {y, save_mean, save_invstd};
  const char *out_names[] = {"y", "save_mean", "save_invstd"};
  for (int o = 0; o < 3; o++) {
    for (int i = 0; i < 3; i++) TRY(chk_alias(op, out_names[o], outs[o], in_names[i], ins[i], 0));
    for (int j = 0; j < o; j++) TRY(chk_alias(op, out_names[o], outs[o], out_names[j], outs[j], 0));
  }
  PLAIN(op, x, gamma, beta, y, save_mean, save_invstd);
  DISPATCH(layernorm_forward, op, p, x, gamma, beta, y, save_mean, save_invstd);
}

im_status_t im_op_layernorm_backward(im_backend_t *b, const im_tensor_t *x, const im_tensor_t *dy,
                                     const im_tensor_t *gamma, const im_tensor_t *save_mean,
                                     const im_tensor_t *save_invstd, im_tensor_t *dx, im_tensor_t *dgamma,
                                     im_tensor_t *dbeta) {
  const char *op = "layernorm_backward";
  NEED_B(op);
  int64_t C, M;
  TRY(ln_input(op, x, &C, &M));
  TRY(norm_backward_check(op, x, NULL, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, C, M));
  PLAIN(op, x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
  DISPATCH(layernorm_backward, op, x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
}

/* ---- element-wise --------------------------------------------------------------------------------- */

/* Unary element-wise: in F32, out alike (in place allowed). */
static im_status_t unary(const char *op, const im_tensor_t *in, im_tensor_t *out) {
  TRY(chk_valid(op, "x", in));
  if (in->dtype != IM_F32) return im_error(IM_ERR_ARG, "%s: x must be F32", op);
  TRY(chk_like(op, "y", out, in));
  return chk_alias(op, "y", out, "x", in, 1);
}

/* Binary element-wise gradient: a, dy F32 alike, dx alike (may be dy, must not partly overlap a). */
static im_status_t binary_grad(const char *op, const char *an, const im_tensor_t *a, const im_tensor_t *dy,
                               im_tensor_t *dx) {
  TRY(chk_valid(op, an, a));
  if (a->dtype != IM_F32) return im_error(IM_ERR_ARG, "%s: %s must be F32", op, an);
  TRY(chk_like(op, "dy", dy, a));
  TRY(chk_like(op, "dx", dx, a));
  TRY(chk_alias(op, "dx", dx, "dy", dy, 1));
  return chk_alias(op, "dx", dx, an, a, 1);
}

im_status_t im_op_relu_forward(im_backend_t *b, const im_tensor_t *x, im_tensor_t *y) {
  NEED_B("relu_forward");
  TRY(unary("relu_forward", x, y));
  int blk;
  TRY(one_layout_cl("relu_forward", b, 2, (const im_tensor_t *[]){x, y}, &blk));
  DISPATCH(relu_forward, "relu_forward", x, y);
}

im_status_t im_op_relu_backward(im_backend_t *b, const im_tensor_t *y, const im_tensor_t *dy, im_tensor_t *dx) {
  NEED_B("relu_backward");
  TRY(binary_grad("relu_backward", "y", y, dy, dx));
  int blk;
  TRY(one_layout_cl("relu_backward", b, 3, (const im_tensor_t *[]){y, dy, dx}, &blk));
  DISPATCH(relu_backward, "relu_backward", y, dy, dx);
}

im_status_t im_op_gelu_forward(im_backend_t *b, const im_tensor_t *x, im_tensor_t *y) {
  NEED_B("gelu_forward");
  TRY(unary("gelu_forward", x, y));
  PLAIN("gelu_forward", x, y);
  DISPATCH(gelu_forward, "gelu_forward", x, y);
}

im_status_t im_op_gelu_backward(im_backend_t *b, const im_tensor_t *x, const im_tensor_t *dy, im_tensor_t *dx) {
  NEED_B("gelu_backward");
  TRY(binary_grad("gelu_backward", "x", x, dy, dx));
  PLAIN("gelu_backward", x, dy, dx);
  DISPATCH(gelu_backward, "gelu_backward", x, dy, dx);
}

static im_status_t dropout_p(const char *op, float p) {
  if (!(p >= 0.0f && p <= 1.0f)) return im_error(IM_ERR_ARG, "%s: p must be in [0, 1]", op);
  return IM_OK;
}

im_status_t im_op_dropout_forward(im_backend_t *b, float p, im_rng_t *rng, const im_tensor_t *x, im_tensor_t *y,
                                  im_tensor_t *mask) {
  const char *op = "dropout_forward";
  NEED_B(op);
  TRY(dropout_p(op, p));
  if (!rng) return im_error(IM_ERR_ARG, "%s: no random number generator", op);
  TRY(unary(op, x, y));
  TRY(chk(op, "mask", mask, IM_U8, x->ndim, x->shape));
  TRY(chk_alias(op, "mask", mask, "x", x, 0));
  TRY(chk_alias(op, "mask", mask, "y", y, 0));
  PLAIN(op, x, y, mask);
  const uint64_t seed = im_rng_next(rng);
  DISPATCH(dropout_forward, op, p, seed, x, y, mask);
}

im_status_t im_op_dropout_backward(im_backend_t *b, float p, const im_tensor_t *mask, const im_tensor_t *dy,
                                   im_tensor_t *dx) {
  const char *op = "dropout_backward";
  NEED_B(op);
  TRY(dropout_p(op, p));
  TRY(unary(op, dy, dx));
  TRY(chk(op, "mask", mask, IM_U8, dy->ndim, dy->shape));
  TRY(chk_alias(op, "dx", dx, "mask", mask, 0));
  PLAIN(op, mask, dy, dx);
  DISPATCH(dropout_backward, op, p, mask, dy, dx);
}

im_status_t im_op_add(im_backend_t *b, const im_tensor_t *x1, const im_tensor_t *x2, im_tensor_t *y) {
  const char *op = "add";
  NEED_B(op);
  TRY(unary(op, x1, y));
  TRY(chk_like(op, "x2", x2, x1));
  TRY(chk_alias(op, "y", y, "x2", x2, 1));
  int blk;
  TRY(one_layout_cl(op, b, 3, (const im_tensor_t *[]){x1, x2, y}, &blk));
  DISPATCH(add, op, x1, x2, y);
}

im_status_t im_op_add_backward(im_backend_t *b, const im_tensor_t *dy, im_tensor_t *dx1, im_tensor_t *dx2) {
  const char *op = "add_backward";
  NEED_B(op);
  TRY(chk_valid(op, "dy", dy));
  if (dy->dtype != IM_F32) return im_error(IM_ERR_ARG, "%s: dy must be F32", op);
  if (dx1) {
    TRY(chk_like(op, "dx1", dx1, dy));
    TRY(chk_alias(op, "dx1", dx1, "dy", dy, 1));
  }
  if (dx2) {
    TRY(chk_like(op, "dx2", dx2, dy));
    TRY(chk_alias(op, "dx2", dx2, "dy", dy, 1));
    if (dx1 && dx1->data != dy->data) TRY(chk_alias(op, "dx2", dx2, "dx1", dx1, 0));
  }
  int blk;
  TRY(one_layout_cl(op, b, 3, (const im_tensor_t *[]){dy, dx1, dx2}, &blk));
  DISPATCH(add_backward, op, dy, dx1, dx2);
}

im_status_t im_op_fill(im_backend_t *b, im_tensor_t *t, float v) {
  const char *op = "fill";
  NEED_B(op);
  TRY(chk_valid(op, "t", t));
  if (t->dtype != IM_F32) return im_error(IM_ERR_ARG, "%s: t must be F32", op);
  DISPATCH(fill, op, t, v);
}

/* ---- pooling --------------------------------------------------------------------------------------- */

static im_status_t pool_resolve(const char *op, const im_pool2d_params_t *in, im_pool2d_params_t *p) {
  if (!in) return im_error(IM_ERR_ARG, "%s: no parameters", op);
  *p = *in;
  if (!p->stride_h) p->stride_h = p->kernel_h;
  if (!p->stride_w) p->stride_w = p->kernel_w;
  const int lim = 1 << 20;
  if (p->kernel_h < 1 || p->kernel_w < 1 || p->kernel_h > lim || p->kernel_w > lim || p->stride_h < 1 ||
      p->stride_w < 1 || p->stride_h > lim || p->stride_w > lim || p->pad_h < 0 || p->pad_w < 0 ||
      p->pad_h > p->kernel_h / 2 || p->pad_w > p->kernel_w / 2 || (p->exclude_pad != 0 && p->exclude_pad != 1))
    return im_error(IM_ERR_ARG,
                    "%s: bad parameters (kernel %dx%d, stride %dx%d, pad %dx%d: pad must be at most half the kernel)",
                    op, p->kernel_h, p->kernel_w, p->stride_h, p->stride_w, p->pad_h, p->pad_w);
  return IM_OK;
}

static im_status_t pool_shape(const char *op, const im_pool2d_params_t *p, const int64_t *xs, int64_t *ys) {
  const int64_t P = im_conv_out_dim(xs[2], p->kernel_h, p->stride_h, p->pad_h, 1);
  const int64_t Q = im_conv_out_dim(xs[3], p->kernel_w, p->stride_w, p->pad_w, 1);
  if (P < 1 || Q < 1)
    return im_error(IM_ERR_ARG, "%s: a %dx%d window does not fit a %lldx%lld input padded by %dx%d", op, p->kernel_h,
                    p->kernel_w, (long long)xs[2], (long long)xs[3], p->pad_h, p->pad_w);
  ys[0] = xs[0];
  ys[1] = xs[1];
  ys[2] = P;
  ys[3] = Q;
  return IM_OK;
}

im_status_t im_pool2d_output_shape(const im_pool2d_params_t *p, const int64_t x_shape[4], int64_t y_shape[4]) {
  im_pool2d_params_t r;
  TRY(pool_resolve("pool2d", p, &r));
  return pool_shape("pool2d", &r, x_shape, y_shape);
}

/* x [N,C,H,W] (the input, or dx for backward) and y [N,C,P,Q] (the output, or dy). */
static im_status_t pool_check(const char *op, const im_pool2d_params_t *in, im_pool2d_params_t *p,
                              const char *xn, const im_tensor_t *x, const char *yn, const im_tensor_t *y) {
  int64_t ys[4];
  TRY(pool_resolve(op, in, p));
  TRY(chk(op, xn, x, IM_F32, 4, any4));
  TRY(pool_shape(op, p, x->shape, ys));
  TRY(chk(op, yn, y, IM_F32, 4, ys));
  return chk_alias(op, yn, y, xn, x, 0);
}

im_status_t im_op_maxpool2d_forward(im_backend_t *b, const im_pool2d_params_t *p, const im_tensor_t *x,
                                    im_tensor_t *y, im_tensor_t *indices) {
  const char *op = "maxpool2d_forward";
  NEED_B(op);
  im_pool2d_params_t r;
  TRY(pool_check(op, p, &r, "x", x, "y", y));
  if (indices) {
    TRY(chk(op, "indices", indices, IM_I32, 4, y->shape));
    TRY(chk_alias(op, "indices", indices, "x", x, 0));
    TRY(chk_alias(op, "indices", indices, "y", y, 0));
  }
  if (x->shape[2] * x->shape[3] > INT32_MAX) return im_error(IM_ERR_ARG, "%s: planes too large for I32 indices", op);
  int blk;
  TRY(one_layout(op, b, 3, (const im_tensor_t *[]){x, y, indices}, &blk));
  DISPATCH_L(blk, maxpool2d_forward, op, &r, x, y, indices);
}

im_status_t im_op_maxpool2d_backward(im_backend_t *b, const im_pool2d_params_t *p, const im_tensor_t *dy,
                                     const im_tensor_t *indices, im_tensor_t *dx) {
  const char *op = "maxpool2d_backward";
  NEED_B(op);
  im_pool2d_params_t r;
  TRY(pool_check(op, p, &r, "dx", dx, "dy", dy));
  TRY(chk(op, "indices", indices, IM_I32, 4, dy->shape));
  TRY(chk_alias(op, "dx", dx, "indices", indices, 0));
  const int64_t hw = dx->shape[2] * dx->shape[3], n = im_tensor_numel(indices);
  const int32_t *id = indices->data;
  for (int64_t i = 0; i < n; i++)
    if (id[i] < 0 || id[i] >= hw)
      return im_error(IM_ERR_ARG, "%s: index %d at %lld is outside a %lld-element plane", op, (int)id[i],
                      (long long)i, (long long)hw);
  int blk;
  TRY(one_layout(op, b, 3, (const im_tensor_t *[]){dy, indices, dx}, &blk));
  DISPATCH_L(blk, maxpool2d_backward, op, &r, dy, indices, dx);
}

im_status_t im_op_avgpool2d_forward(im_backend_t *b, const im_pool2d_params_t *p, const im_tensor_t *x,
                                    im_tensor_t *y) {
  const char *op = "avgpool2d_forward";
  NEED_B(op);
  im_pool2d_params_t r;
  TRY(pool_check(op, p, &r, "x", x, "y", y));
  PLAIN(op, x, y);
  DISPATCH(avgpool2d_forward, op, &r, x, y);
}

im_status_t im_op_avgpool2d_backward(im_backend_t *b, const im_pool2d_params_t *p, const im_tensor_t *dy,
                                     im_tensor_t *dx) {
  const char *op = "avgpool2d_backward";
  NEED_B(op);
  im_pool2d_params_t r;
  TRY(pool_check(op, p, &r, "dx", dx, "dy", dy));
  PLAIN(op, dy, dx);
  DISPATCH(avgpool2d_backward, op, &r, dy, dx);
}

/* x [N,C,H,W] and y [N,C] or [N,C,1,1]. */
static im_status_t gap_check(const char *op, const char *xn, const im_tensor_t *x, const char *yn,
                             const im_tensor_t *y) {
  TRY(chk(op, xn, x, IM_F32, 4, any4));
  const int64_t s4[4] = {x->shape[0], x->shape[1], 1, 1};
  TRY(chk_valid(op, yn, y));
  if (y->ndim == 2) TRY(chk(op, yn, y, IM_F32, 2, s4));
  else TRY(chk(op, yn, y, IM_F32, 4, s4));
  return chk_alias(op, yn, y, xn, x, 0);
}

im_status_t im_op_global_avgpool_forward(im_backend_t *b, const im_tensor_t *x, im_tensor_t *y) {
  const char *op = "global_avgpool_forward";
  NEED_B(op);
  TRY(gap_check(op, "x", x, "y", y));
  if (x->shape[2] * x->shape[3] < 1) return im_error(IM_ERR_ARG, "%s: empty planes", op);
  PLAIN(op, y);
  int blk;
  TRY(one_layout_cl(op, b, 1, (const im_tensor_t *[]){x}, &blk));
  DISPATCH_L(blk, global_avgpool_forward, op, x, y);
}

im_status_t im_op_global_avgpool_backward(im_backend_t *b, const im_tensor_t *dy, im_tensor_t *dx) {
  const char *op = "global_avgpool_backward";
  NEED_B(op);
  TRY(gap_check(op, "dx", dx, "dy", dy));
  PLAIN(op, dy);
  int blk;
  TRY(one_layout_cl(op, b, 1, (const im_tensor_t *[]){dx}, &blk));
  DISPATCH_L(blk, global_avgpool_backward, op, dy, dx);
}

/* ---- linear ---------------------------------------------------------------------------------------- */

/* a [..., n] and c [..., m] with the same leading dims (a is the reference). */
static im_status_t rows_like(const char *op, const char *an, const im_tensor_t *a, int64_t n, const char *cn,
                             const im_tensor_t *c, int64_t m) {
  TRY(chk_valid(op, an, a));
  if (a->dtype != IM_F32 || a->ndim < 1 || a->shape[a->ndim - 1] != n)
    return im_error(IM_ERR_ARG, "%s: %s must be F32 [..., %lld]", op, an, (long long)n);
  int64_t s[IM_TENSOR_MAX_DIMS];
  memcpy(s, a->shape, sizeof s);
  s[a->ndim - 1] = m;
  return chk(op, cn, c, IM_F32, a->ndim, s);
}

im_status_t im_op_linear_forward(im_backend_t *b, const im_tensor_t *x, const im_tensor_t *w,
                                 const im_tensor_t *bias, im_tensor_t *y) {
  const char *op = "linear_forward";
  NEED_B(op);
  const int64_t any2[2] = {ANY, ANY};
  TRY(chk(op, "w", w, IM_F32, 2, any2));
  TRY(rows_like(op, "x", x, w->shape[1], "y", y, w->shape[0]));
  if (bias) TRY(chk(op, "bias", bias, IM_F32, 1, &w->shape[0]));
  TRY(chk_alias(op, "y", y, "x", x, 0));
  TRY(chk_alias(op, "y", y, "w", w, 0));
  TRY(chk_alias(op, "y", y, "bias", bias, 0));
  PLAIN(op, x, w, bias, y);
  DISPATCH(linear_forward, op, x, w, bias, y);
}

im_status_t im_op_linear_backward_data(im_backend_t *b, const im_tensor_t *dy, const im_tensor_t *w,
                                       im_tensor_t *dx) {
  const char *op = "linear_backward_data";
  NEED_B(op);
  const int64_t any2[2] = {ANY, ANY};
  TRY(chk(op, "w", w, IM_F32, 2, any2));
  TRY(rows_like(op, "dy", dy, w->shape[0], "dx", dx, w->shape[1]));
  TRY(chk_alias(op, "dx", dx, "dy", dy, 0));
  TRY(chk_alias(op, "dx", dx, "w", w, 0));
  PLAIN(op, dy, w, dx);
  DISPATCH(linear_backward_data, op, dy, w, dx);
}

im_status_t im_op_linear_backward_weight(im_backend_t *b, const im_tensor_t *x, const im_tensor_t *dy,
                                         im_tensor_t *dw, im_tensor_t *dbias) {
  const char *op = "linear_backward_weight";
  NEED_B(op);
  const int64_t any2[2] = {ANY, ANY};
  TRY(chk(op, "dw", dw, IM_F32, 2, any2));
  TRY(rows_like(op, "x", x, dw->shape[1], "dy", dy, dw->shape[0]));
  if (dbias) TRY(chk(op, "dbias", dbias, IM_F32, 1, &dw->shape[0]));
  TRY(chk_alias(op, "dw", dw, "x", x, 0));
  TRY(chk_alias(op, "dw", dw, "dy", dy, 0));
  TRY(chk_alias(op, "dbias", dbias, "x", x, 0));
  TRY(chk_alias(op, "dbias", dbias, "dy", dy, 0));
  TRY(chk_alias(op, "dbias", dbias, "dw", dw, 0));
  PLAIN(op, x, dy, dw, dbias);
  DISPATCH(linear_backward_weight, op, x, dy, dw, dbias);
}

/* ---- loss ------------------------------------------------------------------------------------------ */

static im_status_t xent_check(const char *op, const im_xent_params_t *p, const im_tensor_t *logits,
                              const im_tensor_t *labels) {
  if (!p || !(p->label_smoothing >= 0.0f && p->label_smoothing <= 1.0f))
    return im_error(IM_ERR_ARG, "%s: label_smoothing must be in [0, 1]", op);
  const int64_t any2[2] = {ANY, ANY};
  TRY(chk(op, "logits", logits, IM_F32, 2, any2));
  const int64_t N = logits->shape[0], K = logits->shape[1];
  if (N < 1 || K < 1) return im_error(IM_ERR_ARG, "%s: logits must be [N,K] with N, K >= 1", op);
  if (K > INT32_MAX) return im_error(IM_ERR_ARG, "%s: too many classes", op);
  TRY(chk(op, "labels", labels, IM_I32, 1, &logits->shape[0]));
  const int32_t *lab = labels->data;
  for (int64_t n = 0; n < N; n++)
    if (lab[n] < 0 || lab[n] >= K)
      return im_error(IM_ERR_ARG, "%s: label %d of sample %lld is outside [0, %lld)", op, (int)lab[n], (long long)n,
                      (long long)K);
  return IM_OK;
}

im_status_t im_op_softmax_xent_forward(im_backend_t *b, const im_xent_params_t *p, const im_tensor_t *logits,
                                       const im_tensor_t *labels, im_tensor_t *loss, im_tensor_t *probs) {
  const char *op = "softmax_xent_forward";
  NEED_B(op);
  TRY(xent_check(op, p, logits, labels));
  TRY(chk_numel(op, "loss", loss, IM_F32, 1));
  TRY(chk_alias(op, "loss", loss, "logits", logits, 0));
  TRY(chk_alias(op, "loss", loss, "labels", labels, 0));
  if (probs) {
    TRY(chk_like(op, "probs", probs, logits));
    TRY(chk_alias(op, "probs", probs, "logits", logits, 0));
    TRY(chk_alias(op, "probs", probs, "labels", labels, 0));
    TRY(chk_alias(op, "probs", probs, "loss", loss, 0));
  }
  PLAIN(op, logits, labels, loss, probs);
  DISPATCH(softmax_xent_forward, op, p, logits, labels, loss, probs);
}

im_status_t im_op_softmax_xent_backward(im_backend_t *b, const im_xent_params_t *p, const im_tensor_t *logits,
                                        const im_tensor_t *labels, im_tensor_t *dlogits) {
  const char *op = "softmax_xent_backward";
  NEED_B(op);
  TRY(xent_check(op, p, logits, labels));
  TRY(chk_like(op, "dlogits", dlogits, logits));
  TRY(chk_alias(op, "dlogits", dlogits, "logits", logits, 0));
  TRY(chk_alias(op, "dlogits", dlogits, "labels", labels, 0));
  PLAIN(op, logits, labels, dlogits);
  DISPATCH(softmax_xent_backward, op, p, logits, labels, dlogits);
}

/* ---- layout ------------------------------------------------------------------------------------------ */

static im_status_t permute_check(const char *op, const im_tensor_t *x, const im_tensor_t *y, const int perm[4]) {
  TRY(chk_valid(op, "x", x));
  if (x->ndim != 4) return im_error(IM_ERR_ARG, "%s: x must have 4 dimensions", op);
  const int64_t s[4] = {x->shape[perm[0]], x->shape[perm[1]], x->shape[perm[2]], x->shape[perm[3]]};
  TRY(chk(op, "y", y, x->dtype, 4, s));
  PLAIN(op, x, y);
  return chk_alias(op, "y", y, "x", x, 0);
}

im_status_t im_op_nchw_to_nhwc(im_backend_t *b, const im_tensor_t *x, im_tensor_t *y) {
  const char *op = "nchw_to_nhwc";
  NEED_B(op);
  static const int perm[4] = {0, 2, 3, 1};
  TRY(permute_check(op, x, y, perm));
  DISPATCH(nchw_to_nhwc, op, x, y);
}

im_status_t im_op_nhwc_to_nchw(im_backend_t *b, const im_tensor_t *x, im_tensor_t *y) {
  const char *op = "nhwc_to_nchw";
  NEED_B(op);
  static const int perm[4] = {0, 3, 1, 2};
  TRY(permute_check(op, x, y, perm));
  DISPATCH(nhwc_to_nchw, op, x, y);
}

/* Where element (n, c, i) of a 4-D tensor of C channels and L = H W pixels per plane is in a layout. */
static int64_t layout_index(im_layout_t l, int64_t C, int64_t L, int64_t n, int64_t c, int64_t i) {
  switch (l) {
    case IM_LAYOUT_NCHW16C: return ((n * (C / 16) + c / 16) * L + i) * 16 + c % 16;
    case IM_LAYOUT_NHWC: return (n * L + i) * C + c;
    case IM_LAYOUT_PLAIN: break;
  }
  return (n * C + c) * L + i;
}

/* Between any two layouts (plain, blocked nChw16c, channels-last), on the host, one thread (tests
 * and tools; the planner keeps activations in one layout, so no step of a model converts). */
im_status_t im_op_relayout(im_backend_t *b, const im_tensor_t *x, im_tensor_t *y) {
  const char *op = "relayout";
  NEED_B(op);
  TRY(chk_valid(op, "x", x));
  TRY(chk_like(op, "y", y, x));
  TRY(chk_valid(op, "y", y));
  TRY(chk_alias(op, "y", y, "x", x, 0));
  if (x->layout == y->layout) return im_tensor_copy(y, x);
  if (!(b->iface->flags & IM_BACKEND_F_HOST)) return im_error(IM_ERR_UNSUPPORTED, "%s: not on the %s backend", op, b->iface->name);
  const int64_t N = x->shape[0], C = x->shape[1], L = x->shape[2] * x->shape[3];
  const uint32_t *src = x->data;
  uint32_t *dst = y->data;
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t i = 0; i < L; i++)
        dst[layout_index(y->layout, C, L, n, c, i)] = src[layout_index(x->layout, C, L, n, c, i)];
  return IM_OK;
}
