/* An exported ONNX file joins a model bundle: dir/model.onnx, and an "onnx"
 * flavor in dir/MLmodel with the fields MLflow's mlflow.onnx flavor writes
 * (onnx_version, data, providers, code), so that MLflow's tooling
 * (mlflow.onnx.load_model, the UI's flavor list) sees it. MLmodel is edited
 * as text, line by line: the flavor's block under the top-level "flavors:"
 * mapping is replaced or inserted, everything else is kept byte for byte. */
#include <stdio.h>
#include <string.h>

#include "imops/core.h"
#include "imops/onnx.h"

/* Line starting at p (within end): its length without the '\n', and where the next begins. */
static size_t line_len(const char *p, const char *end, const char **next) {
  const char *nl = memchr(p, '\n', (size_t)(end - p));
  *next = nl ? nl + 1 : end;
  return (size_t)((nl ? nl : end) - p);
}

static int indent_of(const char *p, size_t n) {
  size_t i = 0;
  while (i < n && p[i] == ' ') i++;
  return (int)i;
}

im_status_t im_onnx_mlmodel_set_flavor(const char *in, size_t len, const char *name, const char *body, char **out,
                                       size_t *out_len) {
  *out = NULL;
  if (out_len) *out_len = 0;
  const char *end = in + len, *p = in, *next;
  const char *flavors_end = NULL; /* just after the "flavors:" line */
  while (p < end) {
    size_t n = line_len(p, end, &next);
    if (n >= 8 && !memcmp(p, "flavors:", 8) && indent_of(p + 8, n - 8) == (int)(n - 8)) {
      flavors_end = next;
      break;
    }
    p = next;
  }
  if (!flavors_end) return im_error(IM_ERR_FORMAT, "MLmodel has no top-level 'flavors:' mapping");
  for (p = flavors_end; p < end; p = next) { /* the flavors are indented by 2, as MLflow writes them */
    size_t n = line_len(p, end, &next);
    int ind = indent_of(p, n);
    if (ind == (int)n) continue;
    if (ind != 0 && ind != 2)
      return im_error(IM_ERR_FORMAT, "MLmodel's flavors are indented by %d spaces; MLflow writes 2", ind);
    break;
  }
  /* The flavor's block, if present: "  <name>:" and its deeper-indented lines. */
  const size_t nl = strlen(name);
  const char *blk = NULL, *blk_end = NULL;
  for (p = flavors_end; p < end; p = next) {
    size_t n = line_len(p, end, &next);
    int ind = indent_of(p, n);
    if (ind == (int)n) continue;     /* blank line */
    if (ind == 0) break;             /* the next top-level key: flavors ended */
    if (!blk && ind == 2 && n >= 3 + nl && !memcmp(p + 2, name, nl) && p[2 + nl] == ':') {
      blk = p;
      blk_end = next;
      continue;
    }
    if (blk && blk_end == p) {
      if (ind > 2) blk_end = next;   /* still inside the block */
    }
  }
  im_buf_t b = {0};
  im_status_t st = IM_OK;
  const char *cut = blk ? blk : flavors_end, *resume = blk ? blk_end : flavors_end;
  st = im_buf_append(&b, in, (size_t)(cut - in));
  if (st == IM_OK && cut > in && cut[-1] != '\n') st = im_buf_append(&b, "\n", 1); /* "flavors:" ended the file */
  if (st == IM_OK) st = im_buf_printf(&b, "  %s:\n%s", name, body);
  if (st == IM_OK) st = im_buf_append(&b, resume, (size_t)(end - resume));
  if (st == IM_OK) st = im_buf_append(&b, "", 1);
  if (st != IM_OK) {
    im_buf_free(&b);
    return st;
  }
  *out = b.data;
  if (out_len) *out_len = b.len - 1;
  return IM_OK;
}

/* The ONNX release that introduced each opset (MLflow records the onnx package's version). */
static const char *onnx_release(int opset) {
  static const char *const rel[] = {"1.12.0", "1.13.0", "1.14.0", "1.15.0", "1.16.0"};
  return opset >= 17 && opset <= 21 ? rel[opset - 17] : "1.12.0";
}

im_status_t im_onnx_bundle_add(const char *dir, const char *onnx_path, const im_onnx_opts_t *o) {
  char *dst = im_path_join(dir, "model.onnx"), *ml = im_path_join(dir, "MLmodel");
  uint8_t *onnx = NULL, *text = NULL;
  char *edited = NULL;
  size_t onnx_len = 0, text_len = 0, edited_len = 0;
  im_buf_t body = {0};
  im_status_t st = dst && ml ? IM_OK : im_error(IM_ERR_NOMEM, "out of memory");
  if (st == IM_OK && (st = im_file_read(ml, 16u << 20, &text, &text_len)) != IM_OK)
    st = im_error(st == IM_ERR_NOT_FOUND ? IM_ERR_NOT_FOUND : st, "%s: not a model bundle (no readable MLmodel)", dir);
  if (st == IM_OK && strcmp(onnx_path, dst) != 0) {
    if ((st = im_file_read(onnx_path, (size_t)1 << 31, &onnx, &onnx_len)) == IM_OK)
      st = im_file_write_atomic(dst, onnx, onnx_len);
  }
  const int opset = o && o->opset ? o->opset : 17;
  if (st == IM_OK)
    st = im_buf_printf(&body,
                       "    code: null\n"
                       "    data: model.onnx\n"
                       "    onnx_version: %s\n"
                       "    opset: %d\n"
                       "    preprocess: %s\n"
                       "    providers:\n"
                       "    - CPUExecutionProvider\n",
                       onnx_release(opset), opset, o && o->with_preprocess ? "normalize" : "none");
  if (st == IM_OK) st = im_onnx_mlmodel_set_flavor((const char *)text, text_len, "onnx", body.data, &edited, &edited_len);
  if (st == IM_OK) st = im_file_write_atomic(ml, edited, edited_len);
  im_free(dst);
  im_free(ml);
  im_free(onnx);
  im_free(text);
  im_free(edited);
  im_buf_free(&body);
  return st;
}
