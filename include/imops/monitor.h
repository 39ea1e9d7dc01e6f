/* Monitoring: a metrics registry (counters, gauges, histograms with label
 * sets) rendered in the Prometheus text exposition format 0.0.4, the standard
 * process_* metrics from /proc, and the statistics behind drift monitoring:
 * running per-channel mean/std (Welford, mergeable) and the population
 * stability index. Used by `imops serve` and `imops train --metrics-port`.
 *
 *   im_monitor_t *reg;
 *   im_monitor_new(&reg);
 *   im_monitor_process_register(reg);                       // process_* metrics
 *   const char *ln[] = {"route", "code"};
 *   im_monitor_family_t *req;
 *   im_monitor_counter(reg, "app_requests_total", "Requests handled.", 2, ln, &req);
 *   const char *lv[] = {"/predict", "200"};
 *   im_monitor_series_t *s;
 *   im_monitor_series(req, lv, &s);    // once; the pointer stays valid: keep it
 *   im_monitor_inc(s, 1);              // hot path: one atomic operation
 *   im_buf_t text = {0};
 *   im_monitor_expose(reg, &text);     // "# HELP app_requests_total ...\n..."
 *   im_buf_free(&text);
 *   im_monitor_free(reg);
 *
 * Thread safety: every function may be called from any thread at any time
 * (except im_monitor_free). Updating a series is lock-free (atomic compare-
 * and-swap on the value); finding or creating a series takes the family's
 * mutex, so hot paths should keep series pointers rather than look them up
 * per event. Exposition takes the registry's mutex and runs the collectors.
 */
#ifndef IMOPS_MONITOR_H
#define IMOPS_MONITOR_H

#include <stddef.h>
#include <stdint.h>

#include "imops/core.h"
#include "imops/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The Content-Type of im_monitor_expose's text. */
#define IM_MONITOR_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
/** Most labels per family, most buckets per histogram. */
#define IM_MONITOR_MAX_LABELS 8
#define IM_MONITOR_MAX_BUCKETS 64

typedef struct im_monitor im_monitor_t;
typedef struct im_monitor_family im_monitor_family_t;
typedef struct im_monitor_series im_monitor_series_t;

typedef enum { IM_MONITOR_COUNTER = 0, IM_MONITOR_GAUGE = 1, IM_MONITOR_HISTOGRAM = 2 } im_monitor_type_t;

/** A new, empty registry. Free with im_monitor_free. */
IM_NODISCARD im_status_t im_monitor_new(im_monitor_t **out);
/** Frees the registry, its families and series. NULL is a no-op. */
void im_monitor_free(im_monitor_t *reg);

/** Registers a family. name must match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 * [a-zA-Z_][a-zA-Z0-9_]* (not starting with "__", not "le" for histograms),
 * at most IM_MONITOR_MAX_LABELS (IM_ERR_ARG otherwise); a name registered
 * before is IM_ERR_EXISTS. help is copied (any text; escaped on output).
 * The family lives as long as the registry; families are exposed in the
 * order they were registered, series in the order they were created. */
IM_NODISCARD im_status_t im_monitor_counter(im_monitor_t *reg, const char *name, const char *help, int n_labels,
                                            const char *const *label_names, im_monitor_family_t **out);
IM_NODISCARD im_status_t im_monitor_gauge(im_monitor_t *reg, const char *name, const char *help, int n_labels,
                                          const char *const *label_names, im_monitor_family_t **out);
/** A histogram with n_bounds upper bounds, strictly increasing and finite
 * (+Inf is always added), 1..IM_MONITOR_MAX_BUCKETS. */
IM_NODISCARD im_status_t im_monitor_histogram(im_monitor_t *reg, const char *name, const char *help, int n_labels,
                                              const char *const *label_names, int n_bounds, const double *bounds,
                                              im_monitor_family_t **out);

/** The series of a family for the label values (n_labels strings, any bytes but
 * NUL; NULL when the family has no labels): found, or created at zero. The
 * pointer stays valid until the registry is freed. */
IM_NODISCARD im_status_t im_monitor_series(im_monitor_family_t *f, const char *const *label_values,
                                           im_monitor_series_t **out);
/** Removes every series of a family (for info gauges whose labels change,
 * e.g. on a model reload). Pointers to them stay valid (they are kept, no
 * longer exposed) until the registry is freed. */
