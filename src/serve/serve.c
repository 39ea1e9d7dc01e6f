/* The model server: model generations (loaded fully, swapped atomically,
 * freed when their last batch ends), the inference run of a batch, the
 * metrics (names fixed by the monitoring brief), the registry watcher, and the
 * server's lifecycle. The HTTP handlers are in routes.c. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "imops/track.h"
#include "serve/serve_int.h"

im_serve_opts_t im_serve_defaults(void) {
  im_serve_opts_t o = {0};
  o.max_batch_size = 32;
  o.max_latency_ms = 20;
  o.batching = 1;
  o.workers = 1;
  o.watch_interval_s = 2;
  return o;
}

/* ---- generations ---- */

static void gen_free(serve_gen_t *g) {
  if (!g) return;
  for (int i = 0; g->inst && i < g->workers; i++) {
    im_train_model_close(g->inst[i]);
    im_free(g->xbuf[i]);
  }
  im_free(g->inst);
  im_free(g->xbuf);
  im_free(g->name);
  im_free(g->version);
  im_free(g->run_id);
  im_free(g->key);
  im_free(g->ref_counts);
  im_free(g->pred_series);
  im_free(g);
}

void serve_gen_unref(serve_gen_t *g) {
  if (g && atomic_fetch_sub(&g->refs, 1) == 1) gen_free(g);
}

serve_gen_t *serve_gen_acquire(im_serve_t *s) {
  pthread_mutex_lock(&s->gen_mu);
  serve_gen_t *g = s->cur;
  if (g) atomic_fetch_add(&g->refs, 1);
  pthread_mutex_unlock(&s->gen_mu);
  return g;
}

static int is_registry_uri(const char *uri) { return !strncasecmp(uri, "runs:", 5) || !strncasecmp(uri, "models:", 7); }

static im_status_t store_open(const im_serve_t *s, im_track_store_t **out) {
  const char *home = s->o.tracking_home;
  if (home && !strncasecmp(home, "file://", 7)) home += 7;
  return im_track_open(home && *home ? home : NULL, out);
}

