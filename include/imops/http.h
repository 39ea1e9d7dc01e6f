/* HTTP plumbing for the tracking server, the model server and the S3 client:
 * a server (libmicrohttpd) with a route table, body limits, JSON and form
 * helpers and per-request metrics hooks; strict multipart/form-data and
 * urlencoded parsers; a client (libcurl) with retries, JSON, atomic downloads
 * and AWS Signature V4. Only this module talks to sockets (DESIGN.md).
 *
 *   static im_status_t hello(im_http_req_t *req, im_http_resp_t *resp, void *user) {
 *     json_t *j = json_pack("{s:s}", "hello", im_http_req_param(req, "name"));
 *     im_status_t st = im_http_resp_json(resp, 200, j);
 *     json_decref(j);
 *     return st;
 *   }
 *   im_http_server_opts_t o = {.port = 0};           // 127.0.0.1, ephemeral port
 *   im_http_server_t *srv;
 *   im_http_server_new(&o, &srv);
 *   im_http_server_route(srv, "GET", "/hello/{name}", hello, NULL);
 *   im_http_server_start(srv);                        // im_http_server_port(srv): the port
 *   ...
 *   im_http_server_stop(srv, 5.0);                    // drain in-flight requests up to 5 s
 *   im_http_server_free(srv);
 *
 *   im_http_client_t *c;
 *   im_http_client_new(NULL, &c);
 *   json_t *out; long status;
 *   im_http_client_json(c, "GET", "http://127.0.0.1:5000/hello/you", NULL, &out, &status);
 *   im_http_client_free(c);
 */
#ifndef IMOPS_HTTP_H
#define IMOPS_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "imops/core.h"
#include "imops/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Default request-body limit of the server: 64 MiB. */
#define IM_HTTP_MAX_BODY_DEFAULT ((size_t)64 << 20)

/** A header (or any name/value pair) handed to or returned by this module. */
typedef struct {
  const char *name;
  const char *value;
} im_http_header_t;

/* ==== forms: multipart/form-data, application/x-www-form-urlencoded, query strings ==== */

/** One field of a form or query string. */
typedef struct {
  const char *name;         /* field name (NUL-terminated; may be "") */
  const char *filename;     /* multipart file uploads: the client's file name; NULL otherwise */
  const char *content_type; /* multipart: the part's Content-Type; NULL when absent */
  const uint8_t *data;      /* the value's bytes: for multipart it points into the parsed body
                               and is NOT NUL-terminated; for urlencoded forms and query strings
                               it is decoded, owned by the form and NUL-terminated (not counted) */
  size_t len;               /* bytes in data */
} im_http_part_t;

/** Limits for the form parsers; zero fields take the defaults. */
typedef struct {
  size_t max_parts;        /* fields in all (0: 256 for forms, 1024 for query strings) */
  size_t max_part_bytes;   /* bytes in one value (0: no limit of its own; the body limit applies) */
  size_t max_header_bytes; /* multipart: bytes of one part's header block (0: 16 KiB) */
} im_http_form_limits_t;

/** A parsed form: an ordered list of fields (repeated names are kept in order). */
typedef struct im_http_form im_http_form_t;

/** Parses a request body by its Content-Type: multipart/form-data (the boundary is taken
 * from the header) or application/x-www-form-urlencoded. Strict: a missing or invalid
 * boundary, a part without a closing delimiter, a part header without "name", or bytes
 * after the body that are not a delimiter are IM_ERR_FORMAT; too many parts or a part over
 * max_part_bytes are IM_ERR_LIMIT; another content type is IM_ERR_UNSUPPORTED. The message
 * (im_last_error) says what was wrong. On success *out is a new form (im_http_form_free);
 * multipart data points into body, which must outlive the form. lim may be NULL. */
IM_NODISCARD im_status_t im_http_form_parse(const char *content_type, const void *body, size_t len,
                                            const im_http_form_limits_t *lim, im_http_form_t **out);
/** Parses a query string ("a=1&b=x%20y&b=z", without the '?'): '+' is a space, %XX is
 * decoded (an invalid escape is kept as it is), empty pieces are skipped, a key without '='
 * has the value "". Fails only on limits (IM_ERR_LIMIT) or memory. lim may be NULL. */
IM_NODISCARD im_status_t im_http_query_parse(const char *qs, size_t len, const im_http_form_limits_t *lim,
                                             im_http_form_t **out);
