/* imops experiments | runs | models: the tracking store and the model
 * registry from the shell: the workspace store ($IMOPS_HOME, default
 * ./imops-workspace), or a tracking server (imops server, mlflow server)
 * through MLflow's REST API with --tracking-uri http(s)://... or
 * MLFLOW_TRACKING_URI. Every operation yields MLflow's JSON answer (the
 * workspace's entities in the same shapes), printed as it is with --json and
 * as a table otherwise, so both paths print alike. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "imops/core.h"
#include "imops/track.h"
#include "imops/track_json.h"

static int print_json(json_t *j) {
  char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
  json_decref(j);
  if (!s) return cli_fail("json", IM_ERR_NOMEM, "out of memory");
  puts(s);
  free(s);
  return CLI_OK;
}

/* ---- the store: embedded (s set) or a tracking server (REST through c) ---------------------------- */
typedef struct {
  im_track_client_t *c;
  im_track_store_t *s; /* NULL for a tracking server */
} trk_t;

static int trk_fail(const char *cmd, const trk_t *t, im_status_t st, const char *what) {
  (void)t;
  const char *msg = im_last_error(); /* the store's message too (it sets both) */
  fprintf(stderr, "imops %s: %s: %s\n", cmd, what, msg && *msg ? msg : im_strerror(st));
  return CLI_FAIL;
}

static int trk_open(const char *cmd, const char *uri, trk_t *t) {
  memset(t, 0, sizeof *t);
  im_status_t st = im_track_client_open(uri, &t->c);
  if (st) return trk_fail(cmd, NULL, st, "cannot open the tracking store");
  t->s = im_track_client_store(t->c);
  return 0;
}

static void trk_close(trk_t *t) { im_track_client_close(t->c); }

/* A tracking server's endpoint ("experiments/search"); req stolen. */
static im_status_t rcall(trk_t *t, const char *method, const char *endpoint, json_t *req, json_t **out) {
  char path[128];
  snprintf(path, sizeof path, "mlflow/%s", endpoint);
  return im_track_client_call(t->c, method, path, req, out);
}

static json_t *oom_json(void) {
  im_error(IM_ERR_NOMEM, "out of memory");
  return NULL;
}

/* {"key": a} (a stolen; NULL when out of memory). */
static json_t *keyed(const char *key, json_t *a) { return a ? json_pack("{s:o}", key, a) : NULL; }

/* The search fields of a request: filter, order_by, max_results (when given). */
static json_t *search_req(json_t *req, const char *filter, const char *const *order_by, int n_order_by, int64_t max) {
  if (!req) return NULL;
  if (filter) json_object_set_new(req, "filter", json_string(filter));
  if (n_order_by) {
    json_t *a = json_array();
    for (int i = 0; a && i < n_order_by; i++) json_array_append_new(a, json_string(order_by[i]));
    json_object_set_new(req, "order_by", a);
  }
  if (max) json_object_set_new(req, "max_results", json_integer(max));
  return req;
}

/* An answer's list under key, present even when the server left it out (empty). */
static json_t *with_list(json_t *ans, const char *key) {
  if (ans && !json_is_array(json_object_get(ans, key))) json_object_set_new(ans, key, json_array());
  return ans;
}

/* Common options: --json, --all (deleted too), --filter, --order-by (repeatable), --max, --tracking-uri. */
typedef struct {
  int json, all;
  const char *filter, *experiment, *artifact_location, *tracking_uri;
  const char *order_by[8];
  int n_order_by;
  int64_t max;
  int archive_existing, delete_flag;
  char **pos;
  int npos;
} opts_t;

