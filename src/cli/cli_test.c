/* imops test: evaluate a model (bundle path or model URI) on a split of an
 * ImageFolder: loss, accuracy, per-class precision / recall / F1, confusion
 * matrix, ROC AUC for two classes; logged to the model's run (or a new one). */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "imops/core.h"
#include "imops/train.h"

static const char usage_text[] =
    "usage: imops test --model MODEL --data DIR [options]\n"
    "\n"
    "Evaluates MODEL on the test split of DIR (preprocessed at the model's input\n"
    "size first when needed): loss, accuracy, per-class precision / recall / F1,\n"
    "the confusion matrix and, for two classes, ROC AUC. MODEL is a bundle\n"
    "directory, file:///dir, runs:/<run_id>/model, models:/<name>/<version|stage>\n"
    "or models:/<name>@<alias>. The results are logged to the model's run when it\n"
    "came from one, else to a new run (metrics test_*, plots/confusion_matrix.svg).\n"
    "\n"
    "options:\n"
    "  --model MODEL         the model (required)\n"
    "  --data DIR            the ImageFolder (required)\n"
    "  --split NAME          test (default), val, train, or all (every image of DIR)\n"
    "  --batch-size N        evaluation batch size (default 256)\n"
    "  --device D            cpu (default), ref; GPU ids are not supported yet\n"
    "  --threads N           compute threads (default: IMOPS_NUM_THREADS, else all cores)\n"
    "  --experiment NAME     experiment of a new run (default Default)\n"
    "  --tracking-uri URI    a workspace path, or http(s)://host:port (imops server or mlflow server;\n"
    "                        default: $MLFLOW_TRACKING_URI when it is http(s)://, else the workspace)\n"
    "  --no-track            do not log to the tracking store\n"
    "  --json                print the results as JSON on stdout\n"
    "  -h, --help            show this help\n"
    "\n"
    "Exit status: 0 evaluated, 1 failed, 2 usage error.\n";

typedef struct {
  cli_progress_t *bar;
  int testing;
} ui_t;

static void on_progress(void *user, const im_train_progress_t *p) {
  ui_t *u = user;
  if (!u->testing) {
    cli_progress_finish(u->bar); /* a preprocessing bar */
    u->bar = cli_progress_new("", p->steps);
    u->testing = 1;
  }
  if (!u->bar) return;
  char desc[128];
  snprintf(desc, sizeof desc, "Test. Loss: %.3f | accuracy: %.3f", p->loss, 100.0 * p->accuracy);
  cli_progress_set_desc(u->bar, desc);
  cli_progress_update(u->bar, p->step);
}

static void on_prep(void *user, const char *stage, int64_t done, int64_t total) {
  ui_t *u = user;
  cli_progress_cb(&u->bar, stage, done, total);
}

static json_t *num_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static void print_json(const im_train_metrics_t *m, const char *model, const char *data, const char *run_id) {
  json_t *classes = json_array(), *per = json_object(), *cm = json_array();
  for (int k = 0; k < m->n_classes; k++) {
    json_array_append_new(classes, json_string(m->classes[k]));
    json_object_set_new(per, m->classes[k],
                        json_pack("{s:f, s:f, s:f, s:I}", "precision", m->precision[k], "recall", m->recall[k], "f1",
                                  m->f1[k], "support", (json_int_t)m->support[k]));
    json_t *row = json_array();
    for (int j = 0; j < m->n_classes; j++)
      json_array_append_new(row, json_integer(m->confusion[(size_t)k * (size_t)m->n_classes + (size_t)j]));
    json_array_append_new(cm, row);
  }
  json_t *j = json_object();
  json_object_set_new(j, "model", json_string(model));
  json_object_set_new(j, "data", json_string(data));
  json_object_set_new(j, "split", json_string(m->split));
  json_object_set_new(j, "data_hash", json_string(m->data_hash));
  json_object_set_new(j, "n", json_integer(m->n));
  json_object_set_new(j, "loss", num_or_null(m->loss));
  json_object_set_new(j, "accuracy", num_or_null(m->accuracy));
  json_object_set_new(j, "macro_precision", num_or_null(m->macro_precision));
  json_object_set_new(j, "macro_recall", num_or_null(m->macro_recall));
  json_object_set_new(j, "macro_f1", num_or_null(m->macro_f1));
  json_object_set_new(j, "weighted_f1", num_or_null(m->weighted_f1));
  json_object_set_new(j, "roc_auc", num_or_null(m->roc_auc));
  json_object_set_new(j, "classes", classes);
  json_object_set_new(j, "per_class", per);
  json_object_set_new(j, "confusion_matrix", cm);
  json_object_set_new(j, "run_id", run_id ? json_string(run_id) : json_null());
  json_object_set_new(j, "seconds", json_real(m->seconds));
  char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  if (s) puts(s);
  free(s);
  json_decref(j);
}

