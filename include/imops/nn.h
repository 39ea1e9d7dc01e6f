/* The neural-network core: models built by name, explicit forward and
 * backward through the backend ops, memory planned once per model and batch
 * size, initialization as the reference implementations, optimizers, learning
 * rate schedules, and the model bundle (MLmodel + model.json + safetensors).
 *
 * A training step, with no allocation inside the loop:
 *
 *   im_nn_model_t *m;
 *   im_nn_model_opts_t o = {.num_classes = 2, .seed = 42};
 *   im_nn_model_new("resnet18", &o, &m);              // weights initialized
 *   im_nn_plan(m, be, 64, 112, 112, 1);                // arena for batch <= 64, training
 *   im_nn_optim_opts_t oo = im_nn_optim_defaults(IM_NN_OPTIM_SGD);
 *   oo.lr = 0.05; oo.momentum = 0.9; oo.weight_decay = 5e-4;
 *   im_nn_optim_t *opt;
 *   im_nn_optim_new(m, &oo, &opt);
 *   im_nn_sched_t s = {.kind = IM_NN_SCHED_COSINE, .base_lr = 0.05, .t_max = steps};
 *   for (int64_t t = 0; t < steps; t++) {
 *     im_tensor_t logits; float loss;
 *     im_nn_zero_grad(m);
 *     im_nn_forward(m, &x, 1, &logits);                // x: [n,C,H,W] F32, n <= 64
 *     im_nn_loss(m, labels, 0.1f, &loss);              // labels: n int32 values
 *     im_nn_backward(m);
 *     im_nn_clip_grad_norm(m, 5.0, NULL);              // optional
 *     im_nn_optim_set_lr(opt, im_nn_sched_lr(&s, t));
 *     im_nn_optim_step(opt);
 *   }
 *   im_nn_bundle_save(m, "out/model", &meta);
 *
 * Architectures (parameter names are PyTorch's for the same module, so a
 * model.safetensors loads into it with load_state_dict(strict=True)):
 * - "surfacenet": conv3x3(C->32, stride s, pad 1)+BN+ReLU, maxpool 2,
 *   conv3x3(32->64)+BN+ReLU, maxpool 2, conv3x3(64->128)+BN+ReLU, global
 *   average pool, [dropout], fc(128->classes); convs have no bias. Channels
 *   scale with width (round(32 w), ...). Names conv1.weight, bn1.{weight,bias,
 *   running_mean,running_var,num_batches_tracked}, conv2, bn2, conv3, bn3,
 *   fc.{weight,bias}. "smallcnn" is the same with stem stride 1 (28x28 grey:
 *   in_channels 1). The PyTorch module: class SurfaceNet in
 *   tools/ref/gen_model_fixtures.py.
 * - "resnet18", "resnet34": torchvision's layout and names (conv1, bn1,
 *   layer1.0.conv1, layer2.0.downsample.0/1, fc); width scales 64/128/256/512,
 *   depths overrides the BasicBlocks per stage.
 * - "convnext-tiny" (depths 3,3,9,3, dims 96..768), "-small" (3,3,27,3),
 *   "-base" (3,3,27,3, 128..1024), and the small ones of timm's family laid out
 *   as torchvision's ConvNeXt: "-atto" (2,2,6,2, 40..320), "-femto" (48..384),
 *   "-pico" (64..512), "-nano" (2,2,8,2, 80..640). torchvision's names:
 *   features.0.{0,1} stem conv 4x4/4 + LayerNorm2d, features.{1,3,5,7}.N.block.
 *   {0: dwconv 7x7, 2: LayerNorm, 3: Linear dim->4dim, 5: Linear 4dim->dim} and
 *   .layer_scale [dim,1,1], features.{2,4,6}.{0: LayerNorm2d, 1: conv 2x2/2},
 *   classifier.{0: LayerNorm2d, 2: Linear}. LayerNorm eps 1e-6.
 * Dropout (opts.dropout) sits right before the final Linear; it has no
 * parameters, so names do not change.
 *
 * Initialization (deterministic from opts.seed; each tensor draws from its own
 * stream im_rng_derive(seed, index)): resnet and surfacenet as torchvision's
 * ResNet (convs kaiming_normal_ fan_out/relu, norms 1 and 0, the final Linear
 * torch's default: kaiming_uniform_(a=sqrt 5), i.e. U(+-1/sqrt(fan_in)), bias
 * U(+-1/sqrt(fan_in))); convnext as torchvision's ConvNeXt (conv and Linear
 * weights trunc_normal_(std 0.02, a=-2, b=2), biases 0, norms 1 and 0,
 * layer_scale opts.layer_scale). The draws follow the distributions, not
 * torch's random streams.
 *
 * Memory: parameters, their gradients and the BN running statistics each live
 * in one slab (host memory, carved by a size table); activations, their
 * gradients and scratch live in one block planned by im_nn_plan from the
 * buffers' lifetimes (a buffer is reused once its last reader has run, ReLU
 * and residual adds run in place). The optimizer's moments are one more slab.
 * After im_nn_plan and im_nn_optim_new, forward, loss, backward, zero_grad,
 * clip, optimizer steps and predict allocate nothing through im_malloc (a
 * backend that caches per-shape state, like cpu, fills it on the first step
 * and on the first batch of each new size).
 *
 * Backends: every layer computation goes through the im_op_* functions of the
 * backend handle given to im_nn_plan. Parameters, the optimizer, clipping and
 * stochastic depth work on host memory, so the backend must be a host-memory
 * one (ref, cpu); a device backend needs these moved behind ops first.
 *
 * Threads: a model and its optimizer are used by one thread at a time. The
 * same seed, backend and thread count give bitwise identical weights.
 */
