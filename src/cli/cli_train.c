/* imops train: train a model on a preprocessed ImageFolder, with progress bars
 * in the seed's format, checkpoints, resume, and a run in the tracking store. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "imops/core.h"
#include "imops/http.h"
#include "imops/monitor.h"
#include "imops/train.h"

static const char usage_text[] =
    "usage: imops train --data DIR [options]\n"
    "       imops train --resume DIR [--epochs N] [--device D] [--threads N]\n"
    "\n"
    "Trains an image classifier on DIR (an ImageFolder; preprocessed at --img-size\n"
    "first when it is not yet). Each epoch runs a train pass and a validation pass\n"
    "with progress bars; checkpoints go to --output: last/ (every epoch, every\n"
    "--checkpoint-every steps or --checkpoint-seconds, and on Ctrl-C / SIGTERM),\n"
    "best/ (best validation accuracy), and the final model bundle to model/.\n"
    "The run is logged to the tracking store ($IMOPS_HOME, default ./imops-workspace):\n"
    "params, per-epoch and per-step metrics, tags, the bundle as artifact model/\n"
    "(runs:/<run_id>/model) and plots.\n"
    "\n"
    "data and model:\n"
    "  --data DIR              the ImageFolder (required unless --resume)\n"
    "  --img-size S            input size (default: the size DIR was preprocessed at)\n"
    "  --model NAME            architecture (default surfacenet; see below)\n"
    "  --width W               channel multiplier (default 1)\n"
    "  --dropout P             dropout before the final Linear (default 0: none)\n"
    "  --drop-path P           convnext stochastic depth rate of the last block (default 0: none)\n"
    "  --init model|torch      conv weight init: the architecture's (torchvision ResNet's, default)\n"
    "                          or PyTorch's default for a plain Conv2d (U(+-1/sqrt(fan_in)))\n"
    "  --epochs N              epochs (default 10)\n"
    "  --batch-size N          batch size (default 64)\n"
    "optimization:\n"
    "  --optimizer NAME        sgd, adam or adamw (default sgd)\n"
    "  --lr X                  learning rate (default 0.05)\n"
    "  --momentum X            SGD momentum (default 0.9)\n"
    "  --nesterov              Nesterov momentum (SGD)\n"
    "  --weight-decay X        weight decay (default 5e-4)\n"
    "  --scheduler NAME        cosine (per epoch, to --eta-min 1e-6), cosine-step (per step, to 0),\n"
    "                          step (x --gamma every --step-size epochs) or none (default cosine)\n"
    "  --t-max N               cosine length in epochs (default: all epochs)\n"
    "  --eta-min X             cosine's final learning rate\n"
    "  --step-size N, --gamma X  the step schedule (default epochs/3 and 0.1)\n"
    "  --warmup-epochs X       linear warm-up first (default 0)\n"
    "  --warmup-start X        warm-up start factor (default 0.1)\n"
    "  --label-smoothing X     cross-entropy label smoothing (default 0)\n"
    "  --grad-clip X           clip the gradients' global norm (default: off)\n"
    "augmentation:\n"
    "  --hflip / --no-hflip    random horizontal flip (default on)\n"
    "  --crop-pad N            random crop after padding by N pixels (default 0: off)\n"
    "run control:\n"
    "  --seed N                seed for weights, shuffling and augmentation (default 42)\n"
    "  --device D              cpu (default), ref, or GPU ids like 0 or 0,1,2,3 (no GPU backend yet)\n"
    "  --threads N             compute threads (default: IMOPS_NUM_THREADS, else all cores)\n"
    "  --output DIR            checkpoints and model (default $IMOPS_HOME/checkpoints/<run name>)\n"
    "  --resume DIR            continue a stopped run from its checkpoint (DIR or DIR/last)\n"
    "  --params-from-sweep ID  take the best trial's parameters of sweep ID (options given here still win)\n"
    "  --metrics-stdout        also print 'val_loss=0.41 val_accuracy=0.87 ...' lines per epoch (Katib's collector)\n"
    "  --early-stopping N      stop after N epochs without a better validation accuracy\n"
    "  --checkpoint-every N    also checkpoint every N steps (default: off)\n"
    "  --checkpoint-seconds S  also checkpoint every S seconds (default 60; 0: off)\n"
    "  --final best|last       weights of the final model (default best)\n"
    "  --max-steps N           stop after N steps in all, as on Ctrl-C\n"
    "tracking:\n"
    "  --experiment NAME       experiment (default Default; created when missing)\n"
    "  --run-name NAME         run name (default: generated)\n"
    "  --log-every N           per-step metrics every N steps (default 50)\n"
    "  --tracking-uri URI      a workspace path, or http(s)://host:port: imops server or mlflow\n"
    "                          server through MLflow's REST API (default: $MLFLOW_TRACKING_URI when\n"
    "                          it is http(s)://, else the workspace store)\n"
    "  --no-track              do not log to the tracking store\n"
    "monitoring:\n"
    "  --metrics-port P        serve the training's progress (epoch, step, loss, accuracy,\n"
    "                          images/s, learning rate) for Prometheus on http://HOST:P/metrics\n"
    "                          while it runs (0: any free port, printed on stderr)\n"
    "  --metrics-host H        address to bind (default 127.0.0.1; 0.0.0.0 for all)\n"
    "output:\n"
    "  --json                  print the result as JSON on stdout\n"
    "  -h, --help              show this help\n"
    "\n"
    "Exit status: 0 trained, 1 failed or stopped (a checkpoint to --resume is kept), 2 usage error.\n";

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig) {
  stop_flag = 1;
  signal(sig, SIG_DFL); /* a second signal ends the process at once */
}

