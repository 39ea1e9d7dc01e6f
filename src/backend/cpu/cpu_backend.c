/* The cpu backend's handle: its vtable (oneDNN and OpenMP kernels from this
 * folder; ops it leaves out, or declines for a shape, run the reference
 * kernels through the dispatcher), its context (oneDNN engine and stream,
 * thread count, workspace) and the plan cache that lets a training step
 * reuse primitives instead of creating them on every call. */
#include <stdio.h>
#include <string.h>

#include "backend/cpu/cpu.h"

/* ---- errors and descriptors ------------------------------------------------------------------ */

im_status_t im__cpu_dnnl_error(dnnl_status_t s, const char *what) {
  im_status_t st = s == dnnl_unimplemented    ? IM_ERR_UNSUPPORTED
                   : s == dnnl_out_of_memory ? IM_ERR_NOMEM
                                             : IM_ERR_INTERNAL;
  return im_error(st, "cpu backend: %s failed: oneDNN status %d", what, (int)s);
}

void im__cpu_md(dnnl_memory_desc_t *md, int ndims, const int64_t *dims, dnnl_format_tag_t tag) {
  dnnl_dims_t d = {0};
  for (int i = 0; i < ndims; i++) d[i] = dims[i];
  /* Plain tags with valid dims cannot fail; a failure leaves a zero md that primitives refuse. */
  if (dnnl_memory_desc_init_by_tag(md, ndims, d, dnnl_f32, tag) != dnnl_success) memset(md, 0, sizeof *md);
}

int im__cpu_any_empty(int n, const im_tensor_t *const *ts) {
  for (int i = 0; i < n; i++)
    if (ts[i] && im_tensor_numel(ts[i]) == 0) return 1;
  return 0;
}

/* ---- the plan cache ---------------------------------------------------------------------------- */

#define CPU_CACHE_MAX 4096 /* distinct plans before the cache starts over */

static void plan_free(cpu_plan_t *pl) {
  if (!pl) return;
  for (int i = 0; i < CPU_CONST_CACHE; i++) im_free(pl->cache[i].raw);
  for (int i = 0; i < pl->nsteps; i++) dnnl_primitive_destroy(pl->steps[i].prim);
  for (int i = 0; i < pl->nmems; i++) dnnl_memory_destroy(pl->mems[i].mem);
  im_free(pl);
}

static uint64_t key_hash(const cpu_key_t *k) { return im_hash64(k, sizeof *k, 0x696d6f7073637075ULL); }

static void cache_clear(cpu_ctx_t *c) {
  for (size_t i = 0; i < c->cap; i++) plan_free(c->plans[i]);
  im_free(c->plans);
  c->plans = NULL;
  c->cap = c->nplans = 0;
}

static cpu_plan_t **cache_slot(cpu_ctx_t *c, const cpu_key_t *k) {
  size_t i = (size_t)key_hash(k) & (c->cap - 1);
  while (c->plans[i] && memcmp(&c->plans[i]->key, k, sizeof *k)) i = (i + 1) & (c->cap - 1);
  return &c->plans[i];
}

static im_status_t cache_put(cpu_ctx_t *c, cpu_plan_t *pl) {
  if (c->nplans >= CPU_CACHE_MAX) cache_clear(c);
  if ((c->nplans + 1) * 2 > c->cap) {
    const size_t ncap = c->cap ? c->cap * 2 : 64;
    cpu_plan_t **np = im_calloc(ncap, sizeof *np), **old = c->plans;
    if (!np) return im_error(IM_ERR_NOMEM, "cpu backend: out of memory for the plan cache");
    const size_t ocap = c->cap;
    c->plans = np;
    c->cap = ncap;
    for (size_t i = 0; i < ocap; i++)
      if (old[i]) *cache_slot(c, &old[i]->key) = old[i];
    im_free(old);
  }
  *cache_slot(c, &pl->key) = pl;
  c->nplans++;
  return IM_OK;
}

