/* Adaptive micro-batching: one FIFO queue of requests, inference workers that
 * take the requests at its head into one batch, and the latency model that
 * decides whether a free worker dispatches now or waits a little for more
 * (see serve.h for the rule). */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "serve/serve_impl.h"

/* ---- the latency model ---- */

#define LAT_DECAY 0.9   /* weight of the past at each new batch */
#define ARR_ALPHA 0.2   /* EWMA weight of a new inter-arrival time */

void im__serve_latency_observe(im__serve_latency_t *m, int n, double t) {
  if (n < 1 || !(t >= 0) || !isfinite(t)) return;
  m->sw = LAT_DECAY * m->sw + 1;
  m->sn = LAT_DECAY * m->sn + n;
  m->st = LAT_DECAY * m->st + t;
  m->snn = LAT_DECAY * m->snn + (double)n * n;
  m->snt = LAT_DECAY * m->snt + (double)n * t;
  m->samples++;
  double mn = m->sn / m->sw, mt = m->st / m->sw;
  double var = m->snn / m->sw - mn * mn, cov = m->snt / m->sw - mn * mt;
  double a, b;
  if (var > 1e-6 * (1 + mn * mn)) {
    b = cov / var;
    a = mt - b * mn;
  } else { /* one batch size seen so far: split the time evenly between overhead and images */
    a = 0.5 * mt;
    b = 0.5 * mt / mn;
  }
  if (b < 0) { /* noise: time does not grow with n; all overhead */
    b = 0;
    a = mt;
  }
  if (a < 0) { /* all per-image */
    a = 0;
    b = mt / mn;
  }
  m->a = a;
  m->b = b;
}

double im__serve_latency_predict(const im__serve_latency_t *m, int n) { return m->a + m->b * (n > 0 ? n : 0); }

void im__serve_latency_arrival(im__serve_latency_t *m, double now) {
  if (m->last_arrival > 0 && now >= m->last_arrival) {
    double dt = now - m->last_arrival;
    m->interarrival = m->interarrival > 0 ? (1 - ARR_ALPHA) * m->interarrival + ARR_ALPHA * dt : dt;
  }
  m->last_arrival = now;
}

double im__serve_batch_wait(const im__serve_latency_t *m, int queued, double oldest_wait, int max_batch,
                            double max_latency_s) {
  if (queued <= 0) return 0;
  if (queued >= max_batch || m->samples == 0 || m->interarrival <= 0) return 0;
  /* what waiting for one more request costs the queued ones in all, against the
   * batch overhead that running it with them saves */
  double ia = m->interarrival;
  if (ia * queued >= m->a) return 0;
  double budget = max_latency_s - oldest_wait - im__serve_latency_predict(m, queued + 1);
  if (budget <= 0) return 0;
  double w = 2 * ia < budget ? 2 * ia : budget;
  return w > 1e-5 ? w : 0;
}

/* ---- the batcher ---- */

struct im__serve_batcher {
  im__serve_batcher_opts_t o;
  pthread_mutex_t mu;
  pthread_cond_t work; /* queue changed or stop */
  pthread_condattr_t job_attr; /* CLOCK_MONOTONIC, for each job's own condition */
  im__serve_job_t *head, *tail;
  int queued; /* images */
  int stop;
  im__serve_latency_t lat;
  pthread_t *threads;
  int n_threads;
};

typedef struct {
  im__serve_batcher_t *b;
  int worker;
} worker_arg_t;

static void abs_deadline(struct timespec *ts, double s) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  double sec = floor(s);
  ts->tv_sec += (time_t)sec;
  ts->tv_nsec += (long)((s - sec) * 1e9);
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

static void unlink_job(im__serve_batcher_t *b, im__serve_job_t *job) {
  im__serve_job_t **pp = &b->head, *prev = NULL;
  while (*pp && *pp != job) {
    prev = *pp;
    pp = &(*pp)->next;
  }
  if (!*pp) return;
  *pp = job->next;
  if (b->tail == job) b->tail = prev;
  job->next = NULL;
  b->queued -= job->n;
}

