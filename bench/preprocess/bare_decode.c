/* bench: libjpeg-turbo's bare decode rate over a list of JPEG files, the
 * ceiling that imops' decode + resize + statistics is measured against.
 * usage: bench_bare_decode THREADS SCALE_DENOM FILE...   (SCALE_DENOM 1 = full size, 2 = DCT 1/2)
 * Files are read into memory first; only decoding is timed. Prints images/second. */
#include <stdio.h>
#include <stdlib.h>
#include <turbojpeg.h>

#include "imops/core.h"

typedef struct {
  uint8_t **data;
  size_t *len;
  int denom;
  uint8_t **out;
  int failed;
} ctx_t;

static void decode(void *p, int64_t i, int thread) {
  ctx_t *c = p;
  static _Thread_local tjhandle tj;
  if (!tj) tj = tjInitDecompress();
  int w, h, sub, cs;
  if (tjDecompressHeader3(tj, c->data[i], (unsigned long)c->len[i], &w, &h, &sub, &cs) != 0) {
    c->failed = 1;
    return;
  }
  int sw = (w + c->denom - 1) / c->denom, sh = (h + c->denom - 1) / c->denom;
  if (tjDecompress2(tj, c->data[i], (unsigned long)c->len[i], c->out[thread], sw, 0, sh, TJPF_RGB, 0) != 0) c->failed = 1;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s THREADS SCALE_DENOM FILE...\n", argv[0]);
    return 2;
  }
  int threads = atoi(argv[1]), denom = atoi(argv[2]), n = argc - 3;
  ctx_t c = {.data = calloc((size_t)n, sizeof(uint8_t *)), .len = calloc((size_t)n, sizeof(size_t)), .denom = denom};
  c.out = calloc((size_t)threads, sizeof(uint8_t *));
  for (int t = 0; t < threads; t++) c.out[t] = malloc(4096 * 4096 * 3);
  for (int i = 0; i < n; i++)
    if (im_file_read(argv[3 + i], 0, &c.data[i], &c.len[i]) != IM_OK) {
      fprintf(stderr, "cannot read %s\n", argv[3 + i]);
      return 1;
    }
  double t0 = im_time_now();
  im_parallel_for(n, threads, decode, &c);
  double dt = im_time_now() - t0;
  if (c.failed) {
    fprintf(stderr, "a decode failed\n");
    return 1;
  }
  printf("%.1f\n", n / dt);
  for (int i = 0; i < n; i++) im_free(c.data[i]);
  for (int t = 0; t < threads; t++) free(c.out[t]);
  free(c.out);
  free(c.data);
  free(c.len);
  return 0;
}
