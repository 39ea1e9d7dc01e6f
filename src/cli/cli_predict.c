/* imops predict: classify image files with a model (bundle path or model URI),
 * preprocessing each image exactly as the training data was; or, with --url,
 * through a running `imops serve` (multipart uploads to POST /predict). */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "imops/core.h"
#include "imops/http.h"
#include "imops/image.h"
#include "imops/train.h"

static const char usage_text[] =
    "usage: imops predict --model MODEL [options] FILE...\n"
    "       imops predict --url http://HOST:PORT [--json] FILE...\n"
    "\n"
    "Classifies each image FILE (JPEG or PNG): decoded, resized to the model's\n"
    "input size and normalized exactly as the training data was. Prints the\n"
    "predicted class, its label and the probabilities. MODEL is a bundle\n"
    "directory, file:///dir, runs:/<run_id>/model, models:/<name>/<version|stage>\n"
    "or models:/<name>@<alias>. With --url the files are sent to a running\n"
    "`imops serve` (POST /predict) instead, and its answers printed the same way.\n"
    "Locally, files are decoded on all threads and classified in batches of up to 64.\n"
    "\n"
    "options:\n"
    "  --model MODEL         the model (required without --url)\n"
    "  --url URL             classify through imops serve at URL (e.g. http://127.0.0.1:3000)\n"
    "  --device D            cpu (default), ref; GPU ids are not supported yet\n"
    "  --threads N           compute threads (default: IMOPS_NUM_THREADS, else all cores)\n"
    "  --tracking-uri URI    the store for runs:/ and models:/ (a workspace path)\n"
    "  --json                print the predictions as JSON on stdout\n"
    "  -h, --help            show this help\n"
    "\n"
    "Exit status: 0 every file classified, 1 a file or the model failed, 2 usage error.\n";

/* Prints one prediction as local prediction does (probs: label -> probability, in class order). */
static void print_prediction(const char *file, int best, const char *label, double p, json_t *probs) {
  printf("%s: %s (class %d, p=%.4f)", file, label, best, p);
  if (json_object_size(probs) <= 10) {
    printf("  [");
    const char *k;
    json_t *v;
    int first = 1;
    json_object_foreach(probs, k, v) {
      printf("%s%s %.4f", first ? "" : ", ", k, json_number_value(v));
      first = 0;
    }
    printf("]");
  }
  printf("\n");
}

/* Local prediction: each file's answer as it comes, in order (im_train_predict_files). */
typedef struct {
  im_train_model_t *m;
  const char *const *files;
  int json, rc;
  json_t *preds;
} predict_out_t;

static void print_local(void *user, int64_t i, im_status_t st, const float *logits, const float *probs) {
  predict_out_t *o = user;
  const char *file = o->files[i];
  if (st != IM_OK) {
    o->rc = CLI_FAIL;
    if (o->json) json_array_append_new(o->preds, json_pack("{s:s, s:s}", "file", file, "error", im_last_error()));
    else fprintf(stderr, "imops predict: %s: %s\n", file, im_last_error());
    return;
  }
  const int k = im_train_model_num_classes(o->m);
  int best = 0;
  for (int c = 1; c < k; c++)
    if (probs[c] > probs[best]) best = c;
  json_t *p = json_object();
  for (int c = 0; c < k; c++) json_object_set_new(p, im_train_model_class(o->m, c), json_real(probs[c]));
  if (!o->json) {
    print_prediction(file, best, im_train_model_class(o->m, best), probs[best], p);
    json_decref(p);
    return;
  }
  json_t *lg = json_array();
  for (int c = 0; c < k; c++) json_array_append_new(lg, json_real(logits[c]));
  json_array_append_new(o->preds, json_pack("{s:s, s:i, s:s, s:f, s:o, s:o}", "file", file, "class", best, "label",
                                            im_train_model_class(o->m, best), "probability", (double)probs[best],
                                            "probabilities", p, "logits", lg));
}

/* With --json prints {"model": model, "predictions": preds}; takes preds either way. */
static void print_report(int json, const char *model, json_t *preds) {
  if (json) {
    json_t *j = json_pack("{s:s, s:o}", "model", model, "predictions", preds);
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s) puts(s);
    free(s);
    json_decref(j);
  } else {
    json_decref(preds);
  }
}

/* The body requests.post(url, files={"file": (name, data, type)}) sends. */
static im_status_t multipart_body(const char *boundary, const char *file, const uint8_t *data, size_t len,
                                  im_buf_t *b) {
  const char *base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
  im_image_format_t f = im_image_sniff(data, len);
  const char *type = f == IM_FORMAT_JPEG ? "image/jpeg" : f == IM_FORMAT_PNG ? "image/png" : "application/octet-stream";
  char safe[256];
  size_t k = 0;
  for (const char *p = base; *p && k + 1 < sizeof safe; p++) safe[k++] = (*p == '"' || *p == '\r' || *p == '\n') ? '_' : *p;
  safe[k] = '\0';
  im_status_t st = im_buf_printf(b,
                                 "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
                                 "Content-Type: %s\r\n\r\n",
                                 boundary, safe, type);
  if (st == IM_OK) st = im_buf_append(b, data, len);
  if (st == IM_OK) st = im_buf_printf(b, "\r\n--%s--\r\n", boundary);
  return st;
}