/* Ends a job and wakes its waiter alone (under b->mu): waking every waiter at
 * the end of each batch (one shared condition) woke all the handler threads
 * queued behind it, only for most of them to sleep again. */
static void end_job(im__serve_job_t *j, int state) {
  j->state = state;
  pthread_cond_signal(&j->done);
}

static void *worker_main(void *arg) {
  worker_arg_t *wa = arg;
  im__serve_batcher_t *b = wa->b;
  const int worker = wa->worker;
  im_free(wa);
  const int cap = b->o.max_batch > 0 ? b->o.max_batch : 1;
  im__serve_job_t **jobs = im_calloc((size_t)cap + 1, sizeof *jobs);
  pthread_mutex_lock(&b->mu);
  for (;;) {
    while (!b->stop && !b->head) pthread_cond_wait(&b->work, &b->mu);
    if (!b->head) break; /* stopping with nothing queued */
    double now = im_time_now();
    if (!b->stop && cap > 1) {
      double w = im__serve_batch_wait(&b->lat, b->queued, now - b->head->t_enq, cap, b->o.max_latency_s);
      if (w > 0) {
        struct timespec ts;
        abs_deadline(&ts, w);
        int had = b->queued;
        while (!b->stop && b->queued == had && b->head) {
          if (pthread_cond_timedwait(&b->work, &b->mu, &ts) == ETIMEDOUT) break;
        }
        if (b->queued != had && b->queued < cap && b->head) continue; /* an arrival: decide again */
        if (!b->head) continue;
      }
    }
    /* take the head's generation, FIFO, up to cap images (a larger request runs alone) */
    int nj = 0, ni = 0;
    void *gen = b->head->gen;
    for (im__serve_job_t *j = b->head, *next; j; j = next) {
      next = j->next;
      if (j->gen != gen) continue;
      if (nj && (ni + j->n > cap || nj >= cap)) break;
      if (!jobs) break;
      unlink_job(b, j);
      j->state = 1;
      jobs[nj++] = j;
      ni += j->n;
      if (ni >= cap) break;
    }
    if (!nj) { /* no memory for the job list: fail the head */
      im__serve_job_t *j = b->head;
      unlink_job(b, j);
      j->st = IM_ERR_NOMEM;
      snprintf(j->err, sizeof j->err, "out of memory");
      end_job(j, 2);
      continue;
    }
    pthread_mutex_unlock(&b->mu);
    double t0 = im_time_now();
    im_error_clear();
    im_status_t st = b->o.run(b->o.user, worker, gen, jobs, nj, ni);
    double dt = im_time_now() - t0;
    pthread_mutex_lock(&b->mu);
    if (st == IM_OK) im__serve_latency_observe(&b->lat, ni, dt);
    for (int i = 0; i < nj; i++) {
      jobs[i]->st = st;
      if (st) snprintf(jobs[i]->err, sizeof jobs[i]->err, "%s", im_last_error()[0] ? im_last_error() : im_strerror(st));
      end_job(jobs[i], 2);
    }
  }
  pthread_mutex_unlock(&b->mu);
  im_free(jobs);
  return NULL;
}

