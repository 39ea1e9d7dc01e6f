/* Unit tests of the ONNX module: export bytes (header fields, options
 * checked, files replaced atomically), and the MLmodel flavor editing of the
 * tracked step (insert, replace, keep the rest, refuse a file without
 * flavors). ONNX Runtime and onnx.checker check the files themselves in
 * tests/integration/test_onnx.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "imops/core.h"
#include "imops/nn.h"
#include "imops/onnx.h"
#include "testutil.h"

#define OK(e) assert_int_equal((e), IM_OK)

static im_onnx_opts_t opts(void) {
  im_onnx_opts_t o = IM_ONNX_DEFAULTS;
  o.img_h = o.img_w = 32;
  o.n_norm = 3;
  for (int c = 0; c < 3; c++) o.mean[c] = 0.5f, o.std[c] = 0.25f;
  return o;
}

static int contains(const uint8_t *d, size_t n, const char *s) {
  const size_t k = strlen(s);
  for (size_t i = 0; i + k <= n; i++)
    if (!memcmp(d + i, s, k)) return 1;
  return 0;
}

static void test_export(void **state) {
  (void)state;
  im_nn_model_t *m = NULL;
  OK(im_nn_model_new("surfacenet", &(im_nn_model_opts_t){.seed = 1}, &m));
  im_onnx_opts_t o = opts();
  static const char *const names[2] = {"Negative", "Positive"};
  o.classes = names;
  o.num_classes = 2;
  o.probabilities = 1;
  o.with_preprocess = 1;
  uint8_t *d = NULL;
  size_t n = 0;
  OK(im_onnx_export_mem(m, &o, &d, &n));
  /* ModelProto field 1 (ir_version, varint) comes first: 0x08 then 8. */
  assert_true(n > 100000);
  assert_int_equal(d[0], 0x08);
  assert_int_equal(d[1], 8);
  const char *want[] = {"imops", "image", "logits", "probabilities", "Conv", "Relu", "MaxPool", "GlobalAveragePool",
                        "Gemm", "Softmax", "Negative", "preprocess.scale", "img_size"};
  for (size_t i = 0; i < sizeof want / sizeof *want; i++)
    if (!contains(d, n, want[i])) fail_msg("the export has no '%s'", want[i]);
  assert_false(contains(d, n, "BatchNormalization")); /* folded */
  im_free(d);
  assert_int_equal(im_onnx_ir_version(17), 8);
  assert_int_equal(im_onnx_ir_version(21), 10);

  /* Options are checked. */
  o.opset = 16;
  assert_int_equal(im_onnx_export_mem(m, &o, &d, &n), IM_ERR_ARG);
  assert_null(d);
  o = opts();
  o.num_classes = 3;
  o.classes = names;
  assert_int_equal(im_onnx_export_mem(m, &o, &d, &n), IM_ERR_ARG);
  o = opts();
  o.img_h = 0;
  assert_int_equal(im_onnx_export_mem(m, &o, &d, &n), IM_ERR_ARG);
  o = opts();
  o.n_norm = 1;
  assert_int_equal(im_onnx_export_mem(m, &o, &d, &n), IM_ERR_ARG);

  /* Written atomically over an existing file; the folded model exports the same bytes. */
  o = opts();
  const char *path = tu_path(tu_tmpdir(), "m.onnx");
  assert_int_equal(tu_write_file(path, "old", 3), 0);
  OK(im_onnx_export(m, &o, path));
  uint8_t *f = NULL;
  size_t fl = 0;
  OK(im_file_read(path, 1u << 30, &f, &fl));
  im_nn_model_t *folded = NULL;
  OK(im_nn_model_fold(m, &folded));
  OK(im_onnx_export_mem(folded, &o, &d, &n));
  assert_int_equal(n, fl);
  assert_memory_equal(d, f, n);
  im_free(d);
  im_free(f);
  im_nn_model_free(folded);
  assert_int_not_equal(im_onnx_export(m, &o, tu_path(tu_tmpdir(), "no/such/dir/m.onnx")), IM_OK);

  /* ConvNeXt at opset 17 writes GELU as erf; at 20 as Gelu. */
  im_nn_model_t *c = NULL;
  OK(im_nn_model_new("convnext-atto", &(im_nn_model_opts_t){.seed = 2, .width = 0.25f}, &c));
  o = opts();
  OK(im_onnx_export_mem(c, &o, &d, &n));
  assert_true(contains(d, n, "Erf") && contains(d, n, "LayerNormalization") && !contains(d, n, "Gelu"));
  im_free(d);
  o.opset = 20;
  OK(im_onnx_export_mem(c, &o, &d, &n));
  assert_true(contains(d, n, "Gelu") && !contains(d, n, "Erf"));
  im_free(d);
  im_nn_model_free(c);
  im_nn_model_free(m);
}

