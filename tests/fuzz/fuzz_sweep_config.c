/* Fuzz target: sweep configs (outside input): parsing and validation, and on
 * what parses, a few suggestions of every search, their JSON round trip, the
 * hyperband bands and the Katib export. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "imops/core.h"
#include "imops/sweep.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  im_sweep_config_t *c = NULL;
  if (im_sweep_config_parse((const char *)data, size, "fuzz.yaml", &c) != IM_OK) return 0;
  size_t d = c->n_params ? c->n_params : 1;
  double *xs = calloc(6 * d, sizeof *xs), *back = calloc(d, sizeof *back);
  im_sweep_obs_t obs[6];
  for (size_t i = 0; xs && back && i < 6; i++) { /* 6: past the GP's 4 random starts */
    double *x = xs + i * d;
    if (im_sweep_suggest(c, obs, i, 7, x) != IM_OK) break;
    obs[i] = (im_sweep_obs_t){.x = x, .y = (double)i, .done = 1};
    char *j = im_sweep_point_json(c, x);
    if (j && im_sweep_point_parse(c, j, back) != IM_OK) abort(); /* what we write must read back */
    im_free(j);
  }
  int64_t bands[8];
  size_t nb = 0;
  im_sweep_hyperband_bands(c, bands, 8, &nb);
  im_buf_t b = {0};
  if (im_sweep_katib_yaml(c, NULL, &b) == IM_OK) im_buf_free(&b);
  im_buf_free(&b);
  free(xs), free(back);
  im_sweep_config_free(c);
  return 0;
}
