/* Memory planning: every activation, activation gradient, saved tensor and
 * scratch tensor of one step becomes a buffer with a lifetime on the step's
 * timeline (forward of node i at time i, the loss at n, backward of node i at
 * 2n - i). Buffers whose lifetimes do not overlap share memory: offsets are
 * assigned greedily, largest first, at the lowest free address (the "greedy
 * by size" planner of TFLite and ggml-alloc). ReLU, dropout and residual adds
 * run in place where nothing else needs the overwritten tensor. The whole plan
 * is one block reserved once from an arena; steps allocate nothing. */
#include <stdlib.h>
#include <string.h>

#include "nn/nn_impl.h"

typedef struct {
  size_t bytes;
  int first, last; /* inclusive times */
  size_t off;
  int placed;
} pbuf_t;

typedef struct {
  pbuf_t *b;
  size_t n, cap;
  int oom;
} pbufs_t;

static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

static int new_buf(pbufs_t *p, size_t bytes, int first, int last) {
  if (p->n == p->cap) {
    size_t cap = p->cap ? p->cap * 2 : 256;
    pbuf_t *b = im_realloc(p->b, cap * sizeof *b);
    if (!b) {
      p->oom = 1;
      return -1;
    }
    p->b = b;
    p->cap = cap;
  }
  p->b[p->n] = (pbuf_t){.bytes = round64(bytes ? bytes : 1), .first = first, .last = last};
  return (int)p->n++;
}

static void extend(pbufs_t *p, int id, int t) {
  if (id < 0) return;
  if (t > p->b[id].last) p->b[id].last = t;
  if (t < p->b[id].first) p->b[id].first = t;
}

static size_t tensor_bytes(im_dtype_t dt, int ndim, const int64_t *shape) {
  size_t n = im_dtype_size(dt);
  for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
  return n;
}

/* Placement order: larger first, then earlier, then by id. */
typedef struct {
  size_t bytes;
  int first, id;
} okey_t;

static int by_size(const void *a, const void *b) {
  const okey_t *x = a, *y = b;
  if (x->bytes != y->bytes) return x->bytes > y->bytes ? -1 : 1;
  if (x->first != y->first) return x->first < y->first ? -1 : 1;
  return x->id - y->id;
}

static int by_off(const void *a, const void *b) {
  const pbuf_t *x = *(pbuf_t *const *)a, *y = *(pbuf_t *const *)b;
  return x->off < y->off ? -1 : x->off > y->off;
}

/* Greedy offsets; returns the total size (0 on allocation failure). */
static size_t place(pbufs_t *p) {
  okey_t *order = im_malloc((p->n ? p->n : 1) * sizeof *order);
  pbuf_t **live = im_malloc((p->n ? p->n : 1) * sizeof *live);
  if (!order || !live) {
    im_free(order);
    im_free(live);
    return 0;
  }
  for (size_t i = 0; i < p->n; i++) order[i] = (okey_t){p->b[i].bytes, p->b[i].first, (int)i};
  qsort(order, p->n, sizeof *order, by_size);
  size_t total = 64;
  for (size_t k = 0; k < p->n; k++) {
    pbuf_t *b = &p->b[order[k].id];
    size_t nl = 0;
    for (size_t j = 0; j < k; j++) {
      pbuf_t *o = &p->b[order[j].id];
      if (o->first <= b->last && b->first <= o->last) live[nl++] = o;
    }
    qsort(live, nl, sizeof *live, by_off);
    size_t off = 0;
    for (size_t j = 0; j < nl; j++) {
      if (live[j]->off >= off + b->bytes) break; /* fits in the gap before it */
      if (live[j]->off + live[j]->bytes > off) off = live[j]->off + live[j]->bytes;
    }
    b->off = off;
    b->placed = 1;
    if (off + b->bytes > total) total = off + b->bytes;
  }
  im_free(order);
  im_free(live);
  return total;
}

void im__nn_plan_free(im_nn_model_t *m) {
  im__nn_lanes_free(m);
  im_arena_free(m->arena);
  m->arena = NULL;
  m->planned = 0;
  m->plan_bytes = m->plan_bytes_unshared = 0;
  m->phase = IM__NN_PHASE_IDLE;
}

static void view(im_tensor_t *t, unsigned char *base, const pbufs_t *p, int id, im_dtype_t dt, int ndim,
                 const int64_t *shape) {
  if (id < 0) {
    memset(t, 0, sizeof *t);
    return;
  }
  (void)im_tensor_view(t, dt, ndim, shape, base + p->b[id].off);
}