/* Where the URI points now: a key that changes when the alias or stage moves. */
static im_status_t resolve(im_serve_t *s, im_track_store_t *st, im_track_uri_t **u, char **key) {
  *key = NULL;
  im_status_t rc = im_track_resolve_uri(st, s->o.model_uri, u);
  if (rc) return rc;
  char buf[64];
  snprintf(buf, sizeof buf, "%lld|", (long long)(*u)->version);
  im_buf_t b = {0};
  if (im_buf_printf(&b, "%s%s", buf, (*u)->location ? (*u)->location : "") != IM_OK) {
    im_track_uri_free(*u);
    *u = NULL;
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  *key = b.data;
  return IM_OK;
}

/* The class counts of the test split of the data the run trained on
 * (DATA/.imops/dataset.json through the run's imops.data_dir tag), in the
 * model's class order; NULL when unknown. */
static double *reference_counts(im_track_store_t *st, const char *run_id, im_train_model_t *m) {
  if (!st || !run_id) return NULL;
  im_track_run_t *run = NULL;
  if (im_track_run_get(st, run_id, &run) != IM_OK) return NULL;
  const char *dir = NULL;
  for (int i = 0; i < run->n_tags; i++)
    if (!strcmp(run->tags[i].key, "imops.data_dir")) dir = run->tags[i].value;
  double *out = NULL;
  char *path = dir ? im_path_join(dir, ".imops/dataset.json") : NULL;
  json_t *j = path ? json_load_file(path, 0, NULL) : NULL;
  const json_t *test = json_object_get(json_object_get(j, "counts"), "test");
  const int k = im_train_model_num_classes(m);
  if (json_is_object(test) && (out = im_calloc((size_t)k, sizeof *out))) {
    double total = 0;
    for (int c = 0; c < k; c++) {
      const json_t *v = json_object_get(test, im_train_model_class(m, c));
      out[c] = json_is_integer(v) ? (double)json_integer_value(v) : 0;
      total += out[c];
    }
    if (total <= 0) {
      im_free(out);
      out = NULL;
    }
  }
  json_decref(j);
  im_free(path);
  im_track_run_free(run);
  return out;
}

/* Images per forward pass: as many as keep one pass's activation block within a
 * core's L2 cache (at least 1, at most max_batch). Batching buys no per-image
 * speed on the CPU here (bench/serve/README.md: a batch of 31 cost as much per
 * image as a single one), so a batch of 32 at 112x112 planned whole only held
 * 17 MB of activations per worker; passes of a few keep the same throughput in
 * a fraction of the memory. */
static im_status_t pass_images(im_nn_model_t *nn, int max_batch, int h, int w, int *out) {
  im_status_t st = im_nn_plan(nn, NULL, 1, h, w, 0);
  if (st) return st;
  size_t per_image = im_nn_plan_bytes(nn);
  long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
  size_t budget = l2 > 0 ? (size_t)l2 : (size_t)2 << 20;
  size_t n = per_image ? budget / per_image : (size_t)max_batch;
  *out = n < 1 ? 1 : n > (size_t)max_batch ? max_batch : (int)n;
  return IM_OK;
}

static im_status_t gen_load(im_serve_t *s, serve_gen_t **out) {
  *out = NULL;
  serve_gen_t *g = im_calloc(1, sizeof *g);
  if (!g) return im_error(IM_ERR_NOMEM, "out of memory");
  atomic_init(&g->refs, 1);
  g->workers = s->o.workers;
  im_status_t st = IM_OK;
  im_track_store_t *store = NULL;
  im_track_uri_t *u = NULL;
  const char *where = s->o.model_uri;
  if (is_registry_uri(s->o.model_uri)) {
    if ((st = store_open(s, &store))) goto out;
    if ((st = resolve(s, store, &u, &g->key))) goto out;
    if (u->location && u->is_local) where = u->location;
    if (u->version > 0) {
      char v[32];
      snprintf(v, sizeof v, "%lld", (long long)u->version);
      g->version = im_strdup(v);
    }
  }
  g->name = im_strdup(s->o.name ? s->o.name : u && u->name ? u->name : "model");
  if (!g->version) g->version = im_strdup("");
  g->inst = im_calloc((size_t)g->workers, sizeof *g->inst);
  g->xbuf = im_calloc((size_t)g->workers, sizeof *g->xbuf);
  if (!g->name || !g->version || !g->inst || !g->xbuf) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto out;
  }
  for (int i = 0; i < g->workers; i++) {
    if ((st = im_train_model_open(where, s->o.device, s->o.tracking_home, &g->inst[i]))) goto out;
    const im_nn_bundle_meta_t *meta = im_train_model_meta(g->inst[i]);
    im_nn_model_t *nn = im_train_model_nn(g->inst[i]);
    g->c = im_nn_model_in_channels(nn);
    g->h = meta->img_h;
    g->w = meta->img_w;
    g->k = im_train_model_num_classes(g->inst[i]);
    g->chw = (size_t)g->c * (size_t)g->h * (size_t)g->w;
    /* planned once for one forward pass: every batch runs in passes of up to g->chunk images */
    if (i == 0 && (st = pass_images(nn, s->max_batch, g->h, g->w, &g->chunk))) goto out;
    if ((st = im_nn_plan(nn, NULL, g->chunk, g->h, g->w, 0))) goto out;
    if (!(g->xbuf[i] = im_malloc(sizeof(float) * g->chw * (size_t)g->chunk))) {
      st = im_error(IM_ERR_NOMEM, "out of memory for the batch buffer");
      goto out;
    }
  }
  im_train_model_t *m0 = g->inst[0];
  const im_nn_bundle_meta_t *meta = im_train_model_meta(m0);
  g->arch = im_nn_model_arch(im_train_model_nn(m0));
  const char *rid = u && u->run_id && *u->run_id ? u->run_id : im_train_model_run_id(m0);
  g->run_id = im_strdup(rid ? rid : "");
  if (!g->run_id) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto out;
  }
  g->n_norm = meta->n_norm;
  for (int c = 0; c < 3; c++) {
    g->mean[c] = meta->n_norm > c ? meta->mean[c] : 0.0f;
    g->std[c] = meta->n_norm > c && meta->std[c] > 0 ? meta->std[c] : 1.0f;
  }
  g->ref_counts = reference_counts(store, g->run_id[0] ? g->run_id : NULL, m0);
  if (!(g->pred_series = im_calloc((size_t)g->k, sizeof *g->pred_series))) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto out;
  }
  for (int c = 0; c < g->k && st == IM_OK; c++) {
    const char *lv[] = {im_train_model_class(m0, c)};
    st = im_monitor_series(s->m.predictions, lv, &g->pred_series[c]);
  }
