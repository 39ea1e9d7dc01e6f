/* imops export onnx: writes a model (bundle path or model URI) as an ONNX file
 * with its folded inference graph, and, when the model came from a tracked run,
 * logs the file next to the bundle (artifact model/model.onnx) with an onnx
 * flavor in the run's MLmodel. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "cli.h"
#include "imops/core.h"
#include "imops/onnx.h"
#include "imops/track.h"
#include "imops/train.h"

static const char usage_text[] =
    "usage: imops export onnx MODEL OUT.onnx [options]\n"
    "\n"
    "Writes MODEL as an ONNX file (opset 17 by default) for ONNX Runtime, Triton,\n"
    "OpenCV or any ONNX tool: batch norm folded into the convolutions, input\n"
    "'image' float32 [N, C, H, W] (dynamic batch N), output 'logits' [N, classes],\n"
    "class names, image size, mean/std, arch and imops version in the metadata.\n"
    "OUT.onnx is replaced atomically. MODEL is a bundle directory, file:///dir,\n"
    "runs:/<run_id>/model, models:/<name>/<version|stage> or models:/<name>@<alias>;\n"
    "when it belongs to a tracked run, the file is also logged to that run next to the\n"
    "bundle (model/model.onnx) and the run's MLmodel gains an 'onnx' flavor (MLflow's\n"
    "format), in the workspace or on a tracking server.\n"
    "\n"
    "options:\n"
    "  --with-preprocess     fold the mean/std normalization into the graph: the input\n"
    "                        takes raw 0-255 pixel values (RGB, resized to the model's size)\n"
    "  --probabilities       add a 'probabilities' output (softmax of the logits)\n"
    "  --opset N             ONNX opset, 17 to 21 (default 17)\n"
    "  --tracking-home DIR   the store for runs:/ and models:/ (default $IMOPS_HOME)\n"
    "  --tracking-uri URI    the same, or a tracking server (http(s)://host:port: imops\n"
    "                        server or mlflow server; default MLFLOW_TRACKING_URI when\n"
    "                        it is http(s)://): the model is fetched through it and\n"
    "                        model.onnx and MLmodel are uploaded to the run's artifacts\n"
    "  --no-track            do not log the file to the model's run\n"
    "  --json                print what was written as JSON\n"
    "  -h, --help            show this help\n"
    "\n"
    "Exit status: 0 exported, 1 the model could not be read or written, 2 usage error.\n";

/* Logs the exported file next to the model of a runs:/ or models:/ URI: in a
 * workspace store, into the bundle itself; on a tracking server (--tracking-uri
 * or MLFLOW_TRACKING_URI http(s)://), into the fetched copy (dir) and from there
 * model.onnx, then MLmodel, to the run's artifacts. *art: the artifact path. */
static im_status_t log_to_run(const char *model, const char *home, const char *dir, const char *out,
                              const im_onnx_opts_t *o, char **art) {
  im_status_t st = im_onnx_bundle_add(dir, out, o);
  if (st || !im_track_uri_is_server(home ? home : getenv("MLFLOW_TRACKING_URI"))) {
    *art = st ? NULL : im_strdup("model/model.onnx");
    return st || *art ? st : im_error(IM_ERR_NOMEM, "out of memory");
  }
  im_track_client_t *c = NULL;
  char *run_id = NULL, *path = NULL, *onnx = im_path_join(dir, "model.onnx"), *mlmodel = im_path_join(dir, "MLmodel");
  char *onnx_art = NULL, *mlmodel_art = NULL;
  if (!onnx || !mlmodel) st = im_error(IM_ERR_NOMEM, "out of memory");
  if (!st) st = im_track_client_open(home, &c);
  if (!st) st = im_track_client_model_run_path(c, model, &run_id, &path);
  if (!st && (!(onnx_art = *path ? im_path_join(path, "model.onnx") : im_strdup("model.onnx")) ||
              !(mlmodel_art = *path ? im_path_join(path, "MLmodel") : im_strdup("MLmodel"))))
    st = im_error(IM_ERR_NOMEM, "out of memory");
  /* the file first: the flavor never names a file the run does not have */
  if (!st) st = im_track_client_log_artifacts(c, run_id, onnx, onnx_art);
  if (!st) st = im_track_client_log_artifacts(c, run_id, mlmodel, mlmodel_art);
  if (!st) {
    *art = onnx_art;
    onnx_art = NULL;
  }
  im_track_client_close(c);
  im_free(run_id);
  im_free(path);
  im_free(onnx);
  im_free(mlmodel);
  im_free(onnx_art);
  im_free(mlmodel_art);
  return st;
}

