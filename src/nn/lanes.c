/* Batch lanes: a folded model's inference batch run as independent streams of
 * single images, one per thread, each on its own single-threaded backend and
 * its own plan for one image (the weights are the model's, shared, read-only).
 *
 * Why: a batch plan runs each layer over the whole batch with all threads,
 * so every activation makes a round trip through memory between layers (64
 * images of surfacenet@112: 26 MB out of the first convolution), and every
 * layer ends in a barrier. A lane keeps one image's activations in its core's
 * L2 cache from the first layer to the last and never waits for another.
 * Measured on this machine (2 cores, batch 64, three alternations of lanes and
 * the batch plan): surfacenet@112 6505-6805 against 5133-5966 img/s,
 * surfacenet@224 1587-1642 against 1274-1497. It loses where single-image
 * kernels are much less efficient than batched ones, on convolutions with
 * small outputs (two single-threaded processes on single images against one
 * two-thread batch plan: resnet18@112, whose last stage is 4x4, 240 against
 * 465 img/s; resnet18@224 120 against 140; convnext-atto, whose last stages
 * are 7x7 and 3x3, 88 against 132-142 at 224 and 610 against 706 at 112). So
 * a batch plan takes lanes when every convolution's output has at least 14x14
 * pixels.
 *
 * An image's logits then do not depend on the batch it came in: every lane
 * runs the same single-threaded single-image plan. IMOPS_BATCH_LANES=off
 * turns lanes off, =on takes them for any folded batch plan (comparisons and
 * tests); where single images would not pay, each lane then takes an equal
 * share of the batch at a time (resnet18@224: 124-143 against 127-140 img/s
 * over five alternations, too close to call; convnext-atto@224 113-119
 * against 127-140). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn_impl.h"

enum { LANE_MIN_HW = 14 };

typedef struct lanes_job lanes_job_t;

/* Lane 0 runs on the thread that calls forward; lanes 1..n-1 on threads of their own, started
 * with the plan and waiting between batches, so that a forward neither starts threads nor
 * allocates. */
struct im__nn_lanes {
  int n;
  int64_t batch;        /* images a lane's plan takes */
  im_nn_model_t **lane; /* planned for batch images; nodes copied, entries borrowed */
  im_backend_t **be;    /* one single-threaded backend each */
  pthread_t *tid;
  struct lane_arg *args; /* the threads' arguments */
  int started;          /* threads running (lanes 1..started) */
  pthread_mutex_t mu;
  pthread_cond_t go, done;
  int sync_ok;          /* mu, go and done are initialized */
  uint64_t gen;         /* batches handed out */
  int busy;             /* lanes still working on the current batch */
  int quit;
  lanes_job_t *job;
  /* Lanes that have run an image. A lane's backend builds its kernels and prepares the weights on
   * its first image; so that this happens in no later batch (a forward allocates nothing), batches
   * are dealt out in turn, chunk i to lane i mod n, until every lane has run. After that lanes take
   * chunks as they come free, which evens out a core that the VM slows down. */
  unsigned char *warm;
};

struct lanes_job {
  im__nn_lanes_t *ls;
  const float *x;
  float *y;
  int64_t n, chunk;  /* images, and images a lane takes at a time */
  int in_turn;       /* chunks dealt out in turn (some lane has not run yet) */
  size_t per, k;
  atomic_llong next; /* the next chunk to take */
  atomic_int failed;
  im_status_t st;    /* the first failure's, and its text */
  char msg[512];
};

/* Images [i, i + cnt) through lane lane. */
static void lane_chunk(lanes_job_t *j, int64_t i, int64_t cnt, int lane) {
  im_nn_model_t *l = j->ls->lane[lane];
  im_tensor_t xi, y;
  im_status_t st = im_tensor_view(&xi, IM_F32, 4, (int64_t[]){cnt, l->plan_c, l->plan_h, l->plan_w},
                                  (void *)(uintptr_t)(j->x + (size_t)i * j->per));
  if (st == IM_OK) st = im_nn_forward(l, &xi, 0, &y);
  if (st == IM_OK)
    st = im_backend_tensor_get(l->be, &y, j->y + (size_t)i * j->k, sizeof(float) * j->k * (size_t)cnt);
  if (st != IM_OK && !atomic_exchange(&j->failed, 1)) {
    j->st = st;
    snprintf(j->msg, sizeof j->msg, "%s", im_last_error());
  }
}

static void lane_work(lanes_job_t *j, int lane) {
  for (int64_t c = lane;; c += j->ls->n) {
    const int64_t i = (j->in_turn ? c : atomic_fetch_add(&j->next, 1)) * j->chunk;
    if (i >= j->n || atomic_load_explicit(&j->failed, memory_order_relaxed)) return;
    lane_chunk(j, i, j->n - i < j->chunk ? j->n - i : j->chunk, lane);
    j->ls->warm[lane] = 1; /* read by the caller once every lane is done (under mu) */
  }
}