#ifndef IMOPS_NN_H
#define IMOPS_NN_H

#include <stddef.h>
#include <stdint.h>

#include "imops/backend.h"
#include "imops/core.h"
#include "imops/status.h"
#include "imops/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- models ----------------------------------------------------------------- */
typedef struct im_nn_model im_nn_model_t;

/** Model options. Zero fields mean the default, so {0} (or designated
 * initializers for a few fields) is a valid set. */
typedef struct {
  int num_classes;   /* outputs of the final Linear, >= 1 (0: 2) */
  int in_channels;   /* 1 or 3 (0: 3) */
  float width;       /* channel multiplier, > 0 (0: 1.0, the reference layout) */
  int depths[4];     /* resnet: BasicBlocks per stage, convnext: blocks per stage; 0 entries: the arch's */
  int stem_stride;   /* surfacenet's first conv stride, 1 or 2 (0: 2; smallcnn: 1) */
  float dropout;     /* drop probability before the final Linear, in [0, 1) (0: none) */
  float drop_path;   /* convnext stochastic depth: the last block's rate, scaled linearly from 0 over the
                        blocks as torchvision does, in [0, 1) (0: none, the default, as needed for parity) */
  float layer_scale; /* convnext layer_scale init value, > 0 (0: 1e-6) */
  uint64_t seed;     /* initialization (and dropout/stochastic-depth stream) seed */
} im_nn_model_opts_t;

/** Builds architecture arch (see the list at the top; case-sensitive) with
 * options o (NULL: all defaults) and initializes its weights from o->seed.
 * IM_ERR_NOT_FOUND for an unknown arch, IM_ERR_ARG for a bad option. The model
 * is not planned yet: call im_nn_plan before forward. Free with im_nn_model_free. */
IM_NODISCARD im_status_t im_nn_model_new(const char *arch, const im_nn_model_opts_t *o, im_nn_model_t **out);
/** Frees the model, its slabs and its plan. NULL is a no-op. Optimizers of the
 * model must be freed first. */
void im_nn_model_free(im_nn_model_t *m);

/** Known architecture names, for help texts: i in [0, count). Static storage. */
size_t im_nn_arch_count(void);
const char *im_nn_arch_name(size_t i);

