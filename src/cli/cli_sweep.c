/* imops sweep create | agent | run | show | list | export-katib:
 * hyperparameter sweeps from W&B sweep YAML, trials run by agents (in this
 * process, or in child processes for --parallel) that share the sweep
 * through the tracking store or a tracking server (--tracking-uri), results with the best trial and parameter
 * importance, and the export as a Kubeflow Katib Experiment. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "imops/core.h"
#include "imops/sweep.h"
#include "imops/track.h"
#include "imops/track_sweep.h"

static const char usage_text[] =
    "usage: imops sweep <subcommand> [options]\n"
    "\n"
    "Hyperparameter sweeps with W&B's sweep configuration (method grid, random or bayes;\n"
    "metric; parameters with values or distributions; run_cap; early_terminate hyperband).\n"
    "Every trial trains in-process as a tracked run, a child of the sweep's parent run.\n"
    "\n"
    "subcommands:\n"
    "  create SWEEP.yaml --data DIR [--experiment NAME] [--seed N] [--count N]\n"
    "                               create the sweep in the store; prints its id\n"
    "  agent ID [--count N]         claim and run trials of a sweep (any number of agents,\n"
    "                               in processes sharing the workspace, or on machines\n"
    "                               sharing a tracking server: --tracking-uri)\n"
    "  run SWEEP.yaml --data DIR [--count N] [--parallel P] [--experiment NAME] [--seed N]\n"
    "                               create, then run P agents as child processes until N trials\n"
    "  show ID [--json]             trials, the best trial, parameter importance, plots\n"
    "  list [--json]                the sweeps in the store\n"
    "  export-katib SWEEP.yaml|ID -o EXPERIMENT.yaml [--image IMG] [--namespace NS] [--parallel P]\n"
    "                               a Kubeflow Katib Experiment (kubeflow.org/v1beta1)\n"
    "\n"
    "options:\n"
    "  --data DIR           the training data (ImageFolder) trials train on\n"
    "  --experiment NAME    experiment of the sweep's runs (default: Default)\n"
    "  --seed N             search seed (default 1): the same seed gives the same trials\n"
    "  --count N            trials in all (create, run: at most run_cap) or for this agent (agent)\n"
    "  --parallel P         agents (run: child processes; export-katib: parallelTrialCount)\n"
    "  --device DEV         training device (cpu, ref)\n"
    "  --threads N          threads per trial\n"
    "  --stale-seconds S    a trial whose agent sent no heartbeat for S seconds is failed (default 1800)\n"
    "  --tracking-uri URI   the sweep and its runs on a tracking server (imops server at\n"
    "                       http(s)://host:port; default: MLFLOW_TRACKING_URI when it is http(s),\n"
    "                       else the workspace): agents on several machines share the sweep\n"
    "  -o, --output FILE    export-katib: where to write the YAML (default: stdout)\n"
    "  --json               machine-readable output\n"
    "\n"
    "Trial parameters map onto 'imops train' options: batch_size, img_size, lr, optimizer,\n"
    "epochs, momentum, weight_decay, model, scheduler, width, label_smoothing, ...; nested\n"
    "optimizer.{name,lr,momentum,weight_decay} too. Train with the best trial's parameters:\n"
    "  imops train --data DIR --params-from-sweep ID\n";

typedef struct {
  const char *data, *experiment, *output, *image, *namespace_, *device, *tracking;
  uint64_t seed;
  int64_t count, parallel, threads, stale;
  int json;
  char **pos;
  int npos;
} sopts_t;

enum { S_DATA = 256, S_EXP, S_SEED, S_COUNT, S_PAR, S_JSON, S_IMAGE, S_NS, S_DEVICE, S_THREADS, S_STALE, S_URI };

static int parse(const char *cmd, int argc, char **argv, sopts_t *o) {
  static const struct option longopts[] = {
      {"data", required_argument, 0, S_DATA},       {"experiment", required_argument, 0, S_EXP},
      {"seed", required_argument, 0, S_SEED},       {"count", required_argument, 0, S_COUNT},
      {"parallel", required_argument, 0, S_PAR},    {"json", no_argument, 0, S_JSON},
      {"output", required_argument, 0, 'o'},        {"image", required_argument, 0, S_IMAGE},
      {"namespace", required_argument, 0, S_NS},    {"device", required_argument, 0, S_DEVICE},
      {"threads", required_argument, 0, S_THREADS}, {"stale-seconds", required_argument, 0, S_STALE},
      {"tracking-uri", required_argument, 0, S_URI}, {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  memset(o, 0, sizeof *o);
  o->seed = 1;
  optind = 1;
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, ":ho:", longopts, NULL)) != -1) {
    switch (ch) {
      case S_DATA: o->data = optarg; break;
      case S_EXP: o->experiment = optarg; break;
      case S_SEED:
        if (cli_parse_u64(cmd, "--seed", optarg, &o->seed)) return -1;
        break;
      case S_COUNT:
        if (cli_parse_i64(cmd, "--count", optarg, 1, 1000000, &o->count)) return -1;
        break;
      case S_PAR:
        if (cli_parse_i64(cmd, "--parallel", optarg, 1, 64, &o->parallel)) return -1;
        break;
      case S_THREADS:
        if (cli_parse_i64(cmd, "--threads", optarg, 1, 1024, &o->threads)) return -1;
        break;
      case S_STALE:
        if (cli_parse_i64(cmd, "--stale-seconds", optarg, 1, 100000000, &o->stale)) return -1;
        break;
      case S_JSON: o->json = 1; break;
      case 'o': o->output = optarg; break;
      case S_IMAGE: o->image = optarg; break;
      case S_NS: o->namespace_ = optarg; break;
      case S_DEVICE: o->device = optarg; break;
      case S_URI: o->tracking = optarg; break;
      case 'h': fputs(usage_text, stdout); return 1;
      case ':': cli_usage_error(cmd, "%s needs a value", argv[optind - 1]); return -1;
      default: cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]); return -1;
    }
  }
  o->pos = argv + optind;
  o->npos = argc - optind;
  return 0;
}

static int need_pos(const char *cmd, const sopts_t *o, int n, const char *what) {
  if (o->npos < n) return cli_usage_error(cmd, "%s is required", what);
  if (o->npos > n) return cli_usage_error(cmd, "unexpected argument '%s'", o->pos[n]);
  return 0;
}

/* Parses a subcommand's options and checks its npos positional arguments:
 * -1 to go on, else the exit status (--help, usage errors). */