void im_http_form_free(im_http_form_t *form);
/** Number of fields. */
size_t im_http_form_size(const im_http_form_t *form);
/** The i-th field in body order (NULL when i is out of range). Owned by the form. */
const im_http_part_t *im_http_form_at(const im_http_form_t *form, size_t i);
/** The nth (0-based) field called name, or NULL. A field named "name[]" or "name[<digits>]"
 * also answers to "name" (the forms MLflow's server accepts for repeated keys). */
const im_http_part_t *im_http_form_find(const im_http_form_t *form, const char *name, size_t nth);
/** How many fields answer to name (same matching as im_http_form_find). */
size_t im_http_form_count(const im_http_form_t *form, const char *name);

/** Appends s[0..len) to out, percent-encoded: the RFC 3986 unreserved characters
 * (A-Z a-z 0-9 - . _ ~) and any character in keep (e.g. "/" for paths; may be NULL)
 * stay as they are, everything else becomes %XX (upper-case hex, as SigV4 wants). */
IM_NODISCARD im_status_t im_http_url_encode(im_buf_t *out, const char *s, size_t len, const char *keep);

/** The HTTP status and MLflow-style error code for a library status, as the server uses
 * them when a handler fails without answering: NOT_FOUND 404 RESOURCE_DOES_NOT_EXIST;
 * ARG, FORMAT, LIMIT, EMPTY 400 INVALID_PARAMETER_VALUE; EXISTS 409 RESOURCE_ALREADY_EXISTS;
 * STATE 409 INVALID_STATE; UNSUPPORTED 501 NOT_IMPLEMENTED; CANCELLED 503
 * TEMPORARILY_UNAVAILABLE; anything else 500 INTERNAL_ERROR. *code may be NULL. */
int im_http_status_for(im_status_t st, const char **code);

/* ==== server ============================================================ */

typedef struct im_http_server im_http_server_t;
/** A request, valid only during the handler call (and the hook call). */
typedef struct im_http_req im_http_req_t;
/** The response a handler fills in; valid only during the handler call. */
typedef struct im_http_resp im_http_resp_t;

/** A route handler. It runs on a server thread (several run at once: it must be thread-safe)
 * and may block, but a blocked handler holds its thread (see threads below). Return IM_OK
 * after filling resp (an untouched resp is 200 with an empty body). Returning another status
 * without setting a response status answers with im_http_status_for(st) and
 * {"error_code": ..., "message": im_last_error()}. */
typedef im_status_t (*im_http_handler_fn)(im_http_req_t *req, im_http_resp_t *resp, void *user);

/** What the metrics hooks see about a request. */
typedef struct {
  const char *method;  /* "GET", ... */
  const char *route;   /* the matched pattern ("/v2/models/{name}/infer"); NULL when no route
                          matched (404/405/fallback): label by route, never by raw path */
  const char *path;    /* the decoded path (unbounded cardinality: do not use as a label) */
  int status;          /* the answer's status; 0 in on_start and when nothing was answered */
  double duration_s;   /* from the request headers to the end of the response (on_end) */
  uint64_t bytes_in;   /* request body bytes received */
  uint64_t bytes_out;  /* response body bytes queued */
  int completed;       /* on_end: 1 if the response was sent in full, 0 if the client went away */
} im_http_req_info_t;
/** Called on a server thread, concurrently with other calls: must be thread-safe and quick. */
typedef void (*im_http_hook_fn)(const im_http_req_info_t *info, void *user);

typedef struct {
  const char *host;          /* address to bind (NULL: "127.0.0.1"; "0.0.0.0" or "::" for all) */
  int port;                  /* 0: an ephemeral port, readable with im_http_server_port() */
  int threads;               /* worker threads of the pool (0: max(4, im_num_threads())) */
  int thread_per_connection; /* 1: one thread per connection instead of the pool (for handlers
                                that block for long, e.g. waiting on a batcher) */
  unsigned max_connections;  /* 0: 1024; more are refused */
  unsigned timeout_s;        /* a connection idle this long is closed (0: 60) */
  double drain_idle_s;       /* im_http_server_stop closes a connection idle between requests
                                this long since the stop began (0: 1 s) */
  size_t max_body_bytes;     /* 0: IM_HTTP_MAX_BODY_DEFAULT; over it: 413 JSON error */
  size_t max_header_bytes;   /* per-connection memory for the request line and headers
                                (0: 64 KiB); over it libmicrohttpd answers 431/414 itself */
  im_http_handler_fn fallback; /* requests no route matches (NULL: 404 empty body, or 405 with
                                  Allow when the path has routes for other methods) */
  void *fallback_user;
  im_http_handler_fn gate;     /* called once a routed request's headers are in, before its body
                                  is read (NULL: none). Returning IM_OK without setting a status
                                  lets the request through; setting a status, or failing (answered
                                  as a handler failure is), refuses it at once: the body is never
                                  read and the connection is closed (e.g. a missing token on a
                                  large upload). The body is not available to the gate. */
  void *gate_user;
  im_http_hook_fn on_start;  /* once the headers of a request are in (may be NULL) */
  im_http_hook_fn on_end;    /* after each request that on_start saw, with status, duration,
                                bytes (may be NULL); on_end follows on_start exactly once */
  void *hook_user;
  int error_style;           /* the server's own errors (413, malformed, a handler failing without
                                answering): 0 {"error_code": ..., "message": ...} (MLflow's shape),
                                1 {"error": message} (the model server's shape) */
} im_http_server_opts_t;