void im__nn_set_batch(im_nn_model_t *m, int64_t n) {
  if (m->cur_n == n) return;
  for (size_t i = 0; i < m->n_nodes; i++) {
    im__nn_node_t *nd = &m->nodes[i];
    nd->out.shape[0] = n;
    if (nd->grad.data) nd->grad.shape[0] = n;
    if (nd->scratch.data) nd->scratch.shape[0] = n;
    for (int k = 0; k < 2; k++)
      if (nd->aux[k].data && nd->aux_batched[k]) nd->aux[k].shape[0] = n;
  }
  m->labels.shape[0] = n;
  m->cur_n = n;
}

/* Layouts: three passes of one mechanism (spread_layout). A pass turns the nodes its rule picks
 * from one layout to another; a turned node goes back wherever one of its consumers does not take
 * the new layout, and around an op that keeps its layout (its inputs and its output alike) the turned
 * ones go back unless all of them have it. IMOPS_LAYOUT=plain keeps everything plain,
 * IMOPS_LAYOUT=blocked takes no channels-last layout (for comparisons). */
typedef struct {
  im_layout_t from, to;
  int (*turns)(const im_nn_model_t *m, int i);        /* node i (in layout from) goes to layout to */
  int (*takes)(const im_nn_model_t *m, int j, int i); /* node j takes its input i in layout to */
  int (*keeps)(im__nn_op_t op);                       /* inputs and output in one layout */
} layout_pass_t;

static void spread_layout(im_nn_model_t *m, const layout_pass_t *lp) {
  const int n = (int)m->n_nodes;
  for (int i = 0; i < n; i++) {
    im__nn_node_t *nd = &m->nodes[i];
    nd->turned = nd->layout == lp->from && lp->turns(m, i);
    if (nd->turned) nd->layout = lp->to;
  }
  int changed = 0;
#define BACK(i) \
  (m->nodes[i].turned && m->nodes[i].layout == lp->to ? (m->nodes[i].layout = lp->from, changed = 1) : 0)
  for (int j = 0; j < n; j++) /* every consumer must take it */
    for (int k = 0; k < m->nodes[j].n_in; k++)
      if (!lp->takes(m, j, m->nodes[j].in[k])) BACK(m->nodes[j].in[k]);
  do { /* layout-keeping ops: inputs and output alike */
    changed = 0;
    for (int j = 0; j < n; j++) {
      const im__nn_node_t *nd = &m->nodes[j];
      if (!lp->keeps(nd->op)) continue;
      int all = nd->layout == lp->to;
      for (int k = 0; k < nd->n_in; k++) all &= m->nodes[nd->in[k]].layout == lp->to;
      if (all) continue;
      BACK(j);
      for (int k = 0; k < nd->n_in; k++) BACK(nd->in[k]);
    }
  } while (changed);
#undef BACK
}

/* Blocked. On a backend whose kernels take blocked activations (im_backend_blocked_ok), a 4-D
 * activation with a multiple of 16 channels stays in the blocked layout (nChw16c) wherever it
 * flows only between ops with blocked kernels, so that oneDNN's convolutions read and write it
 * without layout reorders around each of them (they were 13-16% of a training step of resnet18
 * and surfacenet). Batch norm, ReLU, max pooling and residual adds keep their input's layout,
 * so a chain is blocked as a whole or not at all; a convolution may change the layout, and
 * global average pooling takes either. */
static int blocked_producer(im__nn_op_t op) {
  return op == IM__NN_CONV || op == IM__NN_BN || op == IM__NN_RELU || op == IM__NN_MAXPOOL || op == IM__NN_ADD;
}
static int blocked_turns(const im_nn_model_t *m, int i) {
  const im__nn_node_t *nd = &m->nodes[i];
  return blocked_producer(nd->op) && nd->ndim == 4 && nd->shape[1] % 16 == 0;
}
static int blocked_takes(const im_nn_model_t *m, int j, int i) {
  (void)i;
  return blocked_producer(m->nodes[j].op) || m->nodes[j].op == IM__NN_GAP;
}
static int blocked_keeps(im__nn_op_t op) { return blocked_producer(op) && op != IM__NN_CONV; }
static const layout_pass_t blocked_pass = {IM_LAYOUT_PLAIN, IM_LAYOUT_NCHW16C, blocked_turns, blocked_takes,
                                           blocked_keeps};