static int begin(const char *cmd, int argc, char **argv, sopts_t *o, int npos, const char *what) {
  int r = parse(cmd, argc, argv, o);
  if (r) return r > 0 ? CLI_OK : CLI_USAGE;
  return need_pos(cmd, o, npos, what) ? CLI_USAGE : -1;
}

/* The sweep state: the tracking server at uri (NULL: MLFLOW_TRACKING_URI when
 * it is http(s)) or the workspace's store. */
static im_sweep_state_t *open_state(const char *cmd, const char *uri) {
  im_sweep_state_t *s = NULL;
  im_status_t st = im_sweep_state_open(uri, &s);
  if (st) {
    cli_fail(cmd, st, "cannot open the tracking store");
    return NULL;
  }
  return s;
}

/* ---- the live table ----------------------------------------------------------------- */
typedef struct {
  const im_sweep_config_t *c;
  double best;
  int header;
} table_t;

static void fmt_value(double v, char *buf, size_t n) {
  if (isfinite(v)) snprintf(buf, n, "%.5g", v);
  else snprintf(buf, n, "-");
}

static void table_row(table_t *t, int64_t trial, const char *state, double value, const char *params, const char *error) {
  const im_sweep_config_t *c = t->c;
  if (!t->header) {
    printf("%-6s %-9s %-11s %-11s %s\n", "trial", "state", c->metric_name ? c->metric_name : "metric", "best",
           "parameters");
    t->header = 1;
  }
  if (isfinite(value) && (!strcmp(state, "FINISHED") || !strcmp(state, "PRUNED")) &&
      (isnan(t->best) || (c->maximize ? value > t->best : value < t->best)))
    t->best = value;
  char v[32], b[32];
  fmt_value(value, v, sizeof v);
  fmt_value(t->best, b, sizeof b);
  printf("%-6lld %-9s %-11s %-11s %s%s%s\n", (long long)trial, state, v, b, params ? params : "",
         error ? "  error: " : "", error ? error : "");
  fflush(stdout);
}