im_status_t im__cpu_plan_get(cpu_ctx_t *ctx, const cpu_key_t *key, cpu_build_t *bld, cpu_plan_t **plan) {
  *plan = NULL;
  bld->ctx = ctx;
  bld->plan = NULL;
  bld->st = IM_OK;
  if (ctx->cap) {
    cpu_plan_t *hit = *cache_slot(ctx, key);
    if (hit) {
      *plan = hit;
      return IM_OK;
    }
  }
  bld->plan = im_calloc(1, sizeof *bld->plan);
  if (!bld->plan) return bld->st = im_error(IM_ERR_NOMEM, "cpu backend: out of memory for a plan");
  bld->plan->key = *key;
  bld->plan->const_slot = bld->plan->cur = -1;
  return IM_OK;
}

im_status_t im__cpu_plan_finish(cpu_build_t *bld, cpu_plan_t **plan) {
  *plan = NULL;
  cpu_plan_t *pl = bld->plan;
  bld->plan = NULL;
  if (!pl) return bld->st != IM_OK ? bld->st : im_error(IM_ERR_INTERNAL, "cpu backend: no plan to finish");
  if (bld->st == IM_ERR_UNSUPPORTED) {
    /* Remember the decline, without the half-built primitives. */
    cpu_key_t k = pl->key;
    plan_free(pl);
    pl = im_calloc(1, sizeof *pl);
    if (!pl) return IM_ERR_UNSUPPORTED;
    pl->key = k;
    pl->unsupported = 1;
  } else if (bld->st != IM_OK) {
    plan_free(pl);
    return bld->st;
  }
  im_status_t st = cache_put(bld->ctx, pl);
  if (st != IM_OK) {
    plan_free(pl);
    return st;
  }
  *plan = pl;
  return bld->st;
}

/* ---- building plans ------------------------------------------------------------------------------ */

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static dnnl_primitive_attr_t make_attr(cpu_build_t *bld, int sum, int relu) {
  dnnl_primitive_attr_t a = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_status_t s = dnnl_primitive_attr_create(&a);
  if (s == dnnl_success) s = dnnl_primitive_attr_set_scratchpad_mode(a, dnnl_scratchpad_mode_user);
  if (s == dnnl_success && (sum || relu)) {
    s = dnnl_post_ops_create(&po);
    if (s == dnnl_success && sum) s = dnnl_post_ops_append_sum(po, 1.0f);
    if (s == dnnl_success && relu) s = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f);
    if (s == dnnl_success) s = dnnl_primitive_attr_set_post_ops(a, po);
    if (po) dnnl_post_ops_destroy(po);
  }
  if (s != dnnl_success) {
    if (a) dnnl_primitive_attr_destroy(a);
    bld->st = im__cpu_dnnl_error(s, "primitive attributes");
    return NULL;
  }
  return a;
}

dnnl_primitive_desc_t im__cpu_pd_act(cpu_build_t *bld, const void *op_desc, const_dnnl_primitive_desc_t hint, int sum,
                                     int relu) {
  if (bld->st != IM_OK) return NULL;
  dnnl_primitive_attr_t a = make_attr(bld, sum, relu);
  if (!a) return NULL;
  dnnl_primitive_desc_t pd = NULL;
  im__cpu_set_threads(bld->ctx->nthreads);
  dnnl_status_t s = dnnl_primitive_desc_create(&pd, op_desc, a, bld->ctx->engine, hint);
  dnnl_primitive_attr_destroy(a);
  if (s != dnnl_success) {
    bld->st = im__cpu_dnnl_error(s, "primitive descriptor");
    return NULL;
  }
  return pd;
}

dnnl_primitive_desc_t im__cpu_pd(cpu_build_t *bld, const void *op_desc, const_dnnl_primitive_desc_t hint, int sum) {
  return im__cpu_pd_act(bld, op_desc, hint, sum, 0);
}

