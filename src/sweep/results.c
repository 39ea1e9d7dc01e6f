/* A sweep's results from the store: trials with their points and values, the
 * best trial, parameter importance; and the closing step that saves the
 * plots and a summary as artifacts of the sweep's parent run. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imops/track_sweep.h"
#include "sweep/sweep_impl.h"

void im_sweep_summary_free(im_sweep_summary_t *r) {
  if (!r) return;
  for (int64_t i = 0; i < r->n; i++) {
    if (r->states) im_free(r->states[i]);
    if (r->params) im_free(r->params[i]);
    if (r->run_ids) im_free(r->run_ids[i]);
  }
  im_free(r->steps);
  im_free(r->numbers), im_free(r->states), im_free(r->params), im_free(r->run_ids), im_free(r->values), im_free(r->xs);
  im_sweep_importance_free(r->importance, r->n_importance);
  im_sweep_info_free(r->info);
  im_free(r);
}

static int better(const im_sweep_config_t *c, double a, double b) {
  if (!isfinite(a)) return 0;
  if (!isfinite(b)) return 1;
  return c->maximize ? a > b : a < b;
}

im_status_t im_sweep_summary(im_track_store_t *s, const char *sweep_id, im_sweep_summary_t **out) {
  im_sweep_state_t w = im__sweep_state_of(s);
  return im_sweep_state_summary(&w, sweep_id, out);
}

im_status_t im_sweep_state_summary(im_sweep_state_t *s, const char *sweep_id, im_sweep_summary_t **out) {
  *out = NULL;
  im_sweep_summary_t *r = im_calloc(1, sizeof *r);
  if (!r) return im_error(IM_ERR_NOMEM, "out of memory");
  im_track_sweep_trial_t *tr = NULL;
  int64_t n = 0;
  im_status_t st = im_sweep_state_info(s, sweep_id, &r->info);
  if (st == IM_OK) st = im_sweep_state_trials(s, sweep_id, &tr, &n);
  if (st) {
    im_sweep_summary_free(r);
    return st;
  }
  const im_sweep_config_t *c = r->info->config;
  size_t d = c->n_params ? c->n_params : 1;
  r->n = n;
  r->best = -1;
  r->numbers = im_calloc((size_t)n + 1, sizeof *r->numbers);
  r->states = im_calloc((size_t)n + 1, sizeof *r->states);
  r->params = im_calloc((size_t)n + 1, sizeof *r->params);
  r->run_ids = im_calloc((size_t)n + 1, sizeof *r->run_ids);
  r->values = im_calloc((size_t)n + 1, sizeof *r->values);
  r->steps = im_calloc((size_t)n + 1, sizeof *r->steps);
  r->xs = im_calloc(((size_t)n + 1) * d, sizeof *r->xs);
  const double **px = im_calloc((size_t)n + 1, sizeof *px);
  double *py = im_calloc((size_t)n + 1, sizeof *py);
  if (!r->numbers || !r->states || !r->params || !r->run_ids || !r->values || !r->steps || !r->xs || !px || !py)
    st = im_error(IM_ERR_NOMEM, "out of memory");
  im_track_sweep_step_t *steps = NULL;
  int64_t nsteps = 0;
  if (st == IM_OK) st = im__sweep_st_steps(s, sweep_id, &steps, &nsteps);
  for (int64_t i = 0, k = 0; st == IM_OK && i < n; i++) { /* both ordered by trial */
    while (k < nsteps && steps[k].trial < tr[i].trial) k++;
    while (k < nsteps && steps[k].trial == tr[i].trial) r->steps[i]++, k++;
  }
  im_free(steps);
  size_t m = 0;
  for (int64_t i = 0; st == IM_OK && i < n; i++) {
    r->numbers[i] = tr[i].trial;
    r->states[i] = tr[i].state, tr[i].state = NULL;
    r->params[i] = tr[i].params, tr[i].params = NULL;
    r->run_ids[i] = tr[i].run_id, tr[i].run_id = NULL;
    r->values[i] = tr[i].objective;
    double *x = r->xs + (size_t)i * d;
    int ok = im_sweep_point_parse(c, r->params[i], x) == IM_OK;
    if (!ok)
      for (size_t j = 0; j < d; j++) x[j] = NAN;
    const char *state = r->states[i];
    if (!strcmp(state, "FINISHED")) r->n_finished++;
    else if (!strcmp(state, "PRUNED")) r->n_pruned++;
    else if (!strcmp(state, "FAILED") || !strcmp(state, "KILLED")) r->n_failed++;
    else r->n_running++;
    int scored = !strcmp(state, "FINISHED") || !strcmp(state, "PRUNED");
    if (scored && ok && isfinite(r->values[i])) {
      px[m] = x, py[m++] = r->values[i];
      /* a pruned trial only wins when no finished one has a value */
      if (r->best < 0 || (!strcmp(state, "FINISHED") && strcmp(r->states[r->best], "FINISHED")) ||
          (!strcmp(state, r->states[r->best]) && better(c, r->values[i], r->values[r->best])))
        r->best = i;
    }
  }
  if (st == IM_OK && m > 1) st = im_sweep_importance(c, px, py, m, &r->importance, &r->n_importance);
  im_free(px), im_free(py);
  im_track_sweep_trials_free(tr, n);
  if (st) {
    im_sweep_summary_free(r);
    return st;
  }
  *out = r;
  return IM_OK;
}