static void on_event(void *user, const im_sweep_event_t *e) {
  table_row(user, e->trial, e->state, e->value, e->params, e->error);
}

/* Child agents print nothing but why a trial failed. */
static void on_event_quiet(void *user, const im_sweep_event_t *e) {
  if (e->error) fprintf(stderr, "imops sweep: trial %lld failed: %s\n", (long long)e->trial, e->error);
}

static void on_epoch(void *user, int64_t trial, int64_t epoch, double value) {
  if (isatty(STDOUT_FILENO)) {
    fprintf(stderr, "  trial %lld epoch %lld: %.5g\n", (long long)trial, (long long)epoch, value);
  }
}

static volatile int g_cancel;
static void on_signal(int sig) {
  (void)sig;
  g_cancel = 1;
}

/* ---- create ------------------------------------------------------------------------------ */
static int load_config(const char *cmd, const char *path, im_sweep_config_t **c) {
  im_status_t st = im_sweep_config_load(path, c);
  if (st) {
    fprintf(stderr, "imops %s: %s\n", cmd, im_last_error());
    return st == IM_ERR_IO ? CLI_FAIL : CLI_USAGE;
  }
  return 0;
}

static int do_create(const char *cmd, const sopts_t *o, char **id_out) {
  if (!o->data) return cli_usage_error(cmd, "--data DIR is required (the data set trials train on)");
  if (!im_is_dir(o->data)) {
    fprintf(stderr, "imops %s: --data %s is not a directory\n", cmd, o->data);
    return CLI_FAIL;
  }
  im_sweep_config_t *c = NULL;
  int rc = load_config(cmd, o->pos[0], &c);
  if (rc) return rc;
  if (im_sweep_check_train(c)) {
    fprintf(stderr, "imops %s: %s\n", cmd, im_last_error());
    im_sweep_config_free(c);
    return CLI_USAGE;
  }
  char *abs = realpath(o->data, NULL);
  im_sweep_state_t *s = open_state(cmd, o->tracking);
  rc = CLI_FAIL;
  if (s) {
    im_sweep_create_opts_t co = {.experiment = o->experiment, .data_dir = abs, .seed = o->seed,
                                 .max_trials = o->count};
    im_status_t st = im_sweep_state_create(s, c, &co, id_out);
    rc = st ? cli_fail(cmd, st, "cannot create the sweep") : CLI_OK;
  }
  free(abs);
  im_sweep_state_close(s);
  im_sweep_config_free(c);
  return rc;
}

static int cmd_create(int argc, char **argv) {
  const char *cmd = "sweep create";
  sopts_t o;
  int go = begin(cmd, argc, argv, &o, 1, "the sweep config (SWEEP.yaml)");
  if (go >= 0) return go;
  char *id = NULL;
  int rc = do_create(cmd, &o, &id);
  if (rc == CLI_OK) {
    if (o.json) printf("{\"sweep_id\": \"%s\"}\n", id);
    else printf("%s\n", id);
    fprintf(stderr, "run agents with: imops sweep agent %s\n", id);
  }
  im_free(id);
  return rc;
}

/* ---- agent --------------------------------------------------------------------------------- */
static int run_agent(const char *cmd, const sopts_t *o, const char *id, int64_t count, int quiet) {
  im_sweep_state_t *s = open_state(cmd, o->tracking);
  if (!s) return CLI_FAIL;
  im_sweep_info_t *w = NULL;
  im_status_t st = im_sweep_state_info(s, id, &w);
  im_sweep_state_close(s);
  if (st) return cli_fail(cmd, st, id);
  table_t t = {.c = w->config, .best = NAN};
  im_sweep_train_opts_t to = {.device = o->device, .threads = (int)o->threads, .on_epoch = quiet ? NULL : on_epoch};
  im_sweep_agent_opts_t ao = {.tracking_home = o->tracking, .sweep_id = id, .count = count, .stale_ms = o->stale * 1000, .objective_user = &to,
                              .on_event = quiet ? on_event_quiet : on_event, .user = &t, .cancel = &g_cancel};
  int64_t ran = 0;
  st = im_sweep_agent_run(&ao, &ran);
  im_sweep_info_free(w);
  if (st) return cli_fail(cmd, st, id);
  return CLI_OK;
}