static int parse_opts(const char *cmd, int argc, char **argv, opts_t *o, const char *usage) {
  static const struct option longopts[] = {
      {"json", no_argument, 0, 'j'},           {"all", no_argument, 0, 'a'},
      {"filter", required_argument, 0, 'f'},   {"order-by", required_argument, 0, 'o'},
      {"max", required_argument, 0, 'm'},      {"experiment", required_argument, 0, 'e'},
      {"archive-existing", no_argument, 0, 'A'}, {"delete", no_argument, 0, 'd'},
      {"artifact-location", required_argument, 0, 'L'},
      {"tracking-uri", required_argument, 0, 'T'},
      {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
  memset(o, 0, sizeof *o);
  optind = 1;
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (ch) {
      case 'j': o->json = 1; break;
      case 'a': o->all = 1; break;
      case 'f': o->filter = optarg; break;
      case 'e': o->experiment = optarg; break;
      case 'L': o->artifact_location = optarg; break;
      case 'T': o->tracking_uri = optarg; break;
      case 'A': o->archive_existing = 1; break;
      case 'd': o->delete_flag = 1; break;
      case 'o':
        if (o->n_order_by == 8) return cli_usage_error(cmd, "at most 8 --order-by keys");
        o->order_by[o->n_order_by++] = optarg;
        break;
      case 'm':
        if (cli_parse_i64(cmd, "--max", optarg, 1, 50000, &o->max)) return CLI_USAGE;
        break;
      case 'h': fputs(usage, stdout); return -1;
      case ':': return cli_usage_error(cmd, "%s needs a value", argv[optind - 1]);
      default: return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
    }
  }
  o->pos = argv + optind;
  o->npos = argc - optind;
  return 0;
}

#define TRACKING_USAGE                                                                                        \
  "\n"                                                                                                        \
  "--tracking-uri URI: a workspace directory, or a tracking server (http(s)://host:port: imops\n"             \
  "server or mlflow server, spoken to with MLflow's REST API); default MLFLOW_TRACKING_URI when\n"            \
  "it is http(s)://, else $IMOPS_HOME (./imops-workspace).\n"

/* JSON field helpers for the tables. */
static const char *js(const json_t *o, const char *k) {
  const char *s = json_string_value(json_object_get(o, k));
  return s ? s : "";
}

static int64_t jtime(const json_t *o, const char *k) {
  const json_t *v = json_object_get(o, k);
  if (json_is_integer(v)) return json_integer_value(v);
  if (json_is_string(v)) return strtoll(json_string_value(v), NULL, 10);
  return IM_TRACK_NO_TIME;
}

/* ---- experiments --------------------------------------------------------------- */
static const char exp_usage[] =
    "usage: imops experiments list [--all] [--filter F] [--order-by K] [--max N] [--json]\n"
    "       imops experiments show NAME_OR_ID [--json]\n"
    "       imops experiments create NAME [--artifact-location URI] [--json]\n"
    "       imops experiments delete NAME_OR_ID\n"
    "       (each also takes --tracking-uri URI)\n"
    "\n"
    "Experiments group runs (MLflow's experiments; \"Default\" has id 0). --filter takes\n"
    "MLflow's syntax, e.g. \"name LIKE 'surface%'\". --all lists deleted ones too.\n"
    "--artifact-location: where the experiment's runs keep artifacts (a directory, file://...,\n"
    "or s3://bucket/prefix with MLFLOW_S3_ENDPOINT_URL and AWS_* credentials; default: the workspace).\n"
    TRACKING_USAGE;

/* The experiment named or numbered key, as MLflow's Experiment object. */
static im_status_t exp_find(trk_t *t, const char *key, json_t **out) {
  *out = NULL;
  if (t->s) {
    im_track_experiment_t *e = NULL;
    im_status_t st = im_track_experiment_get_by_name(t->s, key, &e);
    if (st) st = im_track_experiment_get(t->s, key, &e);
    if (st) return im_error(IM_ERR_NOT_FOUND, "no experiment named or numbered '%s'", key);
    *out = im_track_experiment_json(e);
    im_track_experiment_free(e);
    return *out ? IM_OK : im_error(IM_ERR_NOMEM, "out of memory");
  }
  json_t *ans = NULL;
  im_status_t st = rcall(t, "GET", "experiments/get-by-name", json_pack("{s:s}", "experiment_name", key), &ans);
  if (st == IM_ERR_NOT_FOUND) st = rcall(t, "GET", "experiments/get", json_pack("{s:s}", "experiment_id", key), &ans);
  if (st == IM_ERR_NOT_FOUND || st == IM_ERR_ARG)
    return im_error(IM_ERR_NOT_FOUND, "no experiment named or numbered '%s'", key);
  if (st) return st;
  *out = json_incref(json_object_get(ans, "experiment"));
  json_decref(ans);
  return *out ? IM_OK : im_error(IM_ERR_FORMAT, "the server's answer has no \"experiment\"");
}

static im_status_t exp_list(trk_t *t, const opts_t *o, json_t **out) {
  if (t->s) {
    im_track_search_t q = {.filter = o->filter, .order_by = o->order_by, .n_order_by = o->n_order_by, .max_results = o->max};
    im_track_experiment_list_t *l = NULL;
    im_status_t st = im_track_experiment_search(t->s, o->all ? IM_TRACK_ALL : IM_TRACK_ACTIVE_ONLY, &q, &l);
    json_t *a = st ? NULL : json_array();
    for (int64_t i = 0; a && i < l->n; i++) json_array_append_new(a, im_track_experiment_json(&l->items[i]));
    if (!st && !(*out = keyed("experiments", a))) st = im_error(IM_ERR_NOMEM, "out of memory");
    im_track_experiment_list_free(l);
    return st;
  }
  json_t *req = json_pack("{s:s}", "view_type", o->all ? "ALL" : "ACTIVE_ONLY");
  int64_t max = o->max ? o->max : 1000; /* mlflow server needs it; the store's default */
  im_status_t st = rcall(t, "POST", "experiments/search", search_req(req, o->filter, o->order_by, o->n_order_by, max), out);
  with_list(*out, "experiments");
  return st;
}

int cli_experiments(int argc, char **argv) {
  const char *cmd = "experiments";
  if (argc < 2) {
    fputs(exp_usage, stderr);
    return CLI_USAGE;
  }
  const char *sub = argv[1];
  if (!strcmp(sub, "--help") || !strcmp(sub, "-h")) {
    fputs(exp_usage, stdout);
    return CLI_OK;
  }
  opts_t o;
  int rc = parse_opts(cmd, argc - 1, argv + 1, &o, exp_usage);
  if (rc) return rc < 0 ? CLI_OK : rc;
  int is_list = !strcmp(sub, "list"), is_show = !strcmp(sub, "show"), is_create = !strcmp(sub, "create");
  if (!is_list && !is_show && !is_create && strcmp(sub, "delete"))
    return cli_usage_error(cmd, "unknown subcommand '%s' (list, show, create, delete)", sub);
  if (is_list && o.npos) return cli_usage_error(cmd, "list takes no arguments");
  if (!is_list && o.npos != 1) return cli_usage_error(cmd, "%s takes one NAME", sub);
  trk_t t;
  if (trk_open(cmd, o.tracking_uri, &t)) return CLI_FAIL;
  im_status_t st;
  json_t *j = NULL;
  rc = CLI_OK;
  if (is_list) {
    if ((st = exp_list(&t, &o, &j))) {
      rc = trk_fail(cmd, &t, st, "cannot list experiments");
    } else if (o.json) {
      rc = print_json(json_incref(j));
    } else {
      const char *h[] = {"id", "name", "lifecycle", "created", "artifact location"};
      cli_table_t *tb = cli_table_new(5, h);
      const json_t *l = json_object_get(j, "experiments");
      for (size_t i = 0; tb && i < json_array_size(l); i++) {
        char tm[32];
        const json_t *e = json_array_get(l, i);
        const char *row[] = {js(e, "experiment_id"), js(e, "name"), js(e, "lifecycle_stage"),
                             cli_fmt_time(jtime(e, "creation_time"), tm, sizeof tm), js(e, "artifact_location")};
        cli_table_row(tb, row);
      }
      cli_table_print(tb, 60);
      cli_table_free(tb);
    }
  } else if (is_show) {
    if ((st = exp_find(&t, o.pos[0], &j))) {
      rc = trk_fail(cmd, &t, st, "cannot show the experiment");
    } else if (o.json) {
      rc = print_json(json_pack("{s:O}", "experiment", j));
    } else {
      char tm[32];
      printf("experiment %s (id %s)\n  lifecycle:  %s\n  created:    %s\n  artifacts:  %s\n", js(j, "name"),
             js(j, "experiment_id"), js(j, "lifecycle_stage"), cli_fmt_time(jtime(j, "creation_time"), tm, sizeof tm),
             js(j, "artifact_location"));
      const json_t *tags = json_object_get(j, "tags");
      if (json_array_size(tags)) printf("tags:\n");
      for (size_t i = 0; i < json_array_size(tags); i++)
        printf("  %s = %s\n", js(json_array_get(tags, i), "key"), js(json_array_get(tags, i), "value"));
    }
  } else if (is_create) {
    char *id = NULL;
    if (t.s) {
      st = im_track_experiment_create(t.s, o.pos[0], o.artifact_location, NULL, 0, &id);
    } else {
      json_t *req = json_pack("{s:s}", "name", o.pos[0]);
      if (req && o.artifact_location) json_object_set_new(req, "artifact_location", json_string(o.artifact_location));
      if (!(st = rcall(&t, "POST", "experiments/create", req, &j))) {
        const char *v = json_string_value(json_object_get(j, "experiment_id"));
        if (!v) st = im_error(IM_ERR_FORMAT, "the server's answer has no experiment_id");
        else if (!(id = im_strdup(v))) st = im_error(IM_ERR_NOMEM, "out of memory");
      }
    }
    if (st)
      rc = trk_fail(cmd, &t, st, "cannot create the experiment");
    else if (o.json)
      rc = print_json(json_pack("{s:s}", "experiment_id", id));
    else
      printf("created experiment '%s' with id %s\n", o.pos[0], id);
    im_free(id);
  } else {
    if ((st = exp_find(&t, o.pos[0], &j))) {
      rc = trk_fail(cmd, &t, st, "no such experiment");
    } else {
      const char *id = js(j, "experiment_id");
      st = t.s ? im_track_experiment_delete(t.s, id)
               : rcall(&t, "POST", "experiments/delete", json_pack("{s:s}", "experiment_id", id), NULL);
      if (st) rc = trk_fail(cmd, &t, st, "cannot delete the experiment");
      else printf("deleted experiment '%s' (id %s) and its runs\n", js(j, "name"), id);
    }
  }
  json_decref(j);
  trk_close(&t);
  return rc;
}

/* ---- runs ------------------------------------------------------------------------- */
static const char runs_usage[] =
    "usage: imops runs list [--experiment NAME_OR_ID] [--filter F] [--order-by K] [--max N] [--all] [--json]\n"
    "       imops runs show RUN_ID [--json]\n"
    "       imops runs compare RUN_ID RUN_ID... [--json]\n"
    "       imops runs delete RUN_ID\n"
    "       (each also takes --tracking-uri URI)\n"
    "\n"
    "Filters and ordering use MLflow's search syntax, e.g.\n"
    "  imops runs list --filter \"metrics.val_accuracy > 0.9 and params.optimizer = 'adam'\" \\\n"
    "                  --order-by \"metrics.val_accuracy DESC\"\n"
    TRACKING_USAGE;

/* A run's key/value list entry ("metrics", "params") by key, or NULL. */
static const json_t *run_entry(const json_t *run, const char *list, const char *key) {
  const json_t *a = json_object_get(json_object_get(run, "data"), list);
  for (size_t i = 0; i < json_array_size(a); i++)
    if (!strcmp(js(json_array_get(a, i), "key"), key)) return json_array_get(a, i);
  return NULL;
}

static const char *metric_fmt(const json_t *m, char *buf, size_t n) {
  const json_t *v = json_object_get(m, "value");
  if (json_is_number(v)) snprintf(buf, n, "%.6g", json_number_value(v));
  else snprintf(buf, n, "%s", json_is_string(v) ? json_string_value(v) : ""); /* "NaN", "Infinity" */
  return buf;
}

static const char *metric_str(const json_t *run, const char *key, char *buf, size_t n) {
  const json_t *m = run_entry(run, "metrics", key);
  return m ? metric_fmt(m, buf, n) : "";
}

static const char *param_str(const json_t *run, const char *key) {
  const json_t *p = run_entry(run, "params", key);
  return p ? js(p, "value") : "";
}

/* The distinct keys of a list ("metrics", "params") of the runs, in first-seen order (at most max). */
static int run_keys(const json_t *runs, const char *list, const char **keys, int max) {
  int nk = 0;
  for (size_t i = 0; i < json_array_size(runs); i++) {
    const json_t *a = json_object_get(json_object_get(json_array_get(runs, i), "data"), list);
    for (size_t m = 0; m < json_array_size(a) && nk < max; m++) {
      const char *k = js(json_array_get(a, m), "key");
      int seen = 0;
      for (int q = 0; q < nk && !seen; q++) seen = !strcmp(keys[q], k);
      if (!seen) keys[nk++] = k;
    }
  }
  return nk;
}

static void print_kv(const char *title, const json_t *a) {
  if (json_array_size(a)) printf("%s:\n", title);
  for (size_t i = 0; i < json_array_size(a); i++)
    printf("  %s = %s\n", js(json_array_get(a, i), "key"), js(json_array_get(a, i), "value"));
}

static void print_run(const json_t *r) {
  const json_t *info = json_object_get(r, "info"), *data = json_object_get(r, "data");
  char tb[32], te[32];
  printf("run %s (%s)\n", js(info, "run_id"), js(info, "run_name"));
  printf("  experiment: %s\n  status:     %s\n  started:    %s\n  ended:      %s\n  artifacts:  %s\n",
         js(info, "experiment_id"), js(info, "status"), cli_fmt_time(jtime(info, "start_time"), tb, sizeof tb),
         cli_fmt_time(jtime(info, "end_time"), te, sizeof te), js(info, "artifact_uri"));
  print_kv("params", json_object_get(data, "params"));
  const json_t *ms = json_object_get(data, "metrics");
  if (json_array_size(ms)) printf("metrics (latest):\n");
  for (size_t i = 0; i < json_array_size(ms); i++) {
    const json_t *m = json_array_get(ms, i);
    char v[32];
    printf("  %s = %s (step %lld)\n", js(m, "key"), metric_fmt(m, v, sizeof v), (long long)jtime(m, "step"));
  }
  print_kv("tags", json_object_get(data, "tags"));
}

static im_status_t run_get(trk_t *t, const char *id, json_t **out) {
  *out = NULL;
  if (t->s) {
    im_track_run_t *r = NULL;
    im_status_t st = im_track_run_get(t->s, id, &r);
    if (!st && !(*out = im_track_run_json(r))) st = im_error(IM_ERR_NOMEM, "out of memory");
    im_track_run_free(r);
    return st;
  }
  json_t *ans = NULL;
  im_status_t st = rcall(t, "GET", "runs/get", json_pack("{s:s}", "run_id", id), &ans);
  if (!st && !(*out = json_incref(json_object_get(ans, "run"))))
    st = im_error(IM_ERR_FORMAT, "the server's answer has no \"run\"");
  json_decref(ans);
  return st;
}

/* runs/search over the experiment ids (a tracking server: every experiment when none is given). */
static im_status_t run_list(trk_t *t, const opts_t *o, const char *exp_id, json_t **out) {
  if (t->s) {
    const char *ids[1] = {exp_id};
    im_track_search_t q = {.filter = o->filter, .order_by = o->order_by, .n_order_by = o->n_order_by, .max_results = o->max};
    im_track_run_list_t *l = NULL;
    im_status_t st = im_track_run_search(t->s, ids, exp_id ? 1 : 0, o->all ? IM_TRACK_ALL : IM_TRACK_ACTIVE_ONLY, &q, &l);
    json_t *a = st ? NULL : json_array();
    for (int64_t i = 0; a && i < l->n; i++) json_array_append_new(a, im_track_run_json(&l->items[i]));
    if (!st && !(*out = keyed("runs", a))) st = im_error(IM_ERR_NOMEM, "out of memory");
    if (!st && l->next_page_token) json_object_set_new(*out, "next_page_token", json_string(l->next_page_token));
    im_track_run_list_free(l);
    return st;
  }
  json_t *ids = json_array(), *exps = NULL;
  im_status_t st = IM_OK;
  if (exp_id) {
    json_array_append_new(ids, json_string(exp_id));
  } else { /* MLflow's runs/search needs the experiments: all of them, deleted ones too */
    opts_t all = {.all = 1, .max = 50000}; /* mlflow server's limit */
    st = exp_list(t, &all, &exps);
    const json_t *l = json_object_get(exps, "experiments");
    for (size_t i = 0; !st && i < json_array_size(l); i++)
      json_array_append_new(ids, json_string(js(json_array_get(l, i), "experiment_id")));
  }
  json_decref(exps);
  json_t *req = json_pack("{s:o,s:s}", "experiment_ids", ids, "run_view_type", o->all ? "ALL" : "ACTIVE_ONLY");
  if (st) {
    json_decref(req);
    return st;
  }
  st = rcall(t, "POST", "runs/search", search_req(req, o->filter, o->order_by, o->n_order_by, o->max), out);
  with_list(*out, "runs");
  return st;
}

static void print_runs_table(const json_t *runs) {
  const char *keys[6];
  int nk = run_keys(runs, "metrics", keys, 6);
  const char *h[11] = {"run_id", "name", "experiment", "status", "started"};
  for (int k = 0; k < nk; k++) h[5 + k] = keys[k];
  cli_table_t *t = cli_table_new(5 + nk, h);
  for (size_t i = 0; t && i < json_array_size(runs); i++) {
    const json_t *r = json_array_get(runs, i), *info = json_object_get(r, "info");
    char tb[32], mv[6][32];
    const char *row[11] = {js(info, "run_id"), js(info, "run_name"), js(info, "experiment_id"), js(info, "status"),
                           cli_fmt_time(jtime(info, "start_time"), tb, sizeof tb)};
    for (int k = 0; k < nk; k++) row[5 + k] = metric_str(r, keys[k], mv[k], sizeof mv[k]);
    cli_table_row(t, row);
  }
  cli_table_print(t, 40);
  cli_table_free(t);
}

/* One row per param and metric, one column per run. */
static void print_compare(const json_t *runs) {
  size_t n = json_array_size(runs);
  const char **h = im_calloc(n + 1, sizeof *h), **row = im_calloc(n + 1, sizeof *row);
  char(*buf)[32] = im_calloc(n, sizeof *buf);
  cli_table_t *t = NULL;
  if (h && row && buf) {
    h[0] = "";
    for (size_t i = 0; i < n; i++) {
      const json_t *info = json_object_get(json_array_get(runs, i), "info");
      h[1 + i] = *js(info, "run_name") ? js(info, "run_name") : js(info, "run_id");
    }
    t = cli_table_new((int)n + 1, h);
  }
  static const char *lists[] = {"params", "metrics"};
  for (int pass = 0; t && pass < 2; pass++) {
    const char *keys[512];
    int nk = run_keys(runs, lists[pass], keys, 512);
    for (int k = 0; k < nk; k++) {
      char label[300];
      snprintf(label, sizeof label, "%s.%s", lists[pass], keys[k]);
      row[0] = label;
      for (size_t j = 0; j < n; j++) {
        const json_t *r = json_array_get(runs, j);
        row[1 + j] = pass == 0 ? param_str(r, keys[k]) : metric_str(r, keys[k], buf[j], 32);
      }
      cli_table_row(t, row);
    }
  }
  cli_table_print(t, 40);
  cli_table_free(t);
  im_free(h);
  im_free(row);
  im_free(buf);
}

int cli_runs(int argc, char **argv) {
  const char *cmd = "runs";
  if (argc < 2) {
    fputs(runs_usage, stderr);
    return CLI_USAGE;
  }
  const char *sub = argv[1];
  if (!strcmp(sub, "--help") || !strcmp(sub, "-h")) {
    fputs(runs_usage, stdout);
    return CLI_OK;
  }
  opts_t o;
  int rc = parse_opts(cmd, argc - 1, argv + 1, &o, runs_usage);
  if (rc) return rc < 0 ? CLI_OK : rc;
  int is_list = !strcmp(sub, "list"), is_show = !strcmp(sub, "show"), is_cmp = !strcmp(sub, "compare"),
      is_del = !strcmp(sub, "delete");
  if (!is_list && !is_show && !is_cmp && !is_del)
    return cli_usage_error(cmd, "unknown subcommand '%s' (list, show, compare, delete)", sub);
  if (is_list && o.npos) return cli_usage_error(cmd, "list takes no arguments");
  if ((is_show || is_del) && o.npos != 1) return cli_usage_error(cmd, "%s takes one RUN_ID", sub);
  if (is_cmp && o.npos < 2) return cli_usage_error(cmd, "compare takes two or more RUN_IDs");
  trk_t t;
  if (trk_open(cmd, o.tracking_uri, &t)) return CLI_FAIL;
  im_status_t st = IM_OK;
  json_t *j = NULL, *e = NULL;
  rc = CLI_OK;
  if (is_list) {
    if (o.experiment && (st = exp_find(&t, o.experiment, &e)))
      rc = trk_fail(cmd, &t, st, "cannot list runs");
    else if ((st = run_list(&t, &o, e ? js(e, "experiment_id") : NULL, &j)))
      rc = trk_fail(cmd, &t, st, "cannot search runs");
    else if (o.json)
      rc = print_json(json_incref(j));
    else
      print_runs_table(json_object_get(j, "runs"));
  } else if (is_show) {
    if ((st = run_get(&t, o.pos[0], &j)))
      rc = trk_fail(cmd, &t, st, "cannot show the run");
    else if (o.json)
      rc = print_json(json_pack("{s:O}", "run", j));
    else
      print_run(j);
  } else if (is_cmp) {
    json_t *a = json_array();
    for (int i = 0; a && i < o.npos && rc == CLI_OK; i++) {
      json_t *r = NULL;
      if ((st = run_get(&t, o.pos[i], &r))) rc = trk_fail(cmd, &t, st, o.pos[i]);
      else json_array_append_new(a, r);
    }
    if (!a) rc = cli_fail(cmd, IM_ERR_NOMEM, "out of memory");
    else if (rc == CLI_OK && o.json) rc = print_json(json_pack("{s:O}", "runs", a));
    else if (rc == CLI_OK) print_compare(a);
    json_decref(a);
  } else {
    st = t.s ? im_track_run_delete(t.s, o.pos[0]) : rcall(&t, "POST", "runs/delete", json_pack("{s:s}", "run_id", o.pos[0]), NULL);
    if (st) rc = trk_fail(cmd, &t, st, "cannot delete the run");
    else printf("deleted run %s\n", o.pos[0]);
  }
  json_decref(j);
  json_decref(e);
  trk_close(&t);
  return rc;
}

/* ---- models --------------------------------------------------------------------- */
static const char models_usage[] =
    "usage: imops models register RUN_ID_OR_URI NAME [--json]\n"
    "       imops models list [--filter F] [--order-by K] [--max N] [--json]\n"
    "       imops models versions NAME [--json]\n"
    "       imops models latest NAME [STAGE...] [--json]   (the newest version in each stage)\n"
    "       imops models alias NAME ALIAS VERSION      (point ALIAS at VERSION)\n"
    "       imops models alias NAME ALIAS --delete\n"
    "       imops models stage NAME VERSION STAGE [--archive-existing]   (None, Staging, Production, Archived)\n"
    "       imops models delete NAME [VERSION]\n"
    "       (each also takes --tracking-uri URI)\n"
    "\n"
    "The model registry (MLflow's). register takes a run id (its model/ artifact is\n"
    "registered, as runs:/RUN_ID/model) or any model URI, and creates NAME if needed.\n"
    "Registered models are then named as models:/NAME/VERSION, models:/NAME@ALIAS or\n"
    "models:/NAME/STAGE wherever imops takes a model.\n"
    TRACKING_USAGE;

static int parse_version(const char *cmd, const char *s, int64_t *v) {
  return cli_parse_i64(cmd, "VERSION", s, 1, INT64_MAX, v) ? -1 : 0;
}

static int is_hex_id(const char *s) {
  size_t n = strlen(s);
  if (n != 32) return 0;
  for (size_t i = 0; i < n; i++)
    if (!strchr("0123456789abcdef", s[i])) return 0;
  return 1;
}

static void print_versions_table(const json_t *l) {
  const char *h[] = {"name", "version", "stage", "aliases", "run_id", "created", "source"};
  cli_table_t *t = cli_table_new(7, h);
  for (size_t i = 0; t && i < json_array_size(l); i++) {
    const json_t *v = json_array_get(l, i), *al = json_object_get(v, "aliases");
    char tb[32], aliases[256] = "";
    for (size_t a = 0; a < json_array_size(al); a++)
      snprintf(aliases + strlen(aliases), sizeof aliases - strlen(aliases), "%s%s", a ? "," : "",
               json_string_value(json_array_get(al, a)) ? json_string_value(json_array_get(al, a)) : "");
    const char *row[] = {js(v, "name"), js(v, "version"), js(v, "current_stage"), aliases, js(v, "run_id"),
                         cli_fmt_time(jtime(v, "creation_timestamp"), tb, sizeof tb), js(v, "source")};
    cli_table_row(t, row);
  }
  cli_table_print(t, 60);
  cli_table_free(t);
}

static void print_models_table(const json_t *l) {
  const char *h[] = {"name", "latest", "aliases", "updated", "description"};
  cli_table_t *t = cli_table_new(5, h);
  for (size_t i = 0; t && i < json_array_size(l); i++) {
    const json_t *m = json_array_get(l, i), *lv = json_object_get(m, "latest_versions"), *al = json_object_get(m, "aliases");
    char latest[32] = "", tb[32], aliases[256] = "";
    long long best = 0;
    for (size_t k = 0; k < json_array_size(lv); k++) {
      long long v = strtoll(js(json_array_get(lv, k), "version"), NULL, 10);
      if (v > best) best = v;
    }
    if (best) snprintf(latest, sizeof latest, "%lld", best);
    for (size_t a = 0; a < json_array_size(al); a++)
      snprintf(aliases + strlen(aliases), sizeof aliases - strlen(aliases), "%s%s=%s", a ? "," : "",
               js(json_array_get(al, a), "alias"), js(json_array_get(al, a), "version"));
    const char *row[] = {js(m, "name"), latest, aliases, cli_fmt_time(jtime(m, "last_updated_timestamp"), tb, sizeof tb),
                         js(m, "description")};
    cli_table_row(t, row);
  }
  cli_table_print(t, 60);
  cli_table_free(t);
}

/* {"model_version": ...} of an embedded call's version (freed). */
static json_t *version_answer(im_track_model_version_t *v) {
  json_t *j = json_pack("{s:o}", "model_version", im_track_model_version_json(v));
  im_track_model_version_free(v);
  return j ? j : oom_json();
}

/* Registers source (a model URI) as a new version of name, creating the model when missing. */
static im_status_t model_register(trk_t *t, const char *source, const char *name, json_t **out) {
  im_track_uri_t *u = NULL;
  im_status_t st;
  if (t->s) {
    if ((st = im_track_resolve_uri(t->s, source, &u))) return st;
    im_track_model_t *m = NULL;
    if (im_track_model_get(t->s, name, &m) != IM_OK) st = im_track_model_create(t->s, name, NULL, NULL, 0, NULL);
    im_track_model_free(m);
    im_track_model_version_create_t c = {.name = name, .source = source, .run_id = u->run_id};
    im_track_model_version_t *v = NULL;
    if (!st && !(st = im_track_model_version_create(t->s, &c, &v)) && !(*out = version_answer(v))) st = IM_ERR_NOMEM;
    im_track_uri_free(u);
    return st;
  }
  /* a tracking server: a runs:/ source must name a run it has */
  if ((st = im_track_uri_parse(source, &u))) return st;
  json_t *run = NULL;
  if (u->kind == IM_TRACK_URI_RUNS) st = run_get(t, u->run_id, &run);
  json_decref(run);
  if (!st) {
    st = rcall(t, "POST", "registered-models/create", json_pack("{s:s}", "name", name), NULL);
    if (st == IM_ERR_EXISTS || st == IM_ERR_STATE) st = IM_OK; /* registered before */
  }
  json_t *req = json_pack("{s:s,s:s}", "name", name, "source", source);
  if (req && u->kind == IM_TRACK_URI_RUNS) json_object_set_new(req, "run_id", json_string(u->run_id));
  if (!st) st = rcall(t, "POST", "model-versions/create", req, out);
  else json_decref(req);
  im_track_uri_free(u);
  return st;
}

static im_status_t model_list(trk_t *t, const opts_t *o, json_t **out) {
  if (t->s) {
    im_track_search_t q = {.filter = o->filter, .order_by = o->order_by, .n_order_by = o->n_order_by, .max_results = o->max};
    im_track_model_list_t *l = NULL;
    im_status_t st = im_track_model_search(t->s, &q, &l);
    json_t *a = st ? NULL : json_array();
    for (int64_t i = 0; a && i < l->n; i++) json_array_append_new(a, im_track_model_json(&l->items[i]));
    if (!st && !(*out = keyed("registered_models", a))) st = im_error(IM_ERR_NOMEM, "out of memory");
    im_track_model_list_free(l);
    return st;
  }
  im_status_t st = rcall(t, "GET", "registered-models/search",
                         search_req(json_object(), o->filter, o->order_by, o->n_order_by, o->max), out);
  with_list(*out, "registered_models");
  return st;
}

/* The versions of model name, newest first (IM_ERR_NOT_FOUND when there is no such model). */
static im_status_t model_versions(trk_t *t, const char *name, int64_t max, json_t **out) {
  char filter[600];
  snprintf(filter, sizeof filter, "name = '%s'", name);
  const char *order[] = {"version_number DESC"};
  if (t->s) {
    im_track_search_t q = {.filter = filter, .order_by = order, .n_order_by = 1, .max_results = max};
    im_track_model_version_list_t *l = NULL;
    im_track_model_t *m = NULL;
    im_status_t st = im_track_model_get(t->s, name, &m);
    if (!st) st = im_track_model_version_search(t->s, &q, &l);
    json_t *a = st ? NULL : json_array();
    for (int64_t i = 0; a && i < l->n; i++) json_array_append_new(a, im_track_model_version_json(&l->items[i]));
    if (!st && !(*out = keyed("model_versions", a))) st = im_error(IM_ERR_NOMEM, "out of memory");
    im_track_model_free(m);
    im_track_model_version_list_free(l);
    return st;
  }
  im_status_t st = rcall(t, "GET", "registered-models/get", json_pack("{s:s}", "name", name), NULL);
  if (!st)
    st = rcall(t, "GET", "model-versions/search", search_req(json_object(), filter, order, 1, max), out);
  with_list(*out, "model_versions");
  return st;
}

/* The newest version in each of the stages (none: every stage), as get-latest-versions answers. */
static im_status_t model_latest(trk_t *t, const char *name, char **stages, int n, json_t **out) {
  if (t->s) {
    im_track_model_version_list_t *l = NULL;
    im_status_t st = im_track_model_latest_versions(t->s, name, (const char *const *)stages, n, &l);
    json_t *a = st ? NULL : json_array();
    for (int64_t i = 0; a && i < l->n; i++) json_array_append_new(a, im_track_model_version_json(&l->items[i]));
    if (!st && !(*out = keyed("model_versions", a))) st = im_error(IM_ERR_NOMEM, "out of memory");
    im_track_model_version_list_free(l);
    return st;
  }
  json_t *req = json_pack("{s:s}", "name", name), *sa = json_array();
  for (int i = 0; sa && i < n; i++) json_array_append_new(sa, json_string(stages[i]));
  if (req && n) json_object_set_new(req, "stages", sa);
  else json_decref(sa);
  im_status_t st = rcall(t, "POST", "registered-models/get-latest-versions", req, out);
  with_list(*out, "model_versions");
  return st;
}

int cli_models(int argc, char **argv) {
  const char *cmd = "models";
  if (argc < 2) {
    fputs(models_usage, stderr);
    return CLI_USAGE;
  }
  const char *sub = argv[1];
  if (!strcmp(sub, "--help") || !strcmp(sub, "-h")) {
    fputs(models_usage, stdout);
    return CLI_OK;
  }
  opts_t o;
  int rc = parse_opts(cmd, argc - 1, argv + 1, &o, models_usage);
  if (rc) return rc < 0 ? CLI_OK : rc;
  enum { REGISTER, LIST, VERSIONS, LATEST, ALIAS, STAGE, DELETE, N_SUBS };
  static const char *subs[] = {"register", "list", "versions", "latest", "alias", "stage", "delete"};
  static const int nargs_min[] = {2, 0, 1, 1, 2, 3, 1}, nargs_max[] = {2, 0, 1, 5, 3, 3, 2};
  int which = -1;
  for (int i = 0; i < N_SUBS; i++)
    if (!strcmp(sub, subs[i])) which = i;
  if (which < 0)
    return cli_usage_error(cmd, "unknown subcommand '%s' (register, list, versions, latest, alias, stage, delete)", sub);
  if (o.npos < nargs_min[which] || o.npos > nargs_max[which])
    return cli_usage_error(cmd, "wrong number of arguments for '%s'", sub);
  int64_t version = 0;
  if (which == ALIAS && !o.delete_flag && (o.npos != 3 || parse_version(cmd, o.pos[2], &version))) {
    if (o.npos != 3) return cli_usage_error(cmd, "alias needs NAME ALIAS VERSION, or NAME ALIAS --delete");
    return CLI_USAGE;
  }
  if (which == STAGE && parse_version(cmd, o.pos[1], &version)) return CLI_USAGE;
  if (which == DELETE && o.npos == 2 && parse_version(cmd, o.pos[1], &version)) return CLI_USAGE;
  if (which == VERSIONS && strchr(o.pos[0], '\'')) /* the filter quotes the name with ' */
    return cli_usage_error(cmd, "model names with a ' cannot be listed here");
  trk_t t;
  if (trk_open(cmd, o.tracking_uri, &t)) return CLI_FAIL;
  im_status_t st = IM_OK;
  json_t *j = NULL;
  char ver[32];
  snprintf(ver, sizeof ver, "%lld", (long long)version);
  rc = CLI_OK;
  switch (which) {
    case REGISTER: {
      const char *what = o.pos[0], *name = o.pos[1];
      char source[512];
      if (is_hex_id(what)) snprintf(source, sizeof source, "runs:/%s/model", what);
      else snprintf(source, sizeof source, "%s", what);
      const json_t *v;
      if ((st = model_register(&t, source, name, &j)))
        rc = trk_fail(cmd, &t, st, "cannot register that model");
      else if (!(v = json_object_get(j, "model_version")))
        rc = trk_fail(cmd, &t, im_error(IM_ERR_FORMAT, "the answer has no \"model_version\""), "cannot register");
      else if (o.json)
        rc = print_json(json_incref(j));
      else
        printf("registered model '%s' version %s (source %s)\n", name, js(v, "version"), source);
      break;
    }
    case LIST:
    case VERSIONS:
    case LATEST:
      st = which == LIST       ? model_list(&t, &o, &j)
           : which == VERSIONS ? model_versions(&t, o.pos[0], o.max, &j)
                               : model_latest(&t, o.pos[0], o.pos + 1, o.npos - 1, &j);
      if (st) rc = trk_fail(cmd, &t, st, which == LIST ? "cannot list models" : "cannot list versions");
      else if (o.json) rc = print_json(json_incref(j));
      else if (which == LIST) print_models_table(json_object_get(j, "registered_models"));
      else print_versions_table(json_object_get(j, "model_versions"));
      break;
    case ALIAS:
      if (o.delete_flag) {
        st = t.s ? im_track_model_delete_alias(t.s, o.pos[0], o.pos[1])
                 : rcall(&t, "DELETE", "registered-models/alias", json_pack("{s:s,s:s}", "name", o.pos[0], "alias", o.pos[1]),
                         NULL);
        if (st) rc = trk_fail(cmd, &t, st, "cannot delete the alias");
        else printf("deleted alias '%s' of model '%s'\n", o.pos[1], o.pos[0]);
        break;
      }
      st = t.s ? im_track_model_set_alias(t.s, o.pos[0], o.pos[1], version)
               : rcall(&t, "POST", "registered-models/alias",
                       json_pack("{s:s,s:s,s:s}", "name", o.pos[0], "alias", o.pos[1], "version", ver), NULL);
      if (st) rc = trk_fail(cmd, &t, st, "cannot set the alias");
      else printf("models:/%s@%s -> version %s\n", o.pos[0], o.pos[1], ver);
      break;
    case STAGE: {
      if (t.s) {
        im_track_model_version_t *v = NULL;
        if (!(st = im_track_model_version_transition_stage(t.s, o.pos[0], version, o.pos[2], o.archive_existing, &v)) &&
            !(j = version_answer(v)))
          st = IM_ERR_NOMEM;
      } else {
        st = rcall(&t, "POST", "model-versions/transition-stage",
                   json_pack("{s:s,s:s,s:s,s:b}", "name", o.pos[0], "version", ver, "stage", o.pos[2],
                             "archive_existing_versions", o.archive_existing),
                   &j);
      }
      if (st) rc = trk_fail(cmd, &t, st, "cannot change the stage");
      else if (o.json) rc = print_json(json_incref(j));
      else
        printf("model '%s' version %s is now in stage %s\n", o.pos[0], ver,
               js(json_object_get(j, "model_version"), "current_stage"));
      break;
    }
    case DELETE:
      if (o.npos == 2) {
        st = t.s ? im_track_model_version_delete(t.s, o.pos[0], version)
                 : rcall(&t, "DELETE", "model-versions/delete", json_pack("{s:s,s:s}", "name", o.pos[0], "version", ver),
                         NULL);
        if (st) rc = trk_fail(cmd, &t, st, "cannot delete the version");
        else printf("deleted model '%s' version %s\n", o.pos[0], ver);
      } else {
        st = t.s ? im_track_model_delete(t.s, o.pos[0])
                 : rcall(&t, "DELETE", "registered-models/delete", json_pack("{s:s}", "name", o.pos[0]), NULL);
        if (st) rc = trk_fail(cmd, &t, st, "cannot delete the model");
        else printf("deleted model '%s' and its versions\n", o.pos[0]);
      }
      break;
  }
  json_decref(j);
  trk_close(&t);
  return rc;
}