/** A stopped server with the options (NULL: all defaults). Free with im_http_server_free. */
IM_NODISCARD im_status_t im_http_server_new(const im_http_server_opts_t *opts, im_http_server_t **out);
/** As im_http_server_route, but the request body is not kept in memory: it is written, as
 * it arrives, to a temporary file in dir (created), which the handler finds with
 * im_http_req_body_file and may rename elsewhere; the server removes it after the handler
 * otherwise. im_http_req_body gives an empty body for such routes. For large uploads. */
IM_NODISCARD im_status_t im_http_server_route_spool(im_http_server_t *srv, const char *method, const char *pattern,
                                                    im_http_handler_fn fn, void *user, const char *dir);
/** Adds a route; only before im_http_server_start (IM_ERR_STATE after).
 * method: "GET", "POST", ... or NULL / "*" for any; a GET route also answers HEAD.
 * pattern: "/a/b" exact; "{name}" as a whole segment is a parameter
 * ("/v2/models/{name}/versions/{version}/infer"); a final segment "*" makes a prefix
 * route (the pattern "/static/" + "*" matches "/static", "/static/" and everything under
 * it; the decoded rest is the parameter "*"). Matching is per segment on the raw path, so "%2F" inside a segment
 * does not split it; literals compare with the decoded segment. The most specific route
 * wins: non-prefix before prefix, then more literal segments, then the earlier one.
 * The same method and pattern twice is IM_ERR_EXISTS; a malformed pattern IM_ERR_ARG. */
IM_NODISCARD im_status_t im_http_server_route(im_http_server_t *srv, const char *method, const char *pattern,
                                              im_http_handler_fn fn, void *user);
/** Binds and starts serving on background threads. */
IM_NODISCARD im_status_t im_http_server_start(im_http_server_t *srv);
/** The bound port once started (0 before). */
int im_http_server_port(const im_http_server_t *srv);
/** Requests received and not yet finished. */
int im_http_server_inflight(const im_http_server_t *srv);
/** 1 once im_http_server_stop has shut the listener: long handlers may check it and give
 * up early. */
int im_http_server_stopping(const im_http_server_t *srv);
/** Graceful stop (as Go's http.Server.Shutdown): stops accepting (connections already in
 * the listen backlog are still served; new ones are refused), then serves the open
 * connections until each has closed, up to drain_timeout_s: every answer says
 * "Connection: close", so a request in flight or arriving on a keep-alive connection
 * during the drain is answered and its connection then closed; a connection idle between
 * requests (nothing unread) for drain_idle_s since the stop began (or the whole
 * drain_timeout_s when shorter) is closed by the server. Then it stops the threads and frees the listener
 * and connections. A handler still running at the timeout is waited for (it cannot be
 * interrupted), but its answer is not sent.
 * Returns IM_OK when every request drained, IM_ERR_CANCELLED when the timeout cut requests
 * off. Idempotent; the handle stays valid for im_http_server_free. Not from a handler (it
 * would wait for itself), and not concurrently with itself or im_http_server_free. */
im_status_t im_http_server_stop(im_http_server_t *srv, double drain_timeout_s);
/** Stops (no drain) if running and frees. NULL is a no-op. */
void im_http_server_free(im_http_server_t *srv);

/* ---- the request ---- */
const char *im_http_req_method(const im_http_req_t *req);
/** The percent-decoded path ("/v2/models/my model/infer"). */
const char *im_http_req_path(const im_http_req_t *req);
/** The request target as sent (path and query, not decoded). */
const char *im_http_req_target(const im_http_req_t *req);
/** The matched route pattern; NULL in the fallback handler. */
const char *im_http_req_route(const im_http_req_t *req);
/** A path parameter ("{name}" in the pattern, decoded), or for prefix routes "*" the
 * decoded rest of the path after the prefix ("" when nothing follows). NULL if absent.
 * Values are the client's: "*" may hold "../" and "{name}" may hold '/' (from %2F);
 * check them before using them as file names. */
