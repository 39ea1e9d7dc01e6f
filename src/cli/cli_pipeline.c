/* imops pipeline: run a pipeline file locally (DAG of imops steps, live
 * prefixed output, caching, statuses in the store), validate it, compile it
 * to Kubeflow Pipelines v2 IR YAML, list and show past pipeline runs, and
 * exec (run one step inside a Kubeflow container, writing its outputs to the
 * files KFP gives). */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "imops/core.h"
#include "imops/pipeline.h"
#include "imops/track.h"

static const char usage_text[] =
    "usage: imops pipeline run FILE [-p NAME=VALUE]... [--parallel N] [--no-cache] [--json]\n"
    "       imops pipeline validate FILE [-p NAME=VALUE]...\n"
    "       imops pipeline compile FILE --target kfp -o OUT.yaml [--image IMAGE] [--pvc NAME] [--mount-path DIR]\n"
    "       imops pipeline runs list [--pipeline NAME] [--max N] [--json]\n"
    "       imops pipeline runs show ID [--json] [--logs STEP]\n"
    "       imops pipeline exec --output NAME=FILE [--json-key NAME=KEY] [--file NAME=PATH]... -- ARGS...\n"
    "\n"
    "A pipeline file (docs/pipelines.md) declares parameters and steps, each an imops\n"
    "command with {{params.x}} and {{steps.s.outputs.o}} references, after: and when:.\n"
    "The file is checked completely before anything runs (errors name file:line:col).\n"
    "\n"
    "run: steps run as child processes of this imops binary, independent ones in\n"
    "parallel; their output is shown live with a [step] prefix and kept as log\n"
    "artifacts of a run in experiment 'pipelines'. A step whose command, parameters,\n"
    "input contents and upstream steps are unchanged since a successful run is not\n"
    "rerun (CACHED, outputs reused) unless --no-cache. Ctrl-C stops the steps cleanly.\n"
    "  -p, --param NAME=VALUE   set a parameter (repeatable)\n"
    "  --parallel N             steps at once (default 1)\n"
    "  --no-cache               run every step\n"
    "  --experiment NAME        experiment of the tracked run (default pipelines)\n"
    "  --binary PATH            program the steps run (default: this imops)\n"
    "  --grace S                seconds between SIGTERM and SIGKILL on Ctrl-C (default 10)\n"
    "  --json                   print the result as JSON on stdout (step output goes to stderr)\n"
    "compile: --target kfp (the only target) writes Kubeflow Pipelines v2 IR YAML\n"
    "  -o, --output FILE        where ('-': stdout)\n"
    "  --image IMAGE            the container image with imops (default imops:VERSION, deploy/Dockerfile)\n"
    "  --pvc NAME               the workspace volume claim mounted in every step (default\n"
    "                           workspace-surface; '' for none)\n"
    "  --mount-path DIR         where it is mounted (default /workspace, the image's IMOPS_HOME and workdir)\n"
    "runs: --logs STEP prints a step's log\n"
    "\n"
    "Exit status: 0 success, 1 the run failed or was canceled, 2 usage error or an invalid file.\n";

static volatile sig_atomic_t cancel_flag;

static void on_signal(int sig) {
  (void)sig;
  cancel_flag = 1;
}

typedef struct {
  int json;
} ui_t;

static void on_line(void *user, const char *step, im_pipeline_stream_t stream, const char *line, size_t len) {
  ui_t *u = user;
  FILE *f = u->json || stream == IM_PIPELINE_STDERR ? stderr : stdout;
  fprintf(f, "[%s] %.*s\n", step, (int)len, line);
  fflush(f);
}

static void on_status(void *user, const char *step, const char *status, const char *message) {
  (void)user;
  fprintf(stderr, "[%s] %s%s%s\n", step, status, message && *message ? ": " : "", message ? message : "");
  fflush(stderr);
}

static void fmt_duration(int64_t start, int64_t end, char *buf, size_t n) {
  if (start == INT64_MIN || end == INT64_MIN) {
    snprintf(buf, n, "-");
    return;
  }
  double s = (double)(end - start) / 1000.0;
  if (s < 60) snprintf(buf, n, "%.1fs", s);
  else snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
}

static json_t *loads_or_empty(const char *s) {
  json_t *j = s ? json_loads(s, 0, NULL) : NULL;
  return j ? j : json_object();
}

