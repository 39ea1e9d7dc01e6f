/* imops predict: classify image files with a model (bundle path or model URI),
 * preprocessing each image exactly as the training data was. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "imops/core.h"
#include "imops/train.h"

static const char usage_text[] =
    "usage: imops predict --model MODEL [options] FILE...\n"
    "\n"
    "Classifies each image FILE (JPEG or PNG): decoded, resized to the model's\n"
    "input size and normalized exactly as the training data was. Prints the\n"
    "predicted class, its label and the probabilities. MODEL is a bundle\n"
    "directory, file:///dir, runs:/<run_id>/model, models:/<name>/<version|stage>\n"
    "or models:/<name>@<alias>.\n"
    "\n"
    "options:\n"
    "  --model MODEL         the model (required)\n"
    "  --device D            cpu (default), ref; GPU ids are not supported yet\n"
    "  --threads N           compute threads (default: IMOPS_NUM_THREADS, else all cores)\n"
    "  --tracking-uri URI    the store for runs:/ and models:/ (a workspace path)\n"
    "  --json                print the predictions as JSON on stdout\n"
    "  -h, --help            show this help\n"
    "\n"
    "Exit status: 0 every file classified, 1 a file or the model failed, 2 usage error.\n";

int cli_predict(int argc, char **argv) {
  enum { O_MODEL = 256, O_DEVICE, O_THREADS, O_TURI, O_JSON };
  static const struct option longopts[] = {{"model", required_argument, 0, O_MODEL},
                                           {"device", required_argument, 0, O_DEVICE},
                                           {"threads", required_argument, 0, O_THREADS},
                                           {"tracking-uri", required_argument, 0, O_TURI},
                                           {"json", no_argument, 0, O_JSON},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  const char *cmd = "predict", *model = NULL, *device = "cpu", *turi = NULL;
  int json = 0;
  int64_t v;
  optind = 1;
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (ch) {
      case O_MODEL: model = optarg; break;
      case O_DEVICE: device = optarg; break;
      case O_THREADS:
        if (cli_parse_i64(cmd, "--threads", optarg, 1, 1024, &v)) return CLI_USAGE;
        setenv("IMOPS_NUM_THREADS", optarg, 1);
        break;
      case O_TURI: turi = optarg; break;
      case O_JSON: json = 1; break;
      case 'h': fputs(usage_text, stdout); return CLI_OK;
      case ':': return cli_usage_error(cmd, "%s needs a value", argv[optind - 1]);
      default: return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (!model) return cli_usage_error(cmd, "--model MODEL is required");
  if (optind >= argc) return cli_usage_error(cmd, "no image files given");
  im_train_model_t *m = NULL;
  im_status_t st = im_train_model_open(model, device, turi, &m);
  if (st) return cli_fail(cmd, st, model);
  const int k = im_train_model_num_classes(m);
  float *probs = im_malloc(sizeof *probs * (size_t)k);
  if (!probs) {
    im_train_model_close(m);
    return cli_fail(cmd, im_error(IM_ERR_NOMEM, "out of memory"), model);
  }
  int rc = CLI_OK;
  json_t *preds = json_array();
  for (int i = optind; i < argc; i++) {
    const char *file = argv[i];
    if ((st = im_train_predict_file(m, file, probs))) {
      rc = CLI_FAIL;
      if (json)
        json_array_append_new(preds, json_pack("{s:s, s:s}", "file", file, "error", im_last_error()));
      else
        fprintf(stderr, "imops predict: %s: %s\n", file, im_last_error());
      continue;
    }
    int best = 0;
    for (int c = 1; c < k; c++)
      if (probs[c] > probs[best]) best = c;
    if (json) {
      json_t *p = json_object();
      for (int c = 0; c < k; c++) json_object_set_new(p, im_train_model_class(m, c), json_real(probs[c]));
      json_array_append_new(preds, json_pack("{s:s, s:i, s:s, s:f, s:o}", "file", file, "class", best, "label",
                                             im_train_model_class(m, best), "probability", (double)probs[best],
                                             "probabilities", p));
    } else {
      printf("%s: %s (class %d, p=%.4f)", file, im_train_model_class(m, best), best, probs[best]);
      if (k <= 10) {
        printf("  [");
        for (int c = 0; c < k; c++) printf("%s%s %.4f", c ? ", " : "", im_train_model_class(m, c), probs[c]);
        printf("]");
      }
      printf("\n");
    }
  }
  if (json) {
    json_t *j = json_pack("{s:s, s:o}", "model", model, "predictions", preds);
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s) puts(s);
    free(s);
    json_decref(j);
  } else {
    json_decref(preds);
  }
  im_free(probs);
  im_train_model_close(m);
  return rc;
}
