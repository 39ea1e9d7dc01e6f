/* Internals of src/nn shared by its files: the model (a graph of layer nodes
 * in topological order plus a state table in PyTorch's state_dict order), the
 * builder helpers the architectures use, the per-op layer functions, and the
 * initializers. Nothing here is part of the public API. */
#ifndef IMOPS_NN_IMPL_H
#define IMOPS_NN_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "imops/nn.h"

/* ---- layer ops ------------------------------------------------------------------ */
typedef enum {
  IM__NN_INPUT = 0,  /* the image batch [N,C,H,W] (a copy of the caller's) */
  IM__NN_CONV,       /* conv2d, NCHW, weight [K,C/G,R,S], optional bias [K] */
  IM__NN_BN,         /* BatchNorm2d */
  IM__NN_LN,         /* LayerNorm over the last dim ([N,H,W,C] or [N,C]) */
  IM__NN_RELU,
  IM__NN_GELU,
  IM__NN_MAXPOOL,
  IM__NN_GAP,        /* global average pool [N,C,H,W] -> [N,C] */
  IM__NN_LINEAR,     /* x [..., in] -> [..., out] */
  IM__NN_DROPOUT,
  IM__NN_ADD,        /* in[0] + in[1] */
  IM__NN_TO_NHWC,
  IM__NN_TO_NCHW,
  IM__NN_SCALE,      /* per-channel scale of NCHW data (ConvNeXt layer_scale [C,1,1]) */
  IM__NN_DROP_PATH,  /* stochastic depth, "row" mode: per-sample keep/drop, scaled by 1/(1-p) */
  IM__NN_OP_COUNT_
} im__nn_op_t;

/* How a state entry is initialized (init.c). */
typedef enum {
  IM__NN_INIT_CONST = 0,     /* every element = arg */
  IM__NN_INIT_KAIMING_FAN_OUT, /* N(0, 2 / fan_out): kaiming_normal_(mode="fan_out", nonlinearity="relu") */
  IM__NN_INIT_TORCH_DEFAULT, /* U(+-1/sqrt(fan_in)): torch's kaiming_uniform_(a=sqrt 5) for Linear/Conv weights */
  IM__NN_INIT_UNIFORM,       /* U(+-arg): torch's default bias init with arg = 1/sqrt(fan_in) */
  IM__NN_INIT_TRUNC_NORMAL,  /* N(0, arg^2) truncated to [-2, 2] (trunc_normal_(std=arg), absolute bounds) */
} im__nn_init_t;

/* Weight-init conventions of a family. */
typedef enum {
  IM__NN_STYLE_RESNET = 0,   /* torchvision ResNet: convs kaiming fan_out, Linear torch default */
  IM__NN_STYLE_CONVNEXT = 1, /* torchvision ConvNeXt: trunc_normal 0.02, biases 0 */
} im__nn_style_t;

/* One state_dict entry: a parameter (value + grad in the slabs), a BN buffer
 * (value in the buffer slab) or a counter (num_batches_tracked). */
typedef struct {
  char *name;
  im_nn_state_kind_t kind;
  int ndim;
  int64_t shape[4];
  im__nn_init_t init;
  double init_arg;
  int decay;       /* parameters: weight decay applies when the optimizer filters */
  size_t offset;   /* elements into its slab (pslab/gslab for params, bslab for buffers) */
  im_tensor_t value, grad;
  int64_t counter;
} im__nn_entry_t;

/* One layer node. Inputs come before it (topological order). */
typedef struct {
  im__nn_op_t op;
  int in[2], n_in;
  int w, b;               /* entry indices (conv/linear weight and bias, norm gamma and beta, scale); -1 none */
  int rm, rv, nbt;        /* BN running mean, running var, num_batches_tracked; -1 none */
  int cin, cout;          /* channels in and out (conv, linear, norms) */
  im_conv2d_params_t conv;
  im_pool2d_params_t pool;
  im_act_t act;           /* conv of a folded model: activation fused after it */
  float eps, momentum;    /* norms */
  float p;                /* dropout and drop-path rate */
  /* set by the planner */
  int ndim;
  int64_t shape[4];       /* output shape at the planned batch */
  im_layout_t layout;     /* of the output and its gradient (plan_layouts in plan.c) */
  int fused_away;         /* a ReLU whose forward and backward its batch norm does (act) */
  int n_cons, last_cons;  /* consumers, and the last one in topological order (-1 none) */
  int inplace;            /* the output shares in[0]'s buffer (and the gradients theirs) */
  int view;               /* inplace, and no work either way: a TO_NHWC/TO_NCHW between channels-last data */
  int turned;             /* planning: the layout pass now running gave this node its layout */
  /* Inference plans of folded models (plan_fuse_residual in plan.c): a CONV whose only consumer is a
   * residual ADD (and the ADD's a ReLU) computes them too: y = res_act(conv + bias + res's output). */
  int res;                /* CONV: the add's other input (-1 none) */
  im_act_t res_act;       /* CONV with res: IM_ACT_RELU when the add's ReLU is fused too */
  int res_inplace;        /* CONV with res: writes over res's buffer (no later reader needs the identity) */
  int by_conv;            /* ADD or RELU: the CONV that computes it (-1 none): it does no work itself */
  int buf_out, buf_grad, buf_aux[2], buf_scratch; /* planner buffer ids, -1 none */
  im_tensor_t out, grad, aux[2], scratch;         /* views into the plan block (batch dim 0 = current n) */
  int aux_batched[2];     /* aux tensors whose dim 0 is the batch */
} im__nn_node_t;

