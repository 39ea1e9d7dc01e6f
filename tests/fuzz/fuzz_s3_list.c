/* libFuzzer target for the S3 answers the artifact store parses (libxml2):
 * the bytes as a ListObjectsV2 page, an <Error> body and a multipart-upload
 * answer. Checks that a failure leaves an empty page and sets a message, and
 * that a page that parses is consistent (sizes non-negative, a truncated page
 * has a continuation token).
 *
 *   ./fuzz_s3_list -max_total_time=30 tests/fuzz/corpus/s3_list
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imops/core.h"
#include "track/track_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *xml = (const char *)data;
  im__s3_list_t l;
  im_status_t st = im__s3_parse_list(xml, size, &l);
  if (st != IM_OK) {
    if (l.n || l.n_prefixes || l.keys || l.next_token || !*im_last_error()) abort();
  } else {
    for (size_t i = 0; i < l.n; i++)
      if (!l.keys[i] || l.sizes[i] < 0) abort();
    for (size_t i = 0; i < l.n_prefixes; i++)
      if (!l.prefixes[i]) abort();
    if (l.truncated && (!l.next_token || !*l.next_token)) abort();
    im__s3_list_clear(&l);
  }
  char *code = NULL, *msg = NULL;
  if (im__s3_parse_error(xml, size, &code, &msg) == IM_OK) {
    im_free(code);
    im_free(msg);
  } else if (code || msg) {
    abort();
  }
  char *id = NULL;
  if (im__s3_parse_upload_id(xml, size, &id) == IM_OK) {
    if (!id || !*id) abort();
    im_free(id);
  } else if (id) {
    abort();
  }
  return 0;
}