out:
  im_track_uri_free(u);
  im_track_close(store);
  if (st) {
    gen_free(g);
    return st;
  }
  *out = g;
  return IM_OK;
}

/* ---- metrics ---- */

static const char *channel_name(int c, int channels) {
  static const char *rgb[] = {"R", "G", "B"};
  return channels == 1 ? "L" : rgb[c];
}

/* Publishes what describes the generation now served; resets the served class mix. */
static void publish_gen(im_serve_t *s, serve_gen_t *g) {
  im_monitor_family_clear(s->m.model_info);
  const char *lv[] = {g->name, g->version, g->run_id, g->arch};
  im_monitor_series_t *se;
  if (im_monitor_series(s->m.model_info, lv, &se) == IM_OK) im_monitor_set(se, 1);
  im_monitor_family_clear(s->m.train_mean);
  im_monitor_family_clear(s->m.train_std);
  for (int c = 0; g->n_norm && c < g->c && c < 3; c++) {
    const char *ch[] = {channel_name(c, g->c)};
    if (im_monitor_series(s->m.train_mean, ch, &se) == IM_OK) im_monitor_set(se, g->mean[c]);
    if (im_monitor_series(s->m.train_std, ch, &se) == IM_OK) im_monitor_set(se, g->std[c]);
  }
  pthread_mutex_lock(&s->drift_mu);
  im_free(s->served_counts);
  s->served_counts = im_calloc((size_t)g->k, sizeof *s->served_counts);
  s->served_k = s->served_counts ? g->k : 0;
  if (s->drift_channels != g->c) {
    memset(s->drift, 0, sizeof s->drift);
    s->drift_channels = g->c;
  }
  pthread_mutex_unlock(&s->drift_mu);
}

/* At each scrape: queue depth, in-flight requests, drift. */
static void collect(im_monitor_t *reg, void *user) {
  im_serve_t *s = user;
  im_monitor_set(s->m.queue_depth_s, s->bat ? im__serve_batcher_queued(s->bat) : 0);
  im_monitor_set(s->m.inflight_s, s->http ? im_http_server_inflight(s->http) : 0);
  serve_gen_t *g = serve_gen_acquire(s);
  im_monitor_set(s->m.ready_s, g && s->ready && !s->stopping ? 1 : 0);
  pthread_mutex_lock(&s->drift_mu);
  im_monitor_family_clear(s->m.input_mean);
  im_monitor_family_clear(s->m.input_std);
  im_monitor_family_clear(s->m.drift_score);
  for (int c = 0; c < s->drift_channels && c < 3; c++) {
    if (s->drift[c].n <= 0) continue;
    const char *ch[] = {channel_name(c, s->drift_channels)};
    im_monitor_series_t *se;
    double mean = s->drift[c].mean, sd = im_monitor_welford_std(&s->drift[c]);
    if (im_monitor_series(s->m.input_mean, ch, &se) == IM_OK) im_monitor_set(se, mean);
    if (im_monitor_series(s->m.input_std, ch, &se) == IM_OK) im_monitor_set(se, sd);
    if (g && g->n_norm > c && im_monitor_series(s->m.drift_score, ch, &se) == IM_OK)
      im_monitor_set(se, fabs(mean - g->mean[c]) / g->std[c]);
  }
  double psi = 0;
  if (g && g->ref_counts && s->served_counts && s->served_k == g->k)
    psi = im_monitor_psi(g->k, g->ref_counts, s->served_counts, 0);
  im_monitor_set(s->m.psi_s, psi);
  pthread_mutex_unlock(&s->drift_mu);
  serve_gen_unref(g);
}

