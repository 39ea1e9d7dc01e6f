/* The fast CPU backend (internal to src/backend/cpu): oneDNN primitives for
 * convolution, layer norm, average pooling, GELU and layout permutes,
 * oneDNN's sgemm for linear layers, and OpenMP loops (the runtime oneDNN
 * itself uses, so the same two worker threads serve both) where oneDNN does
 * not fit our semantics or was slower: batch norm, max pooling with torch's
 * indices, ReLU, dropout, add, fill, global average pooling.
 *
 * Primitive creation is expensive, so every op builds a "plan" once per
 * (op, shapes, parameters) and keeps it in a small hash map on the backend
 * context: the primitives, their memory objects, and where each memory lives
 * (a caller's tensor, or an offset into one shared workspace that holds
 * blocked copies, oneDNN's scratchpads and small temporaries). A training
 * step then only rebinds data pointers and executes. */
#ifndef IMOPS_BACKEND_CPU_H
#define IMOPS_BACKEND_CPU_H

#include <oneapi/dnnl/dnnl.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend_impl.h"

/* OpenMP loops that compile to plain loops without -fopenmp. They read two
 * locals: nt_ (threads) and par_ (nonzero when the loop is big enough to split). */
#ifdef _OPENMP
#include <omp.h>
#define CPU_OMP_FOR _Pragma("omp parallel for num_threads(nt_) if(par_) schedule(static)")
#else
#define CPU_OMP_FOR
#endif

/* Below this many elements a loop runs on one thread (waking the other costs more). */
#define CPU_PAR_MIN 32768
/* Reorders of fewer bytes than this (weights, biases) run on the calling thread alone. */
#define CPU_SERIAL_BYTES (1u << 20)

/* ---- plans --------------------------------------------------------------------------------- */
#define CPU_KEY_LEN 15
#define CPU_PLAN_MAX_MEMS 16
#define CPU_PLAN_MAX_STEPS 8
#define CPU_STEP_MAX_ARGS 10
#define CPU_CONST_CACHE 16

/* What a plan is for: the op (im_op_t, or a private number above IM_OP_COUNT_) and its
 * shapes and parameters, zero-padded. */
typedef struct {
  int32_t op;
  int32_t variant;
  int64_t v[CPU_KEY_LEN];
} cpu_key_t;

/* Where a memory object's data lives at run time. */
enum { CPU_MEM_USER = 0, CPU_MEM_WS = 1, CPU_MEM_SCRATCH = 2, CPU_MEM_OWNED = 3 /* the plan's own buffer */ };

typedef struct {
  dnnl_memory_t mem;
  int where;  /* CPU_MEM_* */
  int slot;   /* CPU_MEM_USER: index into the caller's pointer array */
  size_t off; /* CPU_MEM_WS, CPU_MEM_OWNED: byte offset in the workspace or the plan's buffer */
} cpu_mem_t;

typedef struct {
  dnnl_primitive_t prim;
  int nargs;
  int arg[CPU_STEP_MAX_ARGS]; /* DNNL_ARG_* */
  int mem[CPU_STEP_MAX_ARGS]; /* index into cpu_plan_t.mems */
  int reorder;                /* a layout change (timed separately when profiling) */
  int serial;                 /* small enough to run on the calling thread alone */
  int cached;                 /* prepares a stamped input (im__cpu_mem_in_const): skipped while it holds */
} cpu_step_t;

typedef struct cpu_plan {
  cpu_key_t key;
  int unsupported; /* oneDNN has no implementation: the op declines (reference fallback) */
  int nmems, nsteps;
  cpu_mem_t mems[CPU_PLAN_MAX_MEMS];
  cpu_step_t steps[CPU_PLAN_MAX_STEPS];
  size_t ws_bytes;      /* intermediates, from offset 0 */
  size_t scratch_bytes; /* the largest scratchpad, after the intermediates */
  char impl[48];        /* the main primitive's implementation ("jit:avx512_core", ...) */
  size_t owned_bytes;   /* the CPU_MEM_OWNED memory: one prepared copy of the const slot (in the
                         * workspace for unstamped calls, in a cache entry for stamped ones) */
  int const_slot;       /* the user slot the cached steps prepare, or -1 */
  /* Prepared copies by (data pointer, stamp): layers of the same shape share a plan, each with its
   * own weights; the least recently used entry goes when all are taken. */
  struct {
    const void *src;
    uint64_t stamp; /* 0: the entry holds nothing valid */
    void *raw;      /* allocation; the copy starts at the next 64-byte boundary */
    uint64_t used;
  } cache[CPU_CONST_CACHE];
  uint64_t clock;
  int cur; /* the cache entry the CPU_MEM_OWNED memory is bound to; -1: the workspace */
  /* A plan of imops' own kernel instead of oneDNN steps (cpu_wino.c): run by im__cpu_plan_run_stamped
   * only, with the caller's pointers, the const slot's prepared copy (owned; prepared: it holds, else
   * the kernel prepares it), the workspace (ws_bytes reserved) and the context's thread count. */
  im_status_t (*own)(const struct cpu_plan *pl, void *const *user, void *owned, void *ws, int nthreads,
                     int prepared);
} cpu_plan_t;