const char *im_http_req_param(const im_http_req_t *req, const char *name);
/** The query string, parsed (never NULL). "experiment_ids=1&experiment_ids=2" gives two
 * fields; "key[]=" and "key[0]=" answer to "key" too (im_http_form_find). */
const im_http_form_t *im_http_req_query_form(const im_http_req_t *req);
/** The first value of a query parameter (decoded, NUL-terminated), or NULL. */
const char *im_http_req_query(const im_http_req_t *req, const char *key);
/** The nth value of a repeated query parameter, or NULL. */
const char *im_http_req_query_at(const im_http_req_t *req, const char *key, size_t nth);
/** How many values the query parameter has. */
size_t im_http_req_query_count(const im_http_req_t *req, const char *key);
/** A request header by name, case-insensitively (the first if repeated), or NULL. */
const char *im_http_req_header(const im_http_req_t *req, const char *name);
/** The Content-Type header, or NULL. */
const char *im_http_req_content_type(const im_http_req_t *req);
/** The file a spooled route's body was written to, complete when the handler runs (NULL
 * for other routes; an empty body is an empty file). */
const char *im_http_req_body_file(const im_http_req_t *req);
/** The whole body (NUL-terminated, the NUL not counted in *len; never NULL). */
const uint8_t *im_http_req_body(const im_http_req_t *req, size_t *len);
/** Parses the body as JSON (any JSON value). Empty or invalid: IM_ERR_FORMAT with the
 * parser's message. *out is a new reference. */
IM_NODISCARD im_status_t im_http_req_json(const im_http_req_t *req, json_t **out);
/** Parses the body as a form by its Content-Type (im_http_form_parse). lim may be NULL. */
IM_NODISCARD im_status_t im_http_req_form(const im_http_req_t *req, const im_http_form_limits_t *lim,
                                          im_http_form_t **out);
/** The server the request came to. */
im_http_server_t *im_http_req_server(const im_http_req_t *req);

/* ---- the response (each call replaces what an earlier one set) ---- */
void im_http_resp_status(im_http_resp_t *resp, int status);
/** Adds a header (copied). CR, LF or NUL in name or value, or an empty name: IM_ERR_ARG.
 * Content-Length is computed by the server and cannot be set. */
IM_NODISCARD im_status_t im_http_resp_header(im_http_resp_t *resp, const char *name, const char *value);
/** The body, copied. */
IM_NODISCARD im_status_t im_http_resp_body(im_http_resp_t *resp, const void *data, size_t len);
/** The body, taken over: data must come from im_malloc; the server im_frees it. */
void im_http_resp_body_owned(im_http_resp_t *resp, void *data, size_t len);
/** Status, Content-Type and a text body (copied). */
IM_NODISCARD im_status_t im_http_resp_text(im_http_resp_t *resp, int status, const char *content_type,
                                           const char *text);
/** Status and j serialized compactly as application/json (j is borrowed, not stolen;
 * NULL j gives a 500). */
IM_NODISCARD im_status_t im_http_resp_json(im_http_resp_t *resp, int status, const json_t *j);
/** Status and {"error_code": code, "message": <formatted>} as application/json. */
IM_NODISCARD im_status_t im_http_resp_error_json(im_http_resp_t *resp, int status, const char *code,
                                                 const char *fmt, ...) IM_PRINTF(4, 5);
/** Status and a file's contents as the body, sent from the descriptor without reading it
 * into memory (content_type NULL: application/octet-stream). A missing file is
 * IM_ERR_NOT_FOUND and leaves resp as it was. */
IM_NODISCARD im_status_t im_http_resp_file(im_http_resp_t *resp, int status, const char *path,
                                           const char *content_type);

/* ==== client ============================================================ */

/** A client over one libcurl easy handle (keep-alive connections are reused between calls).
 * NOT thread-safe: use one client per thread, or hold a lock around every call. */
typedef struct im_http_client im_http_client_t;