static int add_mem(cpu_build_t *bld, const dnnl_memory_desc_t *md, int where, int slot) {
  if (bld->st != IM_OK) return -1;
  cpu_plan_t *pl = bld->plan;
  if (pl->nmems >= CPU_PLAN_MAX_MEMS) {
    bld->st = im_error(IM_ERR_INTERNAL, "cpu backend: too many memories in a plan");
    return -1;
  }
  cpu_mem_t *m = &pl->mems[pl->nmems];
  dnnl_status_t s = dnnl_memory_create(&m->mem, md, bld->ctx->engine, DNNL_MEMORY_NONE);
  if (s != dnnl_success) {
    bld->st = im__cpu_dnnl_error(s, "memory object");
    return -1;
  }
  m->where = where;
  m->slot = slot;
  if (where == CPU_MEM_WS) {
    m->off = pl->ws_bytes;
    pl->ws_bytes += align64(dnnl_memory_desc_get_size(md));
  } else if (where == CPU_MEM_OWNED) {
    m->off = pl->owned_bytes;
    pl->owned_bytes += align64(dnnl_memory_desc_get_size(md));
  } else if (where == CPU_MEM_SCRATCH) {
    const size_t n = align64(dnnl_memory_desc_get_size(md));
    if (n > pl->scratch_bytes) pl->scratch_bytes = n;
  }
  return pl->nmems++;
}

int im__cpu_mem_user(cpu_build_t *bld, const dnnl_memory_desc_t *md, int slot) {
  return add_mem(bld, md, CPU_MEM_USER, slot);
}

int im__cpu_mem_ws(cpu_build_t *bld, const dnnl_memory_desc_t *md) { return add_mem(bld, md, CPU_MEM_WS, -1); }

static const dnnl_memory_desc_t *mem_md(cpu_build_t *bld, int mem) {
  const dnnl_memory_desc_t *md = NULL;
  if (bld->st != IM_OK || mem < 0) return NULL;
  dnnl_status_t s = dnnl_memory_get_memory_desc(bld->plan->mems[mem].mem, &md);
  if (s != dnnl_success) bld->st = im__cpu_dnnl_error(s, "memory descriptor query");
  return md;
}

/* Adds a reorder step from memory `from` to memory `to` (a sum into `to` when accumulate). */
static void add_reorder(cpu_build_t *bld, int from, int to, int accumulate) {
  const dnnl_memory_desc_t *a = mem_md(bld, from), *b = mem_md(bld, to);
  if (bld->st != IM_OK) return;
  dnnl_primitive_attr_t at = make_attr(bld, accumulate, 0);
  if (!at) return;
  dnnl_primitive_desc_t pd = NULL;
  im__cpu_set_threads(bld->ctx->nthreads);
  dnnl_status_t s = dnnl_reorder_primitive_desc_create(&pd, a, bld->ctx->engine, b, bld->ctx->engine, at);
  dnnl_primitive_attr_destroy(at);
  if (s != dnnl_success) {
    bld->st = im__cpu_dnnl_error(s, "reorder descriptor");
    return;
  }
  const int args[2] = {DNNL_ARG_FROM, DNNL_ARG_TO}, mems[2] = {from, to};
  im__cpu_step(bld, pd, 2, args, mems, 0);
  if (bld->st == IM_OK) {
    cpu_step_t *stp = &bld->plan->steps[bld->plan->nsteps - 1];
    stp->reorder = 1;
    /* Weights and biases: waking the second thread costs more than it saves, and on a
     * busy machine every parallel region can wait for a descheduled worker. */
    stp->serial = dnnl_memory_desc_get_size(a) < CPU_SERIAL_BYTES;
  }
}

int im__cpu_mem_in(cpu_build_t *bld, const dnnl_memory_desc_t *pub, int slot, const dnnl_memory_desc_t *md) {
  if (bld->st != IM_OK) return -1;
  if (dnnl_memory_desc_equal(pub, md)) return im__cpu_mem_user(bld, pub, slot);
  const int u = im__cpu_mem_user(bld, pub, slot), w = im__cpu_mem_ws(bld, md);
  add_reorder(bld, u, w, 0);
  return w;
}

