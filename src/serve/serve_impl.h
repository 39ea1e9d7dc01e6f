/* Internal contracts of the model server: request parsers (predict bodies,
 * base64, Open Inference Protocol v2 requests), the micro-batcher and its
 * latency model. The parsers and the batcher know nothing about models, so
 * the unit tests and the fuzz target drive them directly. */
#ifndef IMOPS_SERVE_IMPL_H
#define IMOPS_SERVE_IMPL_H

#include <jansson.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "imops/core.h"
#include "imops/status.h"

/* ---- request bodies ---------------------------------------------------------------- */

/** One encoded image from a request. data points into the request body or
 * into owned (decoded base64). name: the upload's file name or NULL. */
typedef struct {
  const uint8_t *data;
  size_t len;
  char *name;
  uint8_t *owned;
} im__serve_blob_t;

typedef struct {
  im__serve_blob_t *v;
  size_t n, cap;
} im__serve_blobs_t;

void im__serve_blobs_free(im__serve_blobs_t *b);

/** Decodes base64 (standard or URL-safe alphabet, padding optional,
 * whitespace ignored; a "data:...;base64," prefix is skipped). Any other
 * character or a dangling bit group is IM_ERR_FORMAT. *out (im_free) holds
 * *out_len bytes. */
IM_NODISCARD im_status_t im__serve_b64_decode(const char *s, size_t len, uint8_t **out, size_t *out_len);
/** Appends base64 (standard, padded) of data to b. */
IM_NODISCARD im_status_t im__serve_b64_encode(im_buf_t *b, const uint8_t *data, size_t len);

/** The images of a POST /predict body, by Content-Type:
 * multipart/form-data: every part with a file name or an image/ or
 *   application/octet-stream type (other fields are ignored);
 * image/jpeg, image/png, any image type, application/octet-stream: the body is one image;
 * application/json: {"instances": [{"b64": ...} | "<base64>", ...]},
 *   {"images": ["<base64>", ...]} or {"image": "<base64>"}.
 * Errors: IM_ERR_UNSUPPORTED (another or no content type: answer 415),
 * IM_ERR_FORMAT (malformed multipart, JSON or base64), IM_ERR_EMPTY (no
 * image, or an empty one), IM_ERR_LIMIT (more than max_images). out must be
 * zeroed; it is filled even on failure (free it either way). */
IM_NODISCARD im_status_t im__serve_parse_predict(const char *content_type, const uint8_t *body, size_t len,
                                                 size_t max_images, im__serve_blobs_t *out);

/* ---- Content-Encoding ---------------------------------------------------------------- */

/** Inflates a gzip or deflate (zlib, or raw deflate) body, appending to out:
 * IM_ERR_FORMAT when corrupt or truncated, IM_ERR_LIMIT past max_out bytes,
 * IM_ERR_UNSUPPORTED for another encoding. */
IM_NODISCARD im_status_t im__serve_inflate(const char *encoding, const uint8_t *in, size_t n, size_t max_out,
                                           im_buf_t *out);
/** Appends in compressed as gzip (gzip = 1) or zlib deflate (0). */
IM_NODISCARD im_status_t im__serve_compress(int gzip, const uint8_t *in, size_t n, im_buf_t *out);

/* ---- Open Inference Protocol v2 ---------------------------------------------------- */

typedef enum { IM__V2_FP32 = 1, IM__V2_BYTES = 2 } im__serve_v2_dtype_t;

#define IM__V2_MAX_DIMS 8
#define IM__V2_MAX_OUTPUTS 8

typedef struct {
  char *name;
  int binary;          /* -1: not said (the request default applies), 0, 1 */
  int classification;  /* top-K of the classification extension (0: none) */
} im__serve_v2_out_t;

/** A parsed inference request with its single input. */
typedef struct {
  json_t *header;       /* the JSON part (owned) */
  const char *id;       /* "id" (points into header) or NULL */
  const char *input_name;
  im__serve_v2_dtype_t dtype;
  int ndim;
  int64_t shape[IM__V2_MAX_DIMS];
  int64_t numel;
  float *f32;           /* FP32: numel values (owned) */
  im__serve_blobs_t bytes; /* BYTES: numel elements */
  int binary_output;    /* the request's binary_data_output parameter */
  int n_outputs;        /* 0: all outputs */
  im__serve_v2_out_t outputs[IM__V2_MAX_OUTPUTS];
} im__serve_v2_req_t;

