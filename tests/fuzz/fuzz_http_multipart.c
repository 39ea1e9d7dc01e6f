/* libFuzzer target for the src/http form parsers, which take outside input:
 * multipart/form-data bodies, urlencoded forms and query strings.
 *
 * Input layout: the first byte selects the parser and limits.
 *   sel & 3 == 0: multipart with the fixed boundary "b3f1c9" (the rest is the body)
 *   sel & 3 == 1: multipart with a Content-Type line taken from the input: the bytes up to
 *                 the first '\n' are the header value, the rest is the body
 *   sel & 3 == 2: application/x-www-form-urlencoded body
 *   sel & 3 == 3: query string
 *   sel & 4:      small limits (max 3 parts, 64 bytes a part, 64 header bytes)
 * The seeds in tests/fuzz/corpus/http_multipart/ are small valid bodies in that layout.
 *
 *   mkdir -p /tmp/fz && ./fuzz_http_multipart -max_total_time=30 /tmp/fz tests/fuzz/corpus/http_multipart
 * (libFuzzer writes new inputs into the first directory: keep the seeds out of it.)
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imops/core.h"
#include "imops/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* multipart: 1 yes, 0 no (urlencoded or query), 2 either (the Content-Type came from the input) */
static void check(im_status_t st, const im_http_form_t *f, const uint8_t *body, size_t n, int multipart,
                  const im_http_form_limits_t *lim) {
  if (st != IM_OK) {
    if (f) abort();                                /* a failure leaves no form */
    if (!im_last_error()[0]) abort();              /* and says why */
    if (st != IM_ERR_FORMAT && st != IM_ERR_LIMIT && st != IM_ERR_UNSUPPORTED && st != IM_ERR_NOMEM) abort();
    return;
  }
  size_t np = im_http_form_size(f);
  if (lim->max_parts && np > lim->max_parts) abort();
  for (size_t i = 0; i < np; i++) {
    const im_http_part_t *p = im_http_form_at(f, i);
    if (!p || !p->name || !p->data) abort();
    if (lim->max_part_bytes && p->len > lim->max_part_bytes) abort();
    int inside = p->data >= body && p->data + p->len <= body + n;
    if (multipart == 1) {
      if (!inside) abort(); /* multipart data points into the body */
    } else if (multipart == 2 && inside) {
      /* the Content-Type came from the input: either kind */
    } else {
      if (p->filename || p->content_type || p->data[p->len] != '\0') abort();
    }
    /* touch every byte so ASan sees any overrun */
    volatile uint8_t acc = 0;
    for (size_t k = 0; k < p->len; k++) acc ^= p->data[k];
    (void)acc;
    if (im_http_form_find(f, p->name, 0) == NULL) abort();
  }
  if (np != im_http_form_size(f) || im_http_form_at(f, np) != NULL) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const uint8_t sel = data[0];
  const uint8_t *rest = data + 1;
  size_t n = size - 1;
  im_http_form_limits_t lim = {0};
  if (sel & 4) lim = (im_http_form_limits_t){.max_parts = 3, .max_part_bytes = 64, .max_header_bytes = 64};
  im_http_form_t *f = NULL;
  im_status_t st;
  switch (sel & 3) {
    case 0:
      st = im_http_form_parse("multipart/form-data; boundary=b3f1c9", rest, n, &lim, &f);
      check(st, f, rest, n, 1, &lim);
      break;
    case 1: {
      const uint8_t *nl = memchr(rest, '\n', n);
      size_t hl = nl ? (size_t)(nl - rest) : n;
      char *ct = malloc(hl + 1);
      if (!ct) return 0;
      memcpy(ct, rest, hl);
      ct[hl] = '\0'; /* an embedded NUL just ends the header early */
      const uint8_t *body = nl ? nl + 1 : rest + n;
      size_t bn = nl ? n - hl - 1 : 0;
      st = im_http_form_parse(ct, body, bn, &lim, &f);
      check(st, f, body, bn, 2, &lim);
      free(ct);
      break;
    }
    case 2:
      st = im_http_form_parse("application/x-www-form-urlencoded", rest, n, &lim, &f);
      check(st, f, rest, n, 0, &lim);
      break;
    default:
      st = im_http_query_parse((const char *)rest, n, &lim, &f);
      check(st, f, rest, n, 0, &lim);
      break;
  }
  im_http_form_free(f);
  return 0;
}
