/* Core services shared by every module: allocation funnel, logging callback,
 * random numbers, threads, time, files (atomic writes), hashing, buffers.
 *
 *   im_rng_t r; im_rng_seed(&r, 42);
 *   uint32_t k = im_rng_below(&r, 10);
 *   im_parallel_for(n, 0, work, ctx);      // 0 threads = im_num_threads()
 *   im_file_write_atomic("x.json", data, len);
 */
#ifndef IMOPS_CORE_H
#define IMOPS_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "imops/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define IM_NODISCARD __attribute__((warn_unused_result))
#define IM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define IM_NODISCARD
#define IM_PRINTF(a, b)
#endif

/* ---- allocation funnel ------------------------------------------------- */
/** malloc/calloc/realloc/free through one place: counts live bytes, and a test
 * hook can make the Nth allocation fail. im_free(NULL) does nothing. */
void *im_malloc(size_t n);
void *im_calloc(size_t count, size_t size);
void *im_realloc(void *p, size_t n);
void im_free(void *p);
char *im_strdup(const char *s);
char *im_strndup(const char *s, size_t n);
/** Bytes currently allocated through the funnel. */
int64_t im_alloc_live_bytes(void);
/** Test hook: the countdown-th allocation from now fails (0 turns it off). */
void im_alloc_fail_after(int64_t countdown);

/* ---- errors --------------------------------------------------------------- */
/** Sets this thread's last-error text (im_last_error) and returns st. */
im_status_t im_error(im_status_t st, const char *fmt, ...) IM_PRINTF(2, 3);
void im_error_clear(void);

/* ---- logging ------------------------------------------------------------- */
typedef enum { IM_LOG_DEBUG = 0, IM_LOG_INFO = 1, IM_LOG_WARN = 2, IM_LOG_ERROR = 3 } im_log_level_t;
typedef void (*im_log_fn)(im_log_level_t level, const char *msg, void *user);
/** Routes library messages to fn (NULL: discard). Messages below min_level are dropped. */
void im_log_set(im_log_fn fn, void *user, im_log_level_t min_level);
void im_log(im_log_level_t level, const char *fmt, ...) IM_PRINTF(2, 3);

/* ---- random numbers (xoshiro256**, seeded through splitmix64) ---------- */
typedef struct { uint64_t s[4]; } im_rng_t;
void im_rng_seed(im_rng_t *r, uint64_t seed);
/** A seed derived from a base seed and a stream index: independent streams. */
uint64_t im_rng_derive(uint64_t seed, uint64_t stream);
uint64_t im_rng_next(im_rng_t *r);
/** Uniform in [0, n); n > 0. Unbiased. */
uint32_t im_rng_below(im_rng_t *r, uint32_t n);
/** Uniform double in [0, 1). */
double im_rng_uniform(im_rng_t *r);
/** Standard normal (Box-Muller). */
double im_rng_normal(im_rng_t *r);
/** Fisher-Yates shuffle of n elements of the given size. */
void im_rng_shuffle(im_rng_t *r, void *base, size_t n, size_t size);

/* ---- threads -------------------------------------------------------------- */
/** Number of worker threads to use: IMOPS_NUM_THREADS, else online CPUs. */
int im_num_threads(void);
/** fn(ctx, i, thread) for i in [0, n), spread over nthreads threads (0: default),
 * items handed out dynamically. Returns after all items are done. */
typedef void (*im_parallel_fn)(void *ctx, int64_t i, int thread);
im_status_t im_parallel_for(int64_t n, int nthreads, im_parallel_fn fn, void *ctx);

/* ---- time ----------------------------------------------------------------- */
/** Monotonic seconds. */
double im_time_now(void);
/** Wall-clock milliseconds since the epoch. */
int64_t im_time_wall_ms(void);

/* ---- hashing (64-bit, non-cryptographic, stable across platforms) ------- */
typedef struct { uint64_t v[4]; uint64_t total; uint8_t buf[32]; size_t nbuf; } im_hash_t;
void im_hash_init(im_hash_t *h, uint64_t seed);
void im_hash_update(im_hash_t *h, const void *data, size_t len);
uint64_t im_hash_final(const im_hash_t *h);
uint64_t im_hash64(const void *data, size_t len, uint64_t seed);

/* ---- growable byte buffer -------------------------------------------------- */
typedef struct { char *data; size_t len, cap; } im_buf_t;
im_status_t im_buf_append(im_buf_t *b, const void *data, size_t len);
im_status_t im_buf_printf(im_buf_t *b, const char *fmt, ...) IM_PRINTF(2, 3);
void im_buf_free(im_buf_t *b);

/* ---- files ------------------------------------------------------------------ */
/** Reads a whole file into a new buffer (NUL-terminated, not counted in *len).
 * Fails with IM_ERR_LIMIT when it is larger than max_bytes (0: no limit). */
im_status_t im_file_read(const char *path, size_t max_bytes, uint8_t **data, size_t *len);
/** Writes data to path atomically: a temporary file beside it, fsync, rename.
 * A reader sees the old file or the whole new one, never a part. */
im_status_t im_file_write_atomic(const char *path, const void *data, size_t len);
/** As im_file_write_atomic; durable = 0 skips the fsyncs (still all-or-nothing
 * for readers, but a power cut may lose it): for bulk data such as generated images. */
im_status_t im_file_write_atomic_ex(const char *path, const void *data, size_t len, int durable);
/** Creates a directory and its parents (mode 0755); existing is fine. */
im_status_t im_mkdir_p(const char *path);
/** 1 if path is a directory, 0 otherwise. */
int im_is_dir(const char *path);
/** path joined: a + "/" + b, new string. */
char *im_path_join(const char *a, const char *b);

/** A file written in pieces that appears at its final path only on commit. */
typedef struct im_atomic_file im_atomic_file_t;
im_status_t im_atomic_file_open(const char *path, im_atomic_file_t **out);
/** The descriptor of the temporary file, for write/pwrite/ftruncate. */
int im_atomic_file_fd(const im_atomic_file_t *f);
/** fsync, rename over the final path, fsync the directory; frees f. */
im_status_t im_atomic_file_commit(im_atomic_file_t *f);
/** Removes the temporary file; frees f. NULL is a no-op. */
void im_atomic_file_abort(im_atomic_file_t *f);

#ifdef __cplusplus
}
#endif
#endif