typedef struct im__nn_lanes im__nn_lanes_t;

struct im_nn_model {
  char *arch;
  im_nn_model_opts_t opts; /* resolved */
  im__nn_style_t style;
  im__nn_node_t *nodes;
  size_t n_nodes, cap_nodes;
  im__nn_entry_t *ents;
  size_t n_ents, cap_ents;
  size_t *params; /* entry indices of the parameters, in order */
  size_t n_params;
  int64_t num_params;
  size_t num_buffer_elems;
  im_tensor_t pslab, gslab, bslab; /* owned: parameters, gradients, buffers */
  im_status_t build_err;          /* first error while building (IM_OK if none) */
  im_rng_t rng;                   /* dropout and stochastic depth */
  /* the plan */
  im_backend_t *be;
  im_arena_t *arena;
  int planned, plan_training;
  int64_t plan_batch, plan_c, plan_h, plan_w;
  size_t plan_bytes, plan_bytes_unshared;
  im_tensor_t labels, loss; /* planned views: I32 [B], F32 [1] */
  int64_t cur_n;            /* batch size the node views are shaped for */
  int have_logits;          /* a forward ran since the plan */
  int phase;                /* IM__NN_PHASE_* */
  double *node_s;           /* when set (im__nn_time_nodes): forward adds each node's seconds here */
  int folded;               /* im_nn_model_fold's output: inference only */
  int is_lane;              /* a batch lane of a folded model (lanes.c): nodes owned, entries borrowed */
  im__nn_lanes_t *lanes;    /* a folded batch plan's lanes (lanes.c), or NULL */
};

enum {
  IM__NN_PHASE_IDLE = 0,    /* nothing to backpropagate */
  IM__NN_PHASE_FORWARD = 1, /* after a training forward */
  IM__NN_PHASE_LOSS = 2,    /* after a training forward and its loss: the logits' gradient is set */
};

/* ---- batch lanes (lanes.c) ---- */
/** After a successful plan: a folded model's batch plan gets its lanes where they pay (or
 * IMOPS_BATCH_LANES says so); otherwise none. Adds the lanes' plan bytes to the model's. */
im_status_t im__nn_lanes_plan(im_nn_model_t *m);
void im__nn_lanes_free(im_nn_model_t *m);
/** The forward of x (checked, n <= the plan's batch, the batch already set) through the lanes:
 * *logits views the model's logits. */
im_status_t im__nn_lanes_forward(im_nn_model_t *m, const im_tensor_t *x, im_tensor_t *logits);
/** The number of lanes of m's plan (0: it runs as one batch). For tests and benchmarks. */
int im__nn_lanes_count(const im_nn_model_t *m);
/** The images each lane's plan takes (0 without lanes). */
int64_t im__nn_lanes_batch(const im_nn_model_t *m);

/** Folded models: every state entry gets a fresh stamp (im_tensor_t.stamp), as their weights are
 * constant until the next im_nn_state_load, which calls this again; other models: stamps 0. */
void im__nn_restamp(im_nn_model_t *m);

/* ---- builder (graph.c): each returns a node or entry index, or -1 after an
 * error (recorded in m->build_err; later calls with a -1 input return -1). ---- */
int im__nn_fail(im_nn_model_t *m, im_status_t st);
/** A state entry named prefix.suffix (prefix may be ""), initialized as init(arg). */
int im__nn_entry(im_nn_model_t *m, const char *prefix, const char *suffix, im_nn_state_kind_t kind, int ndim,
                 const int64_t *shape, im__nn_init_t init, double arg, int decay);
