/* Folded inference models: a copy of a model's eval-mode graph rewritten for
 * inference (batch norm folded into the convolution before it, ReLU fused
 * with that convolution, ConvNeXt's layer_scale folded into the Linear before
 * it, eval-mode identities dropped), and the read-only view of a graph's
 * nodes that the ONNX exporter walks. Each rewrite is a pass that marks nodes
 * to drop (each replaced by an earlier node) and then compacts the node array,
 * so consumer counts are always those of the current graph. */
#include <math.h>
#include <string.h>

#include "nn/nn_impl.h"

_Static_assert((int)IM_NN_NODE_DROP_PATH == (int)IM__NN_DROP_PATH && IM__NN_DROP_PATH + 1 == IM__NN_OP_COUNT_,
               "im_nn_node_kind_t mirrors the internal op list");

typedef struct {
  int *drop;  /* 1: the node goes */
  int *repl;  /* a dropped node's stand-in (an earlier node) */
  int *cons;  /* consumers of each node */
  int *map;   /* old index -> new index of kept nodes */
} fold_ws_t;

static void count_consumers(const im_nn_model_t *f, fold_ws_t *w) {
  memset(w->cons, 0, sizeof *w->cons * f->n_nodes);
  for (size_t i = 0; i < f->n_nodes; i++)
    for (int k = 0; k < f->nodes[i].n_in; k++) w->cons[f->nodes[i].in[k]]++;
  memset(w->drop, 0, sizeof *w->drop * f->n_nodes);
}

static int resolve(const fold_ws_t *w, int i) {
  while (w->drop[i]) i = w->repl[i];
  return w->map[i];
}

/* Removes the dropped nodes, pointing their consumers at their stand-ins. */
static void compact(im_nn_model_t *f, fold_ws_t *w) {
  size_t j = 0;
  for (size_t i = 0; i < f->n_nodes; i++)
    if (!w->drop[i]) w->map[i] = (int)j++;
  j = 0;
  for (size_t i = 0; i < f->n_nodes; i++) {
    if (w->drop[i]) continue;
    im__nn_node_t nd = f->nodes[i];
    for (int k = 0; k < nd.n_in; k++) nd.in[k] = resolve(w, nd.in[k]);
    f->nodes[j++] = nd;
  }
  f->n_nodes = j;
}

static float *vals(im_nn_model_t *f, int e) { return e >= 0 ? im_tensor_f32(&f->ents[e].value) : NULL; }

/* conv -> bn: w'[k] = w[k] s[k], b'[k] = (b[k] - mean[k]) s[k] + beta[k], s = gamma / sqrt(var + eps). */
static im_status_t fold_bn(im_nn_model_t *f, im__nn_node_t *conv, const im__nn_node_t *bn) {
  const int64_t K = conv->cout;
  const int64_t per = im_tensor_numel(&f->ents[conv->w].value) / K;
  double *nb = im_malloc(sizeof *nb * (size_t)K);
  if (!nb) return im_error(IM_ERR_NOMEM, "out of memory folding batch norm");
  float *w = vals(f, conv->w), *b = vals(f, conv->b), *g = vals(f, bn->w), *beta = vals(f, bn->b);
  const float *mu = vals(f, bn->rm), *var = vals(f, bn->rv);
  for (int64_t k = 0; k < K; k++) {
    const double s = (g ? (double)g[k] : 1.0) / sqrt((double)var[k] + (double)bn->eps);
    for (int64_t i = 0; i < per; i++) w[k * per + i] = (float)((double)w[k * per + i] * s);
    nb[k] = ((b ? (double)b[k] : 0.0) - (double)mu[k]) * s + (beta ? (double)beta[k] : 0.0);
  }
  /* The folded bias needs storage: the conv's own, else the BN's beta (or its running mean). */
  if (conv->b < 0) conv->b = bn->b >= 0 ? bn->b : bn->rm;
  b = vals(f, conv->b);
  for (int64_t k = 0; k < K; k++) b[k] = (float)nb[k];
  im_free(nb);
  return IM_OK;
}

/* linear -> to_nchw -> scale [C,1,1]: the scale multiplies the Linear's output features. */
static void fold_scale(im_nn_model_t *f, const im__nn_node_t *lin, const im__nn_node_t *sc) {
  const int64_t out = lin->cout, in = lin->cin;
  float *w = vals(f, lin->w), *b = vals(f, lin->b);
  const float *s = vals(f, sc->w);
  for (int64_t k = 0; k < out; k++) {
    for (int64_t i = 0; i < in; i++) w[k * in + i] *= s[k];
    if (b) b[k] *= s[k];
  }
}