int im__cpu_mem_in_const(cpu_build_t *bld, const dnnl_memory_desc_t *pub, int slot, const dnnl_memory_desc_t *md) {
  if (bld->st != IM_OK) return -1;
  if (dnnl_memory_desc_equal(pub, md)) return im__cpu_mem_user(bld, pub, slot);
  if (bld->plan->const_slot >= 0) return im__cpu_mem_in(bld, pub, slot, md); /* one per plan */
  const int u = im__cpu_mem_user(bld, pub, slot), w = add_mem(bld, md, CPU_MEM_OWNED, -1);
  add_reorder(bld, u, w, 0);
  if (bld->st == IM_OK) {
    bld->plan->steps[bld->plan->nsteps - 1].cached = 1;
    bld->plan->const_slot = slot;
  }
  return w;
}

int im__cpu_mem_out(cpu_build_t *bld, const dnnl_memory_desc_t *pub, int slot, const dnnl_memory_desc_t *md,
                    int accumulate) {
  if (bld->st != IM_OK) return -1;
  if (!accumulate && dnnl_memory_desc_equal(pub, md)) return im__cpu_mem_user(bld, pub, slot);
  return im__cpu_mem_ws(bld, md);
}

void im__cpu_mem_out_done(cpu_build_t *bld, int mem, const dnnl_memory_desc_t *pub, int slot, int accumulate) {
  if (bld->st != IM_OK || bld->plan->mems[mem].where == CPU_MEM_USER) return;
  const int u = im__cpu_mem_user(bld, pub, slot);
  add_reorder(bld, mem, u, accumulate);
}

void im__cpu_step(cpu_build_t *bld, dnnl_primitive_desc_t pd, int nargs, const int *args, const int *mems, int main) {
  if (bld->st != IM_OK || !pd) {
    if (pd) dnnl_primitive_desc_destroy(pd);
    return;
  }
  cpu_plan_t *pl = bld->plan;
  if (pl->nsteps >= CPU_PLAN_MAX_STEPS || nargs >= CPU_STEP_MAX_ARGS) {
    dnnl_primitive_desc_destroy(pd);
    bld->st = im_error(IM_ERR_INTERNAL, "cpu backend: plan too long");
    return;
  }
  cpu_step_t *stp = &pl->steps[pl->nsteps];
  memset(stp, 0, sizeof *stp);
  for (int i = 0; i < nargs; i++) {
    if (mems[i] < 0) {
      dnnl_primitive_desc_destroy(pd);
      bld->st = im_error(IM_ERR_INTERNAL, "cpu backend: missing memory for argument %d", args[i]);
      return;
    }
    stp->arg[i] = args[i];
    stp->mem[i] = mems[i];
  }
  stp->nargs = nargs;
  const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  if (smd && dnnl_memory_desc_get_size(smd) > 0) {
    const int sm = add_mem(bld, smd, CPU_MEM_SCRATCH, -1);
    if (sm >= 0) {
      stp->arg[stp->nargs] = DNNL_ARG_SCRATCHPAD;
      stp->mem[stp->nargs++] = sm;
    }
  }
  if (main) {
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
      snprintf(pl->impl, sizeof pl->impl, "%s", impl);
  }
  dnnl_status_t s = bld->st == IM_OK ? dnnl_primitive_create(&stp->prim, pd) : dnnl_success;
  dnnl_primitive_desc_destroy(pd);
  if (bld->st != IM_OK) return;
  if (s != dnnl_success) {
    bld->st = im__cpu_dnnl_error(s, "primitive");
    return;
  }
  pl->nsteps++;
}

/* ---- running plans ------------------------------------------------------------------------------- */