void im_monitor_family_clear(im_monitor_family_t *f);

/** Counter: adds v (>= 0; negative values are ignored). Gauge: adds v. */
void im_monitor_inc(im_monitor_series_t *s, double v);
/** Gauge (or counter from a collector that mirrors an outside total): sets v. */
void im_monitor_set(im_monitor_series_t *s, double v);
/** Histogram: counts one observation v (NaN is ignored). */
void im_monitor_observe(im_monitor_series_t *s, double v);
/** The current value of a counter or gauge; a histogram's sum. */
double im_monitor_value(const im_monitor_series_t *s);
/** A histogram's observation count (0 for other types). */
uint64_t im_monitor_count(const im_monitor_series_t *s);

/** Called at the start of every exposition (under the registry's lock), to
 * update gauges that are read on demand. Collectors run in registration
 * order. Up to 16. */
typedef void (*im_monitor_collect_fn)(im_monitor_t *reg, void *user);
IM_NODISCARD im_status_t im_monitor_on_collect(im_monitor_t *reg, im_monitor_collect_fn fn, void *user);

/** Appends the whole registry to out in the Prometheus text format 0.0.4:
 * per family "# HELP" and "# TYPE" lines, then its series (histograms as
 * cumulative _bucket lines in increasing le order ending with le="+Inf",
 * then _sum and _count); label values and help text escaped; every line ends
 * with '\n'. Families without series are exposed with HELP/TYPE only. */
IM_NODISCARD im_status_t im_monitor_expose(im_monitor_t *reg, im_buf_t *out);

/** Formats a sample value as the exposition does: integers without a
 * fraction, others with the fewest digits that read back exactly, "+Inf",
 * "-Inf", "NaN". buf holds at least 32 bytes; returns buf. */
const char *im_monitor_format_value(double v, char *buf, size_t n);

/** Registers the standard process metrics (process_cpu_seconds_total,
 * process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_open_fds, process_max_fds, process_start_time_seconds,
 * process_threads) and a collector that reads them from /proc at each
 * exposition. A value that cannot be read is left out. */
IM_NODISCARD im_status_t im_monitor_process_register(im_monitor_t *reg);

/** The process figures that im_monitor_process_register exposes; NaN where unknown. */
typedef struct {
  double cpu_seconds, resident_bytes, virtual_bytes, open_fds, max_fds, start_time_seconds, threads;
} im_monitor_process_t;
void im_monitor_process_read(im_monitor_process_t *p);

/** Registers imops_build_info{version,revision} 1 (revision: the git
 * revision the binary was built from, "unknown" when not known). */
IM_NODISCARD im_status_t im_monitor_build_info_register(im_monitor_t *reg);
/** The git revision compiled in ("unknown" when none); static storage. */
const char *im_monitor_revision(void);

/* ---- statistics ------------------------------------------------------------------ */
/** Running mean and variance (Welford), mergeable (Chan et al.): n values with
 * mean and m2 = sum of squared deviations from the mean. Zero is empty. */
typedef struct {
  double n, mean, m2;
} im_monitor_welford_t;
/** Adds one value. */
void im_monitor_welford_add(im_monitor_welford_t *w, double x);
/** Merges b into a: the result is as if a had seen b's values too. */
void im_monitor_welford_merge(im_monitor_welford_t *a, const im_monitor_welford_t *b);
/** The statistics of n values from their sum and sum of squares (a batch to
 * merge; clamps the rounding error that can make m2 slightly negative). */
im_monitor_welford_t im_monitor_welford_from_sums(double n, double sum, double sum_sq);
/** Population variance m2 / n and its square root; 0 when empty. */
double im_monitor_welford_var(const im_monitor_welford_t *w);
double im_monitor_welford_std(const im_monitor_welford_t *w);

/** Population stability index of an actual distribution against an expected
 * one, both given as k non-negative counts (or weights): with proportions
 * p_e, p_a (each floored at eps, default 1e-4 when eps <= 0),
 * PSI = sum (p_a - p_e) ln(p_a / p_e). 0 when either side has no mass. */
double im_monitor_psi(int k, const double *expected, const double *actual, double eps);

#ifdef __cplusplus
}
#endif
#endif
