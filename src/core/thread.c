/* Threads: a parallel-for over pthreads with items handed out dynamically. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "imops/core.h"

int im_num_threads(void) {
  const char *e = getenv("IMOPS_NUM_THREADS");
  if (e && *e) {
    int n = atoi(e);
    if (n > 0 && n <= 1024) return n;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

typedef struct {
  atomic_llong next;
  int64_t n;
  im_parallel_fn fn;
  void *ctx;
} pf_shared_t;

typedef struct {
  pf_shared_t *sh;
  int thread;
} pf_arg_t;

static void *pf_worker(void *p) {
  pf_arg_t *a = p;
  pf_shared_t *sh = a->sh;
  for (;;) {
    long long i = atomic_fetch_add(&sh->next, 1);
    if (i >= sh->n) break;
    sh->fn(sh->ctx, i, a->thread);
  }
  return NULL;
}

im_status_t im_parallel_for(int64_t n, int nthreads, im_parallel_fn fn, void *ctx) {
  if (n <= 0) return IM_OK;
  if (nthreads <= 0) nthreads = im_num_threads();
  if (nthreads > n) nthreads = (int)n;
  pf_shared_t sh = {.n = n, .fn = fn, .ctx = ctx};
  atomic_init(&sh.next, 0);
  if (nthreads == 1) {
    pf_arg_t a = {&sh, 0};
    pf_worker(&a);
    return IM_OK;
  }
  pthread_t *tids = im_malloc(sizeof *tids * (size_t)nthreads);
  pf_arg_t *args = im_malloc(sizeof *args * (size_t)nthreads);
  if (!tids || !args) {
    im_free(tids);
    im_free(args);
    return im_error(IM_ERR_NOMEM, "parallel_for: out of memory");
  }
  int started = 0;
  for (int t = 1; t < nthreads; t++) {
    args[t] = (pf_arg_t){&sh, t};
    if (pthread_create(&tids[t], NULL, pf_worker, &args[t]) != 0) break;
    started = t;
  }
  args[0] = (pf_arg_t){&sh, 0};
  pf_worker(&args[0]); /* the caller works too; finishes everything if threads failed to start */
  for (int t = 1; t <= started; t++) pthread_join(tids[t], NULL);
  im_free(tids);
  im_free(args);
  return IM_OK;
}