/* ---- --metrics-port: the run's progress as Prometheus metrics (docs: metrics.md) ---- */
typedef struct {
  im_monitor_t *reg;
  im_http_server_t *srv;
  im_monitor_family_t *loss_f, *acc_f;
  im_monitor_series_t *epoch, *step, *ips, *lr, *images, *loss[2], *acc[2]; /* [0] train, [1] val */
  int batch_size;
  int64_t pass_epoch, first_step; /* the train pass this process saw: its epoch and first step */
  double pass_t0, counted;        /* when that first step ended; images counted in the pass */
} train_metrics_t;

static im_status_t metrics_split(train_metrics_t *m, int val) {
  const char *split[] = {val ? "val" : "train"};
  im_status_t st;
  if (!m->loss[val] && (st = im_monitor_series(m->loss_f, split, &m->loss[val]))) return st;
  if (!m->acc[val] && (st = im_monitor_series(m->acc_f, split, &m->acc[val]))) return st;
  return IM_OK;
}

static im_status_t metrics_handler(im_http_req_t *req, im_http_resp_t *resp, void *user) {
  im_buf_t text = {0};
  im_status_t st = im_monitor_expose(user, &text);
  if (!st) st = im_http_resp_text(resp, 200, IM_MONITOR_CONTENT_TYPE, text.data ? text.data : "");
  im_buf_free(&text);
  return st;
}

/* Registers the metrics and starts the server on host:port. */
static im_status_t metrics_start(train_metrics_t *m, const char *host, int port) {
  static const char *split_label[] = {"split"};
  im_monitor_family_t *f;
  im_status_t st;
  if ((st = im_monitor_new(&m->reg)) || (st = im_monitor_build_info_register(m->reg)) ||
      (st = im_monitor_process_register(m->reg)))
    return st;
#define GAUGE(name, help, out)                                                 \
  if ((st = im_monitor_gauge(m->reg, name, help, 0, NULL, &f)) || (st = im_monitor_series(f, NULL, out))) return st
  GAUGE("imops_train_epoch", "The epoch in progress (1-based; the last one done after it ends).", &m->epoch);
  GAUGE("imops_train_step", "Optimizer steps taken in the whole run (global step).", &m->step);
  GAUGE("imops_train_images_per_second", "Training throughput: train images per second of the current epoch.", &m->ips);
  GAUGE("imops_train_learning_rate", "The learning rate of the last step.", &m->lr);
#undef GAUGE
  if ((st = im_monitor_gauge(m->reg, "imops_train_loss", "Mean loss: the running mean of the current train pass, "
                             "and of the last validation pass.", 1, split_label, &m->loss_f)) ||
      (st = im_monitor_gauge(m->reg, "imops_train_accuracy", "Accuracy (fraction): the running accuracy of the "
                             "current train pass, and of the last validation pass.", 1, split_label, &m->acc_f)) ||
      (st = im_monitor_counter(m->reg, "imops_train_images_total", "Train images processed by this process.", 0,
                               NULL, &f)) ||
      (st = im_monitor_series(f, NULL, &m->images)) || (st = metrics_split(m, 0)))
    return st;
  im_http_server_opts_t so = {.host = host, .port = port, .threads = 2, .max_connections = 64};
  if ((st = im_http_server_new(&so, &m->srv)) ||
      (st = im_http_server_route(m->srv, "GET", "/metrics", metrics_handler, m->reg)))
    return st;
  return im_http_server_start(m->srv);
}