static im_status_t ws_reserve(cpu_ctx_t *c, size_t n) {
  if (n <= c->ws_cap) return IM_OK;
  /* Grow by at least half again, so that a few new shapes do not each reallocate. */
  size_t want = n + n / 2;
  if (want < c->ws_cap + c->ws_cap / 2) want = c->ws_cap + c->ws_cap / 2;
  im_free(c->ws_raw);
  c->ws = c->ws_raw = NULL;
  c->ws_cap = 0;
  c->ws_raw = im_malloc(want + 64);
  if (!c->ws_raw) {
    c->ws_raw = im_malloc(n + 64);
    want = n;
  }
  if (!c->ws_raw) return im_error(IM_ERR_NOMEM, "cpu backend: out of memory for a %zu-byte workspace", n);
  c->ws = (void *)(((uintptr_t)c->ws_raw + 63) & ~(uintptr_t)63);
  c->ws_cap = want;
  return IM_OK;
}

im_status_t im__cpu_plan_bind(cpu_ctx_t *ctx, cpu_plan_t *pl, void *const *user) {
  /* Workspace: [intermediates][the const slot's copy for unstamped calls][scratchpad]. An own-kernel
   * plan always keeps that copy in a cache entry. */
  im_status_t st = ws_reserve(ctx, pl->ws_bytes + (pl->own ? 0 : pl->owned_bytes) + pl->scratch_bytes);
  if (st != IM_OK) return st;
  char *ws = ctx->ws;
  void *owned = pl->cur >= 0 ? (void *)(((uintptr_t)pl->cache[pl->cur].raw + 63) & ~(uintptr_t)63) : ws + pl->ws_bytes;
  for (int i = 0; i < pl->nmems; i++) {
    const cpu_mem_t *m = &pl->mems[i];
    void *p = m->where == CPU_MEM_USER    ? user[m->slot]
              : m->where == CPU_MEM_WS    ? ws + m->off
              : m->where == CPU_MEM_OWNED ? (char *)owned + m->off
                                          : ws + pl->ws_bytes + pl->owned_bytes;
    dnnl_status_t s = dnnl_memory_set_data_handle(m->mem, p);
    if (s != dnnl_success) return im__cpu_dnnl_error(s, "binding data");
  }
  return IM_OK;
}

void *im__cpu_ws_ptr(cpu_ctx_t *ctx, const cpu_plan_t *pl, int mem) { return (char *)ctx->ws + pl->mems[mem].off; }

/* Runs the steps; skip_cached: leave out the steps that prepare the const slot (still prepared). */
static im_status_t plan_exec(cpu_ctx_t *ctx, cpu_plan_t *pl, int skip_cached) {
  for (int i = 0; i < pl->nsteps; i++) {
    const cpu_step_t *stp = &pl->steps[i];
    if (skip_cached && stp->cached) continue;
    im__cpu_set_threads(stp->serial ? 1 : ctx->nthreads);
    dnnl_exec_arg_t a[CPU_STEP_MAX_ARGS];
    for (int j = 0; j < stp->nargs; j++) a[j] = (dnnl_exec_arg_t){stp->arg[j], pl->mems[stp->mem[j]].mem};
    const double t0 = ctx->profile ? im_time_now() : 0.0;
    dnnl_status_t s = dnnl_primitive_execute(stp->prim, ctx->stream, stp->nargs, a);
    if (s == dnnl_success && ctx->profile) s = dnnl_stream_wait(ctx->stream);
    if (s != dnnl_success) {
      im__cpu_set_threads(ctx->nthreads);
      return im__cpu_dnnl_error(s, "primitive execution");
    }
    if (ctx->profile) {
      const double dt = im_time_now() - t0;
      ctx->total_s += dt;
      if (stp->reorder) ctx->reorder_s += dt;
    }
  }
  im__cpu_set_threads(ctx->nthreads);
  dnnl_status_t s = dnnl_stream_wait(ctx->stream);
  return s == dnnl_success ? IM_OK : im__cpu_dnnl_error(s, "stream wait");
}

im_status_t im__cpu_plan_exec(cpu_ctx_t *ctx, cpu_plan_t *pl) {
  if (pl->cur >= 0) pl->cache[pl->cur].stamp = 0; /* what it prepares there is not known to hold */
  return plan_exec(ctx, pl, 0);
}