static void on_req_end(const im_http_req_info_t *info, void *user) {
  im_serve_t *s = user;
  const char *route = info->route ? info->route : "unmatched";
  char code[16];
  snprintf(code, sizeof code, "%d", info->status);
  const char *lv[] = {route, info->method, code};
  im_monitor_series_t *se;
  if (im_monitor_series(s->m.requests, lv, &se) == IM_OK) im_monitor_inc(se, 1);
  const char *rv[] = {route};
  if (im_monitor_series(s->m.duration, rv, &se) == IM_OK) im_monitor_observe(se, info->duration_s);
}

static im_status_t metrics_setup(im_serve_t *s) {
  im_monitor_t *r = s->mon;
  serve_metrics_t *m = &s->m;
  static const double dur_b[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
  static const double inf_b[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  static const double batch_b[] = {1, 2, 4, 8, 16, 32, 64, 128};
  static const double conf_b[] = {0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0};
  const char *req_l[] = {"route", "method", "code"}, *route_l[] = {"route"}, *class_l[] = {"class"},
             *ch_l[] = {"channel"}, *info_l[] = {"name", "version", "run_id", "arch"};
  im_monitor_family_t *f;
  im_status_t st;
#define TRY(x) \
  if ((st = (x))) return st
  TRY(im_monitor_counter(r, "imops_http_requests_total", "HTTP requests answered, by route pattern, method and status.",
                         3, req_l, &m->requests));
  TRY(im_monitor_histogram(r, "imops_http_request_duration_seconds", "End-to-end HTTP request latency.", 1, route_l,
                           (int)(sizeof dur_b / sizeof *dur_b), dur_b, &m->duration));
  TRY(im_monitor_histogram(r, "imops_inference_duration_seconds", "Time to run one batch through the model.", 0, NULL,
                           (int)(sizeof inf_b / sizeof *inf_b), inf_b, &f));
  TRY(im_monitor_series(f, NULL, &m->inference_s));
  TRY(im_monitor_histogram(r, "imops_batch_size", "Images per batch run through the model.", 0, NULL,
                           (int)(sizeof batch_b / sizeof *batch_b), batch_b, &f));
  TRY(im_monitor_series(f, NULL, &m->batch_s));
  TRY(im_monitor_gauge(r, "imops_queue_depth", "Images waiting for a batch.", 0, NULL, &f));
  TRY(im_monitor_series(f, NULL, &m->queue_depth_s));
  TRY(im_monitor_gauge(r, "imops_inflight_requests", "HTTP requests being answered.", 0, NULL, &f));
  TRY(im_monitor_series(f, NULL, &m->inflight_s));
  TRY(im_monitor_counter(r, "imops_predictions_total", "Predictions made, by predicted class.", 1, class_l,
                         &m->predictions));
  TRY(im_monitor_histogram(r, "imops_prediction_confidence", "The predicted class's probability.", 0, NULL,
                           (int)(sizeof conf_b / sizeof *conf_b), conf_b, &f));
  TRY(im_monitor_series(f, NULL, &m->confidence_s));
  TRY(im_monitor_gauge(r, "imops_input_channel_mean", "Running mean of served images' pixel values (0..1), per channel.",
                       1, ch_l, &m->input_mean));
  TRY(im_monitor_gauge(r, "imops_input_channel_std",
                       "Running standard deviation of served images' pixel values (0..1), per channel.", 1, ch_l,
                       &m->input_std));
  TRY(im_monitor_gauge(r, "imops_train_channel_mean", "The training data's pixel mean (0..1), per channel.", 1, ch_l,
                       &m->train_mean));
  TRY(im_monitor_gauge(r, "imops_train_channel_std", "The training data's pixel standard deviation (0..1), per channel.",
                       1, ch_l, &m->train_std));
  TRY(im_monitor_gauge(r, "imops_input_drift_score",
                       "|served mean - training mean| / training std, per channel.", 1, ch_l, &m->drift_score));
  TRY(im_monitor_gauge(r, "imops_prediction_class_psi",
                       "Population stability index of the served class mix against the test split's (0 when unknown).",
                       0, NULL, &f));
  TRY(im_monitor_series(f, NULL, &m->psi_s));
  TRY(im_monitor_gauge(r, "imops_model_info", "The model being served; the value is always 1.", 4, info_l,
                       &m->model_info));
  TRY(im_monitor_gauge(r, "imops_model_ready", "1 when a model is loaded and the server takes requests.", 0, NULL, &f));
  TRY(im_monitor_series(f, NULL, &m->ready_s));
  TRY(im_monitor_counter(r, "imops_model_reloads_total", "Times the model was replaced by a reload.", 0, NULL, &f));
  TRY(im_monitor_series(f, NULL, &m->reloads_s));
  TRY(im_monitor_build_info_register(r));
  TRY(im_monitor_process_register(r));
  TRY(im_monitor_on_collect(r, collect, s));
#undef TRY
  return IM_OK;
}

/* ---- inference ---- */

/* Runs the jobs' images through worker's copy of the model in passes of up
 * to g->chunk images, and writes each image's softmax probabilities. */
static im_status_t run_batch(void *user, int worker, void *genp, im__serve_job_t *const *jobs, int nj, int ni) {
  im_serve_t *s = user;
  serve_gen_t *g = genp;
  im_nn_model_t *nn = im_train_model_nn(g->inst[worker]);
  float *xb = g->xbuf[worker];
  const int cap = g->chunk, k = g->k;
  const double t_batch = im_time_now();
  int j = 0, i = 0;
  while (j < nj) {
    const int j0 = j, i0 = i;
    int n = 0;
    while (n < cap && j < nj) {
      memcpy(xb + (size_t)n * g->chw, jobs[j]->x + (size_t)i * g->chw, g->chw * sizeof(float));
      n++;
      if (++i >= jobs[j]->n) j++, i = 0;
    }
    im_tensor_t xt, logits;
    int64_t shape[4] = {n, g->c, g->h, g->w};
    im_status_t st = im_tensor_view(&xt, IM_F32, 4, shape, xb);
    if (st == IM_OK) st = im_nn_forward(nn, &xt, 0, &logits);
    if (st) return st;
    const float *z = im_tensor_f32(&logits);
    int jj = j0, ii = i0;
    for (int r = 0; r < n; r++) {
      const float *zr = z + (size_t)r * (size_t)k;
      float *p = jobs[jj]->probs + (size_t)ii * (size_t)k;
      double mx = zr[0], sum = 0;
      for (int c = 1; c < k; c++) mx = zr[c] > mx ? zr[c] : mx;
      for (int c = 0; c < k; c++) sum += exp((double)zr[c] - mx);
      for (int c = 0; c < k; c++) p[c] = (float)(exp((double)zr[c] - mx) / sum);
      if (++ii >= jobs[jj]->n) jj++, ii = 0;
    }
  }
  im_monitor_observe(s->m.inference_s, im_time_now() - t_batch);
  im_monitor_observe(s->m.batch_s, ni);
  return IM_OK;
}

/* Eight independent partial sums: one running sum made every addition wait for
 * the one before (the three planes of a 112x112 image took 29 us in cache);
 * these pipeline and vectorise, 4 doubles wide where the CPU has AVX2 (a
 * clone chosen at load time, as the image module's loops): 8 us. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#endif
void im__serve_plane_sums(const float *p, size_t n, double sd, double mean, double *sum, double *sq) {
  enum { L = 8 };
  double s[L] = {0}, q[L] = {0};
  size_t i = 0;
  for (; i + L <= n; i += L)
    for (int k = 0; k < L; k++) {
      double v = (double)p[i + (size_t)k] * sd + mean;
      s[k] += v;
      q[k] += v * v;
    }
  for (; i < n; i++) {
    double v = (double)p[i] * sd + mean;
    s[0] += v;
    q[0] += v * v;
  }
  double ts = 0, tq = 0;
  for (int k = 0; k < L; k++) ts += s[k], tq += q[k];
  *sum = ts;
  *sq = tq;
}

/* Served images' pixel statistics (from the normalized inputs) for drift, per
 * channel, into add[0..2]. */
static void input_stats(const serve_gen_t *g, const float *x, int n, im_monitor_welford_t add[3]) {
  const size_t plane = (size_t)g->h * (size_t)g->w;
  const int nc = g->c < 3 ? g->c : 3;
  for (int i = 0; i < n; i++)
    for (int c = 0; c < nc; c++) {
      double sum, sq;
      im__serve_plane_sums(x + (size_t)i * g->chw + (size_t)c * plane, plane, g->std[c], g->mean[c], &sum, &sq);
      im_monitor_welford_t w = im_monitor_welford_from_sums((double)plane, sum, sq);
      im_monitor_welford_merge(&add[c], &w);
    }
}

int serve_infer(im_serve_t *s, serve_gen_t *g, const float *x, int n, float *probs, char *err, size_t errn) {
  /* The inputs' statistics are taken now, while the handler has just written
   * them and they are still in its core's cache; after the batch they had to
   * come back from memory (most of this step's cost). They count only if the
   * inference succeeds, as before. */
  im_monitor_welford_t add[3] = {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}};
  input_stats(g, x, n, add);
  im__serve_job_t job = {.x = x, .probs = probs, .n = n, .gen = g};
  im_status_t st = im__serve_batcher_submit(s->bat, &job, s->o.timeout_ms / 1000.0);
  if (st) {
    snprintf(err, errn, "%s", im_last_error());
    return 503;
  }
  if (job.st) {
    snprintf(err, errn, "inference failed: %s", job.err);
    return 500;
  }
  pthread_mutex_lock(&s->drift_mu);
  if (s->drift_channels == g->c)
    for (int c = 0; c < g->c && c < 3; c++) im_monitor_welford_merge(&s->drift[c], &add[c]);
  for (int i = 0; i < n; i++) {
    const float *p = probs + (size_t)i * (size_t)g->k;
    int best = 0;
    for (int c = 1; c < g->k; c++)
      if (p[c] > p[best]) best = c;
    im_monitor_inc(g->pred_series[best], 1);
    im_monitor_observe(s->m.confidence_s, p[best]);
    if (s->served_counts && s->served_k == g->k) s->served_counts[best] += 1;
  }
  pthread_mutex_unlock(&s->drift_mu);
  return 200;
}

/* ---- reloads ---- */

im_status_t im_serve_reload(im_serve_t *s, int force, int *reloaded) {
  if (reloaded) *reloaded = 0;
  pthread_mutex_lock(&s->reload_mu);
  im_status_t st = IM_OK;
  if (!force) {
    if (!is_registry_uri(s->o.model_uri)) goto out; /* nothing can move */
    im_track_store_t *store = NULL;
    im_track_uri_t *u = NULL;
    char *key = NULL;
    if ((st = store_open(s, &store)) == IM_OK) st = resolve(s, store, &u, &key);
    im_track_uri_free(u);
    im_track_close(store);
    serve_gen_t *cur = serve_gen_acquire(s);
    int same = st == IM_OK && cur && cur->key && !strcmp(cur->key, key);
    serve_gen_unref(cur);
    im_free(key);
    if (st || same) goto out;
  }
  serve_gen_t *g = NULL;
  if ((st = gen_load(s, &g))) goto out;
  pthread_mutex_lock(&s->gen_mu);
  serve_gen_t *old = s->cur;
  s->cur = g;
  pthread_mutex_unlock(&s->gen_mu);
  publish_gen(s, g);
  serve_gen_unref(old); /* freed here, or by the last request or batch that still holds it */
  im_monitor_inc(s->m.reloads_s, 1);
  if (reloaded) *reloaded = 1;
  im_log(IM_LOG_INFO, "serve: now serving %s version %s", g->name, g->version[0] ? g->version : "-");
out:
  pthread_mutex_unlock(&s->reload_mu);
  return st;
}

static void *watch_main(void *arg) {
  im_serve_t *s = arg;
  pthread_mutex_lock(&s->watch_mu);
  while (!s->watch_stop) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double iv = s->o.watch_interval_s;
    ts.tv_sec += (time_t)iv;
    ts.tv_nsec += (long)((iv - floor(iv)) * 1e9);
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&s->watch_cv, &s->watch_mu, &ts);
    if (s->watch_stop) break;
    pthread_mutex_unlock(&s->watch_mu);
    int changed = 0;
    if (im_serve_reload(s, 0, &changed) != IM_OK)
      im_log(IM_LOG_WARN, "serve: watching %s: %s", s->o.model_uri, im_last_error());
    pthread_mutex_lock(&s->watch_mu);
  }
  pthread_mutex_unlock(&s->watch_mu);
  return NULL;
}

