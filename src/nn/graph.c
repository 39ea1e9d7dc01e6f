/* Building the layer graph: the helpers architectures call to add nodes and
 * state entries. Nodes are appended in topological order (inputs first) and
 * entries in PyTorch's state_dict order, so a model's names and ordering are
 * those of the equivalent torch module. Errors are sticky: the first one is
 * kept in m->build_err and every later helper returns -1. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nn/nn_impl.h"

int im__nn_fail(im_nn_model_t *m, im_status_t st) {
  if (m->build_err == IM_OK) m->build_err = st;
  return -1;
}

int im__nn_width(const im_nn_model_t *m, int base) {
  double c = floor((double)base * (double)m->opts.width + 0.5);
  return c < 1.0 ? 1 : (int)c;
}

int im__nn_entry(im_nn_model_t *m, const char *prefix, const char *suffix, im_nn_state_kind_t kind, int ndim,
                 const int64_t *shape, im__nn_init_t init, double arg, int decay) {
  if (m->build_err != IM_OK) return -1;
  if (m->n_ents == m->cap_ents) {
    size_t cap = m->cap_ents ? m->cap_ents * 2 : 64;
    im__nn_entry_t *e = im_realloc(m->ents, cap * sizeof *e);
    if (!e) return im__nn_fail(m, im_error(IM_ERR_NOMEM, "out of memory building the model"));
    m->ents = e;
    m->cap_ents = cap;
  }
  char name[256];
  int len = snprintf(name, sizeof name, "%s%s%s", prefix, *prefix ? "." : "", suffix);
  if (len < 0 || (size_t)len >= sizeof name)
    return im__nn_fail(m, im_error(IM_ERR_INTERNAL, "parameter name too long: %s.%s", prefix, suffix));
  im__nn_entry_t *e = &m->ents[m->n_ents];
  memset(e, 0, sizeof *e);
  e->name = im_strdup(name);
  if (!e->name) return im__nn_fail(m, im_error(IM_ERR_NOMEM, "out of memory building the model"));
  e->kind = kind;
  e->ndim = ndim;
  for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
  e->init = init;
  e->init_arg = arg;
  e->decay = decay;
  return (int)m->n_ents++;
}

static int new_node(im_nn_model_t *m, im__nn_op_t op, int in0, int in1) {
  if (m->build_err != IM_OK) return -1;
  if (in0 < -1 || in1 < -1) return im__nn_fail(m, im_error(IM_ERR_INTERNAL, "bad node input"));
  if (m->n_nodes == m->cap_nodes) {
    size_t cap = m->cap_nodes ? m->cap_nodes * 2 : 64;
    im__nn_node_t *n = im_realloc(m->nodes, cap * sizeof *n);
    if (!n) return im__nn_fail(m, im_error(IM_ERR_NOMEM, "out of memory building the model"));
    m->nodes = n;
    m->cap_nodes = cap;
  }
  im__nn_node_t *nd = &m->nodes[m->n_nodes];
  memset(nd, 0, sizeof *nd);
  nd->op = op;
  nd->in[0] = in0;
  nd->in[1] = in1;
  nd->n_in = (in0 >= 0) + (in1 >= 0);
  nd->w = nd->b = nd->rm = nd->rv = nd->nbt = -1;
  nd->last_cons = nd->res = nd->by_conv = -1;
  nd->buf_out = nd->buf_grad = nd->buf_aux[0] = nd->buf_aux[1] = nd->buf_scratch = -1;
  return (int)m->n_nodes++;
}

/* Inputs must exist (a -1 means an earlier failure, already recorded). */
#define NEED(x)                                          \
  do {                                                   \
    if ((x) < 0 || m->build_err != IM_OK) return -1;     \
  } while (0)

int im__nn_input(im_nn_model_t *m, int channels) {
  int id = new_node(m, IM__NN_INPUT, -1, -1);
  if (id >= 0) m->nodes[id].cout = channels;
  return id;
}