static int finalize_and_report(const char *cmd, const sopts_t *o, const char *id);

/* With --json, the live table and the trials' progress go to stderr, so that
 * stdout carries only the final JSON summary. Returns the saved stdout (-1: none). */
static int live_to_stderr(int json) {
  if (!json) return -1;
  fflush(stdout);
  int fd = dup(STDOUT_FILENO);
  if (fd >= 0 && dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static void live_done(int saved) {
  if (saved < 0) return;
  fflush(stdout);
  dup2(saved, STDOUT_FILENO);
  close(saved);
}

static int cmd_agent(int argc, char **argv) {
  const char *cmd = "sweep agent";
  sopts_t o;
  int go = begin(cmd, argc, argv, &o, 1, "the sweep id");
  if (go >= 0) return go;
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  int saved = live_to_stderr(o.json);
  int rc = run_agent(cmd, &o, o.pos[0], o.count, 0);
  live_done(saved);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  if (rc == CLI_OK) rc = finalize_and_report(cmd, &o, o.pos[0]);
  return rc;
}

/* ---- run: create + child agents + a live table from the store ------------------------------------ */
static int cmd_run(int argc, char **argv) {
  const char *cmd = "sweep run";
  sopts_t o;
  int go = begin(cmd, argc, argv, &o, 1, "the sweep config (SWEEP.yaml)");
  if (go >= 0) return go;
  char *id = NULL;
  int saved = live_to_stderr(o.json);
  int rc = do_create(cmd, &o, &id);
  if (rc) {
    live_done(saved);
    return rc;
  }
  int64_t par = o.parallel > 0 ? o.parallel : 1;
  fprintf(stderr, "sweep %s: %lld agent%s\n", id, (long long)par, par > 1 ? "s" : "");
  fflush(stdout);
  fflush(stderr);
  int nkids = 0;
  for (int64_t i = 0; i < par; i++) {
    pid_t pid = fork();
    if (pid < 0) {
      perror("imops sweep run: fork");
      break;
    }
    if (pid == 0) {
      signal(SIGINT, on_signal);
      signal(SIGTERM, on_signal);
      _exit(run_agent(cmd, &o, id, 0, 1));
    }
    nkids++;
  }
  signal(SIGINT, SIG_IGN); /* the children finish their trial and stop */
  im_sweep_state_t *s = open_state(cmd, o.tracking);
  im_sweep_info_t *w = NULL;
  if (s && im_sweep_state_info(s, id, &w)) w = NULL;
  table_t t = {.c = w ? w->config : NULL, .best = NAN};
  char **shown = NULL;
  size_t nshown = 0;
  int alive = nkids, failed = 0;
  while (alive > 0 || t.c) {
    int status = 0;
    pid_t p;
    while (alive > 0 && (p = waitpid(-1, &status, WNOHANG)) > 0) {
      alive--;
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed = 1;
    }
    if (t.c) { /* print each trial's state changes */
      im_track_sweep_trial_t *tr = NULL;
      int64_t n = 0;
      if (im_sweep_state_trials(s, id, &tr, &n) == IM_OK) {
        if ((size_t)n > nshown) {
          char **ns = realloc(shown, (size_t)n * sizeof *ns);
          if (ns) {
            for (size_t i = nshown; i < (size_t)n; i++) ns[i] = NULL;
            shown = ns, nshown = (size_t)n;
          }
        }
        for (int64_t i = 0; i < n && (size_t)i < nshown; i++) {
          const char *st = !strcmp(tr[i].state, "CLAIMED") ? "RUNNING" : tr[i].state;
          if (shown[i] && !strcmp(shown[i], st)) continue;
          free(shown[i]);
          shown[i] = strdup(st);
          table_row(&t, tr[i].trial, st, tr[i].objective, tr[i].params, NULL);
        }
        im_track_sweep_trials_free(tr, n);
      }
    }
    if (alive == 0) break;
    struct timespec ts = {0, 300 * 1000000L};
    nanosleep(&ts, NULL);
  }
  for (size_t i = 0; i < nshown; i++) free(shown[i]);
  free(shown);
  im_sweep_info_free(w);
  im_sweep_state_close(s);
  signal(SIGINT, SIG_DFL);
  live_done(saved);
  rc = finalize_and_report(cmd, &o, id);
  if (failed && rc == CLI_OK) {
    fprintf(stderr, "imops %s: an agent failed (see the messages above)\n", cmd);
    rc = CLI_FAIL;
  }
  if (rc == CLI_OK && !o.json) printf("sweep %s\n", id);
  im_free(id);
  return rc;
}

/* ---- show ----------------------------------------------------------------------------------- */
static json_t *num_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *summary_json(const im_sweep_summary_t *r, const char *plots) {
  const im_sweep_config_t *c = r->info->config;
  json_t *j = json_object(), *trials = json_array(), *imp = json_array();
  json_object_set_new(j, "sweep_id", json_string(r->info->sweep_id));
  json_object_set_new(j, "name", json_string(r->info->name));
  json_object_set_new(j, "state", json_string(r->info->state));
  json_object_set_new(j, "method", json_string(im_sweep_method_name(c->method)));
  json_object_set_new(j, "metric", json_pack("{s:s?,s:s}", "name", c->metric_name, "goal",
                                             c->maximize ? "maximize" : "minimize"));
  json_object_set_new(j, "experiment_id", r->info->experiment_id ? json_string(r->info->experiment_id) : json_null());
  json_object_set_new(j, "parent_run_id", r->info->parent_run_id ? json_string(r->info->parent_run_id) : json_null());
  json_object_set_new(j, "max_trials", json_integer(r->info->max_trials));
  for (int64_t i = 0; i < r->n; i++) {
    json_t *p = json_loads(r->params[i], 0, NULL);
    json_array_append_new(trials, json_pack("{s:I,s:s,s:o,s:o,s:I,s:o}", "trial", (json_int_t)r->numbers[i], "state",
                                            r->states[i], "params", p ? p : json_object(), "value",
                                            num_or_null(r->values[i]), "steps", (json_int_t)r->steps[i], "run_id",
                                            r->run_ids[i] ? json_string(r->run_ids[i]) : json_null()));
  }
  json_object_set_new(j, "trials", trials);
  json_object_set_new(j, "counts", json_pack("{s:I,s:I,s:I,s:I}", "finished", (json_int_t)r->n_finished, "pruned",
                                             (json_int_t)r->n_pruned, "failed", (json_int_t)r->n_failed, "running",
                                             (json_int_t)r->n_running));
  json_object_set_new(j, "best", r->best >= 0 ? json_incref(json_array_get(trials, (size_t)r->best)) : json_null());
  for (size_t i = 0; i < r->n_importance; i++)
    json_array_append_new(imp, json_pack("{s:s,s:f,s:f,s:f}", "parameter", r->importance[i].name, "importance",
                                         r->importance[i].importance, "correlation", r->importance[i].correlation,
                                         "rank_correlation", r->importance[i].rank_correlation));
  json_object_set_new(j, "importance", imp);
  json_t *pl = json_array();
  if (plots) {
    char p[4096];
    snprintf(p, sizeof p, "%s/sweep_metric.svg", plots);
    json_array_append_new(pl, json_string(p));
    snprintf(p, sizeof p, "%s/parallel_coordinates.svg", plots);
    json_array_append_new(pl, json_string(p));
  }
  json_object_set_new(j, "plots", pl);
  return j;
}

static void print_summary(const im_sweep_summary_t *r, const char *plots) {
  const im_sweep_config_t *c = r->info->config;
  const char *metric = c->metric_name ? c->metric_name : "metric";
  printf("sweep %s '%s': %s, %s %s; %s\n", r->info->sweep_id, r->info->name, im_sweep_method_name(c->method),
         c->maximize ? "maximize" : "minimize", metric, r->info->state);
  printf("trials: %lld (%lld finished, %lld pruned, %lld failed, %lld running)\n", (long long)r->n,
         (long long)r->n_finished, (long long)r->n_pruned, (long long)r->n_failed, (long long)r->n_running);
  if (r->info->parent_run_id) printf("parent run: %s\n", r->info->parent_run_id);
  const char *hdr[] = {"trial", "state", metric, "parameters", "run"};
  cli_table_t *t = cli_table_new(5, hdr);
  for (int64_t i = 0; t && i < r->n; i++) {
    char num[32], v[32];
    snprintf(num, sizeof num, "%lld", (long long)r->numbers[i]);
    fmt_value(r->values[i], v, sizeof v);
    const char *cells[] = {num, r->states[i], v, r->params[i], r->run_ids[i]};
    cli_table_row(t, cells);
  }
  if (t) cli_table_print(t, 100);
  cli_table_free(t);
  if (r->best >= 0) {
    printf("\nbest: trial %lld, %s %.6g\n  parameters %s\n", (long long)r->numbers[r->best], metric,
           r->values[r->best], r->params[r->best]);
    if (r->run_ids[r->best]) printf("  run %s (model runs:/%s/model)\n", r->run_ids[r->best], r->run_ids[r->best]);
    printf("  train with them: imops train --data DIR --params-from-sweep %s\n", r->info->sweep_id);
  }
  if (r->n_importance) {
    printf("\nparameter importance (vs %s):\n", metric);
    const char *ih[] = {"parameter", "importance", "correlation", "rank correlation"};
    cli_table_t *it = cli_table_new(4, ih);
    for (size_t i = 0; it && i < r->n_importance; i++) {
      char a[32], b[32], c2[32];
      snprintf(a, sizeof a, "%.3f", r->importance[i].importance);
      snprintf(b, sizeof b, "%+.3f", r->importance[i].correlation);
      snprintf(c2, sizeof c2, "%+.3f", r->importance[i].rank_correlation);
      const char *cells[] = {r->importance[i].name, a, b, c2};
      cli_table_row(it, cells);
    }
    if (it) cli_table_print(it, 60);
    cli_table_free(it);
  }
  if (plots) printf("\nplots: %s/sweep_metric.svg, %s/parallel_coordinates.svg\n", plots, plots);
}

static int show(const char *cmd, const char *uri, const char *id, int json) {
  im_sweep_state_t *s = open_state(cmd, uri);
  if (!s) return CLI_FAIL;
  char *plots = NULL;
  im_status_t st = im_sweep_state_finalize(s, id, &plots);
  if (st && st != IM_ERR_UNSUPPORTED) {
    im_sweep_state_close(s);
    return cli_fail(cmd, st, id);
  }
  im_sweep_summary_t *r = NULL;
  st = im_sweep_state_summary(s, id, &r);
  im_sweep_state_close(s);
  if (st) {
    im_free(plots);
    return cli_fail(cmd, st, id);
  }
  if (json) {
    json_t *j = summary_json(r, plots);
    char *txt = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (txt) puts(txt);
    free(txt);
    json_decref(j);
  } else {
    print_summary(r, plots);
  }
  im_free(plots);
  im_sweep_summary_free(r);
  return CLI_OK;
}

static int finalize_and_report(const char *cmd, const sopts_t *o, const char *id) {
  if (!o->json) printf("\n");
  return show(cmd, o->tracking, id, o->json);
}

static int cmd_show(int argc, char **argv) {
  const char *cmd = "sweep show";
  sopts_t o;
  int go = begin(cmd, argc, argv, &o, 1, "the sweep id");
  if (go >= 0) return go;
  return show(cmd, o.tracking, o.pos[0], o.json);
}

/* ---- list ------------------------------------------------------------------------------------ */
static int cmd_list(int argc, char **argv) {
  const char *cmd = "sweep list";
  sopts_t o;
  int go = begin(cmd, argc, argv, &o, 0, "");
  if (go >= 0) return go;
  im_sweep_state_t *s = open_state(cmd, o.tracking);
  if (!s) return CLI_FAIL;
  im_track_sweep_t *items = NULL;
  int64_t n = 0;
  im_status_t st = im_sweep_state_sweeps(s, &items, &n);
  if (st) {
    im_sweep_state_close(s);
    return cli_fail(cmd, st, "cannot list the sweeps");
  }
  json_t *arr = json_array();
  const char *hdr[] = {"sweep", "name", "method", "metric", "state", "trials", "best", "created"};
  cli_table_t *t = o.json ? NULL : cli_table_new(8, hdr);
  for (int64_t i = 0; i < n; i++) {
    im_sweep_summary_t *sm = NULL;
    double best = NAN;
    int64_t trials = 0;
    if (im_sweep_state_summary(s, items[i].sweep_id, &sm) == IM_OK) {
      trials = sm->n;
      if (sm->best >= 0) best = sm->values[sm->best];
    }
    im_sweep_summary_free(sm);
    if (o.json) {
      json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:s?,s:s?,s:s,s:I,s:I,s:o,s:I}", "sweep_id", items[i].sweep_id,
                                           "name", items[i].name, "method", items[i].method, "metric",
                                           items[i].metric_name, "goal", items[i].metric_goal, "state", items[i].state,
                                           "trials", (json_int_t)trials, "max_trials", (json_int_t)items[i].max_trials,
                                           "best", num_or_null(best), "creation_time",
                                           (json_int_t)items[i].creation_time));
    } else if (t) {
      char tr[48], b[32], tm[32];
      if (items[i].max_trials > 0) snprintf(tr, sizeof tr, "%lld/%lld", (long long)trials, (long long)items[i].max_trials);
      else snprintf(tr, sizeof tr, "%lld", (long long)trials);
      fmt_value(best, b, sizeof b);
      const char *cells[] = {items[i].sweep_id, items[i].name, items[i].method,
                             items[i].metric_name ? items[i].metric_name : "", items[i].state, tr, b,
                             cli_fmt_time(items[i].creation_time, tm, sizeof tm)};
      cli_table_row(t, cells);
    }
  }
  if (o.json) {
    char *txt = json_dumps(arr, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (txt) puts(txt);
    free(txt);
  } else if (t) {
    cli_table_print(t, 40);
  }
  json_decref(arr);
  cli_table_free(t);
  im_track_sweep_list_free(items, n);
  im_sweep_state_close(s);
  return CLI_OK;
}

