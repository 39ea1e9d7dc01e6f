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
    "  --early-stopping N      stop after N epochs without a better validation accuracy\n"
    "  --checkpoint-every N    also checkpoint every N steps (default: off)\n"
    "  --checkpoint-seconds S  also checkpoint every S seconds (default 60; 0: off)\n"
    "  --final best|last       weights of the final model (default best)\n"
    "  --max-steps N           stop after N steps in all, as on Ctrl-C\n"
    "tracking:\n"
    "  --experiment NAME       experiment (default Default; created when missing)\n"
    "  --run-name NAME         run name (default: generated)\n"
    "  --log-every N           per-step metrics every N steps (default 50)\n"
    "  --tracking-uri URI      the store (a workspace path); remote servers are not supported yet\n"
    "  --no-track              do not log to the tracking store\n"
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

typedef struct {
  cli_progress_t *bar;
  char stage[16];
  int64_t epoch;
  int json;
} ui_t;

static void on_progress(void *user, const im_train_progress_t *p) {
  ui_t *u = user;
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
  cli_progress_finish(u->bar);
  u->bar = NULL;
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
  O_TURI, O_NOTRACK, O_JSON, O_INIT
};

int cli_train(int argc, char **argv) {
  static const struct option longopts[] = {
      {"data", required_argument, 0, O_DATA},
      {"model", required_argument, 0, O_MODEL},
      {"img-size", required_argument, 0, O_IMG},
      {"width", required_argument, 0, O_WIDTH},
      {"init", required_argument, 0, O_INIT},
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
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  const char *cmd = "train";
  im_train_opts_t o = im_train_defaults();
  int json = 0, epochs_given = 0;
  const char *fixed_by_checkpoint = NULL; /* an option that --resume takes from the checkpoint */
  int64_t v;
  double d;
  optind = 1;
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (ch) {
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
  if (o.tracking_home && o.track &&
      (!strncmp(o.tracking_home, "http://", 7) || !strncmp(o.tracking_home, "https://", 8))) {
    fprintf(stderr, "imops train: --tracking-uri %s: logging to a remote tracking server is not supported yet; leave "
                    "it out to log into the workspace store, or add --no-track\n", o.tracking_home);
    return CLI_FAIL;
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
  o.progress = on_progress;
  o.on_epoch = on_epoch;
  o.prep_progress = on_prep;
  o.user = &ui;
  im_train_result_t *r = NULL;
  im_status_t st = im_train_run(&o, &r);
  cli_progress_finish(ui.bar);
  ui.bar = NULL;
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