static const char mlmodel[] =
    "artifact_path: model\n"
    "flavors:\n"
    "  imops:\n"
    "    arch: surfacenet\n"
    "    data: model.json\n"
    "model_size_bytes: 10\n"
    "run_id: abc\n";

static void test_flavor(void **state) {
  (void)state;
  char *out = NULL, *out2 = NULL;
  size_t n = 0, n2 = 0;
  const char *body = "    data: model.onnx\n    providers:\n    - CPUExecutionProvider\n";
  OK(im_onnx_mlmodel_set_flavor(mlmodel, strlen(mlmodel), "onnx", body, &out, &n));
  assert_int_equal(n, strlen(out));
  assert_string_equal(out,
                      "artifact_path: model\n"
                      "flavors:\n"
                      "  onnx:\n"
                      "    data: model.onnx\n"
                      "    providers:\n"
                      "    - CPUExecutionProvider\n"
                      "  imops:\n"
                      "    arch: surfacenet\n"
                      "    data: model.json\n"
                      "model_size_bytes: 10\n"
                      "run_id: abc\n");
  /* Setting it again replaces the block. */
  OK(im_onnx_mlmodel_set_flavor(out, n, "onnx", "    data: other.onnx\n", &out2, &n2));
  assert_non_null(strstr(out2, "  onnx:\n    data: other.onnx\n  imops:\n"));
  assert_null(strstr(out2, "providers"));
  im_free(out2);
  /* A flavor last in the file, and one that is a prefix of another's name. */
  const char *tail = "flavors:\n  onnxish:\n    a: 1\n  onnx:\n    data: x\n";
  OK(im_onnx_mlmodel_set_flavor(tail, strlen(tail), "onnx", "    data: y\n", &out2, &n2));
  assert_string_equal(out2, "flavors:\n  onnxish:\n    a: 1\n  onnx:\n    data: y\n");
  im_free(out2);
  im_free(out);
  /* No flavors mapping. */
  assert_int_equal(im_onnx_mlmodel_set_flavor("a: 1\n  flavors:\n", 15, "onnx", body, &out, &n), IM_ERR_FORMAT);
  assert_null(out);
  assert_int_equal(im_onnx_mlmodel_set_flavor("", 0, "onnx", body, &out, &n), IM_ERR_FORMAT);

  /* The bundle step: no MLmodel -> not found; with one -> model.onnx and the flavor. */
  const char *dir = tu_tmpdir();
  const char *src = tu_path(dir, "x.onnx");
  assert_int_equal(tu_write_file(src, "onnx-bytes", 10), 0);
  im_onnx_opts_t o = opts();
  assert_int_equal(im_onnx_bundle_add(dir, src, &o), IM_ERR_NOT_FOUND);
  assert_int_equal(tu_write_file(tu_path(dir, "MLmodel"), mlmodel, strlen(mlmodel)), 0);
  OK(im_onnx_bundle_add(dir, src, &o));
  uint8_t *d = NULL;
  size_t dl = 0;
  OK(im_file_read(tu_path(dir, "model.onnx"), 1024, &d, &dl));
  assert_int_equal(dl, 10);
  assert_memory_equal(d, "onnx-bytes", 10);
  im_free(d);
  OK(im_file_read(tu_path(dir, "MLmodel"), 4096, &d, &dl));
  assert_non_null(strstr((char *)d, "  onnx:\n    code: null\n    data: model.onnx\n    onnx_version: 1.12.0\n"));
  assert_non_null(strstr((char *)d, "  imops:\n    arch: surfacenet\n"));
  im_free(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_export),
      cmocka_unit_test(test_flavor),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