/* The backend context. */
typedef struct {
  dnnl_engine_t engine;
  dnnl_stream_t stream;
  int nthreads;
  cpu_plan_t **plans; /* open addressing, cap a power of two */
  size_t nplans, cap;
  void *ws;     /* the shared workspace, 64-byte aligned, ws_cap bytes */
  void *ws_raw; /* its allocation */
  size_t ws_cap;
  int profile;         /* time the steps (im__cpu_profile) */
  double reorder_s;    /* seconds in layout reorders, when profiling */
  double total_s;      /* seconds in plan execution, when profiling */
} cpu_ctx_t;

/* Builds a plan. Every call is a no-op once st is not IM_OK, so a builder can be
 * written straight through and checked once at the end (cpu_plan_finish). */
typedef struct {
  cpu_ctx_t *ctx;
  cpu_plan_t *plan;
  im_status_t st;
} cpu_build_t;

/** Looks key up; on a hit *plan is the cached plan (check ->unsupported) and the
 * function returns IM_OK with bld->plan NULL. On a miss it starts bld for a new
 * plan and sets *plan NULL. */
im_status_t im__cpu_plan_get(cpu_ctx_t *ctx, const cpu_key_t *key, cpu_build_t *bld, cpu_plan_t **plan);
/** Creates a primitive descriptor for op_desc (scratchpad in user mode, plus
 * post-op sum when sum is nonzero). dnnl_unimplemented makes the build IM_ERR_UNSUPPORTED. */
dnnl_primitive_desc_t im__cpu_pd(cpu_build_t *bld, const void *op_desc, const_dnnl_primitive_desc_t hint, int sum);
/** im__cpu_pd with an eltwise ReLU post-op (after the sum, when both are asked for) when relu is nonzero. */
dnnl_primitive_desc_t im__cpu_pd_act(cpu_build_t *bld, const void *op_desc, const_dnnl_primitive_desc_t hint, int sum,
                                     int relu);
/** A memory object bound to the caller's pointer slot. Returns its index (-1 after an error). */
int im__cpu_mem_user(cpu_build_t *bld, const dnnl_memory_desc_t *md, int slot);
/** A memory object in the workspace (its own region). */
int im__cpu_mem_ws(cpu_build_t *bld, const dnnl_memory_desc_t *md);
/** The memory to give a primitive that wants md for input slot whose public layout is pub:
 * the caller's tensor when the layouts agree, else a workspace copy filled by a reorder step
 * (added now, so call this before adding the step that reads it). */
int im__cpu_mem_in(cpu_build_t *bld, const dnnl_memory_desc_t *pub, int slot, const dnnl_memory_desc_t *md);
/** im__cpu_mem_in for an input that may carry a stamp (tensor.h: weights of an inference model):
 * with a stamp the copy lives in one of the plan's cache entries and the reorder step is skipped
 * while the caller's pointer and stamp (im__cpu_plan_run_stamped) are those it last prepared;
 * without one it lives in the workspace and is redone at every call. One per plan. */
int im__cpu_mem_in_const(cpu_build_t *bld, const dnnl_memory_desc_t *pub, int slot, const dnnl_memory_desc_t *md);
/** The memory a primitive should write for output slot with public layout pub: the caller's
 * tensor when the layouts agree and !accumulate, else a workspace buffer; then call
 * im__cpu_mem_out_done after the producing step to add the reorder (a sum when accumulate). */
int im__cpu_mem_out(cpu_build_t *bld, const dnnl_memory_desc_t *pub, int slot, const dnnl_memory_desc_t *md,
                    int accumulate);
void im__cpu_mem_out_done(cpu_build_t *bld, int mem, const dnnl_memory_desc_t *pub, int slot, int accumulate);
/** Adds a step running pd's primitive (pd is consumed) with args (DNNL_ARG_*) bound to mems;
 * a scratchpad argument is added when pd needs one. main: record pd's implementation name. */
void im__cpu_step(cpu_build_t *bld, dnnl_primitive_desc_t pd, int nargs, const int *args, const int *mems, int main);
/** Ends a build: on success (or IM_ERR_UNSUPPORTED, cached as a decline) stores the plan
 * in the cache and sets *plan; on other errors frees it. Returns bld->st. */
