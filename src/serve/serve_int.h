/* The model server's shared state between serve.c (generations, inference,
 * metrics, lifecycle) and routes.c (the HTTP handlers). */
#ifndef IMOPS_SERVE_INT_H
#define IMOPS_SERVE_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "imops/http.h"
#include "imops/monitor.h"
#include "imops/serve.h"
#include "imops/train.h"
#include "serve/serve_impl.h"

/* A loaded model: one copy per inference worker, planned for one forward
 * pass of `chunk` images (a batch runs in passes of that many). Reference-counted: the server holds one reference while it is the
 * current one; each request holds one while it uses it. */
typedef struct {
  _Atomic int refs;
  int workers;
  im_train_model_t **inst;
  float **xbuf;          /* per worker: chunk x C x H x W */
  int chunk;             /* images per forward pass, 1..max_batch (see pass_images in serve.c) */
  int c, h, w, k;
  size_t chw;
  char *name, *version, *run_id, *key;
  const char *arch;      /* owned by inst[0] */
  int n_norm;
  float mean[3], std[3]; /* the training normalization (std > 0) */
  double *ref_counts;    /* the test split's class counts, or NULL */
  im_monitor_series_t **pred_series; /* imops_predictions_total{class} per class */
} serve_gen_t;

typedef struct {
  im_monitor_family_t *requests, *duration, *predictions, *input_mean, *input_std, *train_mean, *train_std,
      *drift_score, *model_info;
  im_monitor_series_t *inference_s, *batch_s, *queue_depth_s, *inflight_s, *confidence_s, *psi_s, *ready_s,
      *reloads_s;
} serve_metrics_t;

struct im_serve {
  im_serve_opts_t o;
  char *owned[5];
  int max_batch;           /* 1 without batching */
  im_monitor_t *mon;
  serve_metrics_t m;
  im_http_server_t *http;
  im__serve_batcher_t *bat;
  pthread_mutex_t gen_mu;  /* guards cur */
  serve_gen_t *cur;
  pthread_mutex_t reload_mu; /* one reload at a time */
  pthread_mutex_t drift_mu;  /* guards drift, served_counts */
  im_monitor_welford_t drift[3];
  int drift_channels;
  double *served_counts;
  int served_k;
  pthread_mutex_t watch_mu;
  pthread_cond_t watch_cv;
  pthread_t watch_thread;
  int watching, watch_stop;
  _Atomic int ready, stopping; /* read by handler threads */
};

serve_gen_t *serve_gen_acquire(im_serve_t *s);
void serve_gen_unref(serve_gen_t *g);
/** Runs n prepared inputs through the batcher; writes n x K probabilities and
 * records the prediction metrics. Returns the HTTP status (200, or 503/500
 * with err filled). */
int serve_infer(im_serve_t *s, serve_gen_t *g, const float *x, int n, float *probs, char *err, size_t errn);
/** Registers every route on s->http. */
im_status_t serve_routes(im_serve_t *s);
/** The fallback handler: 404 {"error": ...}. */
im_status_t serve_not_found(im_http_req_t *req, im_http_resp_t *resp, void *user);

/** The OpenAPI 3 document of the routes, and the /docs page. */
json_t *serve_openapi(const serve_gen_t *g);
extern const char serve_docs_html[];

#endif
