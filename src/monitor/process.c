/* The standard process_* metrics, read from /proc at each exposition (as the
 * Prometheus client libraries do on Linux), and imops_build_info. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "imops/monitor.h"
#include "imops/version.h"
#include "monitor/monitor_impl.h"

#ifndef IM_REVISION
#define IM_REVISION "unknown"
#endif

const char *im_monitor_revision(void) { return IM_REVISION[0] ? IM_REVISION : "unknown"; }

/* The fields after the command name of /proc/self/stat (which may hold spaces
 * and parentheses: the last ')' ends it). Field 3 (state) is f[0]. */
static int read_stat(double *utime, double *stime, double *threads, double *start, double *vsize, double *rss) {
  FILE *fp = fopen("/proc/self/stat", "r");
  if (!fp) return -1;
  char buf[2048];
  size_t n = fread(buf, 1, sizeof buf - 1, fp);
  fclose(fp);
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  if (!p) return -1;
  p++;
  double f[64];
  int k = 0;
  char *save = NULL;
  for (char *tok = strtok_r(p, " \n", &save); tok && k < 64; tok = strtok_r(NULL, " \n", &save))
  {
    f[k] = k == 0 ? 0 : strtod(tok, NULL);
    k++;
  }
  if (k < 22) return -1;
  /* stat(5): utime 14, stime 15, num_threads 20, starttime 22, vsize 23, rss 24 (1-based) */
  *utime = f[14 - 3];
  *stime = f[15 - 3];
  *threads = f[20 - 3];
  *start = f[22 - 3];
  *vsize = f[23 - 3];
  *rss = f[24 - 3];
  return 0;
}

static double boot_time(void) {
  FILE *fp = fopen("/proc/stat", "r");
  if (!fp) return NAN;
  char line[512];
  double bt = NAN;
  while (fgets(line, sizeof line, fp))
    if (!strncmp(line, "btime ", 6)) {
      bt = strtod(line + 6, NULL);
      break;
    }
  fclose(fp);
  return bt;
}

void im_monitor_process_read(im_monitor_process_t *p) {
  p->cpu_seconds = p->resident_bytes = p->virtual_bytes = p->open_fds = p->max_fds = NAN;
  p->start_time_seconds = p->threads = NAN;
  double ut, stt, th, start, vs, rss;
  double tck = (double)sysconf(_SC_CLK_TCK), page = (double)sysconf(_SC_PAGESIZE);
  if (read_stat(&ut, &stt, &th, &start, &vs, &rss) == 0 && tck > 0) {
    p->cpu_seconds = (ut + stt) / tck;
    p->threads = th;
    p->virtual_bytes = vs;
    p->resident_bytes = rss * page;
    double bt = boot_time();
    if (isfinite(bt)) p->start_time_seconds = bt + start / tck;
  }
  DIR *d = opendir("/proc/self/fd");
  if (d) {
    double n = 0;
    for (struct dirent *e; (e = readdir(d));)
      if (e->d_name[0] != '.') n++;
    closedir(d);
    p->open_fds = n - 1; /* the directory's own descriptor */
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) p->max_fds = (double)rl.rlim_cur;
}

enum { P_CPU, P_RSS, P_VSZ, P_FDS, P_MAXFDS, P_START, P_THREADS, P_N };

typedef struct {
  im_monitor_family_t *fam[P_N];
} proc_metrics_t;

static void collect(im_monitor_t *reg, void *user) {
  proc_metrics_t *pm = user;
  im_monitor_process_t p;
  im_monitor_process_read(&p);
  const double v[P_N] = {p.cpu_seconds, p.resident_bytes, p.virtual_bytes, p.open_fds,
                         p.max_fds, p.start_time_seconds, p.threads};
  for (int i = 0; i < P_N; i++) {
    im_monitor_family_clear(pm->fam[i]);
    if (!isfinite(v[i])) continue; /* the client-library rule: leave out what cannot be read */
    im_monitor_series_t *s;
    if (im_monitor_series(pm->fam[i], NULL, &s) == IM_OK) im_monitor_set(s, v[i]);
  }
}

im_status_t im_monitor_process_register(im_monitor_t *reg) {
  static const struct {
    const char *name, *help;
    int counter;
  } defs[P_N] = {
      {"process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", 1},
      {"process_resident_memory_bytes", "Resident memory size in bytes.", 0},
      {"process_virtual_memory_bytes", "Virtual memory size in bytes.", 0},
      {"process_open_fds", "Number of open file descriptors.", 0},
      {"process_max_fds", "Maximum number of open file descriptors.", 0},
      {"process_start_time_seconds", "Start time of the process since unix epoch in seconds.", 0},
      {"process_threads", "Number of OS threads in the process.", 0},
  };
  proc_metrics_t *pm = im_calloc(1, sizeof *pm);
  if (!pm) return im_error(IM_ERR_NOMEM, "out of memory");
  im_status_t st = IM_OK;
  for (int i = 0; i < P_N && st == IM_OK; i++)
    st = defs[i].counter ? im_monitor_counter(reg, defs[i].name, defs[i].help, 0, NULL, &pm->fam[i])
                         : im_monitor_gauge(reg, defs[i].name, defs[i].help, 0, NULL, &pm->fam[i]);
  if (st) {
    im_free(pm);
    return st;
  }
  if ((st = im__monitor_keep(reg, pm))) return st; /* freed with the registry */
  return im_monitor_on_collect(reg, collect, pm);
}

im_status_t im_monitor_build_info_register(im_monitor_t *reg) {
  const char *ln[] = {"version", "revision"};
  const char *lv[] = {im_version(), im_monitor_revision()};
  im_monitor_family_t *f;
  im_monitor_series_t *s;
  im_status_t st = im_monitor_gauge(reg, "imops_build_info", "Build metadata; the value is always 1.", 2, ln, &f);
  if (st == IM_OK) st = im_monitor_series(f, lv, &s);
  if (st == IM_OK) im_monitor_set(s, 1);
  return st;
}
