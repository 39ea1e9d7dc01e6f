/* The local pipeline runner: steps as child processes of the imops binary
 * (each in its own process group), ready steps started in file order up to
 * the parallelism, their stdout/stderr split into lines for the caller and
 * kept as log artifacts of a tracked run, Kubeflow-style caching by cache key,
 * retries, conditions and skipped producers, failure propagation, and
 * cancellation (SIGTERM to every child, SIGKILL after a grace period). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "imops/track.h"
#include "pipeline/pipeline_impl.h"

#define MAX_CAPTURE (16u << 20)
#define NO_TIME INT64_MIN

enum { ST_PENDING = 0, ST_RUNNING, ST_DONE };

typedef struct {
  int state;
  pid_t pid;
  int fd[2]; /* stdout, stderr; -1 when closed */
  im_buf_t capture;
  im_buf_t partial[2];
  im_atomic_file_t *log;
  int exited, wstatus;
  char key[33];
  char *details;
  char **argv;
  int argc;
  json_t *outputs;
} slot_t;

typedef struct {
  const im_pipeline_t *p;
  const im_pipeline_run_opts_t *o;
  im_track_store_t *store;
  im_pipeline_result_t *r;
  slot_t *slots;
  json_t *params, *outputs; /* outputs: {step: {out: v}} of steps that produced them */
  char binary[PATH_MAX];
  char *logs_dir;
  int running, canceling;
  double kill_at;
} runner_t;

static double now_s(void) { return im_time_now(); }

static void set_status(runner_t *R, int i, const char *status, const char *fmt, ...) IM_PRINTF(4, 5);

static void record(runner_t *R, int i) {
  im_pipeline_step_result_t *sr = &R->r->steps[i];
  slot_t *s = &R->slots[i];
  char *outputs = s->outputs ? json_dumps(s->outputs, JSON_COMPACT) : NULL;
  json_t *in = s->details ? json_loads(s->details, 0, NULL) : json_object();
  if (in && sr->log_path) json_object_set_new(in, "log", json_string(sr->log_path));
  char *inputs = in ? json_dumps(in, JSON_COMPACT) : NULL;
  json_decref(in);
  const char *run_uuid = NULL;
  json_t *rid = s->outputs ? json_object_get(s->outputs, "run_id") : NULL;
  if (json_is_string(rid)) run_uuid = json_string_value(rid);
  im_track_pipeline_step_t row = {.step_name = sr->name, .status = sr->status, .run_uuid = (char *)(uintptr_t)run_uuid,
                                  .attempt = sr->attempts, .cache_key = s->key[0] ? s->key : NULL,
                                  .inputs = inputs, .outputs = outputs, .message = sr->message,
                                  .start_time = sr->start_time, .end_time = sr->end_time};
  if (im_track_pipeline_step_put(R->store, R->r->pipeline_run_id, &row))
    im_log(IM_LOG_WARN, "pipeline: cannot record step %s: %s", sr->name, im_last_error());
  free(outputs);
  free(inputs);
}

static void set_status(runner_t *R, int i, const char *status, const char *fmt, ...) {
  im_pipeline_step_result_t *sr = &R->r->steps[i];
  char msg[1024] = "";
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
  }
  im_free(sr->status);
  im_free(sr->message);
  sr->status = im_strdup(status);
  sr->message = im_strdup(msg);
  if (strcmp(status, "RUNNING") && strcmp(status, "PENDING")) {
    R->slots[i].state = ST_DONE;
    if (sr->end_time == NO_TIME) sr->end_time = im_time_wall_ms();
  }
  record(R, i);
  if (R->o->on_status) R->o->on_status(R->o->user, sr->name, status, msg);
}