static void print_json(json_t *j) {
  char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  if (s) puts(s);
  free(s);
  json_decref(j);
}

static json_t *time_json(int64_t t) { return t == INT64_MIN ? json_null() : json_integer(t); }

/* ---- run -------------------------------------------------------------------------- */
static int do_run(const char *file, const char **params, int n_params, int parallel, int no_cache, int json,
                  const char *experiment, const char *binary, int grace) {
  im_pipeline_t *p = NULL;
  if (im_pipeline_load_file(file, &p)) {
    fprintf(stderr, "imops pipeline: %s\n", im_last_error());
    return CLI_USAGE;
  }
  char *pj = NULL;
  if (im_pipeline_resolve_params(p, params, n_params, &pj)) {
    fprintf(stderr, "imops pipeline: %s\n", im_last_error());
    im_pipeline_free(p);
    return CLI_USAGE;
  }
  im_free(pj);
  struct sigaction sa = {0}, old_int, old_term;
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  ui_t ui = {.json = json};
  im_pipeline_run_opts_t o = {.binary = binary, .params = params, .n_params = n_params, .parallel = parallel,
                              .no_cache = no_cache, .experiment = experiment, .cancel = &cancel_flag,
                              .grace_seconds = grace, .on_line = on_line, .on_status = on_status, .user = &ui};
  im_pipeline_result_t *r = NULL;
  im_status_t st = im_pipeline_run(p, &o, &r);
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  if (st) {
    int rc = cli_fail("pipeline", st, "cannot run the pipeline");
    im_pipeline_free(p);
    return rc;
  }
  if (json) {
    json_t *steps = json_array();
    for (int i = 0; i < r->n_steps; i++) {
      const im_pipeline_step_result_t *s = &r->steps[i];
      json_t *js = json_pack("{s:s,s:s,s:s,s:i,s:i}", "name", s->name, "status", s->status, "message",
                             s->message ? s->message : "", "attempts", s->attempts, "exit_code", s->exit_code);
      json_object_set_new(js, "cache_key", s->cache_key ? json_string(s->cache_key) : json_null());
      json_object_set_new(js, "start_time", time_json(s->start_time));
      json_object_set_new(js, "end_time", time_json(s->end_time));
      json_object_set_new(js, "outputs", loads_or_empty(s->outputs_json));
      json_object_set_new(js, "log", s->log_path ? json_string(s->log_path) : json_null());
      json_array_append_new(steps, js);
    }
    json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:o}", "pipeline", im_pipeline_name(p), "pipeline_run_id",
                          r->pipeline_run_id, "run_id", r->tracked_run_id ? r->tracked_run_id : "", "status", r->status,
                          "params", loads_or_empty(r->params_json));
    json_object_set_new(j, "start_time", time_json(r->start_time));
    json_object_set_new(j, "end_time", time_json(r->end_time));
    json_object_set_new(j, "steps", steps);
    print_json(j);
  } else {
    const char *h[] = {"step", "status", "attempts", "duration", "message"};
    cli_table_t *t = cli_table_new(5, h);
    for (int i = 0; t && i < r->n_steps; i++) {
      const im_pipeline_step_result_t *s = &r->steps[i];
      char att[16], dur[32];
      snprintf(att, sizeof att, "%d", s->attempts);
      fmt_duration(s->start_time, s->end_time, dur, sizeof dur);
      const char *row[] = {s->name, s->status, att, dur, s->message};
      cli_table_row(t, row);
    }
    printf("\npipeline %s: %s (run %s)\n", im_pipeline_name(p), r->status, r->pipeline_run_id);
    cli_table_print(t, 100);
    cli_table_free(t);
    printf("logs: imops pipeline runs show %.12s --logs STEP\n", r->pipeline_run_id);
  }
  int rc = strcmp(r->status, "SUCCEEDED") ? CLI_FAIL : CLI_OK;
  im_pipeline_result_free(r);
  im_pipeline_free(p);
  return rc;
}