int im__nn_conv(im_nn_model_t *m, int in, const char *name, int cin, int cout, int k, int stride, int pad,
                int groups, int bias) {
  NEED(in);
  const int64_t ws[4] = {cout, cin / groups, k, k};
  const int64_t fan_in = (int64_t)(cin / groups) * k * k;
  int w, b = -1;
  if (m->style == IM__NN_STYLE_CONVNEXT)
    w = im__nn_entry(m, name, "weight", IM_NN_STATE_PARAM, 4, ws, IM__NN_INIT_TRUNC_NORMAL, 0.02, 1);
  else
    w = im__nn_entry(m, name, "weight", IM_NN_STATE_PARAM, 4, ws, IM__NN_INIT_KAIMING_FAN_OUT, 0.0, 1);
  if (bias) {
    const int64_t bs[1] = {cout};
    if (m->style == IM__NN_STYLE_CONVNEXT)
      b = im__nn_entry(m, name, "bias", IM_NN_STATE_PARAM, 1, bs, IM__NN_INIT_CONST, 0.0, 0);
    else
      b = im__nn_entry(m, name, "bias", IM_NN_STATE_PARAM, 1, bs, IM__NN_INIT_UNIFORM, 1.0 / sqrt((double)fan_in), 0);
  }
  int id = new_node(m, IM__NN_CONV, in, -1);
  if (id < 0) return -1;
  im__nn_node_t *nd = &m->nodes[id];
  nd->w = w;
  nd->b = b;
  nd->cin = cin;
  nd->cout = cout;
  nd->conv = (im_conv2d_params_t){.stride_h = stride, .stride_w = stride, .pad_h = pad, .pad_w = pad,
                                   .dilation_h = 1, .dilation_w = 1, .groups = groups};
  return id;
}

int im__nn_bn(im_nn_model_t *m, int in, const char *name, int c) {
  NEED(in);
  const int64_t s[1] = {c};
  int w = im__nn_entry(m, name, "weight", IM_NN_STATE_PARAM, 1, s, IM__NN_INIT_CONST, 1.0, 0);
  int b = im__nn_entry(m, name, "bias", IM_NN_STATE_PARAM, 1, s, IM__NN_INIT_CONST, 0.0, 0);
  int rm = im__nn_entry(m, name, "running_mean", IM_NN_STATE_BUFFER, 1, s, IM__NN_INIT_CONST, 0.0, 0);
  int rv = im__nn_entry(m, name, "running_var", IM_NN_STATE_BUFFER, 1, s, IM__NN_INIT_CONST, 1.0, 0);
  int nbt = im__nn_entry(m, name, "num_batches_tracked", IM_NN_STATE_COUNTER, 0, s, IM__NN_INIT_CONST, 0.0, 0);
  int id = new_node(m, IM__NN_BN, in, -1);
  if (id < 0) return -1;
  im__nn_node_t *nd = &m->nodes[id];
  nd->w = w;
  nd->b = b;
  nd->rm = rm;
  nd->rv = rv;
  nd->nbt = nbt;
  nd->cin = nd->cout = c;
  nd->eps = 1e-5f;
  nd->momentum = 0.1f;
  return id;
}

int im__nn_ln(im_nn_model_t *m, int in, const char *name, int c, float eps) {
  NEED(in);
  const int64_t s[1] = {c};
  int w = im__nn_entry(m, name, "weight", IM_NN_STATE_PARAM, 1, s, IM__NN_INIT_CONST, 1.0, 0);
  int b = im__nn_entry(m, name, "bias", IM_NN_STATE_PARAM, 1, s, IM__NN_INIT_CONST, 0.0, 0);
  int id = new_node(m, IM__NN_LN, in, -1);
  if (id < 0) return -1;
  im__nn_node_t *nd = &m->nodes[id];
  nd->w = w;
  nd->b = b;
  nd->cin = nd->cout = c;
  nd->eps = eps;
  return id;
}

int im__nn_ln2d(im_nn_model_t *m, int in, const char *name, int c, float eps) {
  int x = im__nn_to_nhwc(m, in);
  x = im__nn_ln(m, x, name, c, eps);
  return im__nn_to_nchw(m, x);
}