int im__nn_input(im_nn_model_t *m, int channels);
int im__nn_conv(im_nn_model_t *m, int in, const char *name, int cin, int cout, int k, int stride, int pad,
                int groups, int bias);
int im__nn_bn(im_nn_model_t *m, int in, const char *name, int c);
/** LayerNorm over the last dim of a [N,H,W,C] or [N,C] input. */
int im__nn_ln(im_nn_model_t *m, int in, const char *name, int c, float eps);
/** torchvision's LayerNorm2d on NCHW: to NHWC, LayerNorm, back to NCHW. */
int im__nn_ln2d(im_nn_model_t *m, int in, const char *name, int c, float eps);
int im__nn_relu(im_nn_model_t *m, int in);
int im__nn_gelu(im_nn_model_t *m, int in);
int im__nn_maxpool(im_nn_model_t *m, int in, int k, int stride, int pad);
int im__nn_gap(im_nn_model_t *m, int in);
int im__nn_linear(im_nn_model_t *m, int in, const char *name, int cin, int cout);
/** Returns in unchanged when p == 0. */
int im__nn_dropout(im_nn_model_t *m, int in, float p);
int im__nn_add(im_nn_model_t *m, int a, int b);
int im__nn_to_nhwc(im_nn_model_t *m, int in);
int im__nn_to_nchw(im_nn_model_t *m, int in);
/** Per-channel scale by the [C,1,1] entry scale_entry (registered earlier, in state_dict order). */
int im__nn_scale(im_nn_model_t *m, int in, int scale_entry, int c);
/** Returns in unchanged when p == 0. */
int im__nn_drop_path(im_nn_model_t *m, int in, float p);

/** Channels scaled by the width multiplier: max(1, floor(base * width + 0.5)). */
int im__nn_width(const im_nn_model_t *m, int base);

/* ---- architectures (surfacenet.c, resnet.c, convnext.c): fill the graph of m,
 * whose opts are resolved except the arch-specific defaults they set. ---- */
im_status_t im__nn_build_surfacenet(im_nn_model_t *m);
im_status_t im__nn_build_resnet(im_nn_model_t *m, const int *default_depths);
im_status_t im__nn_build_convnext(im_nn_model_t *m, const int *default_depths, const int *dims);

/* ---- layers (layers.c): shape inference and one op's forward/backward ---- */
/** Output shape of node nd from its inputs' shapes (already set). */
im_status_t im__nn_layer_shape(im_nn_model_t *m, im__nn_node_t *nd);
/** Traits used by the planner. */
int im__nn_op_inplace_ok(im__nn_op_t op, int training_plan); /* forward may write over in[0] */
int im__nn_op_bwd_needs_input(im__nn_op_t op);
int im__nn_op_bwd_needs_output(im__nn_op_t op);
const char *im__nn_op_name(im__nn_op_t op);
/** Benchmarks: from now on forward adds node i's wall seconds to acc[i] (acc has im__nn_node_count
 * entries; NULL stops it); im__nn_node_op names node i's op. */
void im__nn_time_nodes(im_nn_model_t *m, double *acc);
size_t im__nn_node_count(const im_nn_model_t *m);
const char *im__nn_node_op(const im_nn_model_t *m, size_t i);
/** Aux buffers the op needs (training: for backward; inference: scratch):
 * shapes (up to 2) and dtypes; returns how many. */
int im__nn_layer_aux(const im_nn_model_t *m, const im__nn_node_t *nd, int training, im_dtype_t dt[2], int ndim[2],
                     int64_t shape[2][4], int batched[2]);
im_status_t im__nn_layer_forward(im_nn_model_t *m, im__nn_node_t *nd, int training);
im_status_t im__nn_layer_backward(im_nn_model_t *m, int idx);

/* ---- init (init.c) ---- */
/** Initializes every entry from seed as its init says (on im_num_threads() threads). */
im_status_t im__nn_init_entries(im_nn_model_t *m, uint64_t seed);

/* ---- models (model.c) ---- */
/** im_nn_model_new, with the weight initialization skipped when init is 0 (the caller fills them). */
im_status_t im__nn_model_build(const char *arch, const im_nn_model_opts_t *o, int init, im_nn_model_t **out);

/* ---- plan (plan.c) ---- */
void im__nn_plan_free(im_nn_model_t *m);
/** Shapes the node views for batch n (<= plan_batch). */
void im__nn_set_batch(im_nn_model_t *m, int64_t n);

#endif