/** The arch name given to im_nn_model_new (owned by m). */
const char *im_nn_model_arch(const im_nn_model_t *m);
/** The options with every default resolved (depths filled in, etc.). */
void im_nn_model_get_opts(const im_nn_model_t *m, im_nn_model_opts_t *o);
int im_nn_model_num_classes(const im_nn_model_t *m);
int im_nn_model_in_channels(const im_nn_model_t *m);
/** Number of trainable parameter elements (as sum(p.numel() for p in model.parameters())). */
int64_t im_nn_model_num_params(const im_nn_model_t *m);
/** Number of layer nodes in the graph (input included), for reports. */
size_t im_nn_model_num_nodes(const im_nn_model_t *m);

/* ---- parameters and state --------------------------------------------------- */
/** A trainable parameter. value and grad point into the model's slabs (valid
 * until the model is freed); both are F32 host memory of the same shape. */
typedef struct {
  const char *name;   /* PyTorch's name, e.g. "layer1.0.conv1.weight"; owned by the model */
  im_tensor_t *value;
  im_tensor_t *grad;  /* accumulated by im_nn_backward, cleared by im_nn_zero_grad */
  int decay;          /* 1 for conv and Linear weights; 0 for biases, norm weights and layer_scale
                         (where weight decay is usually not applied: im_nn_optim_opts_t.decay_filter) */
} im_nn_param_t;

/** Number of parameters, and the i-th in PyTorch's parameters() order. */
size_t im_nn_param_count(const im_nn_model_t *m);
im_status_t im_nn_param_get(const im_nn_model_t *m, size_t i, im_nn_param_t *out);
/** Index of the parameter called name, or -1. */
int64_t im_nn_param_find(const im_nn_model_t *m, const char *name);

/** What a state_dict entry is. */
typedef enum {
  IM_NN_STATE_PARAM = 0,   /* a parameter (also in im_nn_param_get) */
  IM_NN_STATE_BUFFER = 1,  /* BN running_mean / running_var (F32) */
  IM_NN_STATE_COUNTER = 2, /* BN num_batches_tracked (an int64 count; tensor is NULL) */
} im_nn_state_kind_t;

/** One entry of the state_dict, in PyTorch's state_dict() order. */
typedef struct {
  const char *name;
  im_nn_state_kind_t kind;
  im_tensor_t *tensor; /* PARAM and BUFFER: the F32 values in the slab; COUNTER: NULL */
  int64_t *counter;    /* COUNTER: the count; else NULL */
} im_nn_state_entry_t;

size_t im_nn_state_count(const im_nn_model_t *m);
im_status_t im_nn_state_get(const im_nn_model_t *m, size_t i, im_nn_state_entry_t *out);

/** Writes the state_dict to a safetensors file atomically: every entry under
 * its name, F32, shapes as PyTorch's (counters as F32 scalars [], which
 * load_state_dict casts back to int64; the tensor module has no I64). meta
 * (n_meta entries) is added to "__metadata__" with format "imops-state",
 * version "1" and the arch. */
IM_NODISCARD im_status_t im_nn_state_save(const im_nn_model_t *m, const char *path, const im_safetensors_meta_t *meta,
                                          size_t n_meta);
/** Reads every state entry from an opened safetensors file (strict: each name
 * present with its exact shape, F32; counters F32 or I32 of any shape with
 * one element; no other tensors). On error (IM_ERR_FORMAT naming the first
 * missing, extra or mis-shaped tensor) the model is unchanged. */
IM_NODISCARD im_status_t im_nn_state_load(im_nn_model_t *m, const im_safetensors_t *st);

/** The state of the model's random stream (dropout masks, stochastic-depth
 * draws): seeded from opts.seed and advanced by every training forward. A
 * checkpoint saves it with im_nn_rng_get and a resumed run puts it back with
 * im_nn_rng_set, so that the masks after the resume are the ones an
 * uninterrupted run would draw. */
void im_nn_rng_get(const im_nn_model_t *m, im_rng_t *out);
void im_nn_rng_set(im_nn_model_t *m, const im_rng_t *in);

