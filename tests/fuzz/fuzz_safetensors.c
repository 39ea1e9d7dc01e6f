/* libFuzzer target for the safetensors reader: parse arbitrary bytes; when
 * they parse, every tensor view must lie inside memory we can read, copy out
 * intact, and the file must survive a serialize/parse round trip unchanged
 * (same names, dtypes, shapes, bytes and metadata). Seeds are tiny valid files
 * in tests/fuzz/corpus/safetensors/ (tools/ref/gen_fuzz_corpus.py).
 *
 *   ./fuzz_safetensors -max_total_time=30 tests/fuzz/corpus/safetensors
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imops/core.h"
#include "imops/tensor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t touch(const im_tensor_t *t) {
  const uint8_t *p = t->data;
  uint64_t h = 0;
  for (size_t i = 0; i < im_tensor_nbytes(t); i++) h = h * 31 + p[i];
  return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  im_safetensors_t *s = NULL;
  if (im_safetensors_parse(data, size, &s) != IM_OK) {
    if (s) abort(); /* a failed parse leaves nothing behind */
    return 0;
  }
  const size_t n = im_safetensors_count(s);
  if (n > size) abort(); /* every entry costs header bytes */
  im_named_tensor_t *ts = calloc(n ? n : 1, sizeof *ts);
  im_tensor_t *views = calloc(n ? n : 1, sizeof *views);
  if (!ts || !views) abort();
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    const char *name = im_safetensors_name(s, i);
    if (!name || im_safetensors_get(s, name, &views[i]) != IM_OK) abort();
    if ((uintptr_t)views[i].data % im_dtype_size(views[i].dtype)) abort(); /* aligned for its dtype */
    total += im_tensor_nbytes(&views[i]);
    touch(&views[i]);
    ts[i].name = name;
    ts[i].tensor = &views[i];
    im_tensor_t copy;
    if (im_tensor_alloc(&copy, views[i].dtype, views[i].ndim, views[i].shape) == IM_OK) {
      if (im_safetensors_read_into(s, name, &copy) != IM_OK) abort();
      if (memcmp(copy.data, views[i].data, im_tensor_nbytes(&copy))) abort();
      im_tensor_free(&copy);
    }
  }
  if (total > size) abort(); /* the data is inside the input */
  /* round trip */
  const size_t nm = im_safetensors_metadata_count(s);
  im_safetensors_meta_t *meta = calloc(nm ? nm : 1, sizeof *meta);
  if (!meta) abort();
  for (size_t k = 0; k < nm; k++) {
    meta[k].key = im_safetensors_metadata_key(s, k);
    meta[k].value = im_safetensors_metadata(s, meta[k].key);
    if (!meta[k].key || !meta[k].value) abort();
  }
  if (im_safetensors_metadata_key(s, nm)) abort();
  uint8_t *out;
  size_t olen;
  const im_status_t st = im_safetensors_serialize(ts, n, meta, nm, &out, &olen);
  if (st != IM_OK && st != IM_ERR_NOMEM) abort(); /* whatever parses can be written back */
  if (st == IM_OK) {
    im_safetensors_t *s2;
    if (im_safetensors_parse(out, olen, &s2) != IM_OK) abort();
    if (im_safetensors_count(s2) != n) abort();
    for (size_t i = 0; i < n; i++) {
      im_tensor_t v2;
      if (im_safetensors_get(s2, ts[i].name, &v2) != IM_OK) abort();
      if (!im_tensor_same_shape(&v2, &views[i])) abort();
      if (memcmp(v2.data, views[i].data, im_tensor_nbytes(&v2))) abort();
    }
    if (im_safetensors_metadata_count(s2) != nm) abort();
    for (size_t k = 0; k < nm; k++) {
      const char *v = im_safetensors_metadata(s2, meta[k].key);
      if (!v || strcmp(v, meta[k].value)) abort();
    }
    im_safetensors_free(s2);
    im_free(out);
  }
  free(meta);
  free(ts);
  free(views);
  im_safetensors_free(s);
  return 0;
}