void im_serve_model_info(im_serve_t *s, char *name, char *version, char *run_id, size_t n) {
  serve_gen_t *g = serve_gen_acquire(s);
  if (name) snprintf(name, n, "%s", g ? g->name : "");
  if (version) snprintf(version, n, "%s", g ? g->version : "");
  if (run_id) snprintf(run_id, n, "%s", g ? g->run_id : "");
  serve_gen_unref(g);
}

/* ---- lifecycle ---- */

im_status_t im_serve_new(const im_serve_opts_t *opts, im_serve_t **out) {
  *out = NULL;
  if (!opts || !opts->model_uri || !*opts->model_uri) return im_error(IM_ERR_ARG, "no model given");
  im_serve_t *s = im_calloc(1, sizeof *s);
  if (!s) return im_error(IM_ERR_NOMEM, "out of memory");
  s->o = *opts;
  im_serve_opts_t d = im_serve_defaults();
  if (s->o.max_batch_size <= 0) s->o.max_batch_size = d.max_batch_size;
  if (s->o.max_latency_ms <= 0) s->o.max_latency_ms = d.max_latency_ms;
  if (s->o.workers <= 0) s->o.workers = 1;
  if (s->o.watch_interval_s <= 0) s->o.watch_interval_s = d.watch_interval_s;
  if (!s->o.max_body_bytes) s->o.max_body_bytes = (size_t)64 << 20;
  if (s->o.max_pixels <= 0) s->o.max_pixels = 40LL * 1000 * 1000;
  if (s->o.max_images <= 0) s->o.max_images = 256;
  if (s->o.timeout_ms <= 0) s->o.timeout_ms = 30000;
  s->max_batch = s->o.batching ? s->o.max_batch_size : 1;
  pthread_mutex_init(&s->gen_mu, NULL);
  pthread_mutex_init(&s->reload_mu, NULL);
  pthread_mutex_init(&s->drift_mu, NULL);
  pthread_mutex_init(&s->watch_mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->watch_cv, &ca);
  pthread_condattr_destroy(&ca);
  /* the option strings are the caller's; keep copies */
  const char **strs[] = {&s->o.model_uri, &s->o.name, &s->o.device, &s->o.tracking_home, &s->o.host};
  for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) {
    if (!*strs[i]) continue;
    char *c = im_strdup(*strs[i]);
    s->owned[i] = c;
    *strs[i] = c; /* NULL on failure: caught below for the URI; the others fall back to defaults */
  }
  im_status_t st = IM_OK;
  for (size_t i = 0; i < sizeof strs / sizeof *strs; i++)
    if (!*strs[i] && i == 0) st = im_error(IM_ERR_NOMEM, "out of memory");
  if (st == IM_OK) st = im_monitor_new(&s->mon);
  if (st == IM_OK) st = metrics_setup(s);
  serve_gen_t *g = NULL;
  if (st == IM_OK) st = gen_load(s, &g);
  if (st) {
    im_serve_free(s);
    return st;
  }
  s->cur = g;
  publish_gen(s, g);
  im_http_server_opts_t ho = {.host = s->o.host,
                              .port = s->o.port,
                              .thread_per_connection = 1, /* handlers wait for their batch */
                              .max_connections = s->o.max_connections,
                              .max_body_bytes = s->o.max_body_bytes,
                              .fallback = serve_not_found,
                              .error_style = 1,
                              .fallback_user = s,
                              .on_end = on_req_end,
                              .hook_user = s};
  if ((st = im_http_server_new(&ho, &s->http)) || (st = serve_routes(s))) {
    im_serve_free(s);
    return st;
  }
  *out = s;
  return IM_OK;
}

