/* Layers: for each node op, shape inference, the traits the memory planner
 * needs (in-place forward, what backward reads), its saved tensors, and its
 * forward and backward through the backend's im_op_* functions. Backward
 * reads the node's output gradient and ASSIGNS each input's gradient when
 * this node is that input's last consumer (the first to run backward), else
 * writes a scratch tensor and ADDS it (im_op_add); parameter gradients are
 * accumulated by the ops themselves. Stochastic depth scales whole samples
 * and has no backend op: it runs on host memory. */
#include <stdio.h>
#include <string.h>

#include "nn/nn_impl.h"

static const char *const op_names[IM__NN_OP_COUNT_] = {
    "input", "conv", "batchnorm", "layernorm", "relu",  "gelu",    "maxpool",   "avgpool",
    "linear", "dropout", "add", "to_nhwc",  "to_nchw", "scale", "drop_path",
};

const char *im__nn_op_name(im__nn_op_t op) { return (unsigned)op < IM__NN_OP_COUNT_ ? op_names[op] : "?"; }

int im__nn_op_inplace_ok(im__nn_op_t op, int training_plan) {
  switch (op) {
    case IM__NN_RELU:
    case IM__NN_DROPOUT:
    case IM__NN_ADD:
    case IM__NN_DROP_PATH: return 1;
    case IM__NN_GELU:
    case IM__NN_BN: return !training_plan; /* backward reads the input; BN training may not run in place */
    default: return 0;
  }
}

int im__nn_op_bwd_needs_input(im__nn_op_t op) {
  switch (op) {
    case IM__NN_CONV:
    case IM__NN_BN:
    case IM__NN_LN:
    case IM__NN_GELU:
    case IM__NN_LINEAR:
    case IM__NN_SCALE: return 1;
    default: return 0;
  }
}

int im__nn_op_bwd_needs_output(im__nn_op_t op) { return op == IM__NN_RELU; }

static im_status_t shape_err(const im_nn_model_t *m, const im__nn_node_t *nd, const char *what) {
  char s[96] = "";
  const im__nn_node_t *x = nd->n_in ? &m->nodes[nd->in[0]] : nd;
  size_t len = 0;
  for (int i = 0; i < x->ndim && len < sizeof s; i++)
    len += (size_t)snprintf(s + len, sizeof s - len, "%s%lld", i ? "x" : "", (long long)x->shape[i]);
  return im_error(IM_ERR_ARG, "%s: input %lldx%lld does not fit: %s layer %d (%s) gets %s",
                  m->arch, (long long)m->plan_h, (long long)m->plan_w, im__nn_op_name(nd->op),
                  (int)(nd - m->nodes), what, s);
}

static void set_shape(im__nn_node_t *nd, int ndim, const int64_t *s) {
  nd->ndim = ndim;
  memset(nd->shape, 0, sizeof nd->shape);
  for (int i = 0; i < ndim; i++) nd->shape[i] = s[i];
}