/* ---- runs ------------------------------------------------------------------------- */
static json_t *run_json(const im_track_pipeline_run_t *r) {
  json_t *steps = json_array();
  for (int i = 0; i < r->n_steps; i++) {
    const im_track_pipeline_step_t *s = &r->steps[i];
    json_t *js = json_pack("{s:s,s:s,s:I,s:s}", "name", s->step_name, "status", s->status, "attempt",
                           (json_int_t)s->attempt, "message", s->message);
    json_object_set_new(js, "cache_key", s->cache_key ? json_string(s->cache_key) : json_null());
    json_object_set_new(js, "run_id", s->run_uuid ? json_string(s->run_uuid) : json_null());
    json_object_set_new(js, "start_time", time_json(s->start_time));
    json_object_set_new(js, "end_time", time_json(s->end_time));
    json_object_set_new(js, "inputs", loads_or_empty(s->inputs));
    json_object_set_new(js, "outputs", loads_or_empty(s->outputs));
    json_array_append_new(steps, js);
  }
  json_t *j = json_pack("{s:s,s:s,s:s,s:o}", "pipeline_run_id", r->pipeline_run_id, "pipeline", r->pipeline_name,
                        "status", r->status, "params", loads_or_empty(r->params));
  json_object_set_new(j, "run_id", r->run_uuid ? json_string(r->run_uuid) : json_null());
  json_object_set_new(j, "experiment_id", r->experiment_id ? json_string(r->experiment_id) : json_null());
  json_object_set_new(j, "creation_time", json_integer(r->creation_time));
  json_object_set_new(j, "start_time", time_json(r->start_time));
  json_object_set_new(j, "end_time", time_json(r->end_time));
  json_object_set_new(j, "steps", steps);
  return j;
}

static int print_log(const im_track_pipeline_run_t *r, const char *step) {
  for (int i = 0; i < r->n_steps; i++) {
    const im_track_pipeline_step_t *s = &r->steps[i];
    if (strcmp(s->step_name, step)) continue;
    json_t *in = loads_or_empty(s->inputs);
    const char *log = json_string_value(json_object_get(in, "log"));
    int rc = CLI_OK;
    if (!log) {
      fprintf(stderr, "imops pipeline: step '%s' has no log (%s%s%s)\n", step, s->status, *s->message ? ": " : "",
              s->message);
      rc = CLI_FAIL;
    } else {
      uint8_t *data = NULL;
      size_t len = 0;
      if (im_file_read(log, 0, &data, &len)) rc = cli_fail("pipeline", IM_ERR_IO, "cannot read the log");
      else fwrite(data, 1, len, stdout);
      im_free(data);
    }
    json_decref(in);
    return rc;
  }
  fprintf(stderr, "imops pipeline: run %s has no step '%s'\n", r->pipeline_run_id, step);
  return CLI_FAIL;
}