static void metrics_stop(train_metrics_t *m) {
  if (m->srv && im_http_server_port(m->srv) > 0) (void)im_http_server_stop(m->srv, 2.0);
  im_http_server_free(m->srv);
  im_monitor_free(m->reg);
}

/* The batch size of the run a checkpoint continues (--resume takes it from there). */
static int checkpoint_batch_size(const char *dir) {
  im_train_checkpoint_t *ck = NULL;
  int bs = 0;
  if (im_train_checkpoint_open(dir, &ck) == IM_OK) {
    json_t *j = json_load_file(ck->trainer_path, 0, NULL);
    bs = (int)json_integer_value(json_object_get(json_object_get(j, "options"), "batch_size"));
    json_decref(j);
  }
  im_train_checkpoint_free(ck);
  return bs;
}

/* Per train step: the batch is counted when it is whole; the last (maybe
 * smaller) batch of a pass is counted in metrics_epoch, which knows the pass's size. */
static void metrics_progress(train_metrics_t *m, const im_train_progress_t *p) {
  if (strcmp(p->stage, "train") != 0) return;
  double now = im_time_now();
  if (m->pass_epoch != p->epoch) {
    m->pass_epoch = p->epoch;
    m->first_step = p->step;
    m->pass_t0 = now;
    m->counted = 0;
  }
  im_monitor_set(m->epoch, (double)p->epoch);
  im_monitor_set(m->step, (double)p->global_step);
  im_monitor_set(m->loss[0], p->loss);
  im_monitor_set(m->acc[0], p->accuracy);
  im_monitor_set(m->lr, p->lr);
  if (p->step < p->steps) {
    im_monitor_inc(m->images, m->batch_size);
    m->counted += m->batch_size;
  }
  if (p->step > m->first_step && now > m->pass_t0)
    im_monitor_set(m->ips, (double)(p->step - m->first_step) * m->batch_size / (now - m->pass_t0));
}

static void metrics_epoch(train_metrics_t *m, const im_train_epoch_t *e) {
  im_monitor_set(m->epoch, (double)e->epoch);
  im_monitor_set(m->loss[0], e->train_loss);
  im_monitor_set(m->acc[0], e->train_accuracy);
  im_monitor_set(m->lr, e->lr);
  if (isfinite(e->images_per_second)) im_monitor_set(m->ips, e->images_per_second);
  /* the pass's images (before a resume too) less those before this process's first step */
  double pass = floor(e->images_per_second * e->epoch_seconds + 0.5);
  double mine = pass - (double)(m->first_step - 1) * m->batch_size;
  if (m->pass_epoch == e->epoch && isfinite(mine) && mine > m->counted) im_monitor_inc(m->images, mine - m->counted);
  m->counted = 0;
  if (isfinite(e->val_loss) && metrics_split(m, 1) == IM_OK) {
    im_monitor_set(m->loss[1], e->val_loss);
    im_monitor_set(m->acc[1], e->val_accuracy);
  }
}

typedef struct {
  cli_progress_t *bar;
  char stage[16];
  int64_t epoch;
  int json;
  train_metrics_t *mx; /* NULL without --metrics-port */
} ui_t;

static int g_metrics_stdout; /* --metrics-stdout: "name=value" lines per epoch (Katib's StdOut collector) */