/* Channels-last. ConvNeXt's blocks turn the depthwise convolution's output to NHWC for the LayerNorm
 * and the Linear layers, and back (TO_NHWC, TO_NCHW): two transposes per block, which cost more
 * than the block's depthwise convolution at batch 1 (small tensors, a thread barrier each). In a
 * graph with such transposes, on a backend that takes non-plain layouts, the activations that
 * only flow between convolutions, residual adds, drop-path, global average pooling and those
 * transposes are kept channels-last (IM_LAYOUT_NHWC); a transpose between channels-last data and
 * its plain NHWC twin is then a view of the same bytes. */
static int cl_producer(im__nn_op_t op) {
  return op == IM__NN_CONV || op == IM__NN_SCALE || op == IM__NN_ADD || op == IM__NN_DROP_PATH ||
         op == IM__NN_TO_NCHW;
}
static int cl_turns(const im_nn_model_t *m, int i) {
  const im__nn_node_t *nd = &m->nodes[i];
  if (!cl_producer(nd->op) || nd->ndim != 4) return 0;
  return nd->op != IM__NN_TO_NCHW || m->nodes[nd->in[0]].n_cons == 1;
}
static int cl_takes(const im_nn_model_t *m, int j, int i) {
  const im__nn_op_t op = m->nodes[j].op;
  if (op == IM__NN_TO_NHWC) return m->nodes[i].n_cons == 1; /* a view only of a sole consumer's data */
  return (cl_producer(op) && op != IM__NN_TO_NCHW) || op == IM__NN_GAP;
}
static int cl_keeps(im__nn_op_t op) { return op == IM__NN_ADD || op == IM__NN_DROP_PATH; }
static const layout_pass_t cl_pass = {IM_LAYOUT_PLAIN, IM_LAYOUT_NHWC, cl_turns, cl_takes, cl_keeps};

/* Small outputs at batch 1. oneDNN's channels-last kernels (brgconv) beat its blocked direct ones on
 * convolutions with outputs of 7x7 or less at batch 1: resnet18@224's last stage took 0.65-0.73
 * against 0.78-1.31 ms a 3x3 layer, its strided entry 0.35 against 0.43 (batch 4 and more: blocked
 * wins; 14x14 outputs: blocked Winograd wins by 1.7x). In an inference plan for single images, such
 * convolutions and the adds and ReLUs that keep their layout go channels-last, where every consumer
 * takes it (convolutions, adds, ReLUs, global average pooling). */
static int small_cl_op(im__nn_op_t op) { return op == IM__NN_CONV || op == IM__NN_ADD || op == IM__NN_RELU; }
static int small_cl_turns(const im_nn_model_t *m, int i) {
  const im__nn_node_t *nd = &m->nodes[i];
  return small_cl_op(nd->op) && nd->shape[2] * nd->shape[3] <= 49;
}
static int small_cl_takes(const im_nn_model_t *m, int j, int i) {
  (void)i;
  return small_cl_op(m->nodes[j].op) || m->nodes[j].op == IM__NN_GAP;
}
static int small_cl_keeps(im__nn_op_t op) { return op == IM__NN_ADD || op == IM__NN_RELU; }
static const layout_pass_t small_cl_pass = {IM_LAYOUT_NCHW16C, IM_LAYOUT_NHWC, small_cl_turns, small_cl_takes,
                                            small_cl_keeps};

static void plan_layouts(im_nn_model_t *m) {
  const int n = (int)m->n_nodes;
  const char *env = getenv("IMOPS_LAYOUT");
  const int on = im_backend_blocked_ok(m->be) && !(env && !strcmp(env, "plain"));
  for (int i = 0; i < n; i++) m->nodes[i].layout = IM_LAYOUT_PLAIN;
  if (!on) return;
  spread_layout(m, &blocked_pass);
  if (env && !strcmp(env, "blocked")) return;
  int transposes = 0;
  for (int i = 0; i < n; i++) transposes |= m->nodes[i].op == IM__NN_TO_NHWC;
  if (transposes) spread_layout(m, &cl_pass);
  if (m->folded && !m->plan_training && m->plan_batch == 1) spread_layout(m, &small_cl_pass);
}

/* A transpose that the channels-last layout made a view. */
static int is_view(const im_nn_model_t *m, const im__nn_node_t *nd) {
  if (nd->op == IM__NN_TO_NHWC) return m->nodes[nd->in[0]].layout == IM_LAYOUT_NHWC;
  if (nd->op == IM__NN_TO_NCHW) return nd->layout == IM_LAYOUT_NHWC;
  return 0;
}