/* ---- export-katib --------------------------------------------------------------------------- */
static int cmd_katib(int argc, char **argv) {
  const char *cmd = "sweep export-katib";
  sopts_t o;
  int go = begin(cmd, argc, argv, &o, 1, "a sweep config (SWEEP.yaml) or a sweep id");
  if (go >= 0) return go;
  im_sweep_config_t *c = NULL;
  im_sweep_info_t *w = NULL;
  struct stat sb;
  int rc;
  if (stat(o.pos[0], &sb) == 0) {
    if ((rc = load_config(cmd, o.pos[0], &c))) return rc;
  } else {
    im_sweep_state_t *s = open_state(cmd, o.tracking);
    if (!s) return CLI_FAIL;
    im_status_t st = im_sweep_state_info(s, o.pos[0], &w);
    im_sweep_state_close(s);
    if (st) {
      fprintf(stderr, "imops %s: '%s' is neither a file nor a sweep id in the store: %s\n", cmd, o.pos[0],
              im_last_error());
      return CLI_FAIL;
    }
  }
  const im_sweep_config_t *cfg = c ? c : w->config;
  im_sweep_katib_opts_t ko = {.image = o.image, .namespace_ = o.namespace_, .data_dir = o.data ? o.data : w ? w->data_dir : NULL,
                              .parallel = (int)o.parallel, .max_trials = o.count ? o.count : w ? w->max_trials : 0};
  im_buf_t b = {0};
  im_status_t st = im_sweep_katib_yaml(cfg, &ko, &b);
  if (st) {
    rc = cli_fail(cmd, st, "cannot export");
  } else if (o.output && strcmp(o.output, "-")) {
    st = im_file_write_atomic(o.output, b.data, b.len);
    rc = st ? cli_fail(cmd, st, o.output) : CLI_OK;
    if (!st) fprintf(stderr, "wrote %s\n", o.output);
  } else {
    fwrite(b.data, 1, b.len, stdout);
    rc = CLI_OK;
  }
  im_buf_free(&b);
  im_sweep_config_free(c);
  im_sweep_info_free(w);
  return rc;
}