static void emit_lines(runner_t *R, int i, int stream, const char *data, size_t n, int flush) {
  im_buf_t *b = &R->slots[i].partial[stream];
  if (n) im_buf_append(b, data, n);
  size_t start = 0;
  for (size_t k = 0; k < b->len; k++) {
    if (b->data[k] != '\n') continue;
    if (R->o->on_line) R->o->on_line(R->o->user, R->p->steps[i].name, stream ? IM_PIPELINE_STDERR : IM_PIPELINE_STDOUT,
                                     b->data + start, k - start);
    start = k + 1;
  }
  if (flush && start < b->len) {
    if (R->o->on_line) R->o->on_line(R->o->user, R->p->steps[i].name, stream ? IM_PIPELINE_STDERR : IM_PIPELINE_STDOUT,
                                     b->data + start, b->len - start);
    start = b->len;
  }
  if (start) {
    memmove(b->data, b->data + start, b->len - start);
    b->len -= start;
  }
}

static void log_write(slot_t *s, const char *data, size_t n) {
  if (!s->log) return;
  int fd = im_atomic_file_fd(s->log);
  while (n) {
    ssize_t w = write(fd, data, n);
    if (w <= 0) {
      if (w < 0 && errno == EINTR) continue;
      return;
    }
    data += w, n -= (size_t)w;
  }
}

/* Reads what fd stream of step i has; closes it at EOF. */
static void drain(runner_t *R, int i, int stream) {
  slot_t *s = &R->slots[i];
  char buf[65536];
  for (;;) {
    ssize_t n = read(s->fd[stream], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {
      close(s->fd[stream]);
      s->fd[stream] = -1;
      emit_lines(R, i, stream, NULL, 0, 1);
      return;
    }
    log_write(s, buf, (size_t)n);
    if (stream == 0 && s->capture.len + (size_t)n <= MAX_CAPTURE) im_buf_append(&s->capture, buf, (size_t)n);
    emit_lines(R, i, stream, buf, (size_t)n, 0);
  }
}

static im_status_t start_step(runner_t *R, int i) {
  slot_t *s = &R->slots[i];
  im_pipeline_step_result_t *sr = &R->r->steps[i];
  int out[2] = {-1, -1}, err[2] = {-1, -1};
  if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) {
    int e = errno;
    if (out[0] >= 0) close(out[0]), close(out[1]);
    return im_error(IM_ERR_IO, "cannot make pipes: %s", strerror(e));
  }
  sr->attempts++;
  if (!s->log && R->logs_dir) {
    char *path = NULL;
    char name[128];
    snprintf(name, sizeof name, "%s.log", sr->name);
    if ((path = im_path_join(R->logs_dir, name)) && im_atomic_file_open(path, &s->log) == IM_OK) {
      im_free(sr->log_path);
      sr->log_path = path;
      path = NULL;
    }
    im_free(path);
  }
  char banner[256];
  int bn = snprintf(banner, sizeof banner, "%s--- %s attempt %d ---\n", sr->attempts > 1 ? "\n" : "", sr->name,
                    sr->attempts);
  log_write(s, banner, (size_t)bn);
  s->capture.len = 0;
  const char *home = im_track_home(R->store);
  char **argv = im_calloc((size_t)s->argc + 2, sizeof *argv);
  if (!argv) {
    close(out[0]), close(out[1]), close(err[0]), close(err[1]);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  argv[0] = "imops";
  for (int k = 0; k < s->argc; k++) argv[k + 1] = s->argv[k];
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    im_free(argv);
    close(out[0]), close(out[1]), close(err[0]), close(err[1]);
    return im_error(IM_ERR_IO, "cannot start step %s: %s", sr->name, strerror(e));
  }
  if (pid == 0) {
    setpgid(0, 0);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    if (home) setenv("IMOPS_HOME", home, 1);
    setenv("IMOPS_PIPELINE_RUN_ID", R->r->pipeline_run_id, 1);
    setenv("IMOPS_PIPELINE_STEP", sr->name, 1);
    execv(R->binary, argv);
    dprintf(2, "imops pipeline: cannot run %s: %s\n", R->binary, strerror(errno));
    _exit(127);
  }
  im_free(argv);
  setpgid(pid, pid); /* also here, so that a signal sent right away reaches the group */
  close(out[1]);
  close(err[1]);
  fcntl(out[0], F_SETFL, O_NONBLOCK);
  fcntl(err[0], F_SETFL, O_NONBLOCK);
  s->fd[0] = out[0], s->fd[1] = err[0];
  s->pid = pid;
  s->exited = 0;
  s->state = ST_RUNNING;
  R->running++;
  if (sr->start_time == NO_TIME) sr->start_time = im_time_wall_ms();
  set_status(R, i, "RUNNING", sr->attempts > 1 ? "attempt %d" : NULL, sr->attempts);
  return IM_OK;
}