static int export_onnx(int argc, char **argv) {
  enum { O_PRE = 256, O_PROBS, O_OPSET, O_HOME, O_NOTRACK, O_JSON };
  static const struct option longopts[] = {{"with-preprocess", no_argument, 0, O_PRE},
                                           {"probabilities", no_argument, 0, O_PROBS},
                                           {"opset", required_argument, 0, O_OPSET},
                                           {"tracking-home", required_argument, 0, O_HOME},
                                           {"tracking-uri", required_argument, 0, O_HOME},
                                           {"no-track", no_argument, 0, O_NOTRACK},
                                           {"json", no_argument, 0, O_JSON},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  const char *cmd = "export onnx", *home = NULL;
  im_onnx_opts_t o = IM_ONNX_DEFAULTS;
  int json = 0, track = 1;
  int64_t v;
  optind = 1;
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (ch) {
      case O_PRE: o.with_preprocess = 1; break;
      case O_PROBS: o.probabilities = 1; break;
      case O_OPSET:
        if (cli_parse_i64(cmd, "--opset", optarg, IM_ONNX_OPSET_MIN, IM_ONNX_OPSET_MAX, &v)) return CLI_USAGE;
        o.opset = (int)v;
        break;
      case O_HOME: home = optarg; break;
      case O_NOTRACK: track = 0; break;
      case O_JSON: json = 1; break;
      case 'h': fputs(usage_text, stdout); return CLI_OK;
      case ':': return cli_usage_error(cmd, "%s needs a value", argv[optind - 1]);
      default: return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (argc - optind != 2) return cli_usage_error(cmd, "needs MODEL and OUT.onnx (see imops export onnx --help)");
  const char *model = argv[optind], *out = argv[optind + 1];
  struct stat sb;
  if (stat(out, &sb) == 0 && S_ISDIR(sb.st_mode))
    return cli_usage_error(cmd, "%s is a directory; give the output file's name (e.g. %s/model.onnx)", out, out);
  im_train_model_t *m = NULL;
  im_status_t st = im_train_model_open(model, "cpu", home, &m);
  if (st) return cli_fail(cmd, st, model);
  const im_nn_bundle_meta_t *meta = im_train_model_meta(m);
  o.classes = meta->classes;
  o.num_classes = meta->classes ? meta->num_classes : 0;
  o.img_h = meta->img_h;
  o.img_w = meta->img_w;
  o.n_norm = meta->n_norm;
  memcpy(o.mean, meta->mean, sizeof o.mean);
  memcpy(o.std, meta->std, sizeof o.std);
  im_nn_model_t *nn = im_train_model_nn(m);
  uint8_t *data = NULL;
  size_t len = 0;
  if ((st = im_onnx_export_mem(nn, &o, &data, &len)) || (st = im_file_write_atomic(out, data, len))) {
    im_free(data);
    im_train_model_close(m);
    return cli_fail(cmd, st, out);
  }
  im_free(data);
  /* The tracked step: a model of a run (runs:/, models:/, or a bundle whose MLmodel names its run). */
  const char *run_id = im_train_model_run_id(m);
  const int from_store = !strncasecmp(model, "runs:", 5) || !strncasecmp(model, "models:", 7);
  int tracked = 0;
  char *art = NULL;
  if (track && from_store) {
    if ((st = log_to_run(model, home, im_train_model_dir(m), out, &o, &art))) {
      im_train_model_close(m);
      return cli_fail(cmd, st, "logging model.onnx to the run");
    }
    tracked = 1;
  }
  if (json) {
    json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:i, s:i, s:b, s:b, s:b}", "model", model, "output", out, "arch",
                          im_nn_model_arch(nn), "bytes", (json_int_t)len, "opset", o.opset, "ir_version",
                          im_onnx_ir_version(o.opset), "with_preprocess", o.with_preprocess, "probabilities",
                          o.probabilities, "tracked", tracked);
    json_object_set_new(j, "run_id", run_id ? json_string(run_id) : json_null());
    if (tracked) json_object_set_new(j, "artifact", json_string(art));
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s) puts(s);
    free(s);
    json_decref(j);
  } else {
    printf("wrote %s (%s, %zu bytes, opset %d%s%s)\n", out, im_nn_model_arch(nn), len, o.opset,
           o.with_preprocess ? ", takes 0-255 pixels" : "", o.probabilities ? ", with probabilities" : "");
    if (tracked) printf("logged to run %s as %s (MLmodel flavor onnx)\n", run_id ? run_id : "?", art);
  }
  im_free(art);
  im_train_model_close(m);
  return CLI_OK;
}

int cli_export(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    fputs(usage_text, argc < 2 ? stderr : stdout);
    return argc < 2 ? CLI_USAGE : CLI_OK;
  }
  if (!strcmp(argv[1], "onnx")) return export_onnx(argc - 1, argv + 1);
  return cli_usage_error("export", "unknown format '%s': imops exports onnx", argv[1]);
}
