/* Plain-text tables for the CLI: columns sized to their widest cell (cut at a
 * maximum), a header row and a rule, printed to stdout. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "imops/core.h"

struct cli_table {
  int ncols, nrows, cap;
  char **cells; /* nrows * ncols, row 0 is the header */
};

cli_table_t *cli_table_new(int ncols, const char *const *headers) {
  cli_table_t *t = im_calloc(1, sizeof *t);
  if (!t) return NULL;
  t->ncols = ncols;
  if (cli_table_row(t, headers) != 0) {
    im_free(t);
    return NULL;
  }
  return t;
}

int cli_table_row(cli_table_t *t, const char *const *cells) {
  if (t->nrows == t->cap) {
    int cap = t->cap ? t->cap * 2 : 16;
    char **nc = im_realloc(t->cells, sizeof *nc * (size_t)cap * (size_t)t->ncols);
    if (!nc) return -1;
    t->cells = nc;
    t->cap = cap;
  }
  for (int c = 0; c < t->ncols; c++) t->cells[t->nrows * t->ncols + c] = im_strdup(cells[c] ? cells[c] : "");
  t->nrows++;
  return 0;
}

/* Display width of UTF-8 text: code points, not bytes. */
static int width(const char *s) {
  int w = 0;
  for (; *s; s++) w += ((unsigned char)*s & 0xC0) != 0x80;
  return w;
}

void cli_table_print(cli_table_t *t, int max_width) {
  if (!t) return;
  int w[64] = {0};
  int nc = t->ncols < 64 ? t->ncols : 64;
  for (int r = 0; r < t->nrows; r++)
    for (int c = 0; c < nc; c++) {
      const char *s = t->cells[r * t->ncols + c];
      int cw = s ? width(s) : 0;
      if (cw > w[c]) w[c] = cw > max_width ? max_width : cw;
    }
  for (int r = 0; r < t->nrows; r++) {
    for (int c = 0; c < nc; c++) {
      const char *s = t->cells[r * t->ncols + c];
      if (!s) s = "";
      int cw = width(s);
      if (cw > w[c]) /* cut long cells, marking the cut */
        printf("%.*s…", w[c] - 1, s);
      else
        printf("%s%*s", s, c + 1 < nc ? w[c] - cw : 0, "");
      if (c + 1 < nc) printf("  ");
    }
    printf("\n");
    if (r == 0) {
      for (int c = 0; c < nc; c++) {
        for (int i = 0; i < w[c]; i++) putchar('-');
        if (c + 1 < nc) printf("  ");
      }
      printf("\n");
    }
  }
}

void cli_table_free(cli_table_t *t) {
  if (!t) return;
  for (int i = 0; i < t->nrows * t->ncols; i++) im_free(t->cells[i]);
  im_free(t->cells);
  im_free(t);
}