/* The local directory of a run's artifacts/sub, or NULL (error set). */
static char *artifact_dir(im_sweep_state_t *s, const char *run_id, const char *sub) {
  im_track_run_t *run = NULL;
  if (im__sweep_st_run_get(s, run_id, &run) != IM_OK) return NULL;
  char *uri = im_path_join(run->artifact_uri, sub), *dir = NULL;
  im_track_uri_t *u = NULL;
  if (uri && im_track_uri_parse(uri, &u) == IM_OK && u->location && u->is_local) dir = im_strdup(u->location);
  else im_error(IM_ERR_UNSUPPORTED, "the run's artifact location %s is not a local directory", run->artifact_uri);
  im_track_uri_free(u);
  im_free(uri);
  im_track_run_free(run);
  return dir;
}

/* For a server: a fresh local directory the plots are drawn in before the upload. */
static char *temp_dir(void) {
  const char *t = getenv("TMPDIR");
  char *tmpl = im_path_join(t && *t ? t : "/tmp", "imops-sweep-XXXXXX");
  if (tmpl && !mkdtemp(tmpl)) {
    im_error(IM_ERR_IO, "cannot create a temporary directory: %s", strerror(errno));
    im_free(tmpl);
    return NULL;
  }
  return tmpl;
}

/* Uploads the drawn plots to the parent run, removes the local copies and
 * replaces *dir by the plots' artifact URI. */
static im_status_t upload_plots(im_sweep_state_t *s, const char *parent, char **dir) {
  im_status_t st = im_track_client_log_artifacts(s->tc, parent, *dir, "plots");
  static const char *const files[] = {"sweep_metric.svg", "parallel_coordinates.svg"};
  for (size_t i = 0; i < 2; i++) {
    char *p = im_path_join(*dir, files[i]);
    if (p) unlink(p);
    im_free(p);
  }
  rmdir(*dir);
  im_free(*dir);
  *dir = NULL;
  im_track_run_t *run = NULL;
  if (st == IM_OK && (st = im__sweep_st_run_get(s, parent, &run)) == IM_OK &&
      !(*dir = im_path_join(run->artifact_uri, "plots")))
    st = im_error(IM_ERR_NOMEM, "out of memory");
  im_track_run_free(run);
  return st;
}

