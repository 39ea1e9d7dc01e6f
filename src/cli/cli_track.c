/* imops experiments | runs | models: the tracking store and the model
 * registry from the shell (the workspace store at $IMOPS_HOME, default
 * ./imops-workspace). Tables by default, MLflow-shaped JSON with --json. */
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

static int store_fail(const char *cmd, im_track_store_t *s, im_status_t st, const char *what) {
  const char *msg = s ? im_track_errmsg(s) : im_last_error();
  fprintf(stderr, "imops %s: %s: %s\n", cmd, what, msg && *msg ? msg : im_strerror(st));
  return CLI_FAIL;
}

static im_track_store_t *open_store(const char *cmd) {
  im_track_store_t *s = NULL;
  im_status_t st = im_track_open(NULL, &s);
  if (st) {
    store_fail(cmd, NULL, st, "cannot open the tracking store");
    return NULL;
  }
  return s;
}

/* Common options: --json, --all (deleted too), --filter, --order-by (repeatable), --max. */
typedef struct {
  int json, all;
  const char *filter, *experiment, *artifact_location;
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

/* ---- experiments --------------------------------------------------------------- */
static const char exp_usage[] =
    "usage: imops experiments list [--all] [--filter F] [--json]\n"
    "       imops experiments create NAME [--artifact-location URI] [--json]\n"
    "       imops experiments delete NAME_OR_ID\n"
    "\n"
    "Experiments group runs (MLflow's experiments; \"Default\" has id 0). --filter takes\n"
    "MLflow's syntax, e.g. \"name LIKE 'surface%'\". --all lists deleted ones too.\n"
    "--artifact-location: where the experiment's runs keep artifacts (a directory, file://...,\n"
    "or s3://bucket/prefix with MLFLOW_S3_ENDPOINT_URL and AWS_* credentials; default: the workspace).\n";

static int find_experiment(im_track_store_t *s, const char *key, im_track_experiment_t **e) {
  if (im_track_experiment_get_by_name(s, key, e) == IM_OK) return 0;
  return im_track_experiment_get(s, key, e) == IM_OK ? 0 : -1;
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
  if (strcmp(sub, "list") && strcmp(sub, "create") && strcmp(sub, "delete"))
    return cli_usage_error(cmd, "unknown subcommand '%s' (list, create, delete)", sub);
  if (!strcmp(sub, "list") && o.npos) return cli_usage_error(cmd, "list takes no arguments");
  if (strcmp(sub, "list") && o.npos != 1) return cli_usage_error(cmd, "%s takes one NAME", sub);
  im_track_store_t *s = open_store(cmd);
  if (!s) return CLI_FAIL;
  im_status_t st;
  rc = CLI_OK;
  if (!strcmp(sub, "list")) {
    im_track_search_t q = {.filter = o.filter, .order_by = o.order_by, .n_order_by = o.n_order_by, .max_results = o.max};
    im_track_experiment_list_t *l = NULL;
    if ((st = im_track_experiment_search(s, o.all ? IM_TRACK_ALL : IM_TRACK_ACTIVE_ONLY, &q, &l))) {
      rc = store_fail(cmd, s, st, "cannot list experiments");
    } else if (o.json) {
      json_t *a = json_array();
      for (int64_t i = 0; i < l->n; i++) json_array_append_new(a, im_track_experiment_json(&l->items[i]));
      rc = print_json(json_pack("{s:o}", "experiments", a));
    } else {
      const char *h[] = {"id", "name", "lifecycle", "created", "artifact location"};
      cli_table_t *t = cli_table_new(5, h);
      for (int64_t i = 0; t && i < l->n; i++) {
        char tb[32];
        const im_track_experiment_t *e = &l->items[i];
        const char *row[] = {e->experiment_id, e->name, e->lifecycle_stage, cli_fmt_time(e->creation_time, tb, sizeof tb),
                             e->artifact_location};
        cli_table_row(t, row);
      }
      cli_table_print(t, 60);
      cli_table_free(t);
    }
    im_track_experiment_list_free(l);
  } else if (!strcmp(sub, "create")) {
    char *id = NULL;
    if ((st = im_track_experiment_create(s, o.pos[0], o.artifact_location, NULL, 0, &id)))
      rc = store_fail(cmd, s, st, "cannot create the experiment");
    else if (o.json)
      rc = print_json(json_pack("{s:s}", "experiment_id", id));
    else
      printf("created experiment '%s' with id %s\n", o.pos[0], id);
    im_free(id);
  } else {
    im_track_experiment_t *e = NULL;
    if (find_experiment(s, o.pos[0], &e)) {
      rc = store_fail(cmd, NULL, IM_ERR_NOT_FOUND, "no such experiment");
    } else if ((st = im_track_experiment_delete(s, e->experiment_id))) {
      rc = store_fail(cmd, s, st, "cannot delete the experiment");
    } else {
      printf("deleted experiment '%s' (id %s) and its runs\n", e->name, e->experiment_id);
    }
    im_track_experiment_free(e);
  }
  im_track_close(s);
  return rc;
}

/* ---- runs ------------------------------------------------------------------------- */
static const char runs_usage[] =
    "usage: imops runs list [--experiment NAME_OR_ID] [--filter F] [--order-by K] [--max N] [--all] [--json]\n"
    "       imops runs show RUN_ID [--json]\n"
    "       imops runs compare RUN_ID RUN_ID... [--json]\n"
    "       imops runs delete RUN_ID\n"
    "\n"
    "Filters and ordering use MLflow's search syntax, e.g.\n"
    "  imops runs list --filter \"metrics.val_accuracy > 0.9 and params.optimizer = 'adam'\" \\\n"
    "                  --order-by \"metrics.val_accuracy DESC\"\n";

static const char *metric_str(const im_track_run_t *r, const char *key, char *buf, size_t n) {
  for (int i = 0; i < r->n_metrics; i++)
    if (!strcmp(r->metrics[i].key, key)) {
      snprintf(buf, n, "%.6g", r->metrics[i].value);
      return buf;
    }
  return "";
}

static const char *param_str(const im_track_run_t *r, const char *key) {
  for (int i = 0; i < r->n_params; i++)
    if (!strcmp(r->params[i].key, key)) return r->params[i].value;
  return "";
}

/* The distinct metric keys of the runs, in first-seen order (at most max). */
static int metric_keys(const im_track_run_t *runs, int64_t n, const char **keys, int max) {
  int nk = 0;
  for (int64_t i = 0; i < n; i++)
    for (int m = 0; m < runs[i].n_metrics && nk < max; m++) {
      int seen = 0;
      for (int k = 0; k < nk && !seen; k++) seen = !strcmp(keys[k], runs[i].metrics[m].key);
      if (!seen) keys[nk++] = runs[i].metrics[m].key;
    }
  return nk;
}

static void print_run(const im_track_run_t *r) {
  char tb[32], te[32];
  printf("run %s (%s)\n", r->run_id, r->run_name ? r->run_name : "");
  printf("  experiment: %s\n  status:     %s\n  started:    %s\n  ended:      %s\n  artifacts:  %s\n",
         r->experiment_id, im_track_run_status_name(r->status), cli_fmt_time(r->start_time, tb, sizeof tb),
         cli_fmt_time(r->end_time, te, sizeof te), r->artifact_uri);
  if (r->n_params) printf("params:\n");
  for (int i = 0; i < r->n_params; i++) printf("  %s = %s\n", r->params[i].key, r->params[i].value);
  if (r->n_metrics) printf("metrics (latest):\n");
  for (int i = 0; i < r->n_metrics; i++)
    printf("  %s = %.6g (step %lld)\n", r->metrics[i].key, r->metrics[i].value, (long long)r->metrics[i].step);
  if (r->n_tags) printf("tags:\n");
  for (int i = 0; i < r->n_tags; i++) printf("  %s = %s\n", r->tags[i].key, r->tags[i].value);
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
  im_track_store_t *s = open_store(cmd);
  if (!s) return CLI_FAIL;
  im_status_t st;
  rc = CLI_OK;
  if (is_list) {
    const char *ids[1];
    int nids = 0;
    im_track_experiment_t *e = NULL;
    if (o.experiment) {
      if (find_experiment(s, o.experiment, &e)) {
        im_track_close(s);
        fprintf(stderr, "imops runs: no experiment named or numbered '%s'\n", o.experiment);
        return CLI_FAIL;
      }
      ids[0] = e->experiment_id;
      nids = 1;
    }
    im_track_search_t q = {.filter = o.filter, .order_by = o.order_by, .n_order_by = o.n_order_by, .max_results = o.max};
    im_track_run_list_t *l = NULL;
    if ((st = im_track_run_search(s, ids, nids, o.all ? IM_TRACK_ALL : IM_TRACK_ACTIVE_ONLY, &q, &l))) {
      rc = store_fail(cmd, s, st, "cannot search runs");
    } else if (o.json) {
      json_t *a = json_array();
      for (int64_t i = 0; i < l->n; i++) json_array_append_new(a, im_track_run_json(&l->items[i]));
      json_t *j = json_pack("{s:o}", "runs", a);
      if (l->next_page_token) json_object_set_new(j, "next_page_token", json_string(l->next_page_token));
      rc = print_json(j);
    } else {
      const char *keys[6];
      int nk = metric_keys(l->items, l->n, keys, 6);
      const char *h[11] = {"run_id", "name", "experiment", "status", "started"};
      for (int k = 0; k < nk; k++) h[5 + k] = keys[k];
      cli_table_t *t = cli_table_new(5 + nk, h);
      for (int64_t i = 0; t && i < l->n; i++) {
        const im_track_run_t *r = &l->items[i];
        char tb[32], mv[6][32];
        const char *row[11] = {r->run_id, r->run_name, r->experiment_id, im_track_run_status_name(r->status),
                               cli_fmt_time(r->start_time, tb, sizeof tb)};
        for (int k = 0; k < nk; k++) row[5 + k] = metric_str(r, keys[k], mv[k], sizeof mv[k]);
        cli_table_row(t, row);
      }
      cli_table_print(t, 40);
      cli_table_free(t);
    }
    im_track_run_list_free(l);
    im_track_experiment_free(e);
  } else if (is_show) {
    im_track_run_t *r = NULL;
    if ((st = im_track_run_get(s, o.pos[0], &r)))
      rc = store_fail(cmd, s, st, "cannot show the run");
    else if (o.json)
      rc = print_json(json_pack("{s:o}", "run", im_track_run_json(r)));
    else
      print_run(r);
    im_track_run_free(r);
  } else if (is_cmp) {
    int n = o.npos;
    im_track_run_t **runs = im_calloc((size_t)n, sizeof *runs);
    for (int i = 0; runs && i < n && rc == CLI_OK; i++)
      if ((st = im_track_run_get(s, o.pos[i], &runs[i]))) rc = store_fail(cmd, s, st, o.pos[i]);
    if (!runs) rc = cli_fail(cmd, IM_ERR_NOMEM, "out of memory");
    if (rc == CLI_OK && o.json) {
      json_t *a = json_array();
      for (int i = 0; i < n; i++) json_array_append_new(a, im_track_run_json(runs[i]));
      rc = print_json(json_pack("{s:o}", "runs", a));
    } else if (rc == CLI_OK) {
      /* one row per param and metric, one column per run */
      const char **h = im_calloc((size_t)n + 1, sizeof *h);
      const char **row = im_calloc((size_t)n + 1, sizeof *row);
      char (*buf)[32] = im_calloc((size_t)n, sizeof *buf);
      cli_table_t *t = NULL;
      if (h && row && buf) {
        h[0] = "";
        for (int i = 0; i < n; i++) h[1 + i] = runs[i]->run_name && *runs[i]->run_name ? runs[i]->run_name : runs[i]->run_id;
        t = cli_table_new(n + 1, h);
      }
      const char *seen[512];
      int ns = 0;
      for (int pass = 0; t && pass < 2; pass++)
        for (int i = 0; i < n; i++) {
          int cnt = pass == 0 ? runs[i]->n_params : runs[i]->n_metrics;
          for (int k = 0; k < cnt && ns < 512; k++) {
            const char *key = pass == 0 ? runs[i]->params[k].key : runs[i]->metrics[k].key;
            int dup = 0;
            for (int q = 0; q < ns && !dup; q++) dup = !strcmp(seen[q], key);
            if (dup) continue;
            seen[ns++] = key;
            char label[300];
            snprintf(label, sizeof label, "%s.%s", pass == 0 ? "params" : "metrics", key);
            row[0] = label;
            for (int j = 0; j < n; j++) row[1 + j] = pass == 0 ? param_str(runs[j], key) : metric_str(runs[j], key, buf[j], 32);
            cli_table_row(t, row);
          }
          if (pass == 0 && i == n - 1) ns = 0; /* metric keys may repeat param keys */
        }
      cli_table_print(t, 40);
      cli_table_free(t);
      im_free(h);
      im_free(row);
      im_free(buf);
    }
    for (int i = 0; runs && i < n; i++) im_track_run_free(runs[i]);
    im_free(runs);
  } else {
    if ((st = im_track_run_delete(s, o.pos[0])))
      rc = store_fail(cmd, s, st, "cannot delete the run");
    else
      printf("deleted run %s\n", o.pos[0]);
  }
  im_track_close(s);
  return rc;
}

/* ---- models --------------------------------------------------------------------- */
static const char models_usage[] =
    "usage: imops models register RUN_ID_OR_URI NAME [--json]\n"
    "       imops models list [--filter F] [--json]\n"
    "       imops models versions NAME [--json]\n"
    "       imops models alias NAME ALIAS VERSION      (point ALIAS at VERSION)\n"
    "       imops models alias NAME ALIAS --delete\n"
    "       imops models stage NAME VERSION STAGE [--archive-existing]   (None, Staging, Production, Archived)\n"
    "       imops models delete NAME [VERSION]\n"
    "\n"
    "The model registry (MLflow's). register takes a run id (its model/ artifact is\n"
    "registered, as runs:/RUN_ID/model) or any model URI, and creates NAME if needed.\n"
    "Registered models are then named as models:/NAME/VERSION, models:/NAME@ALIAS or\n"
    "models:/NAME/STAGE wherever imops takes a model.\n";

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

static void print_versions_table(const im_track_model_version_list_t *l) {
  const char *h[] = {"name", "version", "stage", "aliases", "run_id", "created", "source"};
  cli_table_t *t = cli_table_new(7, h);
  for (int64_t i = 0; t && i < l->n; i++) {
    const im_track_model_version_t *v = &l->items[i];
    char ver[32], tb[32], aliases[256] = "";
    snprintf(ver, sizeof ver, "%lld", (long long)v->version);
    for (int a = 0; a < v->n_aliases; a++)
      snprintf(aliases + strlen(aliases), sizeof aliases - strlen(aliases), "%s%s", a ? "," : "", v->aliases[a]);
    const char *row[] = {v->name, ver, v->current_stage, aliases, v->run_id, cli_fmt_time(v->creation_time, tb, sizeof tb),
                         v->source};
    cli_table_row(t, row);
  }
  cli_table_print(t, 60);
  cli_table_free(t);
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
  static const char *subs[] = {"register", "list", "versions", "alias", "stage", "delete"};
  static const int nargs_min[] = {2, 0, 1, 2, 3, 1}, nargs_max[] = {2, 0, 1, 3, 3, 2};
  int which = -1;
  for (int i = 0; i < 6; i++)
    if (!strcmp(sub, subs[i])) which = i;
  if (which < 0) return cli_usage_error(cmd, "unknown subcommand '%s' (register, list, versions, alias, stage, delete)", sub);
  if (o.npos < nargs_min[which] || o.npos > nargs_max[which])
    return cli_usage_error(cmd, "wrong number of arguments for '%s'", sub);
  int64_t version = 0;
  if (which == 3 && !o.delete_flag && (o.npos != 3 || parse_version(cmd, o.pos[2], &version))) {
    if (o.npos != 3) return cli_usage_error(cmd, "alias needs NAME ALIAS VERSION, or NAME ALIAS --delete");
    return CLI_USAGE;
  }
  if (which == 4 && parse_version(cmd, o.pos[1], &version)) return CLI_USAGE;
  if (which == 5 && o.npos == 2 && parse_version(cmd, o.pos[1], &version)) return CLI_USAGE;
  im_track_store_t *s = open_store(cmd);
  if (!s) return CLI_FAIL;
  im_status_t st = IM_OK;
  rc = CLI_OK;
  switch (which) {
    case 0: { /* register */
      const char *what = o.pos[0], *name = o.pos[1];
      char source[512];
      if (is_hex_id(what))
        snprintf(source, sizeof source, "runs:/%s/model", what);
      else
        snprintf(source, sizeof source, "%s", what);
      im_track_uri_t *u = NULL;
      if ((st = im_track_resolve_uri(s, source, &u))) {
        rc = store_fail(cmd, s, st, "cannot register that model");
        break;
      }
      im_track_model_t *m = NULL;
      if (im_track_model_get(s, name, &m) != IM_OK && (st = im_track_model_create(s, name, NULL, NULL, 0, NULL))) {
        rc = store_fail(cmd, s, st, "cannot create the registered model");
        im_track_uri_free(u);
        break;
      }
      im_track_model_free(m);
      im_track_model_version_create_t c = {.name = name, .source = source, .run_id = u->run_id};
      im_track_model_version_t *v = NULL;
      if ((st = im_track_model_version_create(s, &c, &v)))
        rc = store_fail(cmd, s, st, "cannot register the version");
      else if (o.json)
        rc = print_json(json_pack("{s:o}", "model_version", im_track_model_version_json(v)));
      else
        printf("registered model '%s' version %lld (source %s)\n", name, (long long)v->version, source);
      im_track_model_version_free(v);
      im_track_uri_free(u);
      break;
    }
    case 1: { /* list */
      im_track_search_t q = {.filter = o.filter, .order_by = o.order_by, .n_order_by = o.n_order_by, .max_results = o.max};
      im_track_model_list_t *l = NULL;
      if ((st = im_track_model_search(s, &q, &l))) {
        rc = store_fail(cmd, s, st, "cannot list models");
      } else if (o.json) {
        json_t *a = json_array();
        for (int64_t i = 0; i < l->n; i++) json_array_append_new(a, im_track_model_json(&l->items[i]));
        rc = print_json(json_pack("{s:o}", "registered_models", a));
      } else {
        const char *h[] = {"name", "latest", "aliases", "updated", "description"};
        cli_table_t *t = cli_table_new(5, h);
        for (int64_t i = 0; t && i < l->n; i++) {
          const im_track_model_t *m = &l->items[i];
          char latest[32] = "", tb[32], aliases[256] = "";
          int64_t best = 0;
          for (int k = 0; k < m->n_latest; k++)
            if (m->latest_versions[k].version > best) best = m->latest_versions[k].version;
          if (best) snprintf(latest, sizeof latest, "%lld", (long long)best);
          for (int a = 0; a < m->n_aliases; a++)
            snprintf(aliases + strlen(aliases), sizeof aliases - strlen(aliases), "%s%s=%lld", a ? "," : "",
                     m->aliases[a].alias, (long long)m->aliases[a].version);
          const char *row[] = {m->name, latest, aliases, cli_fmt_time(m->last_updated_time, tb, sizeof tb), m->description};
          cli_table_row(t, row);
        }
        cli_table_print(t, 60);
        cli_table_free(t);
      }
      im_track_model_list_free(l);
      break;
    }
    case 2: { /* versions */
      char filter[600];
      if (strchr(o.pos[0], '\'')) { /* the filter quotes the name with ' */
        rc = cli_usage_error(cmd, "model names with a ' cannot be listed here");
        break;
      }
      snprintf(filter, sizeof filter, "name = '%s'", o.pos[0]);
      const char *order[] = {"version_number DESC"};
      im_track_search_t q = {.filter = filter, .order_by = order, .n_order_by = 1, .max_results = o.max};
      im_track_model_version_list_t *l = NULL;
      im_track_model_t *m = NULL;
      if ((st = im_track_model_get(s, o.pos[0], &m))) {
        rc = store_fail(cmd, s, st, "no such model");
      } else if ((st = im_track_model_version_search(s, &q, &l))) {
        rc = store_fail(cmd, s, st, "cannot list versions");
      } else if (o.json) {
        json_t *a = json_array();
        for (int64_t i = 0; i < l->n; i++) json_array_append_new(a, im_track_model_version_json(&l->items[i]));
        rc = print_json(json_pack("{s:o}", "model_versions", a));
      } else {
        print_versions_table(l);
      }
      im_track_model_free(m);
      im_track_model_version_list_free(l);
      break;
    }
    case 3: /* alias */
      if (o.delete_flag) {
        if ((st = im_track_model_delete_alias(s, o.pos[0], o.pos[1])))
          rc = store_fail(cmd, s, st, "cannot delete the alias");
        else
          printf("deleted alias '%s' of model '%s'\n", o.pos[1], o.pos[0]);
      } else if ((st = im_track_model_set_alias(s, o.pos[0], o.pos[1], version))) {
        rc = store_fail(cmd, s, st, "cannot set the alias");
      } else {
        printf("models:/%s@%s -> version %lld\n", o.pos[0], o.pos[1], (long long)version);
      }
      break;
    case 4: { /* stage */
      im_track_model_version_t *v = NULL;
      if ((st = im_track_model_version_transition_stage(s, o.pos[0], version, o.pos[2], o.archive_existing, &v)))
        rc = store_fail(cmd, s, st, "cannot change the stage");
      else if (o.json)
        rc = print_json(json_pack("{s:o}", "model_version", im_track_model_version_json(v)));
      else
        printf("model '%s' version %lld is now in stage %s\n", o.pos[0], (long long)version, v->current_stage);
      im_track_model_version_free(v);
      break;
    }
    case 5: /* delete */
      if (o.npos == 2) {
        if ((st = im_track_model_version_delete(s, o.pos[0], version)))
          rc = store_fail(cmd, s, st, "cannot delete the version");
        else
          printf("deleted model '%s' version %lld\n", o.pos[0], (long long)version);
      } else if ((st = im_track_model_delete(s, o.pos[0]))) {
        rc = store_fail(cmd, s, st, "cannot delete the model");
      } else {
        printf("deleted model '%s' and its versions\n", o.pos[0]);
      }
      break;
  }
  im_track_close(s);
  return rc;
}