im_status_t im_serve_start(im_serve_t *s) {
  im__serve_batcher_opts_t bo = {.workers = s->o.workers,
                                 .max_batch = s->max_batch,
                                 .max_latency_s = s->o.max_latency_ms / 1000.0,
                                 .run = run_batch,
                                 .user = s};
  im_status_t st = im__serve_batcher_new(&bo, &s->bat);
  if (st) return st;
  if ((st = im_http_server_start(s->http))) return st;
  if (s->o.watch) {
    if (pthread_create(&s->watch_thread, NULL, watch_main, s) != 0)
      return im_error(IM_ERR_INTERNAL, "cannot start the registry watcher");
    s->watching = 1;
  }
  s->ready = 1;
  return IM_OK;
}

int im_serve_port(const im_serve_t *s) { return s ? im_http_server_port(s->http) : 0; }

im_status_t im_serve_stop(im_serve_t *s, double drain_timeout_s) {
  if (!s) return IM_OK;
  s->stopping = 1;
  im_status_t st = im_http_server_stop(s->http, drain_timeout_s);
  if (s->watching) {
    pthread_mutex_lock(&s->watch_mu);
    s->watch_stop = 1;
    pthread_cond_broadcast(&s->watch_cv);
    pthread_mutex_unlock(&s->watch_mu);
    pthread_join(s->watch_thread, NULL);
    s->watching = 0;
  }
  im__serve_batcher_stop(s->bat);
  return st;
}

void im_serve_free(im_serve_t *s) {
  if (!s) return;
  (void)im_serve_stop(s, 0);
  im_http_server_free(s->http);
  im__serve_batcher_free(s->bat);
  serve_gen_unref(s->cur);
  im_monitor_free(s->mon);
  im_free(s->served_counts);
  for (size_t i = 0; i < sizeof s->owned / sizeof *s->owned; i++) im_free(s->owned[i]);
  pthread_mutex_destroy(&s->gen_mu);
  pthread_mutex_destroy(&s->reload_mu);
  pthread_mutex_destroy(&s->drift_mu);
  pthread_mutex_destroy(&s->watch_mu);
  pthread_cond_destroy(&s->watch_cv);
  im_free(s);
}