/** Parses an inference request: JSON alone, or, when header_len (the
 * Inference-Header-Content-Length header) is given, that many bytes of JSON
 * followed by the binary tensors in input order. Exactly one input, FP32 or
 * BYTES (others: IM_ERR_UNSUPPORTED), with shape dimensions >= 0 whose product
 * is at most max_elems (IM_ERR_LIMIT) and matches the data (IM_ERR_FORMAT);
 * FP32 values must be finite numbers. BYTES elements given in JSON are
 * strings: base64 of the image bytes, or the bytes themselves when they
 * already look like an image. req must be zeroed; free it with
 * im__serve_v2_req_free either way. */
IM_NODISCARD im_status_t im__serve_v2_parse(const uint8_t *body, size_t len, const char *header_len,
                                            size_t max_elems, size_t max_images, im__serve_v2_req_t *req);
void im__serve_v2_req_free(im__serve_v2_req_t *req);

/* ---- drift statistics ------------------------------------------------------------------ */

/** The sum and the sum of squares of p[i] * sd + mean over n values, in double
 * (the served images' pixel values back from their normalized inputs). */
void im__serve_plane_sums(const float *p, size_t n, double sd, double mean, double *sum, double *sq);

/* ---- the batcher --------------------------------------------------------------------- */

/** The latency model: batch run time t(n) = a + b n by exponentially weighted
 * least squares, and the exponentially weighted time between arrivals. */
typedef struct {
  double sw, sn, st, snn, snt; /* weighted sums (decayed) */
  double a, b;                 /* the fit, both >= 0 */
  int samples;
  double interarrival;         /* seconds between requests (0: unknown) */
  double last_arrival;         /* time of the last request (0: none yet) */
} im__serve_latency_t;

void im__serve_latency_observe(im__serve_latency_t *m, int n, double seconds);
double im__serve_latency_predict(const im__serve_latency_t *m, int n);
void im__serve_latency_arrival(im__serve_latency_t *m, double now);
/** The dispatch decision of a free worker: 0 to dispatch now, or how long
 * (seconds, > 0) it may wait for more requests. queued: images waiting;
 * oldest_wait: seconds the oldest has waited. */
double im__serve_batch_wait(const im__serve_latency_t *m, int queued, double oldest_wait, int max_batch,
                            double max_latency_s);

/** One request's images as the batcher sees them. */
typedef struct im__serve_job {
  const float *x;  /* n inputs, each of the model's C x H x W floats */
  float *probs;    /* n x K outputs */
  int n;
  void *gen;       /* the model generation the inputs were prepared for: a batch holds one only */
  /* the batcher's */
  int state;       /* 0 queued, 1 running, 2 done, 3 cancelled */
  im_status_t st;
  char err[256];
  double t_enq;
  pthread_cond_t done; /* signalled (under the batcher's lock) when state reaches 2 or 3: only this job's waiter wakes */
  struct im__serve_job *next;
} im__serve_job_t;

/** Runs one batch (on worker's thread): jobs[0..njobs) with nimages images in
 * all, all of generation gen; writes every job's probs. A failure fails every
 * job of the batch with the message of im_last_error(). */
typedef im_status_t (*im__serve_run_fn)(void *user, int worker, void *gen, im__serve_job_t *const *jobs, int njobs,
                                        int nimages);

typedef struct im__serve_batcher im__serve_batcher_t;

typedef struct {
  int workers;           /* >= 1 */
  int max_batch;         /* >= 1 (1: no batching) */
  double max_latency_s;
  im__serve_run_fn run;
  void *user;
} im__serve_batcher_opts_t;

IM_NODISCARD im_status_t im__serve_batcher_new(const im__serve_batcher_opts_t *o, im__serve_batcher_t **out);
/** Queues job and waits for its batch. IM_OK when it ran (job->st then says
 * how it went); IM_ERR_CANCELLED when timeout_s passed before a worker took
 * it (it is then no longer queued) or the batcher stopped. */
IM_NODISCARD im_status_t im__serve_batcher_submit(im__serve_batcher_t *b, im__serve_job_t *job, double timeout_s);
/** Images waiting. */
int im__serve_batcher_queued(im__serve_batcher_t *b);
/** Finishes the batches running, cancels what is queued, joins the workers. */
void im__serve_batcher_stop(im__serve_batcher_t *b);
void im__serve_batcher_free(im__serve_batcher_t *b);

#endif