typedef struct lane_arg {
  im__nn_lanes_t *ls;
  int lane;
} lane_arg_t;

static void *lane_main(void *p) {
  im__nn_lanes_t *ls = ((lane_arg_t *)p)->ls;
  const int lane = ((lane_arg_t *)p)->lane;
  uint64_t seen = 0;
  pthread_mutex_lock(&ls->mu);
  for (;;) {
    while (ls->gen == seen && !ls->quit) pthread_cond_wait(&ls->go, &ls->mu);
    if (ls->quit) break;
    seen = ls->gen;
    lanes_job_t *j = ls->job;
    pthread_mutex_unlock(&ls->mu);
    lane_work(j, lane);
    pthread_mutex_lock(&ls->mu);
    if (--ls->busy == 0) pthread_cond_signal(&ls->done);
  }
  pthread_mutex_unlock(&ls->mu);
  return NULL;
}

static void lane_free(im_nn_model_t *l) {
  if (!l) return;
  im__nn_plan_free(l);
  im_free(l->nodes);
  im_free(l);
}

void im__nn_lanes_free(im_nn_model_t *m) {
  im__nn_lanes_t *ls = m->lanes;
  if (!ls) return;
  if (ls->started) {
    pthread_mutex_lock(&ls->mu);
    ls->quit = 1;
    pthread_cond_broadcast(&ls->go);
    pthread_mutex_unlock(&ls->mu);
    for (int i = 1; i <= ls->started; i++) pthread_join(ls->tid[i], NULL);
  }
  if (ls->sync_ok) {
    pthread_mutex_destroy(&ls->mu);
    pthread_cond_destroy(&ls->go);
    pthread_cond_destroy(&ls->done);
  }
  im_free(ls->tid);
  im_free(ls->args);
  for (int i = 0; i < ls->n; i++) {
    if (ls->lane) lane_free(ls->lane[i]);
    if (ls->be) im_backend_free(ls->be[i]);
  }
  im_free(ls->lane);
  im_free(ls->be);
  im_free(ls->warm);
  im_free(ls);
  m->lanes = NULL;
}

/* A copy of m's graph that reads m's weights, planned for batch images on be. */
static im_status_t lane_new(const im_nn_model_t *m, im_backend_t *be, int64_t batch, im_nn_model_t **out) {
  *out = NULL;
  im_nn_model_t *l = im_calloc(1, sizeof *l);
  if (!l || !(l->nodes = im_malloc(sizeof *l->nodes * m->n_nodes))) {
    im_free(l);
    return im_error(IM_ERR_NOMEM, "out of memory for a batch lane");
  }
  memcpy(l->nodes, m->nodes, sizeof *l->nodes * m->n_nodes);
  l->n_nodes = l->cap_nodes = m->n_nodes;
  l->arch = m->arch;
  l->opts = m->opts;
  l->style = m->style;
  l->ents = m->ents;
  l->n_ents = m->n_ents;
  l->rng = m->rng;
  l->folded = 1;
  l->is_lane = 1;
  im_status_t st = im_nn_plan(l, be, batch, m->plan_h, m->plan_w, 0);
  if (st != IM_OK) {
    lane_free(l);
    return st;
  }
  *out = l;
  return IM_OK;
}

static int lanes_mode(void) {
  const char *e = getenv("IMOPS_BATCH_LANES");
  if (e && (!strcmp(e, "off") || !strcmp(e, "0"))) return 0;
  if (e && (!strcmp(e, "on") || !strcmp(e, "1"))) return 2;
  return 1;
}

/* Every convolution's output has at least LANE_MIN_HW x LANE_MIN_HW pixels (and there is one). */
static int lanes_pay(const im_nn_model_t *m) {
  int convs = 0;
  for (size_t i = 0; i < m->n_nodes; i++) {
    const im__nn_node_t *nd = &m->nodes[i];
    if (nd->op != IM__NN_CONV) continue;
    if (nd->ndim != 4 || nd->shape[2] < LANE_MIN_HW || nd->shape[3] < LANE_MIN_HW) return 0;
    convs++;
  }
  return convs > 0;
}