static int do_runs(int argc, char **argv) {
  static const struct option longopts[] = {{"json", no_argument, 0, 'j'},       {"logs", required_argument, 0, 'l'},
                                           {"pipeline", required_argument, 0, 'P'}, {"max", required_argument, 0, 'm'},
                                           {"help", no_argument, 0, 'h'},       {0, 0, 0, 0}};
  int json = 0;
  const char *logs = NULL, *pipeline = NULL;
  int64_t max = 0;
  optind = 1;
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (ch) {
      case 'j': json = 1; break;
      case 'l': logs = optarg; break;
      case 'P': pipeline = optarg; break;
      case 'm':
        if (cli_parse_i64("pipeline", "--max", optarg, 1, 100000, &max)) return CLI_USAGE;
        break;
      case 'h': fputs(usage_text, stdout); return CLI_OK;
      case ':': return cli_usage_error("pipeline", "%s needs a value", argv[optind - 1]);
      default: return cli_usage_error("pipeline", "unknown option '%s'", argv[optind - 1]);
    }
  }
  char **pos = argv + optind;
  int npos = argc - optind;
  if (npos < 1) return cli_usage_error("pipeline", "runs needs list or show ID");
  int is_list = !strcmp(pos[0], "list"), is_show = !strcmp(pos[0], "show");
  if (!is_list && !is_show) return cli_usage_error("pipeline", "unknown 'runs' subcommand '%s' (list, show)", pos[0]);
  if (is_list && npos != 1) return cli_usage_error("pipeline", "runs list takes no arguments");
  if (is_show && npos != 2) return cli_usage_error("pipeline", "runs show takes one ID");
  im_track_store_t *s = NULL;
  im_status_t st = im_track_open(NULL, &s);
  if (st) return cli_fail("pipeline", st, "cannot open the tracking store");
  int rc = CLI_OK;
  if (is_list) {
    im_track_pipeline_run_list_t *l = NULL;
    if ((st = im_track_pipeline_run_list(s, pipeline, max, &l))) {
      rc = cli_fail("pipeline", st, "cannot list pipeline runs");
    } else if (json) {
      json_t *a = json_array();
      for (int64_t i = 0; i < l->n; i++) json_array_append_new(a, run_json(&l->items[i]));
      print_json(json_pack("{s:o}", "pipeline_runs", a));
    } else {
      const char *h[] = {"id", "pipeline", "status", "started", "duration", "steps"};
      cli_table_t *t = cli_table_new(6, h);
      for (int64_t i = 0; t && i < l->n; i++) {
        const im_track_pipeline_run_t *r = &l->items[i];
        char id[16], tb[32], dur[32], steps[128] = "";
        snprintf(id, sizeof id, "%.12s", r->pipeline_run_id);
        fmt_duration(r->start_time, r->end_time, dur, sizeof dur);
        static const char *const kinds[] = {"SUCCEEDED", "CACHED", "SKIPPED", "FAILED", "CANCELED", "RUNNING", "PENDING"};
        for (int k = 0; k < 7; k++) {
          int c = 0;
          for (int q = 0; q < r->n_steps; q++) c += !strcmp(r->steps[q].status, kinds[k]);
          if (c)
            snprintf(steps + strlen(steps), sizeof steps - strlen(steps), "%s%d %s", *steps ? ", " : "", c, kinds[k]);
        }
        const char *row[] = {id, r->pipeline_name, r->status, cli_fmt_time(r->start_time, tb, sizeof tb), dur, steps};
        cli_table_row(t, row);
      }
      cli_table_print(t, 80);
      cli_table_free(t);
    }
    im_track_pipeline_run_list_free(l);
  } else {
    im_track_pipeline_run_t *r = NULL;
    if ((st = im_track_pipeline_run_get(s, pos[1], &r))) {
      rc = cli_fail("pipeline", st, "cannot show that pipeline run");
    } else if (logs) {
      rc = print_log(r, logs);
    } else if (json) {
      print_json(run_json(r));
    } else {
      char tb[32], dur[32];
      fmt_duration(r->start_time, r->end_time, dur, sizeof dur);
      printf("pipeline run %s\npipeline:   %s\nstatus:     %s\nstarted:    %s (%s)\ntracked run: %s\nparams:     %s\n\n",
             r->pipeline_run_id, r->pipeline_name, r->status, cli_fmt_time(r->start_time, tb, sizeof tb), dur,
             r->run_uuid ? r->run_uuid : "-", r->params);
      const char *h[] = {"step", "status", "attempts", "duration", "cache key", "message"};
      cli_table_t *t = cli_table_new(6, h);
      for (int i = 0; t && i < r->n_steps; i++) {
        const im_track_pipeline_step_t *sp = &r->steps[i];
        char att[16], key[20];
        snprintf(att, sizeof att, "%lld", (long long)sp->attempt);
        snprintf(key, sizeof key, "%.12s", sp->cache_key ? sp->cache_key : "");
        fmt_duration(sp->start_time, sp->end_time, dur, sizeof dur);
        const char *row[] = {sp->step_name, sp->status, att, dur, key, sp->message};
        cli_table_row(t, row);
      }
      cli_table_print(t, 90);
      cli_table_free(t);
    }
    im_track_pipeline_run_free(r);
  }
  im_track_close(s);
  return rc;
}

/* ---- compile ------------------------------------------------------------------------ */
static int do_compile(const char *file, const char *target, const char *out, const im_pipeline_kfp_opts_t *ko) {
  if (!target || strcmp(target, "kfp")) return cli_usage_error("pipeline", "compile needs --target kfp");
  if (!out) return cli_usage_error("pipeline", "compile needs -o FILE (or -o - for stdout)");
  im_pipeline_t *p = NULL;
  if (im_pipeline_load_file(file, &p)) {
    fprintf(stderr, "imops pipeline: %s\n", im_last_error());
    return CLI_USAGE;
  }
  im_buf_t b = {0};
  im_status_t st = im_pipeline_compile_kfp(p, ko, &b);
  int rc = CLI_OK;
  if (st) rc = cli_fail("pipeline", st, "cannot compile");
  else if (!strcmp(out, "-")) fwrite(b.data, 1, b.len, stdout);
  else if ((st = im_file_write_atomic(out, b.data, b.len))) rc = cli_fail("pipeline", st, out);
  else fprintf(stderr, "wrote %s (Kubeflow Pipelines v2, %d steps)\n", out, im_pipeline_n_steps(p));
  im_buf_free(&b);
  im_pipeline_free(p);
  return rc;
}