static void close_log(slot_t *s) {
  if (!s->log) return;
  if (im_atomic_file_commit(s->log)) im_log(IM_LOG_WARN, "pipeline: cannot save a step log: %s", im_last_error());
  s->log = NULL;
}

/* Reads the declared outputs after a successful run. */
static im_status_t read_outputs(runner_t *R, int i) {
  slot_t *s = &R->slots[i];
  const im__pstep_t *st = &R->p->steps[i];
  json_decref(s->outputs);
  s->outputs = json_object();
  if (!s->outputs) return im_error(IM_ERR_NOMEM, "out of memory");
  for (int k = 0; k < st->n_outputs; k++) {
    const im__pout_t *o = &st->outputs[k];
    char *file = NULL, *value = NULL;
    im_status_t e = o->file.n ? im__tmpl_render(&o->file, R->params, R->outputs, &file) : IM_OK;
    if (!e) e = im_pipeline_read_output(s->capture.data, s->capture.len, o->json_key, file, &value);
    im_free(file);
    if (e) {
      char why[512];
      snprintf(why, sizeof why, "%s", im_last_error()); /* im_error writes the same buffer */
      return im_error(e, "output '%s': %s", o->name, why);
    }
    json_object_set_new(s->outputs, o->name, json_string(value));
    im_free(value);
  }
  return IM_OK;
}

static void finish_step(runner_t *R, int i) {
  slot_t *s = &R->slots[i];
  im_pipeline_step_result_t *sr = &R->r->steps[i];
  R->running--;
  for (int k = 0; k < 2; k++) {
    if (s->fd[k] >= 0) close(s->fd[k]), s->fd[k] = -1;
    emit_lines(R, i, k, NULL, 0, 1);
  }
  int ws = s->wstatus;
  sr->exit_code = WIFEXITED(ws) ? WEXITSTATUS(ws) : WIFSIGNALED(ws) ? 128 + WTERMSIG(ws) : -1;
  if (R->canceling) {
    close_log(s);
    set_status(R, i, "CANCELED", "the run was canceled (exit %d)", sr->exit_code);
    return;
  }
  if (sr->exit_code == 0) {
    if (read_outputs(R, i) == IM_OK) {
      close_log(s);
      if (json_object_size(s->outputs)) json_object_set(R->outputs, sr->name, s->outputs);
      set_status(R, i, "SUCCEEDED", NULL);
      return;
    }
    char msg[600];
    snprintf(msg, sizeof msg, "%s", im_last_error());
    char line[700];
    int n = snprintf(line, sizeof line, "imops pipeline: %s\n", msg);
    log_write(s, line, (size_t)n);
    if (sr->attempts > R->p->steps[i].retries) {
      close_log(s);
      set_status(R, i, "FAILED", "%s", msg);
      return;
    }
  } else if (sr->attempts > R->p->steps[i].retries) {
    close_log(s);
    set_status(R, i, "FAILED", WIFSIGNALED(ws) ? "killed by signal %d" : "exit status %d%s",
               WIFSIGNALED(ws) ? WTERMSIG(ws) : sr->exit_code, sr->attempts > 1 ? " (after every retry)" : "");
    return;
  }
  if (start_step(R, i)) {
    close_log(s);
    set_status(R, i, "FAILED", "%s", im_last_error());
  }
}

