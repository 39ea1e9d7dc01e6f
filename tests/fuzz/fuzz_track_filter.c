/* libFuzzer target for the tracking store's search syntax: parse the bytes as
 * a filter string (and as an order_by entry), compile what parses against
 * every search domain (runs, experiments, registered models, model versions),
 * and free. Checks that a failure always comes with a message and that
 * compiled SQL binds exactly one value per placeholder.
 *
 *   ./fuzz_track_filter -max_total_time=30 tests/fuzz/corpus/track_filter
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "track/track_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int count_placeholders(const char *sql) {
  int n = 0;
  for (const char *p = sql; p && *p; p++)
    if (*p == '?') n++;
  return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const im__domain_t *const domains[] = {&im__dom_runs, &im__dom_experiments, &im__dom_models,
                                                &im__dom_versions};
  char err[512];
  im__filter_t *f = NULL;
  im_status_t st = im__filter_parse((const char *)data, size, &f, err, sizeof err);
  if (st != IM_OK) {
    if (f || !err[0]) abort(); /* a failed parse leaves nothing and says why */
  } else {
    if (!f) abort();
    for (size_t d = 0; d < sizeof domains / sizeof domains[0]; d++) {
      im__sql_t q = {0};
      err[0] = '\0';
      st = im__filter_compile(f, domains[d], &q, err, sizeof err);
      if (st != IM_OK && !err[0]) abort();
      /* bound values never end up in the SQL text: one '?' per value */
      if (st == IM_OK && count_placeholders(q.sql.data) != q.n_binds) abort();
      im__sql_free(&q);
    }
    im__filter_free(f);
  }

  /* the same bytes as an order_by entry (NUL-terminated copy) */
  char *text = malloc(size + 1);
  if (!text) return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  im__order_t o;
  if (im__order_parse(text, &o, err, sizeof err) == IM_OK) {
    for (size_t d = 0; d < sizeof domains / sizeof domains[0]; d++) {
      im__sql_t q = {0};
      if (im__order_compile(&o, domains[d], &q, err, sizeof err) == IM_OK &&
          count_placeholders(q.sql.data) != q.n_binds)
        abort();
      im__sql_free(&q);
    }
  }
  im__order_clear(&o);
  free(text);
  return 0;
}