typedef struct {
  double timeout_s;          /* whole request, per attempt (0: 120 s; < 0: none) */
  double connect_timeout_s;  /* 0: 10 s */
  int max_retries;           /* extra attempts on 429, 502, 503, 504 and connection errors
                                (0: 3; < 0: none) */
  double backoff_s;          /* first delay between attempts, doubled each time (0: 0.2 s);
                                a Retry-After in seconds is honoured up to backoff_max_s */
  double backoff_max_s;      /* 0: 10 s */
  const char *bearer_token;  /* "Authorization: Bearer ..." on every request (NULL: none) */
  const char *username;      /* HTTP Basic auth on every request (NULL: none) */
  const char *password;
  const char *user_agent;    /* NULL: "imops/<version>" */
  size_t max_response_bytes; /* in-memory response bodies (0: 1 GiB); over it: IM_ERR_LIMIT */
  int insecure;              /* 1: do not verify TLS certificates */
  const char *ca_file;       /* PEM bundle for TLS (NULL: the system's) */
  int follow_redirects;      /* 1: follow up to 5 redirects */
} im_http_client_opts_t;

/** AWS Signature V4 for S3-compatible stores, done by libcurl (CURLOPT_AWS_SIGV4
 * "aws:amz:<region>:<service>"). The payload is sent as UNSIGNED-PAYLOAD unless the
 * request carries its own x-amz-content-sha256 header. libcurl 7.88 signs the path and
 * query exactly as written: give the path URI-encoded (im_http_url_encode with keep "/")
 * and query parameters sorted by name and encoded. */
typedef struct {
  const char *region;        /* "us-east-1" */
  const char *service;       /* NULL: "s3" */
  const char *access_key;
  const char *secret_key;
  const char *session_token; /* NULL, or sent as x-amz-security-token (and signed) */
} im_http_sigv4_t;

typedef struct {
  const char *method;                /* "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", ... */
  const char *url;                   /* http:// or https:// only */
  const im_http_header_t *headers;   /* extra headers (may be NULL) */
  size_t n_headers;
  const void *body;                  /* request body (may be NULL: none) */
  size_t body_len;
  const char *content_type;          /* of the body (NULL: application/octet-stream when there is one) */
  const char *upload_path;           /* send this file as the body instead (streamed) */
  const char *download_path;         /* stream a 2xx body to this file, written atomically: it
                                        appears complete or not at all (never on an error
                                        status, a truncated body or a failed transfer);
                                        other statuses' bodies are kept in memory */
  double timeout_s;                  /* 0: the client's */
  const im_http_sigv4_t *sigv4;      /* sign the request (NULL: no) */
  int no_retry;                      /* 1: a single attempt whatever the client's options */
} im_http_request_t;

/** A response; caller-owned storage: init with {0}, release with im_http_response_deinit. */
typedef struct {
  long status;                 /* final HTTP status */
  im_http_header_t *headers;   /* the final response's headers, in order (owned) */
  size_t n_headers;
  uint8_t *body;               /* NUL-terminated (not counted); "" when downloaded to a file */
  size_t body_len;
  int attempts;                /* attempts made (1 without retries) */
} im_http_response_t;

/** A client (opts NULL: defaults). Free with im_http_client_free. */
IM_NODISCARD im_status_t im_http_client_new(const im_http_client_opts_t *opts, im_http_client_t **out);
void im_http_client_free(im_http_client_t *c);
/** Performs a request, retrying as the options say. Returns IM_OK when an HTTP answer
 * came back, whatever its status (check resp->status); IM_ERR_IO for transport failures
 * (connection refused, timeout, truncated body) after the last attempt, IM_ERR_LIMIT when
 * the body is over max_response_bytes, IM_ERR_ARG for bad requests (header with CR/LF).
 * resp is filled either way (status 0 when nothing came back); deinit it. */
IM_NODISCARD im_status_t im_http_client_request(im_http_client_t *c, const im_http_request_t *req,
                                                im_http_response_t *resp);
void im_http_response_deinit(im_http_response_t *resp);
/** A response header by name, case-insensitively, or NULL. */
const char *im_http_response_header(const im_http_response_t *resp, const char *name);

/** JSON in and out. For GET and HEAD a JSON object req is sent as query parameters
 * (arrays as repeated keys, as MLflow's client does); for other methods (DELETE too, as
 * MLflow sends it) req is the JSON body (NULL: no body). *out receives the parsed answer (NULL when the body is empty; out may
 * be NULL). With status non-NULL every HTTP answer is IM_OK and *status tells; with status
 * NULL a non-2xx answer is an error (404 IM_ERR_NOT_FOUND, else IM_ERR_IO) whose message
 * carries the server's "message"/"error". A non-empty 2xx body that is not JSON is
 * IM_ERR_FORMAT. */
IM_NODISCARD im_status_t im_http_client_json(im_http_client_t *c, const char *method, const char *url,
                                             const json_t *req, json_t **out, long *status);

#ifdef __cplusplus
}
#endif
#endif