im_status_t im__cpu_plan_finish(cpu_build_t *bld, cpu_plan_t **plan);

/** Points the plan's memories at the caller's pointers (slots) and the workspace, growing
 * the workspace when needed. Call before im__cpu_ws_ptr and im__cpu_plan_exec. */
im_status_t im__cpu_plan_bind(cpu_ctx_t *ctx, cpu_plan_t *plan, void *const *user);
/** The workspace address of a CPU_MEM_WS memory after bind. */
void *im__cpu_ws_ptr(cpu_ctx_t *ctx, const cpu_plan_t *plan, int mem);
/** Runs the plan's steps in order and waits. */
im_status_t im__cpu_plan_exec(cpu_ctx_t *ctx, cpu_plan_t *plan);
/** bind + exec. */
im_status_t im__cpu_plan_run(cpu_ctx_t *ctx, cpu_plan_t *plan, void *const *user);
/** im__cpu_plan_run where the const slot's tensor has stamp (0: none; the cached steps then run). */
im_status_t im__cpu_plan_run_stamped(cpu_ctx_t *ctx, cpu_plan_t *plan, void *const *user, uint64_t stamp);

/** Maps a oneDNN status to ours (unimplemented -> IM_ERR_UNSUPPORTED, out_of_memory -> IM_ERR_NOMEM,
 * else IM_ERR_INTERNAL) and sets the error text. */
im_status_t im__cpu_dnnl_error(dnnl_status_t s, const char *what);
/** A plain (row-major) f32 memory descriptor of ndims dims. */
void im__cpu_md(dnnl_memory_desc_t *md, int ndims, const int64_t *dims, dnnl_format_tag_t tag);

/** Profiling for benchmarks: *reorder_s and *total_s (either may be NULL) get the seconds spent
 * in layout reorders and in all plan steps since profiling was last switched; then on >= 0
 * switches step timing on (1) or off (0) and clears the counters. b must be a cpu backend. */
void im__cpu_profile(im_backend_t *b, int on, double *reorder_s, double *total_s);
/** The workspace's current size in bytes (the largest any op so far needed, plus slack). */
size_t im__cpu_workspace_bytes(const im_backend_t *b);
/** How many cached plans run imops' own kernels (cpu_plan_t.own): for tests. */
int im__cpu_own_plans(const im_backend_t *b);

/* oneDNN's OpenMP runtime takes its thread count from omp_get_max_threads() of the calling
 * thread, both when a primitive is created (the jit kernels plan their split then) and when it
 * runs: set before either. */
static inline void im__cpu_set_threads(int nt) {
#ifdef _OPENMP
  if (omp_get_max_threads() != nt) omp_set_num_threads(nt);
#else
  (void)nt;
#endif
}

/* Convenience: the context of a cpu backend handle. */
static inline cpu_ctx_t *im__cpu_ctx(im_backend_t *b) { return (cpu_ctx_t *)b->ctx; }
/* 1 if any of the tensors (NULL skipped) has no elements: such calls go to the reference. */
int im__cpu_any_empty(int n, const im_tensor_t *const *ts);

/* ---- kernels (vtable members, see backend_impl.h for the contracts) ---------------------------- */
/* cpu_conv.c */
im_status_t im__cpu_conv2d_forward(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *w, im__ct *bias,
                                   im__t *y);
im_status_t im__cpu_conv2d_backward_data(im_backend_t *b, const im_conv2d_params_t *p, im__ct *dy, im__ct *w,
                                         im__t *dx);
im_status_t im__cpu_conv2d_forward_fused(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *w,
                                         im__ct *bias, im_act_t act, im__t *y);
im_status_t im__cpu_conv2d_backward_weight(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *dy,
                                           im__t *dw, im__t *dbias);
im_status_t im__cpu_conv2d_forward_fused_add(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *w,
                                             im__ct *bias, im__ct *residual, im_act_t act, im__t *y);
/* cpu_wino.c: imops' Winograd kernels for inference. fits: 4 (F(4x4,3x3)) or 2 (F(2x2,3x3), cpu_wino2.c)
 * when one serves the convolution (stamped weights, shapes and layouts, see there), else 0; plan:
 * makes bld's new plan one of its own (key variant bit 7; bit 8 for F(2x2)). */
int im__cpu_wino_fits(const im_conv2d_params_t *p, const im_tensor_t *x, const im_tensor_t *w, const im_tensor_t *y);
void im__cpu_wino_plan(cpu_build_t *bld, int nthreads);
/* cpu_bnorm.c */
im_status_t im__cpu_batchnorm_forward_train(im_backend_t *b, const im_batchnorm_params_t *p, im__ct *x, im__ct *gamma,
                                            im__ct *beta, im__t *running_mean, im__t *running_var, im__t *y,
                                            im__t *save_mean, im__t *save_invstd);