/* ---- exec (inside a Kubeflow container) -------------------------------------------- */
#define MAX_EXEC_OUTPUTS 64

typedef struct {
  char *name, *dest, *key, *file;
} exec_out_t;

static exec_out_t *find_out(exec_out_t *o, int *n, const char *spec, char **value) {
  const char *eq = strchr(spec, '=');
  if (!eq || eq == spec) return NULL;
  *value = (char *)(uintptr_t)(eq + 1);
  for (int i = 0; i < *n; i++)
    if (strlen(o[i].name) == (size_t)(eq - spec) && !strncmp(o[i].name, spec, (size_t)(eq - spec))) return &o[i];
  if (*n == MAX_EXEC_OUTPUTS) return NULL;
  exec_out_t *e = &o[(*n)++];
  memset(e, 0, sizeof *e);
  e->name = im_strndup(spec, (size_t)(eq - spec));
  return e->name ? e : NULL;
}

static int do_exec(int argc, char **argv) {
  exec_out_t outs[MAX_EXEC_OUTPUTS];
  int n = 0, rc = CLI_OK;
  int i = 1;
  while (i < argc && strcmp(argv[i], "--")) {
    const char *opt = argv[i];
    if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
      fputs(usage_text, stdout);
      goto done;
    }
    if (strcmp(opt, "--output") && strcmp(opt, "--json-key") && strcmp(opt, "--file")) {
      rc = cli_usage_error("pipeline", "exec: unknown option '%s'", opt);
      goto done;
    }
    char *value = NULL;
    exec_out_t *e = i + 1 < argc ? find_out(outs, &n, argv[i + 1], &value) : NULL;
    if (!e) {
      rc = cli_usage_error("pipeline", "exec: %s needs NAME=VALUE", opt);
      goto done;
    }
    if (!strcmp(opt, "--output")) e->dest = value;
    else if (!strcmp(opt, "--json-key")) e->key = value;
    else e->file = value;
    i += 2;
  }
  if (i >= argc - 1) {
    rc = cli_usage_error("pipeline", "exec needs '--' and the imops command to run");
    goto done;
  }
  for (int k = 0; k < n; k++)
    if (!outs[k].dest || (!outs[k].key && !outs[k].file)) {
      rc = cli_usage_error("pipeline", "exec: output '%s' needs --output and --json-key or --file", outs[k].name);
      goto done;
    }
  int pfd[2];
  if (pipe(pfd)) {
    rc = cli_fail("pipeline", IM_ERR_IO, "pipe");
    goto done;
  }
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    close(pfd[0]);
    dup2(pfd[1], 1);
    close(pfd[1]);
    char **cargv = argv + i; /* argv[i] is "--": replaced by the program name */
    cargv[0] = "imops";
    execv("/proc/self/exe", cargv);
    fprintf(stderr, "imops pipeline exec: cannot run imops: %s\n", strerror(errno));
    _exit(127);
  }
  close(pfd[1]);
  im_buf_t cap = {0};
  char buf[65536];
  ssize_t r;
  while ((r = read(pfd[0], buf, sizeof buf)) != 0) {
    if (r < 0) {
      if (errno == EINTR) continue;
      break;
    }
    fwrite(buf, 1, (size_t)r, stdout);
    fflush(stdout);
    if (cap.len < (16u << 20)) im_buf_append(&cap, buf, (size_t)r);
  }
  close(pfd[0]);
  int ws = 0;
  while (pid > 0 && waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
  }
  if (pid < 0 || !WIFEXITED(ws) || WEXITSTATUS(ws)) {
    fprintf(stderr, "imops pipeline exec: the step failed\n");
    rc = pid > 0 && WIFEXITED(ws) ? WEXITSTATUS(ws) : CLI_FAIL;
  }
  for (int k = 0; k < n && rc == CLI_OK; k++) {
    char *value = NULL;
    im_status_t st = im_pipeline_read_output(cap.data, cap.len, outs[k].key, outs[k].file, &value);
    if (!st) {
      char *dir = im_strdup(outs[k].dest), *slash = dir ? strrchr(dir, '/') : NULL;
      if (slash && slash != dir) *slash = '\0', im_mkdir_p(dir);
      im_free(dir);
      st = im_file_write_atomic(outs[k].dest, value, strlen(value));
    }
    if (st) rc = cli_fail("pipeline", st, outs[k].name);
    im_free(value);
  }
  im_buf_free(&cap);
