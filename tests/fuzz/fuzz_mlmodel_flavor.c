/* libFuzzer target for the MLmodel editing of the tracked ONNX export
 * (im_onnx_mlmodel_set_flavor), which reads an MLmodel file from a model
 * bundle: any bytes either give IM_ERR_FORMAT and no output, or a text that
 * keeps everything before the flavors block, holds the new block exactly once
 * and, edited again, gives itself back (the edit is idempotent).
 *
 *   mkdir -p /tmp/fz && ./fuzz_mlmodel_flavor -max_total_time=30 /tmp/fz tests/fuzz/corpus/mlmodel_flavor
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imops/core.h"
#include "imops/onnx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char body[] = "    data: model.onnx\n    providers:\n    - CPUExecutionProvider\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *out = NULL, *again = NULL;
  size_t n = 0, n2 = 0;
  im_status_t st = im_onnx_mlmodel_set_flavor((const char *)data, size, "onnx", body, &out, &n);
  if (st != IM_OK) {
    if (out || st != IM_ERR_FORMAT) abort();
    return 0;
  }
  if (!out || out[n] != '\0' || n < sizeof body) abort();
  static const char block[] = "  onnx:\n    data: model.onnx\n";
  if (!memmem(out, n, block, sizeof block - 1)) abort();
  if (memchr(data, 0, size) == NULL) {
    /* Without NUL bytes the text round-trips: a second edit changes nothing. */
    if (im_onnx_mlmodel_set_flavor(out, n, "onnx", body, &again, &n2) != IM_OK) abort();
    if (n2 != n || memcmp(again, out, n)) abort();
  }
  im_free(again);
  im_free(out);
  return 0;
}
