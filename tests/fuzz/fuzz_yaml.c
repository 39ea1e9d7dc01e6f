/* Fuzz target: the YAML loader (sweep configs and pipeline files are outside
 * input), its conversion to JSON and the emitter on what was read. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "imops/core.h"
#include "imops/yaml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  im_yaml_doc_t *d = NULL;
  if (im_yaml_parse((const char *)data, size, "fuzz.yaml", &d) != IM_OK) return 0;
  json_t *j = im_yaml_to_json(im_yaml_root(d));
  if (j) {
    im_buf_t b = {0};
    if (im_yaml_emit_json(j, NULL, &b) == IM_OK && b.data) {
      im_yaml_doc_t *d2 = NULL;
      if (im_yaml_parse(b.data, b.len, "re.yaml", &d2) == IM_OK) im_yaml_free(d2);
    }
    im_buf_free(&b);
    json_decref(j);
  }
  im_yaml_free(d);
  return 0;
}