im_status_t im__nn_lanes_plan(im_nn_model_t *m) {
  im__nn_lanes_free(m);
  const int mode = lanes_mode(), threads = im_backend_num_threads(m->be);
  if (!m->folded || m->is_lane || m->plan_training || m->plan_batch < 2 || threads < 2 || mode == 0) return IM_OK;
  if (mode == 1 && (m->plan_batch < 2 * threads || !lanes_pay(m))) return IM_OK;
  im__nn_lanes_t *ls = im_calloc(1, sizeof *ls);
  if (!ls) return im_error(IM_ERR_NOMEM, "out of memory for batch lanes");
  m->lanes = ls;
  ls->n = threads;
  ls->batch = lanes_pay(m) ? 1 : (m->plan_batch + threads - 1) / threads;
  ls->lane = im_calloc((size_t)threads, sizeof *ls->lane);
  ls->be = im_calloc((size_t)threads, sizeof *ls->be);
  ls->warm = im_calloc((size_t)threads, 1);
  im_status_t st = ls->lane && ls->be && ls->warm ? IM_OK : im_error(IM_ERR_NOMEM, "out of memory for batch lanes");
  size_t bytes = 0;
  for (int i = 0; i < threads && st == IM_OK; i++) {
    st = im_backend_new_like(m->be, 1, &ls->be[i]);
    if (st == IM_OK) st = lane_new(m, ls->be[i], ls->batch, &ls->lane[i]);
    if (st == IM_OK) bytes += im_nn_plan_bytes(ls->lane[i]);
  }
  if (st == IM_ERR_UNSUPPORTED) { /* a kind of backend without siblings: the batch plan serves */
    im__nn_lanes_free(m);
    return IM_OK;
  }
  if (st == IM_OK && (!(ls->tid = im_calloc((size_t)threads, sizeof *ls->tid)) ||
                      !(ls->args = im_calloc((size_t)threads, sizeof *ls->args))))
    st = im_error(IM_ERR_NOMEM, "out of memory for batch lanes");
  if (st == IM_OK) {
    if (pthread_mutex_init(&ls->mu, NULL) || pthread_cond_init(&ls->go, NULL) || pthread_cond_init(&ls->done, NULL))
      st = im_error(IM_ERR_NOMEM, "batch lanes: cannot set up their synchronization");
    else
      ls->sync_ok = 1;
  }
  for (int i = 1; i < threads && st == IM_OK; i++) {
    ls->args[i] = (lane_arg_t){ls, i};
    if (pthread_create(&ls->tid[i], NULL, lane_main, &ls->args[i]) != 0) {
      st = im_error(IM_ERR_NOMEM, "batch lanes: cannot start a thread");
      break;
    }
    ls->started = i;
  }
  if (st != IM_OK) {
    im__nn_lanes_free(m);
    return st;
  }
  m->plan_bytes += bytes;
  m->plan_bytes_unshared += bytes;
  return IM_OK;
}

int im__nn_lanes_count(const im_nn_model_t *m) { return m->lanes ? m->lanes->n : 0; }
int64_t im__nn_lanes_batch(const im_nn_model_t *m) { return m->lanes ? m->lanes->batch : 0; }

im_status_t im__nn_lanes_forward(im_nn_model_t *m, const im_tensor_t *x, im_tensor_t *logits) {
  im__nn_lanes_t *ls = m->lanes;
  const int64_t n = x->shape[0];
  im_tensor_t *out = &m->nodes[m->n_nodes - 1].out;
  if (out->layout != IM_LAYOUT_PLAIN || out->ndim != 2)
    return im_error(IM_ERR_INTERNAL, "batch lanes: the logits are not a plain [n, k] tensor");
  lanes_job_t j = {.ls = ls,
                   .x = im_tensor_f32(x),
                   .y = im_tensor_f32(out),
                   .n = n,
                   .chunk = ls->batch < (n + ls->n - 1) / ls->n ? ls->batch : (n + ls->n - 1) / ls->n,
                   .per = (size_t)(x->shape[1] * x->shape[2] * x->shape[3]),
                   .k = (size_t)out->shape[1]};
  atomic_init(&j.next, 0);
  atomic_init(&j.failed, 0);
  pthread_mutex_lock(&ls->mu);
  for (int i = 0; i < ls->n; i++) j.in_turn |= !ls->warm[i];
  ls->job = &j;
  ls->busy = ls->n - 1;
  ls->gen++;
  pthread_cond_broadcast(&ls->go);
  pthread_mutex_unlock(&ls->mu);
  /* The calling thread runs lane 0: the per-node timer (im__nn_time_nodes) follows it there. */
  ls->lane[0]->node_s = m->node_s;
  lane_work(&j, 0);
  ls->lane[0]->node_s = NULL;
  pthread_mutex_lock(&ls->mu);
  while (ls->busy > 0) pthread_cond_wait(&ls->done, &ls->mu);
  ls->job = NULL;
  pthread_mutex_unlock(&ls->mu);
  if (atomic_load(&j.failed)) return im_error(j.st, "%s", j.msg);
  *logits = *out;
  return IM_OK;
}
