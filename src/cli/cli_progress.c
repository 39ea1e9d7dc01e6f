/* Progress bars, tqdm-like, on stderr:
 *   "desc:  42%|████▏     | 420/1000 [00:03<00:04, 131.20it/s]"
 * redrawn in place at most ten times a second on a terminal; when stderr is
 * not a terminal, a plain line every few seconds and one at the end. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "cli.h"
#include "imops/core.h"

struct cli_progress {
  char desc[128];
  int64_t total, done;
  double start, last_draw;
  int tty;
  int width;
  int drawn;
};

static int term_width(void) {
  struct winsize ws;
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40) return ws.ws_col;
  return 100;
}

cli_progress_t *cli_progress_new(const char *desc, int64_t total) {
  cli_progress_t *p = im_calloc(1, sizeof *p);
  if (!p) return NULL;
  snprintf(p->desc, sizeof p->desc, "%s", desc ? desc : "");
  p->total = total;
  p->start = p->last_draw = im_time_now();
  p->tty = isatty(STDERR_FILENO);
  p->width = p->tty ? term_width() : 100;
  return p;
}

void cli_progress_set_desc(cli_progress_t *p, const char *desc) {
  if (p) snprintf(p->desc, sizeof p->desc, "%s", desc);
}

void cli_progress_set_total(cli_progress_t *p, int64_t total) {
  if (p) p->total = total;
}

static void fmt_time(char *out, size_t n, double s) {
  if (!isfinite(s) || s < 0) {
    snprintf(out, n, "?");
    return;
  }
  long t = (long)(s + 0.5);
  if (t >= 3600)
    snprintf(out, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else
    snprintf(out, n, "%02ld:%02ld", t / 60, t % 60);
}

static void draw(cli_progress_t *p, int final) {
  double now = im_time_now(), el = now - p->start;
  double rate = el > 0 ? (double)p->done / el : 0;
  char elapsed[32], remain[32], ratestr[32], counts[160], head[200];
  fmt_time(elapsed, sizeof elapsed, el);
  fmt_time(remain, sizeof remain, rate > 0 && p->total > 0 ? (double)(p->total - p->done) / rate : NAN);
  if (rate >= 1 || rate == 0)
    snprintf(ratestr, sizeof ratestr, "%.2fit/s", rate);
  else
    snprintf(ratestr, sizeof ratestr, "%.2fs/it", 1.0 / rate);
  if (p->total > 0) {
    double frac = (double)p->done / (double)p->total;
    if (frac > 1) frac = 1;
    snprintf(head, sizeof head, "%s%s%3d%%|", p->desc, *p->desc ? ": " : "", (int)(frac * 100));
    snprintf(counts, sizeof counts, "| %lld/%lld [%s<%s, %s]", (long long)p->done, (long long)p->total, elapsed,
             remain, ratestr);
    if (!p->tty) {
      fprintf(stderr, "%s%s%3d%% %lld/%lld [%s<%s, %s]\n", p->desc, *p->desc ? ": " : "", (int)(frac * 100),
              (long long)p->done, (long long)p->total, elapsed, remain, ratestr);
      return;
    }
    int barw = p->width - (int)strlen(head) - (int)strlen(counts) - 1;
    if (barw < 10) barw = 10;
    if (barw > 60) barw = 60;
    static const char *parts[] = {"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"};
    char bar[60 * 4 + 8];
    size_t bl = 0;
    double cells = frac * barw;
    int full = (int)cells, part = (int)((cells - full) * 8);
    for (int i = 0; i < full; i++) bl += (size_t)snprintf(bar + bl, sizeof bar - bl, "█");
    if (full < barw) {
      bl += (size_t)snprintf(bar + bl, sizeof bar - bl, "%s", part ? parts[part] : " ");
      for (int i = full + 1; i < barw; i++) bar[bl++] = ' ';
      bar[bl] = '\0';
    }
    fprintf(stderr, "\r%s%s%s\033[K%s", head, bar, counts, final ? "\n" : "");
  } else {
    if (!p->tty) {
      fprintf(stderr, "%s%s%lld [%s, %s]\n", p->desc, *p->desc ? ": " : "", (long long)p->done, elapsed, ratestr);
      return;
    }
    fprintf(stderr, "\r%s%s%lld [%s, %s]\033[K%s", p->desc, *p->desc ? ": " : "", (long long)p->done, elapsed,
            ratestr, final ? "\n" : "");
  }
  fflush(stderr);
}

void cli_progress_update(cli_progress_t *p, int64_t done) {
  if (!p) return;
  p->done = done;
  double now = im_time_now();
  double every = p->tty ? 0.1 : 5.0;
  if (now - p->last_draw >= every || (!p->drawn && p->tty)) {
    p->last_draw = now;
    p->drawn = 1;
    draw(p, 0);
  }
}

void cli_progress_finish(cli_progress_t *p) {
  if (!p) return;
  draw(p, 1);
  im_free(p);
}

void cli_progress_cb(void *user, const char *stage, int64_t done, int64_t total) {
  cli_progress_t **pp = user;
  if (*pp && strcmp((*pp)->desc, stage) != 0) {
    cli_progress_finish(*pp);
    *pp = NULL;
  }
  if (!*pp) *pp = cli_progress_new(stage, total);
  if (!*pp) return;
  cli_progress_set_total(*pp, total);
  cli_progress_update(*pp, done);
}