int cli_sweep(int argc, char **argv) {
  static const cli_command_t subs[] = {
      {"create", "", cmd_create}, {"agent", "", cmd_agent}, {"run", "", cmd_run},
      {"show", "", cmd_show},     {"list", "", cmd_list},   {"export-katib", "", cmd_katib},
  };
  if (argc < 2) {
    fputs(usage_text, stderr);
    return CLI_USAGE;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    fputs(usage_text, stdout);
    return CLI_OK;
  }
  for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
    if (!strcmp(argv[1], subs[i].name)) return subs[i].run(argc - 1, argv + 1);
  return cli_usage_error("sweep", "unknown subcommand '%s' (create, agent, run, show, list, export-katib)", argv[1]);
}

/* ---- imops train --params-from-sweep ---------------------------------------------------------- */
/* The train option a sweep parameter sets: "optimizer.lr" -> "lr", "batch_size" -> "batch-size". */
static void option_of(const char *param, char *out, size_t n) {
  const char *k = !strncmp(param, "optimizer.", 10) ? (!strcmp(param + 10, "name") ? "optimizer" : param + 10) : param;
  if (!strcmp(k, "learning_rate")) k = "lr";
  snprintf(out, n, "%s", k);
  for (char *p = out; *p; p++)
    if (*p == '_') *p = '-';
}