im_status_t im__cpu_plan_run(cpu_ctx_t *ctx, cpu_plan_t *pl, void *const *user) {
  im_status_t st = im__cpu_plan_bind(ctx, pl, user);
  return st != IM_OK ? st : im__cpu_plan_exec(ctx, pl);
}

im_status_t im__cpu_plan_run_stamped(cpu_ctx_t *ctx, cpu_plan_t *pl, void *const *user, uint64_t stamp) {
  if (pl->const_slot < 0 || !stamp) { /* prepared in the workspace, as any input */
    if (pl->own) return im_error(IM_ERR_INTERNAL, "cpu backend: an own-kernel plan without stamped weights");
    pl->cur = -1;
    return im__cpu_plan_run(ctx, pl, user);
  }
  const void *src = user[pl->const_slot];
  int e = -1, hold = 0;
  for (int i = 0; i < CPU_CONST_CACHE && e < 0; i++)
    if (pl->cache[i].src == src && pl->cache[i].stamp) e = i, hold = pl->cache[i].stamp == stamp;
  if (e < 0) { /* a free entry, else the least recently used */
    e = 0;
    for (int i = 0; i < CPU_CONST_CACHE; i++) {
      if (!pl->cache[i].stamp) {
        e = i;
        break;
      }
      if (pl->cache[i].used < pl->cache[e].used) e = i;
    }
  }
  if (!pl->cache[e].raw && !(pl->cache[e].raw = im_malloc(pl->owned_bytes + 64)))
    return im_error(IM_ERR_NOMEM, "cpu backend: out of memory for %zu bytes of prepared weights", pl->owned_bytes);
  pl->cur = e;
  im_status_t st = im__cpu_plan_bind(ctx, pl, user);
  if (st != IM_OK) return st;
  pl->cache[e].stamp = 0;
  if (pl->own) {
    const double t0 = ctx->profile ? im_time_now() : 0.0;
    st = pl->own(pl, user, (void *)(((uintptr_t)pl->cache[e].raw + 63) & ~(uintptr_t)63), ctx->ws, ctx->nthreads,
                 hold);
    if (ctx->profile) ctx->total_s += im_time_now() - t0;
  } else {
    st = plan_exec(ctx, pl, hold);
  }
  if (st == IM_OK) {
    pl->cache[e].src = src;
    pl->cache[e].stamp = stamp;
    pl->cache[e].used = ++pl->clock;
  }
  return st;
}

/* ---- the handle ------------------------------------------------------------------------------------- */

static void cpu_destroy(im_backend_t *b) {
  cpu_ctx_t *c = b->ctx;
  if (!c) return;
  cache_clear(c);
  if (c->stream) dnnl_stream_destroy(c->stream);
  if (c->engine) dnnl_engine_destroy(c->engine);
  im_free(c->ws_raw);
  im_free(c);
  b->ctx = NULL;
}

void im__cpu_profile(im_backend_t *b, int on, double *reorder_s, double *total_s) {
  cpu_ctx_t *c = b->ctx;
  if (reorder_s) *reorder_s = c->reorder_s;
  if (total_s) *total_s = c->total_s;
  if (on >= 0) {
    c->profile = on;
    c->reorder_s = c->total_s = 0.0;
  }
}

size_t im__cpu_workspace_bytes(const im_backend_t *b) { return ((const cpu_ctx_t *)b->ctx)->ws_cap; }

int im__cpu_own_plans(const im_backend_t *b) {
  const cpu_ctx_t *c = b->ctx;
  int n = 0;
  for (size_t i = 0; i < c->cap; i++) n += c->plans[i] && c->plans[i]->own;
  return n;
}

static int cpu_num_threads(const im_backend_t *b) { return ((const cpu_ctx_t *)b->ctx)->nthreads; }
static im_status_t cpu_new_like(const im_backend_t *b, int nthreads, im_backend_t **out);