/* Inference plans of folded models: a residual add whose later input is a convolution that feeds
 * nothing else (ResNet's second convolution of a block, its batch norm folded, or the downsample
 * shortcut's) runs inside that convolution as a sum post-op (im_op_conv2d_forward_fused_add), and so
 * does a ReLU that is the add's only consumer: one pass over the block's output instead of three
 * (the convolution's write, the add, the ReLU). The convolution writes over the residual's buffer
 * when no later node reads the residual (a block's identity: its other reader, the block's first
 * convolution, ran before), else into its own buffer after a copy of the residual. The graph
 * itself (im_nn_node_get, the ONNX exporter) is unchanged. IMOPS_FUSE_RESIDUAL=0 turns it off
 * (for comparisons). Call after the in-place choices: it overrides those of the fused nodes. */
static void plan_fuse_residual(im_nn_model_t *m) {
  const char *env = getenv("IMOPS_FUSE_RESIDUAL");
  if ((env && !strcmp(env, "0")) || !im_backend_supports(m->be, IM_OP_CONV2D_FORWARD_FUSED_ADD)) return;
  const int n = (int)m->n_nodes;
  for (int a = 1; a < n; a++) {
    im__nn_node_t *ad = &m->nodes[a];
    if (ad->op != IM__NN_ADD || ad->in[0] == ad->in[1] || ad->ndim != 4) continue;
    const int c = ad->in[0] > ad->in[1] ? ad->in[0] : ad->in[1], r = ad->in[0] + ad->in[1] - c;
    im__nn_node_t *cv = &m->nodes[c];
    if (cv->op != IM__NN_CONV || cv->act != IM_ACT_NONE || cv->n_cons != 1 || cv->layout != ad->layout ||
        m->nodes[r].layout != ad->layout)
      continue;
    cv->res = r;
    cv->res_act = IM_ACT_NONE;
    ad->by_conv = c;
    ad->inplace = 0;
    im__nn_node_t *rl = ad->n_cons == 1 ? &m->nodes[ad->last_cons] : NULL;
    if (rl && rl->op == IM__NN_RELU) {
      cv->res_act = IM_ACT_RELU;
      rl->by_conv = c;
      rl->inplace = 0;
    }
    /* Over the residual: when no node from the convolution on but the add reads it (the
     * convolution's own input would alias its output). */
    int free_ = m->nodes[r].op != IM__NN_INPUT;
    for (int j = c; j < n && free_; j++)
      for (int k = 0; k < m->nodes[j].n_in; k++) free_ &= m->nodes[j].in[k] != r || j == a;
    cv->res_inplace = free_;
  }
}

static int needs_scratch(const im_nn_model_t *m, int j) {
  const im__nn_node_t *nd = &m->nodes[j];
  if (nd->n_in == 0 || nd->op == IM__NN_ADD) return 0;
  const im__nn_node_t *p = &m->nodes[nd->in[0]];
  if (p->op == IM__NN_INPUT) return nd->op == IM__NN_BN || nd->op == IM__NN_LN;
  return p->last_cons != j;
}