static int given(int argc, char **argv, const char *opt) {
  size_t l = strlen(opt);
  for (int i = 1; i < argc; i++)
    if (!strncmp(argv[i], "--", 2) && !strncmp(argv[i] + 2, opt, l) && (argv[i][2 + l] == 0 || argv[i][2 + l] == '='))
      return 1;
  return 0;
}

int cli_sweep_train_params(const char *cmd, int argc, char **argv, void *opts) {
  static char *model, *data; /* live as long as the options */
  const char *id = NULL, *uri = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--")) break;
    if (!strcmp(argv[i], "--params-from-sweep") && i + 1 < argc) id = argv[i + 1];
    else if (!strncmp(argv[i], "--params-from-sweep=", 20)) id = argv[i] + 20;
    else if (!strcmp(argv[i], "--tracking-uri") && i + 1 < argc) uri = argv[i + 1];
    else if (!strncmp(argv[i], "--tracking-uri=", 15)) uri = argv[i] + 15;
  }
  if (!id) return 0;
  if (given(argc, argv, "resume")) return cli_usage_error(cmd, "--params-from-sweep cannot go with --resume");
  im_sweep_state_t *s = open_state(cmd, uri);
  if (!s) return CLI_FAIL;
  im_sweep_summary_t *r = NULL;
  im_status_t st = im_sweep_state_summary(s, id, &r);
  im_sweep_state_close(s);
  if (st) return cli_fail(cmd, st, "--params-from-sweep");
  if (r->best < 0) {
    fprintf(stderr, "imops %s: sweep %s has no finished trial with a %s yet\n", cmd, id,
            r->info->config->metric_name ? r->info->config->metric_name : "metric");
    im_sweep_summary_free(r);
    return CLI_FAIL;
  }
  const im_sweep_config_t *c = r->info->config;
  const char *params = r->params[r->best];
  im_train_opts_t *o = opts;
  im_free(model);
  model = NULL;
  st = im_sweep_train_apply(c, params, o, &model);
  if (st) {
    im_sweep_summary_free(r);
    return cli_fail(cmd, st, "--params-from-sweep");
  }
  if (model) o->model = model;
  if (!o->data_dir && r->info->data_dir && !given(argc, argv, "data")) {
    im_free(data);
    o->data_dir = data = im_strdup(r->info->data_dir);
  }
  fprintf(stderr, "parameters from sweep %s, trial %lld (%s %.6g):", id, (long long)r->numbers[r->best],
          c->metric_name ? c->metric_name : "metric", r->values[r->best]);
  int overridden = 0;
  for (size_t i = 0; i < c->n_params; i++) {
    char opt[300];
    option_of(c->params[i].name, opt, sizeof opt);
    char *txt = im_sweep_params_value(params, c->params[i].name);
    json_t *v = txt ? json_loads(txt, JSON_DECODE_ANY, NULL) : NULL;
    if (given(argc, argv, opt)) overridden++;
    else fprintf(stderr, " --%s=%s", opt, json_is_string(v) ? json_string_value(v) : txt ? txt : "?");
    json_decref(v);
    im_free(txt);
  }
  fprintf(stderr, "\n");
  if (overridden) {
    fprintf(stderr, "given on the command line instead:");
    for (size_t i = 0; i < c->n_params; i++) {
      char opt[300];
      option_of(c->params[i].name, opt, sizeof opt);
      if (given(argc, argv, opt)) fprintf(stderr, " --%s", opt);
    }
    fprintf(stderr, "\n");
  }
  im_sweep_summary_free(r);
  return 0;
}