im_status_t im__nn_layer_shape(im_nn_model_t *m, im__nn_node_t *nd) {
  const im__nn_node_t *x = nd->n_in ? &m->nodes[nd->in[0]] : NULL;
  int64_t s[4];
  switch (nd->op) {
    case IM__NN_INPUT:
      set_shape(nd, 4, (int64_t[]){m->plan_batch, m->plan_c, m->plan_h, m->plan_w});
      return IM_OK;
    case IM__NN_CONV:
    case IM__NN_SCALE: {
      if (x->ndim != 4 || x->shape[1] != nd->cin) return shape_err(m, nd, "channel count");
      const im__nn_entry_t *w = &m->ents[nd->w];
      const int64_t ws[4] = {w->shape[0], nd->op == IM__NN_SCALE ? 1 : w->shape[1],
                             nd->op == IM__NN_SCALE ? 1 : w->shape[2], nd->op == IM__NN_SCALE ? 1 : w->shape[3]};
      im_error_clear();
      if (im_conv2d_output_shape(&nd->conv, x->shape, ws, s) != IM_OK) return shape_err(m, nd, "kernel window");
      set_shape(nd, 4, s);
      return IM_OK;
    }
    case IM__NN_BN:
      if ((x->ndim != 4 && x->ndim != 2) || x->shape[1] != nd->cin) return shape_err(m, nd, "channel count");
      set_shape(nd, x->ndim, x->shape);
      return IM_OK;
    case IM__NN_LN:
    case IM__NN_LINEAR:
      if (x->ndim < 2 || x->shape[x->ndim - 1] != nd->cin) return shape_err(m, nd, "last dim");
      set_shape(nd, x->ndim, x->shape);
      nd->shape[nd->ndim - 1] = nd->op == IM__NN_LINEAR ? nd->cout : nd->cin;
      return IM_OK;
    case IM__NN_RELU:
    case IM__NN_GELU:
    case IM__NN_DROPOUT:
    case IM__NN_DROP_PATH:
      set_shape(nd, x->ndim, x->shape);
      return IM_OK;
    case IM__NN_MAXPOOL:
      if (x->ndim != 4) return shape_err(m, nd, "rank");
      if (im_pool2d_output_shape(&nd->pool, x->shape, s) != IM_OK) return shape_err(m, nd, "pool window");
      set_shape(nd, 4, s);
      return IM_OK;
    case IM__NN_GAP:
      if (x->ndim != 4) return shape_err(m, nd, "rank");
      set_shape(nd, 2, (int64_t[]){x->shape[0], x->shape[1]});
      return IM_OK;
    case IM__NN_ADD: {
      const im__nn_node_t *y = &m->nodes[nd->in[1]];
      int same = x->ndim == y->ndim;
      for (int i = 0; same && i < x->ndim; i++) same = x->shape[i] == y->shape[i];
      if (!same) return shape_err(m, nd, "residual shapes");
      set_shape(nd, x->ndim, x->shape);
      return IM_OK;
    }
    case IM__NN_TO_NHWC:
      if (x->ndim != 4) return shape_err(m, nd, "rank");
      set_shape(nd, 4, (int64_t[]){x->shape[0], x->shape[2], x->shape[3], x->shape[1]});
      return IM_OK;
    case IM__NN_TO_NCHW:
      if (x->ndim != 4) return shape_err(m, nd, "rank");
      set_shape(nd, 4, (int64_t[]){x->shape[0], x->shape[3], x->shape[1], x->shape[2]});
      return IM_OK;
    case IM__NN_OP_COUNT_: break;
  }
  return im_error(IM_ERR_INTERNAL, "unknown layer op %d", (int)nd->op);
}

int im__nn_layer_aux(const im_nn_model_t *m, const im__nn_node_t *nd, int training, im_dtype_t dt[2], int ndim[2],
                     int64_t shape[2][4], int batched[2]) {
  (void)m;
  switch (nd->op) {
    case IM__NN_BN:
      if (!training) return 0;
      for (int i = 0; i < 2; i++) {
        dt[i] = IM_F32;
        ndim[i] = 1;
        shape[i][0] = nd->cin;
        batched[i] = 0;
      }
      return 2;
    case IM__NN_LN: /* save_mean, save_invstd: one per row, shaped as the input without its last dim */
      for (int i = 0; i < 2; i++) {
        dt[i] = IM_F32;
        ndim[i] = nd->ndim - 1;
        for (int d = 0; d < nd->ndim - 1; d++) shape[i][d] = nd->shape[d];
        batched[i] = 1;
      }
      return 2;
    case IM__NN_MAXPOOL:
    case IM__NN_DROPOUT:
      if (!training) return 0;
      dt[0] = nd->op == IM__NN_MAXPOOL ? IM_I32 : IM_U8;
      ndim[0] = nd->ndim;
      for (int d = 0; d < nd->ndim; d++) shape[0][d] = nd->shape[d];
      batched[0] = 1;
      return 1;
    case IM__NN_DROP_PATH:
      if (!training) return 0;
      dt[0] = IM_F32;
      ndim[0] = 1;
      shape[0][0] = nd->shape[0];
      batched[0] = 1;
      return 1;
    default: return 0;
  }
}

/* ---- forward ---- */