static void print_text(const im_train_metrics_t *m, const char *data) {
  printf("%s (%s split): %lld images\n", data, m->split, (long long)m->n);
  printf("loss %.4f  accuracy %.3f%%", m->loss, 100 * m->accuracy);
  if (isfinite(m->roc_auc)) printf("  ROC AUC %.4f", m->roc_auc);
  printf("\n\n");
  static const char *const head[5] = {"class", "precision", "recall", "f1", "support"};
  cli_table_t *t = cli_table_new(5, head);
  char cells[5][64];
  const char *row[5] = {cells[0], cells[1], cells[2], cells[3], cells[4]};
  for (int k = 0; t && k <= m->n_classes; k++) {
    if (k < m->n_classes) {
      snprintf(cells[0], 64, "%s", m->classes[k]);
      snprintf(cells[1], 64, "%.4f", m->precision[k]);
      snprintf(cells[2], 64, "%.4f", m->recall[k]);
      snprintf(cells[3], 64, "%.4f", m->f1[k]);
      snprintf(cells[4], 64, "%lld", (long long)m->support[k]);
    } else {
      snprintf(cells[0], 64, "macro avg");
      snprintf(cells[1], 64, "%.4f", m->macro_precision);
      snprintf(cells[2], 64, "%.4f", m->macro_recall);
      snprintf(cells[3], 64, "%.4f", m->macro_f1);
      snprintf(cells[4], 64, "%lld", (long long)m->n);
    }
    cli_table_row(t, row);
  }
  if (t) cli_table_print(t, 40);
  cli_table_free(t);
  printf("\nconfusion matrix (rows: true class, columns: predicted)\n");
  int w = 8;
  for (int k = 0; k < m->n_classes; k++) {
    int l = (int)strlen(m->classes[k]);
    if (l > w) w = l > 24 ? 24 : l;
  }
  printf("%*s", w + 2, "");
  for (int k = 0; k < m->n_classes; k++) printf(" %8.8s", m->classes[k]);
  printf("\n");
  for (int i = 0; i < m->n_classes; i++) {
    printf("  %-*.*s", w, w, m->classes[i]);
    for (int j = 0; j < m->n_classes; j++)
      printf(" %8lld", (long long)m->confusion[(size_t)i * (size_t)m->n_classes + (size_t)j]);
    printf("\n");
  }
}

int cli_test(int argc, char **argv) {
  enum { O_MODEL = 256, O_DATA, O_SPLIT, O_BATCH, O_DEVICE, O_THREADS, O_EXP, O_TURI, O_NOTRACK, O_JSON };
  static const struct option longopts[] = {
      {"model", required_argument, 0, O_MODEL},     {"data", required_argument, 0, O_DATA},
      {"split", required_argument, 0, O_SPLIT},     {"batch-size", required_argument, 0, O_BATCH},
      {"device", required_argument, 0, O_DEVICE},   {"threads", required_argument, 0, O_THREADS},
      {"experiment", required_argument, 0, O_EXP},  {"tracking-uri", required_argument, 0, O_TURI},
      {"no-track", no_argument, 0, O_NOTRACK},      {"json", no_argument, 0, O_JSON},
      {"help", no_argument, 0, 'h'},                {0, 0, 0, 0}};
  const char *cmd = "test", *model = NULL, *device = "cpu", *experiment = NULL, *turi = NULL;
  im_train_eval_opts_t eo = {0};
  int json = 0, track = 1;
  int64_t v;
  optind = 1;
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (ch) {
      case O_MODEL: model = optarg; break;
      case O_DATA: eo.data_dir = optarg; break;
      case O_SPLIT:
        if (strcmp(optarg, "test") && strcmp(optarg, "val") && strcmp(optarg, "train") && strcmp(optarg, "all"))
          return cli_usage_error(cmd, "--split takes test, val, train or all, not '%s'", optarg);
        eo.split = optarg;
        break;
      case O_BATCH:
        if (cli_parse_i64(cmd, "--batch-size", optarg, 1, 65536, &v)) return CLI_USAGE;
        eo.batch_size = (int)v;
        break;
      case O_DEVICE: device = optarg; break;
      case O_THREADS:
        if (cli_parse_i64(cmd, "--threads", optarg, 1, 1024, &v)) return CLI_USAGE;
        setenv("IMOPS_NUM_THREADS", optarg, 1);
        break;
      case O_EXP: experiment = optarg; break;
      case O_TURI: turi = optarg; break;
      case O_NOTRACK: track = 0; break;
      case O_JSON: json = 1; break;
      case 'h': fputs(usage_text, stdout); return CLI_OK;
      case ':': return cli_usage_error(cmd, "%s needs a value", argv[optind - 1]);
      default: return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
  if (!model) return cli_usage_error(cmd, "--model MODEL is required");
  if (!eo.data_dir) return cli_usage_error(cmd, "--data DIR is required");
  im_train_model_t *m = NULL;
  im_status_t st = im_train_model_open(model, device, turi, &m);
  if (st) return cli_fail(cmd, st, model);
  ui_t ui = {0};
  eo.progress = on_progress;
  eo.prep_progress = on_prep;
  eo.user = &ui;
  im_train_metrics_t *mt = NULL;
  st = im_train_evaluate(m, &eo, &mt);
  cli_progress_finish(ui.bar);
  if (st) {
    im_train_model_close(m);
    return cli_fail(cmd, st, eo.data_dir);
  }
  char *run_id = NULL;
  if (track && (st = im_train_track_eval(m, mt, eo.data_dir, turi, experiment, &run_id)))
    fprintf(stderr, "imops test: warning: the results were not logged: %s\n", im_last_error());
  if (json)
    print_json(mt, model, eo.data_dir, run_id);
  else {
    print_text(mt, eo.data_dir);
    if (run_id) printf("\nlogged to run %s\n", run_id);
  }
  im_free(run_id);
  im_train_metrics_free(mt);
  im_train_model_close(m);
  return CLI_OK;
}