/* ---- planning, forward, loss, backward ---------------------------------------- */
/** Plans the activation memory for batches of up to batch_size images of
 * in_channels x img_h x img_w and reserves it once (replacing any earlier
 * plan). training = 1 plans forward + loss + backward (and also allows
 * eval-mode forward); 0 plans inference only, with buffers reused as soon as
 * possible. b is the backend every op runs on (not owned; it must outlive the
 * plan); NULL keeps the one given before (or to im_nn_bundle_load).
 * IM_ERR_ARG when the image is too small for the architecture. Allocates the
 * block (and frees the previous plan's): call it once per model and batch
 * size, not per step. */
IM_NODISCARD im_status_t im_nn_plan(im_nn_model_t *m, im_backend_t *b, int64_t batch_size, int64_t img_h,
                                    int64_t img_w, int training);
/** Bytes of the planned activation block (0 before planning), and what the
 * same buffers would take without reuse (for reports). */
size_t im_nn_plan_bytes(const im_nn_model_t *m);
size_t im_nn_plan_bytes_unshared(const im_nn_model_t *m);

/** Runs the model on x [n, C, H, W] F32 (host memory; n <= the planned batch,
 * C, H, W as planned; x is copied, the caller may reuse it at once).
 * training = 1: batch statistics in BN (running stats and num_batches_tracked
 * updated as torch does), dropout and stochastic depth active, activations
 * kept for im_nn_backward (needs a training plan; like torch, a BN layer
 * needs more than one value per channel, n x height x width > 1, so a batch
 * of one image fails with IM_ERR_ARG where a BN layer sees a 1x1 map).
 * training = 0: eval mode (samples independent).
 * Any forward ends the backward window of the previous one. *logits (may be
 * NULL) becomes a view [n, num_classes] of planned host memory, valid until
 * the next forward or plan. */
IM_NODISCARD im_status_t im_nn_forward(im_nn_model_t *m, const im_tensor_t *x, int training, im_tensor_t *logits);
/** Softmax cross-entropy of the last forward's logits against labels (n
 * int32 class indices), mean over the batch, with label smoothing eps in
 * [0, 1] (torch.nn.CrossEntropyLoss(label_smoothing=eps)). After a training
 * forward it also sets the logits' gradient for im_nn_backward. */
IM_NODISCARD im_status_t im_nn_loss(im_nn_model_t *m, const int32_t *labels, float label_smoothing, float *loss);
/** Backpropagates the loss of the last im_nn_loss through the last training
 * forward: parameter gradients are ACCUMULATED (+=, as torch's .grad), so call
 * im_nn_zero_grad once per step. Once per forward (IM_ERR_STATE otherwise). */
IM_NODISCARD im_status_t im_nn_backward(im_nn_model_t *m);
/** The same from a given gradient of the logits, dlogits [n, num_classes] F32
 * host memory (for other losses and gradient checks). */
IM_NODISCARD im_status_t im_nn_backward_from(im_nn_model_t *m, const im_tensor_t *dlogits);
/** Sets every parameter gradient to zero. */
void im_nn_zero_grad(im_nn_model_t *m);

/** Inference in eval mode on x [N, C, H, W] F32 host memory, any N (run in
 * chunks of the planned batch size through im_nn_forward). Writes the logits
 * and/or the softmax probabilities, each [N, num_classes] F32 caller-owned
 * host tensors (either may be NULL). Needs a plan (training or not). */
IM_NODISCARD im_status_t im_nn_predict(im_nn_model_t *m, const im_tensor_t *x, im_tensor_t *logits,
                                       im_tensor_t *probs);

/* ---- folded inference ------------------------------------------------------------
 * A folded model is the eval-mode graph rewritten for inference: every batch
 * norm that follows a convolution is folded into its weights and bias
 * (w' = w g / sqrt(v + eps), b' = (b - mu) g / sqrt(v + eps) + beta), a ReLU
 * that follows such a convolution runs fused with it (im_op_conv2d_forward_fused:
 * a oneDNN post-op on cpu), ConvNeXt's layer_scale is folded into the Linear
 * before it, and dropout / stochastic depth (identities in eval mode) are
 * dropped. It is planned once (im_nn_plan(f, be, batch, h, w, 0): inference
 * buffers reused as soon as their last reader ran; a residual add fed by a
 * convolution, and the ReLU after it, run inside that convolution
 * (im_op_conv2d_forward_fused_add), over the identity's buffer where nothing
 * later reads it; the graph stays as it is) and then runs im_nn_forward
 * (eval mode) and im_nn_predict with no allocation, giving the eval-mode
 * logits of the model it came from up to float rounding. It cannot be trained
 * (im_nn_plan with training = 1 and im_nn_state_save refuse it). Its weights
 * are constant (stamped, tensor.h): the cpu backend prepares each convolution's
 * weights for its kernel once, not at every forward; change them only through
 * im_nn_state_load, which renews the stamps. The ONNX exporter walks the same
 * graph (im_nn_node_get). */