static const im_tensor_t *ent(const im_nn_model_t *m, int i) { return i >= 0 ? &m->ents[i].value : NULL; }
static im_tensor_t *grad_of(im_nn_model_t *m, int i) { return i >= 0 ? &m->ents[i].grad : NULL; }

/* A [C,1,1] layer scale seen as a depthwise 1x1 conv weight [C,1,1,1]. */
static im_status_t scale_view(const im_tensor_t *t, im_tensor_t *v) {
  return im_tensor_reshape(t, 4, (int64_t[]){t->shape[0], 1, 1, 1}, v);
}

/* y = x where the op is the identity (eval dropout, eval drop path). */
static im_status_t copy_through(im_backend_t *be, const im_tensor_t *x, im_tensor_t *y) {
  if (x->data == y->data) return IM_OK;
  return im_op_add_backward(be, x, y, NULL);
}

static im_status_t drop_path_forward(im_nn_model_t *m, im__nn_node_t *nd, const im_tensor_t *x) {
  const int64_t n = x->shape[0], per = n ? im_tensor_numel(x) / n : 0;
  float *f = im_tensor_f32(&nd->aux[0]);
  const double keep = 1.0 - (double)nd->p;
  for (int64_t i = 0; i < n; i++) f[i] = im_rng_uniform(&m->rng) < keep ? (float)(1.0 / keep) : 0.0f;
  const float *xs = im_tensor_f32(x);
  float *ys = im_tensor_f32(&nd->out);
  for (int64_t i = 0; i < n; i++)
    for (int64_t k = 0; k < per; k++) ys[i * per + k] = xs[i * per + k] * f[i];
  return IM_OK;
}

im_status_t im__nn_layer_forward(im_nn_model_t *m, im__nn_node_t *nd, int training) {
  im_backend_t *be = m->be;
  const im_tensor_t *x = nd->n_in ? &m->nodes[nd->in[0]].out : NULL;
  im_tensor_t *y = &nd->out;
  if (nd->by_conv >= 0) return IM_OK; /* a residual add or its ReLU, done by the convolution before it */
  switch (nd->op) {
    case IM__NN_INPUT: return IM_OK;
    case IM__NN_CONV:
      if (nd->res >= 0)
        return im_op_conv2d_forward_fused_add(be, &nd->conv, x, ent(m, nd->w), ent(m, nd->b), &m->nodes[nd->res].out,
                                              nd->res_act, y);
      if (nd->act != IM_ACT_NONE)
        return im_op_conv2d_forward_fused(be, &nd->conv, x, ent(m, nd->w), ent(m, nd->b), nd->act, y);
      return im_op_conv2d_forward(be, &nd->conv, x, ent(m, nd->w), ent(m, nd->b), y);
    case IM__NN_BN: {
      const im_batchnorm_params_t p = {nd->eps, nd->momentum};
      if (!training)
        return im_op_batchnorm_forward_eval(be, &p, x, ent(m, nd->w), ent(m, nd->b), ent(m, nd->rm), ent(m, nd->rv),
                                            y);
      im_status_t st =
          nd->act != IM_ACT_NONE
              ? im_op_batchnorm_forward_train_fused(be, &p, x, ent(m, nd->w), ent(m, nd->b), &m->ents[nd->rm].value,
                                                    &m->ents[nd->rv].value, nd->act, y, &nd->aux[0], &nd->aux[1])
              : im_op_batchnorm_forward_train(be, &p, x, ent(m, nd->w), ent(m, nd->b), &m->ents[nd->rm].value,
                                              &m->ents[nd->rv].value, y, &nd->aux[0], &nd->aux[1]);
      if (st == IM_OK) m->ents[nd->nbt].counter++;
      return st;
    }
    case IM__NN_LN: {
      const im_layernorm_params_t p = {nd->eps};
      return im_op_layernorm_forward(be, &p, x, ent(m, nd->w), ent(m, nd->b), y, &nd->aux[0], &nd->aux[1]);
    }
    case IM__NN_RELU: return nd->fused_away && training ? IM_OK : im_op_relu_forward(be, x, y);
    case IM__NN_GELU: return im_op_gelu_forward(be, x, y);
    case IM__NN_MAXPOOL: return im_op_maxpool2d_forward(be, &nd->pool, x, y, training ? &nd->aux[0] : NULL);
    case IM__NN_GAP: return im_op_global_avgpool_forward(be, x, y);
    case IM__NN_LINEAR: return im_op_linear_forward(be, x, ent(m, nd->w), ent(m, nd->b), y);
    case IM__NN_DROPOUT:
      if (!training) return copy_through(be, x, y);
      return im_op_dropout_forward(be, nd->p, &m->rng, x, y, &nd->aux[0]);
    case IM__NN_ADD: return im_op_add(be, x, &m->nodes[nd->in[1]].out, y);
    case IM__NN_TO_NHWC: return nd->view ? IM_OK : im_op_nchw_to_nhwc(be, x, y);
    case IM__NN_TO_NCHW: return nd->view ? IM_OK : im_op_nhwc_to_nchw(be, x, y);
    case IM__NN_SCALE: {
      im_tensor_t w;
      im_status_t st = scale_view(ent(m, nd->w), &w);
      return st != IM_OK ? st : im_op_conv2d_forward(be, &nd->conv, x, &w, NULL, y);
    }
    case IM__NN_DROP_PATH:
      if (!training) return copy_through(be, x, y);
      return drop_path_forward(m, nd, x);
    case IM__NN_OP_COUNT_: break;
  }
  return im_error(IM_ERR_INTERNAL, "unknown layer op %d", (int)nd->op);
}

