/* The imops binary: a table of commands, each in its own cli_<name>.c file. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "imops/core.h"
#include "imops/version.h"

static const cli_command_t commands[] = {
    {"datagen", "generate a synthetic data set (datagen surface: concrete cracks)", cli_datagen},
    {"dataset", "import data sets into ImageFolder layout (dataset import-idx)", cli_dataset},
    {"preprocess", "split a data set, compute mean/std, build the decoded cache", cli_preprocess},
    {"sweep", "hyperparameter sweeps (W&B sweep YAML): create, agent, run, show, list, export-katib", cli_sweep},
    {"train", "train a model (checkpoints, resume, tracked run)", cli_train},
    {"test", "evaluate a model on a data split: accuracy, per-class metrics, confusion matrix", cli_test},
    {"predict", "classify image files with a model", cli_predict},
    {"export", "export a model: export onnx MODEL OUT.onnx (ONNX Runtime, Triton, ...)", cli_export},
    {"experiments", "list, create and delete experiments (tracking store)", cli_experiments},
    {"runs", "list, show, compare and delete tracked runs", cli_runs},
    {"models", "the model registry: register, versions, aliases, stages", cli_models},
    {"server", "tracking + registry server: the MLflow REST API and artifact proxy", cli_server},
    {"artifacts", "run artifacts and artifact stores (local, S3): log, upload, list, download", cli_artifacts},
    {"serve", "model server: /predict, Open Inference Protocol v2, /metrics, /docs", cli_serve},
    {"pipeline", "run a pipeline of imops steps locally (DAG, caching); compile it for Kubeflow", cli_pipeline},
    {"version", "print the version", cli_version},
};

static void usage(FILE *f) {
  fprintf(f,
          "usage: imops <command> [options]\n"
          "\n"
          "imops: the MLOps lifecycle of an image classifier in one binary.\n"
          "\n"
          "commands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
  fprintf(f,
          "\n"
          "Run 'imops <command> --help' for a command's options.\n"
          "Environment: IMOPS_HOME (workspace, default ./imops-workspace), IMOPS_NUM_THREADS.\n"
          "Exit status: 0 success, 1 the job failed, 2 usage error.\n");
}

static void log_to_stderr(im_log_level_t level, const char *msg, void *user) {
  static const char *names[] = {"debug", "info", "warning", "error"};
  fprintf(stderr, "imops: %s: %s\n", names[level], msg);
}

int main(int argc, char **argv) {
  im_log_set(log_to_stderr, NULL, IM_LOG_WARN);
  if (argc < 2) {
    usage(stderr);
    return CLI_USAGE;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
    usage(stdout);
    return CLI_OK;
  }
  if (!strcmp(cmd, "--version")) return cli_version(1, argv + 1);
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    if (!strcmp(cmd, commands[i].name)) return commands[i].run(argc - 1, argv + 1);
  }
  fprintf(stderr, "imops: unknown command '%s'; run 'imops --help' for the list\n", cmd);
  return CLI_USAGE;
}