im_status_t im__serve_batcher_new(const im__serve_batcher_opts_t *o, im__serve_batcher_t **out) {
  *out = NULL;
  if (!o->run || o->workers < 1 || o->max_batch < 1) return im_error(IM_ERR_ARG, "bad batcher options");
  im__serve_batcher_t *b = im_calloc(1, sizeof *b);
  if (!b) return im_error(IM_ERR_NOMEM, "out of memory");
  b->o = *o;
  pthread_mutex_init(&b->mu, NULL);
  pthread_condattr_init(&b->job_attr);
  pthread_condattr_setclock(&b->job_attr, CLOCK_MONOTONIC);
  pthread_cond_init(&b->work, &b->job_attr);
  b->threads = im_calloc((size_t)o->workers, sizeof *b->threads);
  if (!b->threads) {
    im__serve_batcher_free(b);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  for (int i = 0; i < o->workers; i++) {
    worker_arg_t *wa = im_malloc(sizeof *wa);
    if (!wa) break;
    wa->b = b;
    wa->worker = i;
    if (pthread_create(&b->threads[i], NULL, worker_main, wa) != 0) {
      im_free(wa);
      break;
    }
    b->n_threads++;
  }
  if (b->n_threads != o->workers) {
    im__serve_batcher_free(b);
    return im_error(IM_ERR_INTERNAL, "cannot start the inference workers");
  }
  *out = b;
  return IM_OK;
}

im_status_t im__serve_batcher_submit(im__serve_batcher_t *b, im__serve_job_t *job, double timeout_s) {
  job->state = 0;
  job->st = IM_OK;
  job->err[0] = '\0';
  job->next = NULL;
  pthread_mutex_lock(&b->mu);
  if (b->stop) {
    pthread_mutex_unlock(&b->mu);
    return im_error(IM_ERR_CANCELLED, "the server is stopping");
  }
  pthread_cond_init(&job->done, &b->job_attr);
  job->t_enq = im_time_now();
  im__serve_latency_arrival(&b->lat, job->t_enq);
  if (b->tail) b->tail->next = job;
  else b->head = job;
  b->tail = job;
  b->queued += job->n;
  pthread_cond_signal(&b->work);
  struct timespec ts;
  abs_deadline(&ts, timeout_s > 0 ? timeout_s : 3600);
  im_status_t st = IM_OK;
  while (job->state < 2) {
    int rc = pthread_cond_timedwait(&job->done, &b->mu, &ts);
    if (rc == ETIMEDOUT && job->state == 0) { /* never taken: give up; a running job is waited for */
      unlink_job(b, job);
      job->state = 3;
      st = im_error(IM_ERR_CANCELLED, "the request was not served within %.0f ms", timeout_s * 1000);
      break;
    }
    if (job->state == 3) {
      st = im_error(IM_ERR_CANCELLED, "the server is stopping");
      break;
    }
  }
  pthread_mutex_unlock(&b->mu);
  pthread_cond_destroy(&job->done); /* no one signals it now: it is no longer queued and not running */
  return st;
}

int im__serve_batcher_queued(im__serve_batcher_t *b) {
  pthread_mutex_lock(&b->mu);
  int n = b->queued;
  pthread_mutex_unlock(&b->mu);
  return n;
}

void im__serve_batcher_stop(im__serve_batcher_t *b) {
  if (!b) return;
  pthread_mutex_lock(&b->mu);
  if (b->stop) {
    pthread_mutex_unlock(&b->mu);
    return;
  }
  b->stop = 1;
  pthread_cond_broadcast(&b->work);
  pthread_mutex_unlock(&b->mu);
  for (int i = 0; i < b->n_threads; i++) pthread_join(b->threads[i], NULL);
  b->n_threads = 0;
  /* the workers ran everything queued before leaving (they only exit on an empty queue) */
  pthread_mutex_lock(&b->mu);
  for (im__serve_job_t *j = b->head, *next; j; j = next) {
    next = j->next; /* read first: its waiter may return as soon as the lock is released */
    end_job(j, 3);
  }
  b->head = b->tail = NULL;
  b->queued = 0;
  pthread_mutex_unlock(&b->mu);
}

void im__serve_batcher_free(im__serve_batcher_t *b) {
  if (!b) return;
  im__serve_batcher_stop(b);
  pthread_mutex_destroy(&b->mu);
  pthread_cond_destroy(&b->work);
  pthread_condattr_destroy(&b->job_attr);
  im_free(b->threads);
  im_free(b);
}