/** A new folded inference copy of m (m is unchanged and may be freed at once).
 * The copy keeps m's backend for im_nn_plan(f, NULL, ...). Free with im_nn_model_free. */
IM_NODISCARD im_status_t im_nn_model_fold(const im_nn_model_t *m, im_nn_model_t **out);
/** 1 for a model made by im_nn_model_fold. */
int im_nn_model_is_folded(const im_nn_model_t *m);

/** What a graph node computes (eval mode). */
typedef enum {
  IM_NN_NODE_INPUT = 0,   /* the image batch [N,C,H,W] */
  IM_NN_NODE_CONV,        /* conv2d NCHW (weight [K,C/G,R,S], bias [K] or NULL), then act */
  IM_NN_NODE_BATCHNORM,   /* eval batch norm: (x - running_mean) / sqrt(running_var + eps) * weight + bias */
  IM_NN_NODE_LAYERNORM,   /* over the last dim, eps, weight and bias [C] */
  IM_NN_NODE_RELU,
  IM_NN_NODE_GELU,        /* exact (erf) */
  IM_NN_NODE_MAXPOOL,     /* pool params */
  IM_NN_NODE_GLOBAL_AVGPOOL, /* [N,C,H,W] -> [N,C] */
  IM_NN_NODE_LINEAR,      /* x [..., in] W^T + b, weight [out, in], bias [out] */
  IM_NN_NODE_DROPOUT,     /* identity in eval mode */
  IM_NN_NODE_ADD,         /* in[0] + in[1] */
  IM_NN_NODE_TO_NHWC,     /* permute [N,C,H,W] -> [N,H,W,C] */
  IM_NN_NODE_TO_NCHW,     /* permute [N,H,W,C] -> [N,C,H,W] */
  IM_NN_NODE_SCALE,       /* x [N,C,H,W] times weight [C,1,1] */
  IM_NN_NODE_DROP_PATH,   /* identity in eval mode */
} im_nn_node_kind_t;

/** One node of a model's graph (nodes are in topological order; node 0 is
 * the input, the last node gives the logits). Tensors point into the model. */
typedef struct {
  im_nn_node_kind_t kind;
  int n_in;
  int in[2];                         /* input node indices */
  const im_tensor_t *weight, *bias;  /* see the kinds; NULL when absent */
  const im_tensor_t *running_mean, *running_var; /* BATCHNORM */
  im_conv2d_params_t conv;           /* CONV */
  im_pool2d_params_t pool;           /* MAXPOOL */
  im_act_t act;                      /* CONV: activation applied after it (folded models) */
  float eps;                         /* BATCHNORM, LAYERNORM */
  int cin, cout;                     /* channels / features in and out */
} im_nn_node_info_t;

/** The i-th node, i < im_nn_model_num_nodes(m). IM_ERR_ARG when out of range. */
im_status_t im_nn_node_get(const im_nn_model_t *m, size_t i, im_nn_node_info_t *out);

/* ---- optimizers --------------------------------------------------------------- */
typedef enum {
  IM_NN_OPTIM_SGD = 0,   /* torch.optim.SGD: momentum, dampening, Nesterov, L2 weight decay (grad += wd w) */
  IM_NN_OPTIM_ADAM = 1,  /* torch.optim.Adam: L2 weight decay added to the gradient, bias corrections */
  IM_NN_OPTIM_ADAMW = 2, /* torch.optim.AdamW: decoupled weight decay w *= 1 - lr wd */
} im_nn_optim_kind_t;