/* Decides what a pending step whose dependencies are done becomes; starts it when there is room. */
static void consider(runner_t *R, int i, int *deferred) {
  const im__pstep_t *st = &R->p->steps[i];
  slot_t *s = &R->slots[i];
  const char *dep_keys[512];
  for (int k = 0; k < st->n_deps; k++) {
    int d = st->deps[k];
    if (R->slots[d].state != ST_DONE) return;
    const char *ds = R->r->steps[d].status;
    if (!strcmp(ds, "FAILED") || !strcmp(ds, "CANCELED")) {
      set_status(R, i, "CANCELED", "upstream step '%s' %s", R->p->steps[d].name,
                 !strcmp(ds, "FAILED") ? "failed" : "was canceled");
      return;
    }
    dep_keys[k] = strcmp(ds, "SKIPPED") ? R->r->steps[d].cache_key : "";
  }
  if (R->canceling) {
    set_status(R, i, "CANCELED", "the run was canceled");
    return;
  }
  if (st->when) {
    int holds = 0;
    im_status_t e = im__expr_eval(st->when, R->params, R->outputs, &holds);
    if (e == IM_ERR_NOT_FOUND) {
      set_status(R, i, "SKIPPED", "condition needs a value that is missing: %s", im_last_error());
      return;
    }
    if (e) {
      set_status(R, i, "FAILED", "condition: %s", im_last_error());
      return;
    }
    if (!holds) {
      set_status(R, i, "SKIPPED", "condition is false: %s", st->when_text);
      return;
    }
  }
  if (!s->argv) {
    char *pj = json_dumps(R->params, JSON_COMPACT), *oj = json_dumps(R->outputs, JSON_COMPACT);
    im_status_t e = pj && oj ? im_pipeline_step_argv(R->p, i, pj, oj, &s->argv, &s->argc) : IM_ERR_NOMEM;
    if (e == IM_OK) e = im_pipeline_step_cache_key(R->p, i, pj, oj, dep_keys, s->key, &s->details);
    free(pj);
    free(oj);
    if (e == IM_ERR_NOT_FOUND && s->argv == NULL) {
      set_status(R, i, "SKIPPED", "%s", im_last_error());
      return;
    }
    if (e) {
      set_status(R, i, "FAILED", "%s", im_last_error());
      return;
    }
    im_free(R->r->steps[i].cache_key);
    R->r->steps[i].cache_key = im_strdup(s->key);
    if (st->cache && !R->o->no_cache) {
      char *outputs = NULL, *from_run = NULL, *from_step = NULL;
      if (im_track_pipeline_cache_find(R->store, s->key, R->r->pipeline_run_id, &outputs, &from_run, &from_step) ==
          IM_OK) {
        json_t *oj2 = im__json_obj(outputs);
        if (oj2) {
          s->outputs = oj2;
          if (json_object_size(oj2)) json_object_set(R->outputs, st->name, oj2);
          set_status(R, i, "CACHED", "outputs of step %s of pipeline run %.12s", from_step, from_run);
        }
        im_free(outputs);
        im_free(from_run);
        im_free(from_step);
        if (oj2) return;
      }
    }
  }
  int parallel = R->o->parallel > 0 ? R->o->parallel : 1;
  if (R->running >= parallel) {
    *deferred = 1;
    return;
  }
  if (start_step(R, i)) set_status(R, i, "FAILED", "%s", im_last_error());
}

static void signal_all(runner_t *R, int sig) {
  for (int i = 0; i < R->p->n_steps; i++)
    if (R->slots[i].state == ST_RUNNING && !R->slots[i].exited) kill(-R->slots[i].pid, sig);
}