static int predict_remote(const char *url, char **files, int n, int json) {
  const char *cmd = "predict";
  im_http_client_opts_t co = {.max_retries = 2};
  im_http_client_t *c = NULL;
  im_status_t st = im_http_client_new(&co, &c);
  if (st) return cli_fail(cmd, st, "cannot set up the HTTP client");
  size_t ul = strlen(url);
  while (ul && url[ul - 1] == '/') ul--;
  char *endpoint = im_malloc(ul + 16);
  if (!endpoint) {
    im_http_client_free(c);
    return cli_fail(cmd, im_error(IM_ERR_NOMEM, "out of memory"), url);
  }
  snprintf(endpoint, ul + 16, "%.*s/predict", (int)ul, url);
  const char *boundary = "imops-predict-5f1c2b7a9d";
  char ctype[96];
  snprintf(ctype, sizeof ctype, "multipart/form-data; boundary=%s", boundary);
  int rc = CLI_OK;
  json_t *preds = json_array();
  for (int i = 0; i < n; i++) {
    const char *file = files[i];
    uint8_t *data = NULL;
    size_t len = 0;
    im_buf_t body = {0};
    im_http_response_t resp = {0};
    json_t *ans = NULL;
    char err[1024] = "";
    if ((st = im_file_read(file, 0, &data, &len))) {
      snprintf(err, sizeof err, "%s", im_last_error());
    } else if ((st = multipart_body(boundary, file, data, len, &body))) {
      snprintf(err, sizeof err, "%s", im_last_error());
    } else {
      im_http_request_t rq = {.method = "POST", .url = endpoint, .body = body.data, .body_len = body.len,
                              .content_type = ctype};
      if ((st = im_http_client_request(c, &rq, &resp))) {
        snprintf(err, sizeof err, "cannot reach %s: %s", endpoint, im_last_error());
      } else {
        ans = json_loadb((const char *)resp.body, resp.body_len, 0, NULL);
        if (resp.status != 200) {
          const char *e = json_string_value(json_object_get(ans, "error"));
          snprintf(err, sizeof err, "the server answered %ld: %s", resp.status, e ? e : (const char *)resp.body);
        } else if (!json_is_object(json_array_get(json_object_get(ans, "predictions"), 0))) {
          snprintf(err, sizeof err, "the server's answer has no prediction");
        }
      }
    }
    const json_t *p = json_array_get(json_object_get(ans, "predictions"), 0);
    if (err[0]) {
      rc = CLI_FAIL;
      if (json) json_array_append_new(preds, json_pack("{s:s, s:s}", "file", file, "error", err));
      else fprintf(stderr, "imops predict: %s: %s\n", file, err);
    } else {
      int best = (int)json_integer_value(json_object_get(p, "class"));
      const char *label = json_string_value(json_object_get(p, "label"));
      double prob = json_number_value(json_object_get(p, "probability"));
      json_t *probs = json_object_get(p, "probabilities");
      if (json)
        json_array_append_new(preds, json_pack("{s:s, s:i, s:s, s:f, s:O}", "file", file, "class", best, "label",
                                               label ? label : "", "probability", prob, "probabilities", probs));
      else
        print_prediction(file, best, label ? label : "", prob, probs);
    }
    json_decref(ans);
    im_http_response_deinit(&resp);
    im_buf_free(&body);
    im_free(data);
  }
  print_report(json, url, preds);
  im_free(endpoint);
  im_http_client_free(c);
  return rc;
}

int cli_predict(int argc, char **argv) {
  enum { O_MODEL = 256, O_DEVICE, O_THREADS, O_TURI, O_JSON, O_URL };
  static const struct option longopts[] = {{"model", required_argument, 0, O_MODEL},
                                           {"device", required_argument, 0, O_DEVICE},
                                           {"threads", required_argument, 0, O_THREADS},
                                           {"tracking-uri", required_argument, 0, O_TURI},
                                           {"json", no_argument, 0, O_JSON},
                                           {"url", required_argument, 0, O_URL},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  const char *cmd = "predict", *model = NULL, *device = "cpu", *turi = NULL, *url = NULL;
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
      case O_URL: url = optarg; break;
      case 'h': fputs(usage_text, stdout); return CLI_OK;
      case ':': return cli_usage_error(cmd, "%s needs a value", argv[optind - 1]);
      default: return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (url && model) return cli_usage_error(cmd, "give --model or --url, not both");
  if (!model && !url) return cli_usage_error(cmd, "--model MODEL (or --url URL) is required");
  if (optind >= argc) return cli_usage_error(cmd, "no image files given");
  if (url) return predict_remote(url, argv + optind, argc - optind, json);
  im_train_model_t *m = NULL;
  im_status_t st = im_train_model_open(model, device, turi, &m);
  if (st) return cli_fail(cmd, st, model);
  predict_out_t o = {m, (const char *const *)argv + optind, json, CLI_OK, json_array()};
  st = im_train_predict_files(m, o.files, argc - optind, print_local, &o);
  if (st) {
    json_decref(o.preds);
    im_train_model_close(m);
    return cli_fail(cmd, st, model);
  }
  print_report(json, model, o.preds);
  im_train_model_close(m);
  return o.rc;
}