typedef struct {
  im_nn_optim_kind_t kind;
  double lr;           /* learning rate, >= 0 (im_nn_optim_set_lr changes it per step or epoch) */
  double momentum;     /* SGD, >= 0 */
  double dampening;    /* SGD, torch's default 0 */
  int nesterov;        /* SGD: needs momentum > 0 and dampening 0 */
  double beta1, beta2; /* Adam/AdamW, in [0, 1) */
  double eps;          /* Adam/AdamW, > 0 */
  int amsgrad;         /* Adam/AdamW */
  double weight_decay; /* >= 0 */
  int decay_filter;    /* 1: weight decay only on parameters whose decay flag is set (no decay on norms,
                          biases and layer_scale: two torch param groups); 0: on every parameter */
} im_nn_optim_opts_t;

typedef struct im_nn_optim im_nn_optim_t;

/** torch's defaults for kind: SGD lr 0.01 (torch has none) momentum 0;
 * Adam lr 1e-3 betas (0.9, 0.999) eps 1e-8 wd 0; AdamW the same with wd 1e-2. */
im_nn_optim_opts_t im_nn_optim_defaults(im_nn_optim_kind_t kind);
/** An optimizer over every parameter of m, with its state (momentum buffers,
 * moments) in one zeroed slab allocated now. m must outlive it. */
IM_NODISCARD im_status_t im_nn_optim_new(im_nn_model_t *m, const im_nn_optim_opts_t *o, im_nn_optim_t **out);
void im_nn_optim_free(im_nn_optim_t *opt);
/** One update of every parameter from its gradient, with torch's formulas
 * (per-element float32 arithmetic in torch's order). Allocates nothing. */
im_status_t im_nn_optim_step(im_nn_optim_t *opt);
void im_nn_optim_set_lr(im_nn_optim_t *opt, double lr);
double im_nn_optim_get_lr(const im_nn_optim_t *opt);
/** Steps taken (Adam's bias-correction count; SGD's momentum is unset before the first). */
int64_t im_nn_optim_steps(const im_nn_optim_t *opt);
/** Saves / restores the optimizer state (buffers named "<param>.momentum_buffer",
 * "<param>.exp_avg", "<param>.exp_avg_sq", "<param>.max_exp_avg_sq"; the step
 * count, kind and options in the metadata) for checkpoints. Load checks that
 * kind and parameters match (IM_ERR_FORMAT otherwise; then nothing changes). */
IM_NODISCARD im_status_t im_nn_optim_save(const im_nn_optim_t *opt, const char *path);
IM_NODISCARD im_status_t im_nn_optim_load(im_nn_optim_t *opt, const char *path);

/** torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm): the global L2
 * norm of all gradients (accumulated in double, in parameter order); when
 * max_norm > 0 every gradient is scaled by min(1, max_norm / (norm + 1e-6)).
 * max_norm <= 0 only measures. *total_norm (may be NULL) gets the norm before
 * clipping. */
im_status_t im_nn_clip_grad_norm(im_nn_model_t *m, double max_norm, double *total_norm);

/* ---- learning-rate schedules ---------------------------------------------------
 * A schedule is a pure function of a tick t = 0, 1, 2, ... that the caller
 * advances per step or per epoch as it likes (t counts completed ticks, like
 * torch's last_epoch). Warm-up, when warmup > 0, comes first and the main
 * schedule then starts at its own t = 0, as
 * SequentialLR([LinearLR(start_factor, total_iters=warmup), main], milestones=[warmup]):
 *   t <  warmup: base_lr * (warmup_start + (1 - warmup_start) * t / warmup)
 *   t >= warmup: main(t - warmup)
 * main(u):
 *   CONSTANT: base_lr
 *   COSINE:   eta_min + (base_lr - eta_min) (1 + cos(pi u / t_max)) / 2, CosineAnnealingLR's
 *             closed form (periodic past t_max as torch's); t_max counts the main schedule's ticks
 *   STEP:     base_lr * gamma^floor(u / step_size), StepLR */