static void loop(runner_t *R) {
  int n = R->p->n_steps;
  struct pollfd *pf = im_calloc((size_t)n * 2 + 1, sizeof *pf);
  int *owner = im_calloc((size_t)n * 2 + 1, sizeof *owner);
  if (!pf || !owner) {
    im_free(pf);
    im_free(owner);
    for (int i = 0; i < n; i++)
      if (R->slots[i].state == ST_PENDING) set_status(R, i, "FAILED", "out of memory");
    return;
  }
  for (;;) {
    if (R->o->cancel && *R->o->cancel && !R->canceling) {
      R->canceling = 1;
      R->kill_at = now_s() + (R->o->grace_seconds > 0 ? R->o->grace_seconds : 10);
      signal_all(R, SIGTERM);
    }
    if (R->canceling && now_s() > R->kill_at) signal_all(R, SIGKILL);
    int pending = 0, progress = 1;
    while (progress) { /* decisions can unblock further steps at once (skips, cache hits) */
      progress = 0;
      int deferred = 0;
      for (int k = 0; k < n; k++) {
        int i = R->p->order[k];
        if (R->slots[i].state != ST_PENDING) continue;
        consider(R, i, &deferred);
        if (R->slots[i].state != ST_PENDING) progress = 1;
      }
    }
    for (int i = 0; i < n; i++) pending += R->slots[i].state != ST_DONE;
    if (!pending) break;
    int np = 0;
    for (int i = 0; i < n; i++) {
      slot_t *s = &R->slots[i];
      if (s->state != ST_RUNNING) continue;
      for (int k = 0; k < 2; k++)
        if (s->fd[k] >= 0) pf[np] = (struct pollfd){.fd = s->fd[k], .events = POLLIN}, owner[np++] = i * 2 + k;
    }
    if (np) poll(pf, (nfds_t)np, 200);
    else {
      struct timespec ts = {0, 50 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
    for (int k = 0; k < np; k++)
      if (pf[k].revents) drain(R, owner[k] / 2, owner[k] % 2);
    for (int i = 0; i < n; i++) {
      slot_t *s = &R->slots[i];
      if (s->state != ST_RUNNING) continue;
      if (!s->exited && waitpid(s->pid, &s->wstatus, WNOHANG) == s->pid) s->exited = 1;
      if (!s->exited) continue;
      /* Exited: take what is left in the pipes (a grandchild may hold them open: do not wait for it). */
      for (int k = 0; k < 2; k++)
        if (s->fd[k] >= 0) drain(R, i, k);
      finish_step(R, i);
    }
  }
  im_free(pf);
  im_free(owner);
}

/* Where step logs go: the tracked run's artifacts (logs/), or the workspace when those are not local. */
static char *logs_dir(runner_t *R, const char *artifact_uri) {
  char *dir = NULL;
  im_track_uri_t *u = NULL;
  if (artifact_uri && im_track_uri_parse(artifact_uri, &u) == IM_OK && u->is_local && u->location)
    dir = im_path_join(u->location, "logs");
  im_track_uri_free(u);
  if (!dir) {
    char sub[128];
    snprintf(sub, sizeof sub, "pipelines/%s/logs", R->r->pipeline_run_id);
    dir = im_path_join(im_track_home(R->store), sub);
  }
  if (dir && im_mkdir_p(dir)) {
    im_log(IM_LOG_WARN, "pipeline: step logs will not be kept: %s", im_last_error());
    im_free(dir);
    dir = NULL;
  }
  return dir;
}

static im_status_t experiment_id(im_track_store_t *s, const char *name, char **id) {
  im_track_experiment_t *e = NULL;
  im_status_t st = im_track_experiment_get_by_name(s, name, &e);
  if (st == IM_ERR_NOT_FOUND) {
    st = im_track_experiment_create(s, name, NULL, NULL, 0, id);
    if (st != IM_ERR_EXISTS) return st;
    st = im_track_experiment_get_by_name(s, name, &e);
  }
  if (st) return st;
  if (strcmp(e->lifecycle_stage, "active")) {
    im_track_experiment_free(e);
    return im_error(IM_ERR_STATE, "experiment '%s' is deleted; restore it or pick another with --experiment", name);
  }
  *id = im_strdup(e->experiment_id);
  im_track_experiment_free(e);
  return *id ? IM_OK : im_error(IM_ERR_NOMEM, "out of memory");
}

/* Opens the store and creates the tracked run and the pipeline run. */
static im_status_t begin(runner_t *R, const char *params_json) {
  const im_pipeline_run_opts_t *o = R->o;
  im_status_t st = im_track_open(o->store, &R->store);
  if (st) return st;
  char *exp = NULL;
  if ((st = experiment_id(R->store, o->experiment ? o->experiment : "pipelines", &exp))) return st;
  im_track_kv_t tags[2] = {{"imops.pipeline", R->p->name}, {"imops.pipeline_file", R->p->file}};
  im_track_run_create_t rc = {.experiment_id = exp, .tags = tags, .n_tags = 2};
  im_track_run_t *run = NULL;
  st = im_track_run_create(R->store, &rc, &run);
  if (!st) {
    im_track_kv_t kv[IM_TRACK_MAX_BATCH_PARAMS];
    char *vals[IM_TRACK_MAX_BATCH_PARAMS] = {0};
    int nkv = 0;
    const char *key;
    json_t *v;
    json_object_foreach(R->params, key, v) {
      if (nkv == IM_TRACK_MAX_BATCH_PARAMS) break;
      vals[nkv] = im__pipeline_value_str(v);
      kv[nkv] = (im_track_kv_t){key, vals[nkv] ? vals[nkv] : ""};
      nkv++;
    }
    if (im_track_log_batch(R->store, run->run_id, NULL, 0, kv, nkv, NULL, 0))
      im_log(IM_LOG_WARN, "pipeline: cannot log the parameters: %s", im_last_error());
    for (int k = 0; k < nkv; k++) im_free(vals[k]);
    R->r->tracked_run_id = im_strdup(run->run_id);
    st = im_track_pipeline_run_create(R->store, R->p->name, R->p->spec_json, params_json, exp, run->run_id,
                                      &R->r->pipeline_run_id);
  }
  if (!st) {
    im_track_run_set_tag(R->store, run->run_id, "imops.pipeline_run_id", R->r->pipeline_run_id);
    R->logs_dir = logs_dir(R, run->artifact_uri);
    R->r->start_time = im_time_wall_ms();
    st = im_track_pipeline_run_update(R->store, R->r->pipeline_run_id, "RUNNING", R->r->start_time, NO_TIME);
  }
  for (int i = 0; !st && i < R->p->n_steps; i++) record(R, i);
  im_track_run_free(run);
  im_free(exp);
  return st;
}

void im_pipeline_result_free(im_pipeline_result_t *r) {
  if (!r) return;
  for (int i = 0; i < r->n_steps; i++) {
    im_pipeline_step_result_t *s = &r->steps[i];
    im_free(s->name);
    im_free(s->status);
    im_free(s->message);
    im_free(s->cache_key);
    im_free(s->outputs_json);
    im_free(s->log_path);
  }
  im_free(r->steps);
  im_free(r->pipeline_run_id);
  im_free(r->tracked_run_id);
  im_free(r->status);
  im_free(r->params_json);
  im_free(r);
}

im_status_t im_pipeline_run(const im_pipeline_t *p, const im_pipeline_run_opts_t *o, im_pipeline_result_t **out) {
  *out = NULL;
  char *params_json = NULL;
  im_status_t st = im_pipeline_resolve_params(p, o->params, o->n_params, &params_json);
  if (st) return st;
  runner_t R = {.p = p, .o = o};
  const char *bin = o->binary ? o->binary : "/proc/self/exe";
  if (!realpath(bin, R.binary)) {
    im_free(params_json);
    return im_error(IM_ERR_NOT_FOUND, "cannot find the program to run steps with (%s): %s", bin, strerror(errno));
  }
  R.r = im_calloc(1, sizeof *R.r);
  R.slots = im_calloc((size_t)p->n_steps, sizeof *R.slots);
  R.params = im__json_obj(params_json);
  R.outputs = json_object();
  if (R.r) {
    R.r->params_json = params_json;
    params_json = NULL;
    R.r->start_time = R.r->end_time = NO_TIME;
    R.r->n_steps = p->n_steps;
    R.r->steps = im_calloc((size_t)p->n_steps, sizeof *R.r->steps);
  }
  if (!R.r || !R.slots || !R.params || !R.outputs || !R.r->steps) st = im_error(IM_ERR_NOMEM, "out of memory");
  for (int i = 0; !st && i < p->n_steps; i++) {
    im_pipeline_step_result_t *sr = &R.r->steps[i];
    sr->name = im_strdup(p->steps[i].name);
    sr->status = im_strdup("PENDING");
    sr->message = im_strdup("");
    sr->exit_code = -1;
    sr->start_time = sr->end_time = NO_TIME;
    R.slots[i].fd[0] = R.slots[i].fd[1] = -1;
    if (!sr->name || !sr->status || !sr->message) st = im_error(IM_ERR_NOMEM, "out of memory");
  }
  if (!st) st = begin(&R, R.r->params_json);
  if (!st) {
    loop(&R);
    int failed = 0;
    for (int i = 0; i < p->n_steps; i++) {
      im_pipeline_step_result_t *sr = &R.r->steps[i];
      failed |= !strcmp(sr->status, "FAILED") || !strcmp(sr->status, "CANCELED");
      if (R.slots[i].outputs) {
        char *s = json_dumps(R.slots[i].outputs, JSON_COMPACT);
        sr->outputs_json = s ? im_strdup(s) : NULL;
        free(s);
      }
    }
    R.r->status = im_strdup(R.canceling ? "CANCELED" : failed ? "FAILED" : "SUCCEEDED");
    R.r->end_time = im_time_wall_ms();
    if (im_track_pipeline_run_update(R.store, R.r->pipeline_run_id, R.r->status, NO_TIME, R.r->end_time))
      im_log(IM_LOG_WARN, "pipeline: cannot record the run's end: %s", im_last_error());
    im_track_run_update_t u = {.status = R.canceling ? IM_TRACK_RUN_KILLED : failed ? IM_TRACK_RUN_FAILED
                                                                                   : IM_TRACK_RUN_FINISHED,
                               .end_time = R.r->end_time};
    if (R.r->tracked_run_id && im_track_run_update(R.store, R.r->tracked_run_id, &u, NULL))
      im_log(IM_LOG_WARN, "pipeline: cannot end the tracked run: %s", im_last_error());
    if (!R.r->status) st = im_error(IM_ERR_NOMEM, "out of memory");
  }
  for (int i = 0; R.slots && i < p->n_steps; i++) {
    slot_t *s = &R.slots[i];
    if (s->log) im_atomic_file_abort(s->log);
    im_buf_free(&s->capture);
    im_buf_free(&s->partial[0]);
    im_buf_free(&s->partial[1]);
    im_free(s->details);
    for (int k = 0; s->argv && k < s->argc; k++) im_free(s->argv[k]);
    im_free(s->argv);
    json_decref(s->outputs);
  }
  im_free(R.slots);
  im_free(R.logs_dir);
  im_free(params_json);
  json_decref(R.params);
  json_decref(R.outputs);
  im_track_close(R.store);
  if (st) {
    im_pipeline_result_free(R.r);
    return st;
  }
  *out = R.r;
  return IM_OK;
}