static void on_progress(void *user, const im_train_progress_t *p) {
  ui_t *u = user;
  if (u->mx) metrics_progress(u->mx, p);
  if (!u->bar || strcmp(u->stage, p->stage) != 0 || u->epoch != p->epoch) {
    cli_progress_finish(u->bar);
    u->bar = cli_progress_new("", p->steps);
    snprintf(u->stage, sizeof u->stage, "%s", p->stage);
    u->epoch = p->epoch;
  }
  if (!u->bar) return;
  char desc[128];
  snprintf(desc, sizeof desc, "Epoch: %lld. %s. Loss: %.3f | accuracy: %.3f", (long long)p->epoch,
           !strcmp(p->stage, "train") ? "Train" : "Validation", p->loss, 100.0 * p->accuracy);
  cli_progress_set_desc(u->bar, desc);
  cli_progress_update(u->bar, p->step);
  if (p->step >= p->steps) {
    cli_progress_finish(u->bar);
    u->bar = NULL;
  }
}

/* Preprocessing (when the data needs it) draws its own bars. */
static void on_prep(void *user, const char *stage, int64_t done, int64_t total) {
  ui_t *u = user;
  u->stage[0] = '\0';
  cli_progress_cb(&u->bar, stage, done, total);
}

static void on_epoch(void *user, const im_train_epoch_t *e, int improved) {
  ui_t *u = user;
  if (u->mx) metrics_epoch(u->mx, e);
  cli_progress_finish(u->bar);
  u->bar = NULL;
  if (g_metrics_stdout) {
    printf("epoch=%lld train_loss=%.6g train_accuracy=%.6g", (long long)e->epoch, e->train_loss, e->train_accuracy);
    if (isfinite(e->val_loss)) printf(" val_loss=%.6g val_accuracy=%.6g", e->val_loss, e->val_accuracy);
    printf("\n");
    fflush(stdout);
  }
  if (u->json) return;
  if (isfinite(e->val_accuracy))
    printf("epoch %lld: train loss %.4f accuracy %.3f%% | val loss %.4f accuracy %.3f%%%s | %.1f s, %.0f img/s, lr %.3g\n",
           (long long)e->epoch, e->train_loss, 100 * e->train_accuracy, e->val_loss, 100 * e->val_accuracy,
           improved ? " (best)" : "", e->epoch_seconds, e->images_per_second, e->lr);
  else
    printf("epoch %lld: train loss %.4f accuracy %.3f%% | %.1f s, %.0f img/s, lr %.3g\n", (long long)e->epoch,
           e->train_loss, 100 * e->train_accuracy, e->epoch_seconds, e->images_per_second, e->lr);
  fflush(stdout);
}

static json_t *num_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static void print_json_result(const im_train_result_t *r, const char *status) {
  json_t *hist = json_array();
  for (size_t i = 0; i < r->n_epochs; i++) {
    const im_train_epoch_t *e = &r->history[i];
    json_t *h = json_pack("{s:I}", "epoch", (json_int_t)e->epoch);
    json_object_set_new(h, "train_loss", num_or_null(e->train_loss));
    json_object_set_new(h, "train_accuracy", num_or_null(e->train_accuracy));
    json_object_set_new(h, "val_loss", num_or_null(e->val_loss));
    json_object_set_new(h, "val_accuracy", num_or_null(e->val_accuracy));
    json_object_set_new(h, "lr", num_or_null(e->lr));
    json_object_set_new(h, "epoch_seconds", num_or_null(e->epoch_seconds));
    json_object_set_new(h, "images_per_second", num_or_null(e->images_per_second));
    json_array_append_new(hist, h);
  }
  json_t *j = json_object();
  json_object_set_new(j, "status", json_string(status));
  json_object_set_new(j, "run_id", r->run_id ? json_string(r->run_id) : json_null());
  json_object_set_new(j, "run_name", r->run_name ? json_string(r->run_name) : json_null());
  json_object_set_new(j, "experiment_id", r->experiment_id ? json_string(r->experiment_id) : json_null());
  if (r->run_id) {
    char uri[128];
    snprintf(uri, sizeof uri, "runs:/%s/model", r->run_id);
    json_object_set_new(j, "model_uri", json_string(uri));
  }
  json_object_set_new(j, "output_dir", json_string(r->output_dir ? r->output_dir : ""));
  json_object_set_new(j, "model_dir", json_string(r->model_dir ? r->model_dir : ""));
  json_object_set_new(j, "last_checkpoint", json_string(r->last_dir ? r->last_dir : ""));
  json_object_set_new(j, "best_checkpoint", json_string(r->best_dir ? r->best_dir : ""));
  json_object_set_new(j, "data_hash", json_string(r->data_hash ? r->data_hash : ""));
  json_object_set_new(j, "epochs_done", json_integer(r->epochs_done));
  json_object_set_new(j, "global_step", json_integer(r->global_step));
  json_object_set_new(j, "best_val_accuracy", num_or_null(r->best_val_accuracy));
  json_object_set_new(j, "best_epoch", json_integer(r->best_epoch));
  json_object_set_new(j, "stopped_early", json_boolean(r->stopped_early));
  json_object_set_new(j, "resumed", json_boolean(r->resumed));
  json_object_set_new(j, "n_train", json_integer(r->n_train));
  json_object_set_new(j, "n_val", json_integer(r->n_val));
  json_object_set_new(j, "num_params", json_integer(r->params));
  json_object_set_new(j, "backend", json_string(r->backend));
  json_object_set_new(j, "threads", json_integer(r->threads));
  json_object_set_new(j, "seconds", json_real(r->seconds));
  json_object_set_new(j, "history", hist);
  char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  if (s) puts(s);
  free(s);
  json_decref(j);
}