im_status_t im_sweep_finalize(im_track_store_t *s, const char *sweep_id, char **plots_dir) {
  im_sweep_state_t w = im__sweep_state_of(s);
  return im_sweep_state_finalize(&w, sweep_id, plots_dir);
}

im_status_t im_sweep_state_finalize(im_sweep_state_t *s, const char *sweep_id, char **plots_dir) {
  if (plots_dir) *plots_dir = NULL;
  im_sweep_summary_t *r = NULL;
  im_status_t st = im_sweep_state_summary(s, sweep_id, &r);
  if (st) return st;
  const im_sweep_config_t *c = r->info->config;
  const char *parent = r->info->parent_run_id;
  size_t d = c->n_params ? c->n_params : 1;
  char *dir = !parent ? NULL : s->tc ? temp_dir() : artifact_dir(s, parent, "plots");
  if (!dir) st = parent ? IM_ERR_UNSUPPORTED : im_error(IM_ERR_STATE, "sweep %s has no parent run", sweep_id);
  if (st == IM_OK) st = im_mkdir_p(dir);
  /* the plots: trials with a value, in trial order */
  int64_t *nums = im_calloc((size_t)r->n + 1, sizeof *nums);
  double *ys = im_calloc((size_t)r->n + 1, sizeof *ys);
  const double **xs = im_calloc((size_t)r->n + 1, sizeof *xs);
  size_t m = 0;
  for (int64_t i = 0; nums && ys && xs && i < r->n; i++)
    if (isfinite(r->values[i]) && !isnan(r->xs[(size_t)i * d])) {
      nums[m] = r->numbers[i], ys[m] = r->values[i], xs[m++] = r->xs + (size_t)i * d;
    }
  if (st == IM_OK && (!nums || !ys || !xs)) st = im_error(IM_ERR_NOMEM, "out of memory");
  char *p1 = dir ? im_path_join(dir, "sweep_metric.svg") : NULL, *p2 = dir ? im_path_join(dir, "parallel_coordinates.svg") : NULL;
  if (st == IM_OK) st = im_sweep_plot_metric(p1, c, nums, ys, m);
  if (st == IM_OK) st = im_sweep_plot_parallel(p2, c, xs, ys, m);
  im_free(p1), im_free(p2), im_free(nums), im_free(ys), im_free(xs);
  if (st == IM_OK && s->tc) st = upload_plots(s, parent, &dir);
  if (st == IM_OK && r->best >= 0) {
    char key[300], val[64];
    snprintf(key, sizeof key, "best_%s", c->metric_name ? c->metric_name : "metric");
    st = im__sweep_st_log_metric(s, parent, key, r->values[r->best], r->numbers[r->best]);
    snprintf(val, sizeof val, "%lld", (long long)r->numbers[r->best]);
    if (st == IM_OK) st = im__sweep_st_set_tag(s, parent, "imops.sweep_best_trial", val);
    if (st == IM_OK && r->run_ids[r->best]) st = im__sweep_st_set_tag(s, parent, "imops.sweep_best_run", r->run_ids[r->best]);
    if (st == IM_OK) st = im__sweep_st_set_tag(s, parent, "imops.sweep_best_params", r->params[r->best]);
  }
  /* done? nothing running and no more trials to come */
  if (st == IM_OK && r->n_running == 0) {
    int64_t grid = -1;
    if (c->method == IM_SWEEP_GRID && im_sweep_grid_count(c, &grid) != IM_OK) grid = -1;
    int over = (r->info->max_trials > 0 && r->n >= r->info->max_trials) || (grid >= 0 && r->n >= grid) ||
               !strcmp(r->info->state, "FINISHED");
    if (over) {
      st = im__sweep_st_set_state(s, sweep_id, "FINISHED");
      if (st == IM_OK) st = im__sweep_st_run_finish(s, parent);
    }
  }
  if (st == IM_OK && plots_dir) *plots_dir = dir, dir = NULL;
  im_free(dir);
  im_sweep_summary_free(r);
  return st;
}
