/* ONNX export: a model's folded inference graph (batch norm folded into the
 * convolutions, ReLU after them, layer_scale into the Linear before it) as an
 * ONNX ModelProto, serialized with protobuf-c from ONNX's own onnx.proto
 * (third_party/onnx), so that ONNX Runtime, Triton, OpenCV or any ONNX tool
 * can run an imops model.
 *
 *   im_onnx_opts_t o = IM_ONNX_DEFAULTS;
 *   o.img_h = o.img_w = 112; o.classes = names; o.num_classes = 2;
 *   o.n_norm = 3; memcpy(o.mean, mean, ...); memcpy(o.std, std, ...);
 *   im_onnx_export(model, &o, "model.onnx");       // written atomically
 *   im_onnx_bundle_add("runs/.../model", "model.onnx", &o);  // + MLmodel onnx flavor
 *
 * The graph: input "image" float32 [N, C, H, W] (N a dim_param, H and W the
 * model's size); with with_preprocess it takes 0..255 pixel values and the
 * first two nodes apply the normalization (x * 1/(255 std) - mean/std, the
 * loader's arithmetic); output "logits" float32 [N, K], and with
 * probabilities also "probabilities" (Softmax over K). Opset 17 (the first
 * with LayerNormalization) to 21; GELU is written as its erf form below
 * opset 20. metadata_props: classes (JSON list), img_size ([H, W]), mean,
 * std (JSON lists), arch, imops_version, preprocess ("normalize" or "none"),
 * input_range ("0-255" or "normalized"). */
#ifndef IMOPS_ONNX_H
#define IMOPS_ONNX_H

#include <stddef.h>
#include <stdint.h>

#include "imops/nn.h"
#include "imops/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define IM_ONNX_OPSET_MIN 17
#define IM_ONNX_OPSET_MAX 21

typedef struct {
  int opset;                  /* IM_ONNX_OPSET_MIN..MAX (0: 17) */
  int with_preprocess;        /* fold the mean/std normalization in: the input takes 0..255 values */
  int probabilities;          /* add the "probabilities" output */
  const char *const *classes; /* num_classes names for the metadata (NULL: "0", "1", ...) */
  size_t num_classes;         /* must equal the model's when classes is set */
  int img_h, img_w;           /* the input size, > 0 */
  int n_norm;                 /* values in mean/std (the model's channels; 0: mean 0, std 1) */
  float mean[4], std[4];
} im_onnx_opts_t;

#define IM_ONNX_DEFAULTS ((im_onnx_opts_t){.opset = 17})

/** The ONNX bytes of m (folded first when it is not; m is unchanged): *data
 * (im_free) and *len. IM_ERR_ARG for bad options, IM_ERR_UNSUPPORTED for a
 * node kind ONNX export does not cover. */
IM_NODISCARD im_status_t im_onnx_export_mem(const im_nn_model_t *m, const im_onnx_opts_t *o, uint8_t **data,
                                            size_t *len);
/** The same, written to path atomically (an existing file is replaced whole or not at all). */
IM_NODISCARD im_status_t im_onnx_export(const im_nn_model_t *m, const im_onnx_opts_t *o, const char *path);

/** The ONNX IR version written for an opset (8 for 17-18, 9 for 19-20, 10 for 21). */
int im_onnx_ir_version(int opset);

/** Adds an exported file to a model bundle directory: copies onnx_path to
 * dir/model.onnx (atomically; skipped when it is that file) and gives
 * dir/MLmodel an "onnx" flavor in MLflow's format (onnx_version, data:
 * model.onnx, providers, code, plus imops' opset and preprocess), replacing an
 * earlier one; the rest of MLmodel is kept as it is. IM_ERR_NOT_FOUND when
 * dir has no MLmodel, IM_ERR_FORMAT when it has no flavors section. */
IM_NODISCARD im_status_t im_onnx_bundle_add(const char *dir, const char *onnx_path, const im_onnx_opts_t *o);

/** Rewrites the MLmodel text in (len bytes) with flavor `name` set to the
 * YAML mapping body (lines indented by 4 spaces, each ending in '\n'):
 * an existing block of that flavor is replaced, else the block is added
 * first under "flavors:". *out (im_free) is NUL-terminated. IM_ERR_FORMAT
 * when there is no top-level "flavors:" line. */
IM_NODISCARD im_status_t im_onnx_mlmodel_set_flavor(const char *in, size_t len, const char *name, const char *body,
                                                    char **out, size_t *out_len);

#ifdef __cplusplus
}
#endif
#endif