static const im_backend_i cpu_iface = {
    .version = IM_BACKEND_IFACE_VERSION,
    .name = "cpu",
    .flags = IM_BACKEND_F_HOST | IM_BACKEND_F_BLOCKED,
    .destroy = cpu_destroy,
    .conv2d_forward = im__cpu_conv2d_forward,
    .conv2d_backward_data = im__cpu_conv2d_backward_data,
    .conv2d_backward_weight = im__cpu_conv2d_backward_weight,
    .batchnorm_forward_train = im__cpu_batchnorm_forward_train,
    .batchnorm_forward_eval = im__cpu_batchnorm_forward_eval,
    .batchnorm_backward = im__cpu_batchnorm_backward,
    .layernorm_forward = im__cpu_layernorm_forward,
    .layernorm_backward = im__cpu_layernorm_backward,
    .relu_forward = im__cpu_relu_forward,
    .relu_backward = im__cpu_relu_backward,
    .gelu_forward = im__cpu_gelu_forward,
    .gelu_backward = im__cpu_gelu_backward,
    .maxpool2d_forward = im__cpu_maxpool2d_forward,
    .maxpool2d_backward = im__cpu_maxpool2d_backward,
    .avgpool2d_forward = im__cpu_avgpool2d_forward,
    .avgpool2d_backward = im__cpu_avgpool2d_backward,
    .global_avgpool_forward = im__cpu_global_avgpool_forward,
    .global_avgpool_backward = im__cpu_global_avgpool_backward,
    .linear_forward = im__cpu_linear_forward,
    .linear_backward_data = im__cpu_linear_backward_data,
    .linear_backward_weight = im__cpu_linear_backward_weight,
    .dropout_forward = im__cpu_dropout_forward,
    .dropout_backward = im__cpu_dropout_backward,
    .add = im__cpu_add,
    .add_backward = im__cpu_add_backward,
    /* softmax_xent_*: [N,K] logits are tiny; the reference kernels serve. */
    .nchw_to_nhwc = im__cpu_nchw_to_nhwc,
    .nhwc_to_nchw = im__cpu_nhwc_to_nchw,
    .fill = im__cpu_fill,
    .conv2d_forward_fused = im__cpu_conv2d_forward_fused,
    .batchnorm_forward_train_fused = im__cpu_batchnorm_forward_train_fused,
    .batchnorm_backward_fused = im__cpu_batchnorm_backward_fused,
    .conv2d_forward_fused_add = im__cpu_conv2d_forward_fused_add,
    .num_threads = cpu_num_threads,
    .new_like = cpu_new_like,
};

static im_status_t cpu_new(int nthreads, im_backend_t **out) {
  *out = NULL;
  cpu_ctx_t *c = im_calloc(1, sizeof *c);
  if (!c) return im_error(IM_ERR_NOMEM, "cpu backend: out of memory");
  c->nthreads = nthreads < 1 ? 1 : nthreads;
  dnnl_status_t s = dnnl_engine_create(&c->engine, dnnl_cpu, 0);
  if (s == dnnl_success) s = dnnl_stream_create(&c->stream, c->engine, dnnl_stream_default_flags);
  im_status_t st = s == dnnl_success ? IM_OK : im__cpu_dnnl_error(s, "engine and stream creation");
  if (st == IM_OK) st = im__backend_new(&cpu_iface, c, out);
  if (st != IM_OK) {
    im_backend_t tmp = {&cpu_iface, c};
    cpu_destroy(&tmp);
    *out = NULL;
  }
  return st;
}

im_status_t im_backend_cpu_new(im_backend_t **out) {
  if (!out) return im_error(IM_ERR_ARG, "backend_cpu_new: no output pointer");
  return cpu_new(im_num_threads(), out);
}

static im_status_t cpu_new_like(const im_backend_t *b, int nthreads, im_backend_t **out) {
  (void)b;
  return cpu_new(nthreads, out);
}