static int unary(im_nn_model_t *m, im__nn_op_t op, int in) {
  NEED(in);
  int id = new_node(m, op, in, -1);
  if (id >= 0) m->nodes[id].cin = m->nodes[id].cout = m->nodes[in].cout;
  return id;
}

int im__nn_relu(im_nn_model_t *m, int in) { return unary(m, IM__NN_RELU, in); }
int im__nn_gelu(im_nn_model_t *m, int in) { return unary(m, IM__NN_GELU, in); }
int im__nn_gap(im_nn_model_t *m, int in) { return unary(m, IM__NN_GAP, in); }
int im__nn_to_nhwc(im_nn_model_t *m, int in) { return unary(m, IM__NN_TO_NHWC, in); }
int im__nn_to_nchw(im_nn_model_t *m, int in) { return unary(m, IM__NN_TO_NCHW, in); }

int im__nn_maxpool(im_nn_model_t *m, int in, int k, int stride, int pad) {
  int id = unary(m, IM__NN_MAXPOOL, in);
  if (id >= 0)
    m->nodes[id].pool = (im_pool2d_params_t){.kernel_h = k, .kernel_w = k, .stride_h = stride, .stride_w = stride,
                                             .pad_h = pad, .pad_w = pad};
  return id;
}

int im__nn_linear(im_nn_model_t *m, int in, const char *name, int cin, int cout) {
  NEED(in);
  const int64_t ws[2] = {cout, cin}, bs[1] = {cout};
  int w, b;
  if (m->style == IM__NN_STYLE_CONVNEXT) {
    w = im__nn_entry(m, name, "weight", IM_NN_STATE_PARAM, 2, ws, IM__NN_INIT_TRUNC_NORMAL, 0.02, 1);
    b = im__nn_entry(m, name, "bias", IM_NN_STATE_PARAM, 1, bs, IM__NN_INIT_CONST, 0.0, 0);
  } else {
    w = im__nn_entry(m, name, "weight", IM_NN_STATE_PARAM, 2, ws, IM__NN_INIT_TORCH_DEFAULT, 0.0, 1);
    b = im__nn_entry(m, name, "bias", IM_NN_STATE_PARAM, 1, bs, IM__NN_INIT_UNIFORM, 1.0 / sqrt((double)cin), 0);
  }
  int id = new_node(m, IM__NN_LINEAR, in, -1);
  if (id < 0) return -1;
  im__nn_node_t *nd = &m->nodes[id];
  nd->w = w;
  nd->b = b;
  nd->cin = cin;
  nd->cout = cout;
  return id;
}

int im__nn_dropout(im_nn_model_t *m, int in, float p) {
  if (p == 0.0f) return in;
  int id = unary(m, IM__NN_DROPOUT, in);
  if (id >= 0) m->nodes[id].p = p;
  return id;
}

int im__nn_drop_path(im_nn_model_t *m, int in, float p) {
  if (p == 0.0f) return in;
  int id = unary(m, IM__NN_DROP_PATH, in);
  if (id >= 0) m->nodes[id].p = p;
  return id;
}

int im__nn_add(im_nn_model_t *m, int a, int b) {
  NEED(a);
  NEED(b);
  int id = new_node(m, IM__NN_ADD, a, b);
  if (id >= 0) m->nodes[id].cin = m->nodes[id].cout = m->nodes[a].cout;
  return id;
}

int im__nn_scale(im_nn_model_t *m, int in, int scale_entry, int c) {
  NEED(in);
  NEED(scale_entry);
  int id = new_node(m, IM__NN_SCALE, in, -1);
  if (id < 0) return -1;
  m->nodes[id].w = scale_entry;
  m->nodes[id].cin = m->nodes[id].cout = c;
  m->nodes[id].conv = (im_conv2d_params_t){.stride_h = 1, .stride_w = 1, .dilation_h = 1, .dilation_w = 1,
                                           .groups = c};
  return id;
}