static im_status_t rewrite(im_nn_model_t *f, fold_ws_t *w) {
  im_status_t st = IM_OK;
  /* 1. eval-mode identities */
  count_consumers(f, w);
  for (size_t i = 1; i + 1 < f->n_nodes; i++) {
    const im__nn_node_t *nd = &f->nodes[i];
    if (nd->op == IM__NN_DROPOUT || nd->op == IM__NN_DROP_PATH) w->drop[i] = 1, w->repl[i] = nd->in[0];
  }
  compact(f, w);
  /* 2. batch norm into the convolution before it */
  count_consumers(f, w);
  for (size_t i = 1; i + 1 < f->n_nodes && st == IM_OK; i++) {
    const im__nn_node_t *nd = &f->nodes[i];
    if (nd->op != IM__NN_BN) continue;
    im__nn_node_t *c = &f->nodes[nd->in[0]];
    if (c->op != IM__NN_CONV || w->cons[nd->in[0]] != 1 || c->act != IM_ACT_NONE || c->cout != nd->cin) continue;
    st = fold_bn(f, c, nd);
    w->drop[i] = 1;
    w->repl[i] = nd->in[0];
  }
  if (st != IM_OK) return st;
  compact(f, w);
  /* 3. ReLU fused into the convolution before it */
  count_consumers(f, w);
  for (size_t i = 1; i + 1 < f->n_nodes; i++) {
    const im__nn_node_t *nd = &f->nodes[i];
    if (nd->op != IM__NN_RELU) continue;
    im__nn_node_t *c = &f->nodes[nd->in[0]];
    if (c->op != IM__NN_CONV || w->cons[nd->in[0]] != 1 || c->act != IM_ACT_NONE) continue;
    c->act = IM_ACT_RELU;
    w->drop[i] = 1;
    w->repl[i] = nd->in[0];
  }
  compact(f, w);
  /* 4. layer_scale into the Linear before it */
  count_consumers(f, w);
  for (size_t i = 1; i + 1 < f->n_nodes; i++) {
    const im__nn_node_t *nd = &f->nodes[i];
    if (nd->op != IM__NN_SCALE) continue;
    const int t = nd->in[0];
    if (f->nodes[t].op != IM__NN_TO_NCHW || w->cons[t] != 1) continue;
    const int l = f->nodes[t].in[0];
    if (f->nodes[l].op != IM__NN_LINEAR || w->cons[l] != 1 || f->nodes[l].cout != nd->cin) continue;
    fold_scale(f, &f->nodes[l], nd);
    w->drop[i] = 1;
    w->repl[i] = t;
  }
  compact(f, w);
  return IM_OK;
}

im_status_t im_nn_model_fold(const im_nn_model_t *m, im_nn_model_t **out) {
  *out = NULL;
  if (m->folded) return im_error(IM_ERR_ARG, "im_nn_model_fold: %s is folded already", m->arch);
  im_nn_model_t *f = NULL;
  im_status_t st = im__nn_model_build(m->arch, &m->opts, 0, &f);
  if (st != IM_OK) return st;
  if (f->n_ents != m->n_ents || f->n_nodes != m->n_nodes) {
    im_nn_model_free(f);
    return im_error(IM_ERR_INTERNAL, "im_nn_model_fold: the rebuilt %s differs from the model", m->arch);
  }
  memcpy(f->pslab.data, m->pslab.data, im_tensor_nbytes(&m->pslab));
  memcpy(f->bslab.data, m->bslab.data, im_tensor_nbytes(&m->bslab));
  for (size_t i = 0; i < m->n_ents; i++) f->ents[i].counter = m->ents[i].counter;
  f->be = m->be;
  f->folded = 1;
  const size_t n = m->n_nodes;
  fold_ws_t w = {im_malloc(sizeof(int) * n), im_malloc(sizeof(int) * n), im_malloc(sizeof(int) * n),
                 im_malloc(sizeof(int) * n)};
  if (!w.drop || !w.repl || !w.cons || !w.map) st = im_error(IM_ERR_NOMEM, "out of memory folding %s", m->arch);
  if (st == IM_OK) st = rewrite(f, &w);
  im_free(w.drop);
  im_free(w.repl);
  im_free(w.cons);
  im_free(w.map);
  if (st != IM_OK) {
    im_nn_model_free(f);
    return st;
  }
  im__nn_restamp(f); /* its weights are constant: backends may keep them prepared (tensor.h, stamp) */
  *out = f;
  return IM_OK;
}

int im_nn_model_is_folded(const im_nn_model_t *m) { return m->folded; }

im_status_t im_nn_node_get(const im_nn_model_t *m, size_t i, im_nn_node_info_t *out) {
  if (i >= m->n_nodes) return im_error(IM_ERR_ARG, "node index %zu out of range (%zu)", i, m->n_nodes);
  const im__nn_node_t *nd = &m->nodes[i];
  const im_tensor_t *none = NULL;
  *out = (im_nn_node_info_t){
      .kind = (im_nn_node_kind_t)nd->op,
      .n_in = nd->n_in,
      .in = {nd->in[0], nd->in[1]},
      .weight = nd->w >= 0 ? &m->ents[nd->w].value : none,
      .bias = nd->b >= 0 ? &m->ents[nd->b].value : none,
      .running_mean = nd->rm >= 0 ? &m->ents[nd->rm].value : none,
      .running_var = nd->rv >= 0 ? &m->ents[nd->rv].value : none,
      .conv = nd->conv,
      .pool = nd->pool,
      .act = nd->act,
      .eps = nd->eps,
      .cin = nd->cin,
      .cout = nd->cout,
  };
  return IM_OK;
}