im_status_t im__cpu_batchnorm_forward_train_fused(im_backend_t *b, const im_batchnorm_params_t *p, im__ct *x,
                                                  im__ct *gamma, im__ct *beta, im__t *running_mean,
                                                  im__t *running_var, im_act_t act, im__t *y, im__t *save_mean,
                                                  im__t *save_invstd);
im_status_t im__cpu_batchnorm_forward_eval(im_backend_t *b, const im_batchnorm_params_t *p, im__ct *x, im__ct *gamma,
                                           im__ct *beta, im__ct *running_mean, im__ct *running_var, im__t *y);
im_status_t im__cpu_batchnorm_backward(im_backend_t *b, im__ct *x, im__ct *dy, im__ct *gamma, im__ct *save_mean,
                                       im__ct *save_invstd, im__t *dx, im__t *dgamma, im__t *dbeta);
im_status_t im__cpu_batchnorm_backward_fused(im_backend_t *b, im__ct *x, im__ct *y, im_act_t act, im__ct *dy,
                                             im__ct *gamma, im__ct *save_mean, im__ct *save_invstd, im__t *dx,
                                             im__t *dgamma, im__t *dbeta);
/* cpu_norm.c */
im_status_t im__cpu_layernorm_forward(im_backend_t *b, const im_layernorm_params_t *p, im__ct *x, im__ct *gamma,
                                      im__ct *beta, im__t *y, im__t *save_mean, im__t *save_invstd);
im_status_t im__cpu_layernorm_backward(im_backend_t *b, im__ct *x, im__ct *dy, im__ct *gamma, im__ct *save_mean,
                                       im__ct *save_invstd, im__t *dx, im__t *dgamma, im__t *dbeta);
/* cpu_eltwise.c */
im_status_t im__cpu_relu_forward(im_backend_t *b, im__ct *x, im__t *y);
im_status_t im__cpu_relu_backward(im_backend_t *b, im__ct *y, im__ct *dy, im__t *dx);
im_status_t im__cpu_gelu_forward(im_backend_t *b, im__ct *x, im__t *y);
im_status_t im__cpu_gelu_backward(im_backend_t *b, im__ct *x, im__ct *dy, im__t *dx);
im_status_t im__cpu_dropout_forward(im_backend_t *b, float p, uint64_t seed, im__ct *x, im__t *y, im__t *mask);
im_status_t im__cpu_dropout_backward(im_backend_t *b, float p, im__ct *mask, im__ct *dy, im__t *dx);
im_status_t im__cpu_add(im_backend_t *b, im__ct *x1, im__ct *x2, im__t *y);
im_status_t im__cpu_add_backward(im_backend_t *b, im__ct *dy, im__t *dx1, im__t *dx2);
im_status_t im__cpu_fill(im_backend_t *b, im__t *t, float v);
im_status_t im__cpu_nchw_to_nhwc(im_backend_t *b, im__ct *x, im__t *y);
im_status_t im__cpu_nhwc_to_nchw(im_backend_t *b, im__ct *x, im__t *y);
/* cpu_pool.c */
im_status_t im__cpu_maxpool2d_forward(im_backend_t *b, const im_pool2d_params_t *p, im__ct *x, im__t *y,
                                      im__t *indices);
im_status_t im__cpu_maxpool2d_backward(im_backend_t *b, const im_pool2d_params_t *p, im__ct *dy, im__ct *indices,
                                       im__t *dx);
im_status_t im__cpu_avgpool2d_forward(im_backend_t *b, const im_pool2d_params_t *p, im__ct *x, im__t *y);
im_status_t im__cpu_avgpool2d_backward(im_backend_t *b, const im_pool2d_params_t *p, im__ct *dy, im__t *dx);
im_status_t im__cpu_global_avgpool_forward(im_backend_t *b, im__ct *x, im__t *y);
im_status_t im__cpu_global_avgpool_backward(im_backend_t *b, im__ct *dy, im__t *dx);
/* cpu_linear.c */
im_status_t im__cpu_linear_forward(im_backend_t *b, im__ct *x, im__ct *w, im__ct *bias, im__t *y);
im_status_t im__cpu_linear_backward_data(im_backend_t *b, im__ct *dy, im__ct *w, im__t *dx);
im_status_t im__cpu_linear_backward_weight(im_backend_t *b, im__ct *x, im__ct *dy, im__t *dw, im__t *dbias);

#endif