enum {
  O_DATA = 256, O_MODEL, O_IMG, O_WIDTH, O_EPOCHS, O_BATCH, O_OPTIM, O_LR, O_MOM, O_NESTEROV, O_WD, O_SCHED, O_TMAX,
  O_ETAMIN, O_STEPSIZE, O_GAMMA, O_WARM, O_WARMSTART, O_LS, O_CLIP, O_HFLIP, O_NOHFLIP, O_CROP, O_SEED, O_DEVICE,
  O_THREADS, O_OUTPUT, O_RESUME, O_EARLY, O_CKEVERY, O_CKSEC, O_FINAL, O_MAXSTEPS, O_EXP, O_RUNNAME, O_LOGEVERY,
  O_TURI, O_NOTRACK, O_JSON, O_INIT, O_MPORT, O_MHOST, O_DROPOUT, O_DROPPATH
};

int cli_train(int argc, char **argv) {
  static const struct option longopts[] = {
      {"data", required_argument, 0, O_DATA},
      {"model", required_argument, 0, O_MODEL},
      {"img-size", required_argument, 0, O_IMG},
      {"width", required_argument, 0, O_WIDTH},
      {"init", required_argument, 0, O_INIT},
      {"dropout", required_argument, 0, O_DROPOUT},
      {"drop-path", required_argument, 0, O_DROPPATH},
      {"epochs", required_argument, 0, O_EPOCHS},
      {"batch-size", required_argument, 0, O_BATCH},
      {"optimizer", required_argument, 0, O_OPTIM},
      {"lr", required_argument, 0, O_LR},
      {"momentum", required_argument, 0, O_MOM},
      {"nesterov", no_argument, 0, O_NESTEROV},
      {"weight-decay", required_argument, 0, O_WD},
      {"scheduler", required_argument, 0, O_SCHED},
      {"t-max", required_argument, 0, O_TMAX},
      {"eta-min", required_argument, 0, O_ETAMIN},
      {"step-size", required_argument, 0, O_STEPSIZE},
      {"gamma", required_argument, 0, O_GAMMA},
      {"warmup-epochs", required_argument, 0, O_WARM},
      {"warmup-start", required_argument, 0, O_WARMSTART},
      {"label-smoothing", required_argument, 0, O_LS},
      {"grad-clip", required_argument, 0, O_CLIP},
      {"hflip", no_argument, 0, O_HFLIP},
      {"no-hflip", no_argument, 0, O_NOHFLIP},
      {"crop-pad", required_argument, 0, O_CROP},
      {"seed", required_argument, 0, O_SEED},
      {"device", required_argument, 0, O_DEVICE},
      {"threads", required_argument, 0, O_THREADS},
      {"output", required_argument, 0, O_OUTPUT},
      {"resume", required_argument, 0, O_RESUME},
      {"early-stopping", required_argument, 0, O_EARLY},
      {"checkpoint-every", required_argument, 0, O_CKEVERY},
      {"checkpoint-seconds", required_argument, 0, O_CKSEC},
      {"final", required_argument, 0, O_FINAL},
      {"max-steps", required_argument, 0, O_MAXSTEPS},
      {"experiment", required_argument, 0, O_EXP},
      {"run-name", required_argument, 0, O_RUNNAME},
      {"log-every", required_argument, 0, O_LOGEVERY},
      {"tracking-uri", required_argument, 0, O_TURI},
      {"no-track", no_argument, 0, O_NOTRACK},
      {"json", no_argument, 0, O_JSON},
      {"metrics-port", required_argument, 0, O_MPORT},
      {"metrics-host", required_argument, 0, O_MHOST},
      {"params-from-sweep", required_argument, 0, 'P'},
      {"metrics-stdout", no_argument, 0, 'K'},
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  const char *cmd = "train";
  im_train_opts_t o = im_train_defaults();
  int json = 0, epochs_given = 0, metrics_port = -1;
  const char *metrics_host = "127.0.0.1";
  const char *fixed_by_checkpoint = NULL; /* an option that --resume takes from the checkpoint */
  int64_t v;
  double d;
  int prc = cli_sweep_train_params(cmd, argc, argv, &o); /* --params-from-sweep, before the explicit options */
  if (prc) return prc;
  optind = 1;
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (ch) {
      case 'P': continue;
      case 'K': g_metrics_stdout = 1; continue;
      case O_DEVICE: o.device = optarg; continue;
      case O_THREADS:
        if (cli_parse_i64(cmd, "--threads", optarg, 1, 1024, &v)) return CLI_USAGE;
        o.threads = (int)v;
        continue;
      case O_RESUME: o.resume = optarg; continue;
      case O_EPOCHS:
        if (cli_parse_i64(cmd, "--epochs", optarg, 1, 1000000, &v)) return CLI_USAGE;
        o.epochs = v;
        epochs_given = 1;
        continue;
      case O_CKEVERY:
        if (cli_parse_i64(cmd, "--checkpoint-every", optarg, 0, INT64_MAX, &v)) return CLI_USAGE;
        o.checkpoint_every = v;
        continue;
      case O_CKSEC:
        if (cli_parse_double(cmd, "--checkpoint-seconds", optarg, &d)) return CLI_USAGE;
        if (d < 0) return cli_usage_error(cmd, "--checkpoint-seconds must not be negative");
        o.checkpoint_seconds = d;
        continue;
      case O_MAXSTEPS:
        if (cli_parse_i64(cmd, "--max-steps", optarg, 0, INT64_MAX, &v)) return CLI_USAGE;
        o.max_steps = v;
        continue;
      case O_TURI: o.tracking_home = optarg; continue;
      case O_NOTRACK: o.track = 0; continue;
      case O_JSON: json = 1; continue;
      case O_MPORT:
        if (cli_parse_i64(cmd, "--metrics-port", optarg, 0, 65535, &v)) return CLI_USAGE;
        metrics_port = (int)v;
        continue;
      case O_MHOST: metrics_host = optarg; continue;
      case 'h': fputs(usage_text, stdout); return CLI_OK;
      case ':': return cli_usage_error(cmd, "%s needs a value", argv[optind - 1]);
      case '?': return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
      default: break;
    }
    /* Options that define the training (taken from the checkpoint on --resume). */
    if (!fixed_by_checkpoint) fixed_by_checkpoint = argv[optind - 1 - (optarg && optarg == argv[optind - 1])];
    switch (ch) {
      case O_DATA: o.data_dir = optarg; break;
      case O_MODEL: o.model = optarg; break;
      case O_IMG:
        if (cli_parse_i64(cmd, "--img-size", optarg, 8, 4096, &v)) return CLI_USAGE;
        o.img_size = (int)v;
        break;
      case O_WIDTH:
        if (cli_parse_double(cmd, "--width", optarg, &d)) return CLI_USAGE;
        if (d <= 0 || d > 16) return cli_usage_error(cmd, "--width must be in (0, 16]");
        o.width = (float)d;
        break;
      case O_DROPOUT:
      case O_DROPPATH: {
        const char *name = ch == O_DROPOUT ? "--dropout" : "--drop-path";
        if (cli_parse_double(cmd, name, optarg, &d)) return CLI_USAGE;
        if (!(d >= 0 && d < 1)) return cli_usage_error(cmd, "%s must be in [0, 1)", name);
        *(ch == O_DROPOUT ? &o.dropout : &o.drop_path) = (float)d;
        break;
      }
      case O_INIT:
        if (!strcmp(optarg, "model")) o.init_torch = 0;
        else if (!strcmp(optarg, "torch")) o.init_torch = 1;
        else return cli_usage_error(cmd, "--init takes model or torch, not '%s'", optarg);
        break;
      case O_BATCH:
        if (cli_parse_i64(cmd, "--batch-size", optarg, 1, 65536, &v)) return CLI_USAGE;
        o.batch_size = (int)v;
        break;
      case O_OPTIM: {
        int k = im_train_optim_parse(optarg);
        if (k < 0) return cli_usage_error(cmd, "--optimizer takes sgd, adam or adamw, not '%s'", optarg);
        o.optimizer = (im_nn_optim_kind_t)k;
        break;
      }
      case O_LR:
        if (cli_parse_double(cmd, "--lr", optarg, &o.lr)) return CLI_USAGE;
        if (o.lr < 0) return cli_usage_error(cmd, "--lr must not be negative");
        break;
      case O_MOM:
        if (cli_parse_double(cmd, "--momentum", optarg, &o.momentum)) return CLI_USAGE;
        if (o.momentum < 0) return cli_usage_error(cmd, "--momentum must not be negative");
        break;
      case O_NESTEROV: o.nesterov = 1; break;
      case O_WD:
        if (cli_parse_double(cmd, "--weight-decay", optarg, &o.weight_decay)) return CLI_USAGE;
        if (o.weight_decay < 0) return cli_usage_error(cmd, "--weight-decay must not be negative");
        break;
      case O_SCHED: {
        int k = im_train_sched_parse(optarg);
        if (k < 0) return cli_usage_error(cmd, "--scheduler takes cosine, cosine-step, step or none, not '%s'", optarg);
        o.scheduler = (im_train_sched_kind_t)k;
        break;
      }
      case O_TMAX:
        if (cli_parse_i64(cmd, "--t-max", optarg, 1, 1000000, &v)) return CLI_USAGE;
        o.t_max = v;
        break;
      case O_ETAMIN:
        if (cli_parse_double(cmd, "--eta-min", optarg, &o.eta_min)) return CLI_USAGE;
        if (o.eta_min < 0) return cli_usage_error(cmd, "--eta-min must not be negative");
        break;
      case O_STEPSIZE:
        if (cli_parse_i64(cmd, "--step-size", optarg, 1, 1000000, &v)) return CLI_USAGE;
        o.step_size = v;
        break;
      case O_GAMMA:
        if (cli_parse_double(cmd, "--gamma", optarg, &o.gamma)) return CLI_USAGE;
        break;
      case O_WARM:
        if (cli_parse_double(cmd, "--warmup-epochs", optarg, &o.warmup_epochs)) return CLI_USAGE;
        if (o.warmup_epochs < 0) return cli_usage_error(cmd, "--warmup-epochs must not be negative");
        break;
      case O_WARMSTART:
        if (cli_parse_double(cmd, "--warmup-start", optarg, &o.warmup_start)) return CLI_USAGE;
        if (o.warmup_start < 0 || o.warmup_start > 1) return cli_usage_error(cmd, "--warmup-start must be in [0, 1]");
        break;
      case O_LS:
        if (cli_parse_double(cmd, "--label-smoothing", optarg, &o.label_smoothing)) return CLI_USAGE;
        if (o.label_smoothing < 0 || o.label_smoothing > 1)
          return cli_usage_error(cmd, "--label-smoothing must be in [0, 1]");
        break;
      case O_CLIP:
        if (cli_parse_double(cmd, "--grad-clip", optarg, &o.grad_clip)) return CLI_USAGE;
        if (o.grad_clip < 0) return cli_usage_error(cmd, "--grad-clip must not be negative");
        break;
      case O_HFLIP: o.hflip = 1; break;
      case O_NOHFLIP: o.hflip = 0; break;
      case O_CROP:
        if (cli_parse_i64(cmd, "--crop-pad", optarg, 0, 1024, &v)) return CLI_USAGE;
        o.crop_pad = (int)v;
        break;
      case O_SEED:
        if (cli_parse_u64(cmd, "--seed", optarg, &o.seed)) return CLI_USAGE;
        break;
      case O_OUTPUT: o.output = optarg; break;
      case O_EARLY:
        if (cli_parse_i64(cmd, "--early-stopping", optarg, 0, 1000000, &v)) return CLI_USAGE;
        o.early_stopping = (int)v;
        break;
      case O_FINAL:
        if (!strcmp(optarg, "best")) o.final_weights_last = 0;
        else if (!strcmp(optarg, "last")) o.final_weights_last = 1;
        else return cli_usage_error(cmd, "--final takes best or last, not '%s'", optarg);
        break;
      case O_EXP: o.experiment = optarg; break;
      case O_RUNNAME: o.run_name = optarg; break;
      case O_LOGEVERY:
        if (cli_parse_i64(cmd, "--log-every", optarg, 1, INT64_MAX, &v)) return CLI_USAGE;
        o.log_every = v;
        break;
      default: return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
  if (o.resume) {
    if (fixed_by_checkpoint)
      return cli_usage_error(cmd, "%s cannot be changed on --resume: the run's options come from its checkpoint",
                             fixed_by_checkpoint);
    if (!epochs_given) o.epochs = 0; /* keep the checkpoint's */
  } else if (!o.data_dir) {
    return cli_usage_error(cmd, "--data DIR is required");
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  stop_flag = 0;
  o.cancel = &stop_flag;

  ui_t ui = {.json = json};
  train_metrics_t mx = {0};
  if (metrics_port >= 0) {
    mx.batch_size = o.resume ? checkpoint_batch_size(o.resume) : o.batch_size;
    im_status_t mst = metrics_start(&mx, metrics_host, metrics_port);
    if (mst) {
      metrics_stop(&mx);
      return cli_fail(cmd, mst, "--metrics-port: cannot serve the metrics");
    }
    fprintf(stderr, "imops train: metrics on http://%s:%d/metrics\n", metrics_host, im_http_server_port(mx.srv));
    ui.mx = &mx;
  }
  o.progress = on_progress;
  o.on_epoch = on_epoch;
  o.prep_progress = on_prep;
  o.user = &ui;
  im_train_result_t *r = NULL;
  im_status_t st = im_train_run(&o, &r);
  cli_progress_finish(ui.bar);
  ui.bar = NULL;
  if (ui.mx) metrics_stop(&mx);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  if (st == IM_ERR_CANCELLED) {
    const char *dir = r && r->output_dir ? r->output_dir : "the output directory";
    if (json && r) print_json_result(r, "KILLED");
    fprintf(stderr, "imops train: %s; continue with: imops train --resume %s\n", im_last_error(), dir);
    im_train_result_free(r);
    return CLI_FAIL;
  }
  if (st) return cli_fail(cmd, st, o.resume ? o.resume : o.data_dir);
  if (json) {
    print_json_result(r, "FINISHED");
  } else {
    if (isfinite(r->best_val_accuracy))
      printf("best validation accuracy %.3f%% at epoch %lld%s\n", 100 * r->best_val_accuracy, (long long)r->best_epoch,
             r->stopped_early ? " (stopped early)" : "");
    printf("model: %s\n", r->model_dir);
    if (r->run_id) printf("run %s (%s): runs:/%s/model\n", r->run_id, r->run_name, r->run_id);
    printf("%lld epochs, %lld steps in %.1f s (%s backend, %d threads)\n", (long long)r->epochs_done,
           (long long)r->global_step, r->seconds, r->backend, r->threads);
  }
  im_train_result_free(r);
  return CLI_OK;
}