im_status_t im_nn_plan(im_nn_model_t *m, im_backend_t *b, int64_t batch_size, int64_t img_h, int64_t img_w,
                       int training) {
  if (b) m->be = b;
  if (!m->be) return im_error(IM_ERR_ARG, "im_nn_plan: no backend");
  if (training && m->folded)
    return im_error(IM_ERR_STATE, "im_nn_plan: %s is a folded inference model; train the model it was folded from",
                    m->arch);
  if (batch_size < 1 || batch_size > (1 << 20) || img_h < 1 || img_w < 1 || img_h > 65536 || img_w > 65536)
    return im_error(IM_ERR_ARG, "im_nn_plan: batch %lld of %lldx%lld is out of range", (long long)batch_size,
                    (long long)img_h, (long long)img_w);
  im__nn_plan_free(m);
  m->plan_batch = batch_size;
  m->plan_c = m->opts.in_channels;
  m->plan_h = img_h;
  m->plan_w = img_w;
  m->plan_training = training ? 1 : 0;
  const int n = (int)m->n_nodes, T = training ? 2 * n : n;
  im_status_t st = IM_OK;

  /* Shapes and consumers. */
  for (int i = 0; i < n; i++) {
    im__nn_node_t *nd = &m->nodes[i];
    nd->n_cons = 0;
    nd->last_cons = -1;
    nd->inplace = 0;
    nd->res = nd->by_conv = -1;
    nd->res_act = IM_ACT_NONE;
    nd->res_inplace = 0;
    nd->buf_out = nd->buf_grad = nd->buf_aux[0] = nd->buf_aux[1] = nd->buf_scratch = -1;
    if ((st = im__nn_layer_shape(m, nd)) != IM_OK) return st;
    for (int k = 0; k < nd->n_in; k++) {
      im__nn_node_t *p = &m->nodes[nd->in[k]];
      p->n_cons++;
      p->last_cons = i;
    }
  }
  plan_layouts(m);
  for (int i = 0; i < n; i++) {
    im__nn_node_t *nd = &m->nodes[i];
    nd->view = is_view(m, nd);
    nd->inplace = nd->view;
  }
  for (int i = 0; i < n; i++) {
    im__nn_node_t *nd = &m->nodes[i];
    if (nd->view || nd->n_in == 0 || !im__nn_op_inplace_ok(nd->op, training)) continue;
    const im__nn_node_t *p = &m->nodes[nd->in[0]];
    if (p->op == IM__NN_INPUT || p->n_cons != 1) continue;
    if (training && im__nn_op_bwd_needs_output(p->op)) continue;
    if (p->view && training && im__nn_op_bwd_needs_output(m->nodes[p->in[0]].op))
      continue; /* writing into a view writes into its source (a view's source has no other consumer) */
    if (nd->op == IM__NN_ADD && nd->in[1] == nd->in[0]) continue;
    nd->inplace = 1;
  }
  if (!training && m->folded) plan_fuse_residual(m);
  /* Training: a batch norm whose only consumer is an in-place ReLU writes relu(bn(x)) itself (one
   * pass less over the activation), and its backward takes the ReLU's gradient from that shared
   * output and the shared gradient (batchnorm_backward_fused): the ReLU's backward does nothing. */
  for (int i = 0; i < n; i++) {
    im__nn_node_t *nd = &m->nodes[i];
    nd->fused_away = 0;
    if (nd->op == IM__NN_BN) nd->act = IM_ACT_NONE;
  }
  for (int i = 0; training && i < n; i++) {
    im__nn_node_t *nd = &m->nodes[i];
    if (nd->op != IM__NN_RELU || !nd->inplace) continue;
    im__nn_node_t *p = &m->nodes[nd->in[0]];
    if (p->op != IM__NN_BN || p->n_cons != 1) continue;
    p->act = IM_ACT_RELU;
    nd->fused_away = 1;
  }

  pbufs_t pb = {0};
#define NEWBUF(bytes, first, last) new_buf(&pb, (bytes), (first), (last))
  /* Activations and saved tensors. */
  for (int i = 0; i < n; i++) {
    im__nn_node_t *nd = &m->nodes[i];
    const int share = nd->by_conv >= 0                   ? nd->by_conv
                      : nd->res >= 0 && nd->res_inplace ? nd->res
                      : nd->inplace                     ? nd->in[0]
                                                        : -1;
    if (share >= 0) {
      nd->buf_out = m->nodes[share].buf_out;
      extend(&pb, nd->buf_out, i);
    } else {
      nd->buf_out = NEWBUF(tensor_bytes(IM_F32, nd->ndim, nd->shape), i, i);
    }
    for (int k = 0; k < nd->n_in; k++) extend(&pb, m->nodes[nd->in[k]].buf_out, i);
    if (training) {
      if (im__nn_op_bwd_needs_input(nd->op)) extend(&pb, m->nodes[nd->in[0]].buf_out, 2 * n - i);
      if (im__nn_op_bwd_needs_output(nd->op) || (nd->op == IM__NN_BN && nd->act == IM_ACT_RELU))
        extend(&pb, nd->buf_out, 2 * n - i); /* a fused BN's backward reads its (the ReLU's) output */
    }
    im_dtype_t dt[2];
    int nd_[2], batched[2];
    int64_t sh[2][4];
    int na = im__nn_layer_aux(m, nd, training, dt, nd_, sh, batched);
    for (int k = 0; k < na; k++)
      nd->buf_aux[k] = NEWBUF(tensor_bytes(dt[k], nd_[k], sh[k]), i, training ? 2 * n - i : i);
  }
  extend(&pb, m->nodes[n - 1].buf_out, T); /* the logits stay readable to the end */
  const int buf_labels = NEWBUF(sizeof(int32_t) * (size_t)batch_size, n, n);
  const int buf_loss = NEWBUF(sizeof(float), n, n);
  /* Gradients (training), last node first. */
  if (training) {
    for (int i = n - 1; i >= 1; i--) {
      im__nn_node_t *nd = &m->nodes[i];
      if (i != n - 1 && nd->last_cons < 0) {
        st = im_error(IM_ERR_INTERNAL, "layer %d has no consumer", i);
        goto fail;
      }
      const int first = i == n - 1 ? n : 2 * n - nd->last_cons, last = 2 * n - i;
      const im__nn_node_t *c = i == n - 1 ? NULL : &m->nodes[nd->last_cons];
      if (c && c->inplace && c->in[0] == i) {
        nd->buf_grad = c->buf_grad;
        extend(&pb, nd->buf_grad, first);
        extend(&pb, nd->buf_grad, last);
      } else {
        nd->buf_grad = NEWBUF(tensor_bytes(IM_F32, nd->ndim, nd->shape), first, last);
      }
    }
    for (int j = 1; j < n; j++) {
      im__nn_node_t *nd = &m->nodes[j];
      if (needs_scratch(m, j)) {
        const im__nn_node_t *p = &m->nodes[nd->in[0]];
        nd->buf_scratch = NEWBUF(tensor_bytes(IM_F32, p->ndim, p->shape), 2 * n - j, 2 * n - j);
      }
    }
  }
#undef NEWBUF
  if (pb.oom) {
    st = im_error(IM_ERR_NOMEM, "out of memory planning");
    goto fail;
  }
  size_t unshared = 0;
  for (size_t i = 0; i < pb.n; i++) unshared += pb.b[i].bytes;
  size_t total = place(&pb);
  if (!total) {
    st = im_error(IM_ERR_NOMEM, "out of memory planning");
    goto fail;
  }
  /* One block, reserved once. */
  if ((st = im_arena_new(total, &m->arena)) != IM_OK) goto fail;
  void *base;
  if ((st = im_arena_alloc(m->arena, total, &base)) != IM_OK) goto fail;
  for (int i = 0; i < n; i++) {
    im__nn_node_t *nd = &m->nodes[i];
    view(&nd->out, base, &pb, nd->buf_out, IM_F32, nd->ndim, nd->shape);
    view(&nd->grad, base, &pb, nd->buf_grad, IM_F32, nd->ndim, nd->shape);
    nd->out.layout = nd->grad.layout = nd->layout;
    if (nd->buf_scratch >= 0) {
      const im__nn_node_t *p = &m->nodes[nd->in[0]];
      view(&nd->scratch, base, &pb, nd->buf_scratch, IM_F32, p->ndim, p->shape);
      nd->scratch.layout = p->layout;
    } else {
      memset(&nd->scratch, 0, sizeof nd->scratch);
    }
    im_dtype_t dt[2];
    int nd_[2], batched[2];
    int64_t sh[2][4];
    int na = im__nn_layer_aux(m, nd, training, dt, nd_, sh, batched);
    for (int k = 0; k < 2; k++) {
      if (k < na) {
        view(&nd->aux[k], base, &pb, nd->buf_aux[k], dt[k], nd_[k], sh[k]);
        nd->aux_batched[k] = batched[k];
        if (nd->op == IM__NN_MAXPOOL) nd->aux[k].layout = nd->layout; /* indices, shaped as the output */
      } else {
        memset(&nd->aux[k], 0, sizeof nd->aux[k]);
        nd->aux_batched[k] = 0;
      }
    }
  }
  view(&m->labels, base, &pb, buf_labels, IM_I32, 1, (int64_t[]){batch_size});
  view(&m->loss, base, &pb, buf_loss, IM_F32, 1, (int64_t[]){1});
  m->cur_n = batch_size;
  m->plan_bytes = total;
  m->plan_bytes_unshared = unshared;
  m->planned = 1;
  im_free(pb.b);
  if ((st = im__nn_lanes_plan(m)) != IM_OK) {
    im__nn_plan_free(m);
    return st;
  }
  return IM_OK;
fail:
  im_free(pb.b);
  im__nn_plan_free(m);
  return st;
}

size_t im_nn_plan_bytes(const im_nn_model_t *m) { return m->plan_bytes; }
size_t im_nn_plan_bytes_unshared(const im_nn_model_t *m) { return m->plan_bytes_unshared; }
