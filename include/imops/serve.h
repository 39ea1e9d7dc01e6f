/* The model server behind `imops serve`: a model opened by URI (registry
 * aliases and stages too) served over HTTP with adaptive micro-batching.
 *
 * Routes: POST /predict (multipart image uploads as `requests.post(url,
 * files=...)` sends them, a raw image/jpeg or image/png body, or JSON with
 * base64 images; ?format=classes answers the compact [1, 0, ...] form), the
 * Open Inference Protocol v2 (/v2, /v2/health/live|ready, /v2/models/NAME
 * [/versions/V][/ready|/infer], FP32 and BYTES inputs, JSON and the binary
 * tensor data extension, the classification extension), /healthz, /livez,
 * /readyz, /metrics (Prometheus text 0.0.4), /openapi.json and /docs.
 * Every bad request gets a 4xx answer {"error": "..."}.
 *
 *   im_serve_opts_t o = im_serve_defaults();
 *   o.model_uri = "models:/surface@production"; o.port = 3000; o.watch = 1;
 *   im_serve_t *srv;
 *   if (im_serve_new(&o, &srv) || im_serve_start(srv)) { ... im_last_error() ... }
 *   ...                           // serving on background threads
 *   im_serve_reload(srv, 1);      // e.g. on SIGHUP
 *   im_serve_stop(srv, 30.0);     // drain in-flight requests
 *   im_serve_free(srv);
 *
 * Batching: requests wait in one queue; each inference worker takes the
 * requests at its head into one batch of up to max_batch_size images. When a
 * worker is free it dispatches at once unless waiting for the next request is
 * expected to pay: it models the run time of a batch of n images as a + b n
 * (exponentially weighted least squares over the batches run) and the time
 * between arrivals, and waits only while the n queued requests' total added
 * wait stays below the overhead a that merging saves, and the oldest request
 * can still finish within max_latency_ms. Under load, requests gather while
 * the workers are busy. A batch runs through the model in forward passes of
 * as many images as keep the activations within a core's L2 cache (at most
 * max_batch_size), in memory planned once per model; a batch allocates nothing.
 *
 * Reloads load the new model fully, then switch; batches in flight finish on
 * the old model, which is freed when the last one ends. No request fails. */
#ifndef IMOPS_SERVE_H
#define IMOPS_SERVE_H

#include <stddef.h>
#include <stdint.h>

#include "imops/core.h"
#include "imops/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  const char *model_uri;     /* required: a bundle directory or any model URI */
  const char *name;          /* the model's name in /v2 (NULL: the registry name, else "model") */
  const char *device;        /* "cpu" (NULL) or "ref" */
  const char *tracking_home; /* the store for runs:/ and models:/ (NULL: $IMOPS_HOME / ./imops-workspace) */
  const char *host;          /* NULL: 127.0.0.1 */
  int port;                  /* 0: an ephemeral port (im_serve_port) */
  int max_batch_size;        /* images per batch (0: 32) */
  double max_latency_ms;     /* how long batching may hold a request (0: 20 ms) */
  int batching;              /* 0: every request runs alone */
  int workers;               /* inference workers, each with its own copy of the model (0: 1) */
  int watch;                 /* 1: poll the registry and reload when the URI resolves elsewhere */
  double watch_interval_s;   /* 0: 2 s */
  size_t max_body_bytes;     /* 0: 64 MiB */
  int64_t max_pixels;        /* per image, from its header before decoding (0: 40 megapixels) */
  int max_images;            /* images per request (0: 256) */
  double timeout_ms;         /* a request not answered in this time gets 503 (0: 30000) */
  unsigned max_connections;  /* 0: 1024 */
} im_serve_opts_t;

/** The defaults above, with batching on. */
im_serve_opts_t im_serve_defaults(void);

typedef struct im_serve im_serve_t;

/** Loads the model (failing if it cannot be opened), sets up the metrics and
 * routes. Free with im_serve_free. */
IM_NODISCARD im_status_t im_serve_new(const im_serve_opts_t *opts, im_serve_t **out);
/** Binds, starts the inference workers and (with watch) the registry watcher. */
IM_NODISCARD im_status_t im_serve_start(im_serve_t *srv);
/** The bound port once started. */
int im_serve_port(const im_serve_t *srv);
/** Reloads the model from its URI: with force = 0 only when the URI now
 * resolves to another version or place. The new model is loaded fully before
 * it replaces the old; on failure the old one stays and the error is returned.
 * *reloaded (may be NULL) tells whether the model changed. Thread-safe. */
IM_NODISCARD im_status_t im_serve_reload(im_serve_t *srv, int force, int *reloaded);
/** What is served now: name, version ("" when not from the registry), run id
 * ("" when unknown) into caller buffers of n bytes each (any may be NULL). */
void im_serve_model_info(im_serve_t *srv, char *name, char *version, char *run_id, size_t n);
/** Graceful stop: refuses new connections, answers the requests in flight
 * (their batches run), then stops the workers and the watcher.
 * IM_ERR_CANCELLED when drain_timeout_s cut requests off. */
im_status_t im_serve_stop(im_serve_t *srv, double drain_timeout_s);
/** Stops (without draining) if running and frees. NULL is a no-op. */
void im_serve_free(im_serve_t *srv);

#ifdef __cplusplus
}
#endif
#endif