done:
  for (int k = 0; k < n; k++) im_free(outs[k].name);
  return rc;
}

int cli_pipeline(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage_text, stderr);
    return CLI_USAGE;
  }
  const char *sub = argv[1];
  if (!strcmp(sub, "--help") || !strcmp(sub, "-h")) {
    fputs(usage_text, stdout);
    return CLI_OK;
  }
  if (!strcmp(sub, "runs")) return do_runs(argc - 1, argv + 1);
  if (!strcmp(sub, "exec")) return do_exec(argc - 1, argv + 1);
  if (strcmp(sub, "run") && strcmp(sub, "compile") && strcmp(sub, "validate"))
    return cli_usage_error("pipeline", "unknown subcommand '%s' (run, validate, compile, runs, exec)", sub);
  static const struct option longopts[] = {
      {"param", required_argument, 0, 'p'},     {"parallel", required_argument, 0, 'P'},
      {"no-cache", no_argument, 0, 'n'},        {"json", no_argument, 0, 'j'},
      {"experiment", required_argument, 0, 'e'}, {"binary", required_argument, 0, 'b'},
      {"grace", required_argument, 0, 'g'},     {"target", required_argument, 0, 't'},
      {"output", required_argument, 0, 'o'},    {"image", required_argument, 0, 'i'},
      {"pvc", required_argument, 0, 'v'},       {"mount-path", required_argument, 0, 'm'},
      {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
  int nparams = 0, no_cache = 0, json = 0;
  int64_t parallel = 1, grace = 10;
  const char *experiment = NULL, *binary = NULL, *target = NULL, *out = NULL;
  im_pipeline_kfp_opts_t ko = {0};
  const char **params = im_calloc((size_t)argc + 1, sizeof *params);
  if (!params) return cli_fail("pipeline", IM_ERR_NOMEM, "out of memory");
  int rc = CLI_OK;
  optind = 1;
  opterr = 0;
  int ch;
  argc--, argv++;
  while ((ch = getopt_long(argc, argv, ":hp:o:", longopts, NULL)) != -1) {
    switch (ch) {
      case 'p': params[nparams++] = optarg; break;
      case 'P':
        if (cli_parse_i64("pipeline", "--parallel", optarg, 1, 256, &parallel)) rc = CLI_USAGE;
        break;
      case 'g':
        if (cli_parse_i64("pipeline", "--grace", optarg, 1, 3600, &grace)) rc = CLI_USAGE;
        break;
      case 'n': no_cache = 1; break;
      case 'j': json = 1; break;
      case 'e': experiment = optarg; break;
      case 'b': binary = optarg; break;
      case 't': target = optarg; break;
      case 'o': out = optarg; break;
      case 'i': ko.image = optarg; break;
      case 'v': ko.pvc = optarg; break;
      case 'm': ko.mount_path = optarg; break;
      case 'h': fputs(usage_text, stdout); im_free(params); return CLI_OK;
      case ':': rc = cli_usage_error("pipeline", "%s needs a value", argv[optind - 1]); break;
      default: rc = cli_usage_error("pipeline", "unknown option '%s'", argv[optind - 1]); break;
    }
    if (rc) break;
  }
  if (!rc && optind != argc - 1) rc = cli_usage_error("pipeline", "%s takes one pipeline FILE", sub);
  if (!rc) {
    const char *file = argv[optind];
    if (!strcmp(sub, "run")) {
      rc = do_run(file, params, nparams, (int)parallel, no_cache, json, experiment, binary, (int)grace);
    } else if (!strcmp(sub, "compile")) {
      rc = do_compile(file, target, out, &ko);
    } else {
      im_pipeline_t *p = NULL;
      char *pj = NULL;
      if (im_pipeline_load_file(file, &p) || im_pipeline_resolve_params(p, params, nparams, &pj)) {
        fprintf(stderr, "imops pipeline: %s\n", im_last_error());
        rc = CLI_USAGE;
      } else {
        printf("%s: pipeline %s is valid (%d steps); parameters %s\n", file, im_pipeline_name(p), im_pipeline_n_steps(p),
               pj);
      }
      im_free(pj);
      im_pipeline_free(p);
    }
  }
  im_free(params);
  return rc;
}