typedef enum { IM_NN_SCHED_CONSTANT = 0, IM_NN_SCHED_COSINE = 1, IM_NN_SCHED_STEP = 2 } im_nn_sched_kind_t;

typedef struct {
  im_nn_sched_kind_t kind;
  double base_lr;
  int64_t t_max;       /* COSINE: >= 1 */
  double eta_min;      /* COSINE */
  int64_t step_size;   /* STEP: >= 1 */
  double gamma;        /* STEP */
  int64_t warmup;      /* ticks of linear warm-up, >= 0 */
  double warmup_start; /* warm-up start factor in [0, 1] (torch's LinearLR start_factor) */
} im_nn_sched_t;

/** IM_ERR_ARG with a message when s is inconsistent. */
im_status_t im_nn_sched_check(const im_nn_sched_t *s);
/** The learning rate at tick t (>= 0) by the formulas above. */
double im_nn_sched_lr(const im_nn_sched_t *s, int64_t t);

/* ---- the model bundle ----------------------------------------------------------
 * A directory with
 *   model.json         {"format": "imops-model", "format_version": 1, "arch", "options" {...},
 *                       "num_classes", "classes" [...], "in_channels", "img_size" [H, W],
 *                       "mean" [...], "std" [...], "metrics" {...}, "num_params", "weights":
 *                       "model.safetensors", "input": {"layout": "NCHW", "dtype": "float32"},
 *                       "imops_version", "created" (UTC ISO 8601), "model_uuid"}
 *   model.safetensors  the state_dict (im_nn_state_save)
 *   MLmodel            MLflow's YAML: artifact_path, flavors.imops (model.json, weights, arch, ...),
 *                      model_uuid, utc_time_created, signature (tensor specs [-1,C,H,W] -> [-1,K])
 * each written atomically (weights first, MLmodel last). */
#define IM_NN_BUNDLE_FORMAT "imops-model"
#define IM_NN_BUNDLE_VERSION 1

typedef struct {
  const char *const *classes;       /* num_classes names (NULL: "0", "1", ...) */
  size_t num_classes;               /* must equal the model's when classes is set */
  int img_h, img_w;                 /* the training input size, > 0 */
  int n_norm;                       /* values in mean/std: the model's in_channels (0: no normalization
                                       recorded: mean 0 std 1) */
  float mean[4], std[4];            /* per-channel normalization the model expects */
  const char *const *metric_names;  /* n_metrics final metrics (names unique) */
  const double *metric_values;
  size_t n_metrics;
  const char *artifact_path;        /* MLmodel artifact_path (NULL: "model") */
  const char *run_id;               /* MLmodel run_id (NULL: omitted) */
  /* Filled by im_nn_bundle_load only (NULL on save): */
  const char *imops_version, *created, *model_uuid;
  void *priv_;                      /* the storage of a loaded meta; free with im_nn_bundle_meta_free */
} im_nn_bundle_meta_t;

/** Writes the bundle of m to dir (created with its parents). meta gives the
 * data-dependent fields. */
IM_NODISCARD im_status_t im_nn_bundle_save(const im_nn_model_t *m, const char *dir, const im_nn_bundle_meta_t *meta);
/** Reads dir/model.json and dir/model.safetensors, builds the model and loads
 * every weight (MLmodel is not needed). Errors, each with a message naming
 * the file: IM_ERR_NOT_FOUND (a missing file), IM_ERR_FORMAT (not JSON, a
 * wrong format or format_version, bad options, missing/extra/mis-shaped
 * tensors, a corrupt safetensors file), IM_ERR_NOT_FOUND for an unknown arch.
 * backend (may be NULL) is remembered for im_nn_plan(m, NULL, ...). meta (may
 * be NULL) receives the metadata; free it with im_nn_bundle_meta_free. */
IM_NODISCARD im_status_t im_nn_bundle_load(const char *dir, im_backend_t *backend, im_nn_model_t **out,
                                           im_nn_bundle_meta_t *meta);
/** Frees what im_nn_bundle_load put in meta and clears it. NULL is a no-op. */
void im_nn_bundle_meta_free(im_nn_bundle_meta_t *meta);

#ifdef __cplusplus
}
#endif
#endif