/* ---- backward ---- */

/* Where the gradient for input k of node idx goes. Returns NULL when the
 * producer is the input image (no gradient wanted) and the op may skip it;
 * with need = 1 it then returns the scratch tensor. *acc = 1 means "written to
 * scratch, add into the producer's gradient afterwards". */
static im_tensor_t *grad_target(im_nn_model_t *m, int idx, int k, int need, int *acc) {
  im__nn_node_t *nd = &m->nodes[idx], *p = &m->nodes[nd->in[k]];
  *acc = 0;
  if (p->op == IM__NN_INPUT) return need ? &nd->scratch : NULL;
  if (p->last_cons == idx) return &p->grad;
  *acc = 1;
  return &nd->scratch;
}

static im_status_t finish(im_nn_model_t *m, int idx, int k, int acc, im_status_t st) {
  if (st != IM_OK || !acc) return st;
  im_tensor_t *g = &m->nodes[m->nodes[idx].in[k]].grad;
  return im_op_add(m->be, g, &m->nodes[idx].scratch, g);
}

static im_status_t drop_path_backward(im__nn_node_t *nd, const im_tensor_t *dy, im_tensor_t *dx) {
  const int64_t n = dy->shape[0], per = n ? im_tensor_numel(dy) / n : 0;
  const float *f = im_tensor_f32(&nd->aux[0]), *g = im_tensor_f32(dy);
  float *d = im_tensor_f32(dx);
  for (int64_t i = 0; i < n; i++)
    for (int64_t k = 0; k < per; k++) d[i * per + k] = g[i * per + k] * f[i];
  return IM_OK;
}

