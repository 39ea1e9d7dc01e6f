/* Fuzz target: pipeline files (outside input): the YAML loader, every
 * validation, the dependency order, parameter resolution, rendering of each
 * step's command and condition, and the Kubeflow compile of what was valid;
 * plus the condition-expression parser and evaluator on the raw bytes. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "imops/core.h"
#include "imops/pipeline.h"

static void expr_on(const uint8_t *data, size_t size) {
  char text[1024];
  if (size >= sizeof text) size = sizeof text - 1;
  memcpy(text, data, size);
  text[size] = '\0';
  im_pipeline_expr_t *e = NULL;
  if (im_pipeline_expr_parse(text, &e) != IM_OK) return;
  int r;
  (void)im_pipeline_expr_eval(e, "{\"m\": \"train\", \"n\": 3, \"b\": true}", "{\"s\": {\"o\": \"x\"}}", &r);
  im_pipeline_expr_free(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  expr_on(data, size);
  im_pipeline_t *p = NULL;
  if (im_pipeline_parse((const char *)data, size, "fuzz.yaml", &p) != IM_OK) return 0;
  char *pj = NULL;
  if (im_pipeline_resolve_params(p, NULL, 0, &pj) == IM_OK) {
    for (int i = 0; i < im_pipeline_n_steps(p); i++) {
      int holds;
      (void)im_pipeline_step_when(p, i, pj, "{}", &holds);
      char **argv = NULL;
      int n;
      if (im_pipeline_step_argv(p, i, pj, "{}", &argv, &n) == IM_OK) im_pipeline_argv_free(argv);
    }
    im_free(pj);
  }
  im_buf_t b = {0};
  (void)im_pipeline_compile_kfp(p, NULL, &b);
  im_buf_free(&b);
  im_pipeline_free(p);
  return 0;
}