im_status_t im__nn_layer_backward(im_nn_model_t *m, int idx) {
  im_backend_t *be = m->be;
  im__nn_node_t *nd = &m->nodes[idx];
  const im_tensor_t *dy = &nd->grad;
  const im_tensor_t *x = nd->n_in ? &m->nodes[nd->in[0]].out : NULL;
  int acc = 0;
  im_tensor_t *dx;
  im_status_t st = IM_OK;
  switch (nd->op) {
    case IM__NN_INPUT: return IM_OK;
    case IM__NN_CONV:
      if ((dx = grad_target(m, idx, 0, 0, &acc)) != NULL)
        st = finish(m, idx, 0, acc, im_op_conv2d_backward_data(be, &nd->conv, dy, ent(m, nd->w), dx));
      if (st == IM_OK) st = im_op_conv2d_backward_weight(be, &nd->conv, x, dy, grad_of(m, nd->w), grad_of(m, nd->b));
      return st;
    case IM__NN_BN:
      dx = grad_target(m, idx, 0, 1, &acc);
      if (nd->act != IM_ACT_NONE) /* the fused ReLU's gradient too: its dy and output are this node's */
        return finish(m, idx, 0, acc,
                      im_op_batchnorm_backward_fused(be, x, &nd->out, nd->act, dy, ent(m, nd->w), &nd->aux[0],
                                                     &nd->aux[1], dx, grad_of(m, nd->w), grad_of(m, nd->b)));
      return finish(m, idx, 0, acc,
                    im_op_batchnorm_backward(be, x, dy, ent(m, nd->w), &nd->aux[0], &nd->aux[1], dx,
                                             grad_of(m, nd->w), grad_of(m, nd->b)));
    case IM__NN_LN:
      dx = grad_target(m, idx, 0, 1, &acc);
      return finish(m, idx, 0, acc,
                    im_op_layernorm_backward(be, x, dy, ent(m, nd->w), &nd->aux[0], &nd->aux[1], dx,
                                             grad_of(m, nd->w), grad_of(m, nd->b)));
    case IM__NN_LINEAR:
      if ((dx = grad_target(m, idx, 0, 0, &acc)) != NULL)
        st = finish(m, idx, 0, acc, im_op_linear_backward_data(be, dy, ent(m, nd->w), dx));
      if (st == IM_OK) st = im_op_linear_backward_weight(be, x, dy, grad_of(m, nd->w), grad_of(m, nd->b));
      return st;
    case IM__NN_SCALE: {
      im_tensor_t w, dw;
      if ((st = scale_view(ent(m, nd->w), &w)) != IM_OK || (st = scale_view(grad_of(m, nd->w), &dw)) != IM_OK)
        return st;
      if ((dx = grad_target(m, idx, 0, 0, &acc)) != NULL)
        st = finish(m, idx, 0, acc, im_op_conv2d_backward_data(be, &nd->conv, dy, &w, dx));
      if (st == IM_OK) st = im_op_conv2d_backward_weight(be, &nd->conv, x, dy, &dw, NULL);
      return st;
    }
    case IM__NN_ADD:
      for (int k = 0; k < 2; k++) {
        im__nn_node_t *p = &m->nodes[nd->in[k]];
        if (p->op == IM__NN_INPUT) continue;
        if (p->last_cons == idx && !(k == 1 && nd->in[1] == nd->in[0])) {
          if (p->grad.data != dy->data) st = im_op_add_backward(be, dy, &p->grad, NULL);
        } else {
          st = im_op_add(be, &p->grad, dy, &p->grad);
        }
        if (st != IM_OK) return st;
      }
      return IM_OK;
    default: break;
  }
  /* Parameter-free single-input ops; a view's gradient is its input's (the same bytes). */
  if (nd->view || (dx = grad_target(m, idx, 0, 0, &acc)) == NULL) return IM_OK;
  switch (nd->op) {
    case IM__NN_RELU: st = nd->fused_away ? IM_OK : im_op_relu_backward(be, &nd->out, dy, dx); break;
    case IM__NN_GELU: st = im_op_gelu_backward(be, x, dy, dx); break;
    case IM__NN_MAXPOOL: st = im_op_maxpool2d_backward(be, &nd->pool, dy, &nd->aux[0], dx); break;
    case IM__NN_GAP: st = im_op_global_avgpool_backward(be, dy, dx); break;
    case IM__NN_DROPOUT: st = im_op_dropout_backward(be, nd->p, &nd->aux[0], dy, dx); break;
    case IM__NN_TO_NHWC: st = im_op_nhwc_to_nchw(be, dy, dx); break;
    case IM__NN_TO_NCHW: st = im_op_nchw_to_nhwc(be, dy, dx); break;
    case IM__NN_DROP_PATH: st = drop_path_backward(nd, dy, dx); break;
    default: return im_error(IM_ERR_INTERNAL, "no backward for layer op %s", im__nn_op_name(nd->op));
  }
  return finish(m, idx, 0, acc, st);
}
