/* S3 plumbing for the artifact store: configuration from the environment
 * (MLflow's and AWS's variables), path-style request URLs and SigV4-ready
 * query strings, and strict parsers (libxml2) for the XML answers the store
 * reads: ListObjectsV2 pages, errors and multipart-upload ids. */
#include <ctype.h>
#include <errno.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imops/http.h"
#include "track/track_impl.h"

#define S3_MAX_XML ((size_t)64 << 20)
#define S3_MAX_ENTRIES 100000

/* ---- configuration ---------------------------------------------------------------- */

static const char *env(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

void im__s3_conf_clear(im__s3_conf_t *c) {
  if (!c) return;
  im_free(c->endpoint);
  im_free(c->region);
  im_free(c->access_key);
  im_free(c->secret_key);
  im_free(c->session_token);
  memset(c, 0, sizeof *c);
}

im_status_t im__s3_conf_from_env(im__s3_conf_t *c) {
  memset(c, 0, sizeof *c);
  const char *region = env("AWS_DEFAULT_REGION");
  if (!region) region = env("AWS_REGION");
  if (!region) region = "us-east-1";
  const char *ep = env("MLFLOW_S3_ENDPOINT_URL");
  if (!ep) ep = env("AWS_ENDPOINT_URL_S3");
  if (!ep) ep = env("AWS_ENDPOINT_URL");
  char aws[256];
  if (!ep) {
    snprintf(aws, sizeof aws, "https://s3.%s.amazonaws.com", region);
    ep = aws;
  }
  if (strncasecmp(ep, "http://", 7) && strncasecmp(ep, "https://", 8))
    return im_error(IM_ERR_ARG, "the S3 endpoint '%s' (MLFLOW_S3_ENDPOINT_URL) must start with http:// or https://", ep);
  const char *ak = env("AWS_ACCESS_KEY_ID"), *sk = env("AWS_SECRET_ACCESS_KEY");
  if (!ak || !sk)
    return im_error(IM_ERR_ARG, "S3 artifacts need credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                                "(and MLFLOW_S3_ENDPOINT_URL for MinIO or another S3-compatible store)");
  c->endpoint = im_strdup(ep);
  c->region = im_strdup(region);
  c->access_key = im_strdup(ak);
  c->secret_key = im_strdup(sk);
  const char *tok = env("AWS_SESSION_TOKEN");
  c->session_token = tok ? im_strdup(tok) : NULL;
  if (!c->endpoint || !c->region || !c->access_key || !c->secret_key || (tok && !c->session_token)) {
    im__s3_conf_clear(c);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  size_t n = strlen(c->endpoint);
  while (n > 8 && c->endpoint[n - 1] == '/') c->endpoint[--n] = '\0';
  return IM_OK;
}

/* ---- URIs, URLs, queries ------------------------------------------------------------ */

im_status_t im__s3_split(const char *uri, char **bucket, char **key) {
  *bucket = *key = NULL;
  if (!uri || strncasecmp(uri, "s3://", 5) || !uri[5] || uri[5] == '/')
    return im_error(IM_ERR_ARG, "invalid S3 URI '%s': expected s3://bucket/prefix", uri ? uri : "");
  const char *b = uri + 5;
  size_t bn = strcspn(b, "/");
  for (size_t i = 0; i < bn; i++)
    if (!(islower((unsigned char)b[i]) || isdigit((unsigned char)b[i]) || b[i] == '-' || b[i] == '.' || b[i] == '_'))
      return im_error(IM_ERR_ARG, "invalid S3 URI '%s': bad character in the bucket name", uri);
  if (bn < 1 || bn > 63) return im_error(IM_ERR_ARG, "invalid S3 URI '%s': bucket names have 1 to 63 characters", uri);
  const char *k = b + bn;
  while (*k == '/') k++;
  size_t kn = strlen(k);
  while (kn > 0 && k[kn - 1] == '/') kn--;
  *bucket = im_strndup(b, bn);
  *key = im_strndup(k, kn);
  if (!*bucket || !*key) {
    im_free(*bucket);
    im_free(*key);
    *bucket = *key = NULL;
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  return IM_OK;
}

im_status_t im__s3_url(const char *endpoint, const char *bucket, const char *key, const char *query, char **out) {
  *out = NULL;
  im_buf_t b = {0};
  im_status_t st = im_buf_printf(&b, "%s/", endpoint);
  if (!st) st = im_http_url_encode(&b, bucket, strlen(bucket), NULL);
  if (!st && key && *key) {
    st = im_buf_append(&b, "/", 1);
    if (!st) st = im_http_url_encode(&b, key, strlen(key), "/");
  }
  if (!st && query) st = im_buf_printf(&b, "?%s", query);
  if (!st) st = im_buf_append(&b, "", 1);
  if (st) {
    im_buf_free(&b);
    return st;
  }
  *out = b.data;
  return IM_OK;
}

static im_status_t add_param(im_buf_t *b, const char *name, const char *value) {
  im_status_t st = im_buf_printf(b, "%s%s=", b->len ? "&" : "", name);
  if (!st) st = im_http_url_encode(b, value, strlen(value), NULL);
  return st;
}

im_status_t im__s3_list_query(const char *prefix, const char *delimiter, const char *token, char **out) {
  *out = NULL;
  im_buf_t b = {0};
  im_status_t st = IM_OK; /* names in sorted order: continuation-token, delimiter, list-type, prefix */
  if (token) st = add_param(&b, "continuation-token", token);
  if (!st && delimiter) st = add_param(&b, "delimiter", delimiter);
  if (!st) st = add_param(&b, "list-type", "2");
  if (!st) st = add_param(&b, "prefix", prefix ? prefix : "");
  if (!st) st = im_buf_append(&b, "", 1);
  if (st) {
    im_buf_free(&b);
    return st;
  }
  *out = b.data;
  return IM_OK;
}

/* ---- XML ------------------------------------------------------------------------------- */

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;
static void xml_init(void) { xmlInitParser(); }

/* Silences libxml2's default error printing (library code never prints). */
static void xml_quiet(void *ctx, const char *msg, ...) {
  (void)ctx;
  (void)msg;
}

static im_status_t xml_read(const char *xml, size_t len, const char *root_name, xmlDocPtr *doc_out, xmlNodePtr *root) {
  *doc_out = NULL;
  if (!xml || len == 0) return im_error(IM_ERR_FORMAT, "S3 answer: empty body where XML was expected");
  if (len > S3_MAX_XML) return im_error(IM_ERR_LIMIT, "S3 answer: XML body of %zu bytes is too large", len);
  pthread_once(&xml_once, xml_init);
  xmlSetGenericErrorFunc(NULL, xml_quiet);
  /* no network, no entity substitution, no DTD loading */
  xmlDocPtr doc = xmlReadMemory(xml, (int)len, "s3.xml", NULL, XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  if (!doc) {
    const xmlError *e = xmlGetLastError();
    return im_error(IM_ERR_FORMAT, "S3 answer: malformed XML%s%s", e && e->message ? ": " : "",
                    e && e->message ? e->message : "");
  }
  xmlNodePtr r = xmlDocGetRootElement(doc);
  if (!r || xmlStrcmp(r->name, (const xmlChar *)root_name)) {
    im_status_t st = im_error(IM_ERR_FORMAT, "S3 answer: expected <%s>, got <%s>", root_name,
                              r ? (const char *)r->name : "nothing");
    xmlFreeDoc(doc);
    return st;
  }
  *doc_out = doc;
  *root = r;
  return IM_OK;
}

static int is_elem(xmlNodePtr n, const char *name) {
  return n->type == XML_ELEMENT_NODE && !xmlStrcmp(n->name, (const xmlChar *)name);
}

/* The text of an element (a new string; "" for an empty one). */
static char *text_of(xmlNodePtr n) {
  xmlChar *t = xmlNodeGetContent(n);
  char *s = im_strdup(t ? (const char *)t : "");
  xmlFree(t);
  return s;
}

static xmlNodePtr child(xmlNodePtr n, const char *name) {
  for (xmlNodePtr c = n->children; c; c = c->next)
    if (is_elem(c, name)) return c;
  return NULL;
}

void im__s3_list_clear(im__s3_list_t *l) {
  if (!l) return;
  for (size_t i = 0; i < l->n; i++) im_free(l->keys[i]);
  for (size_t i = 0; i < l->n_prefixes; i++) im_free(l->prefixes[i]);
  im_free(l->keys);
  im_free(l->sizes);
  im_free(l->prefixes);
  im_free(l->next_token);
  memset(l, 0, sizeof *l);
}

static im_status_t parse_size(xmlNodePtr n, int64_t *out) {
  char *t = n ? text_of(n) : NULL;
  if (n && !t) return im_error(IM_ERR_NOMEM, "out of memory");
  im_status_t st = IM_OK;
  if (!t || !*t) {
    st = im_error(IM_ERR_FORMAT, "S3 listing: an object without a <Size>");
  } else {
    char *end;
    errno = 0;
    long long v = strtoll(t, &end, 10);
    if (errno || *end || v < 0 || !isdigit((unsigned char)t[0]))
      st = im_error(IM_ERR_FORMAT, "S3 listing: bad object size '%.40s'", t);
    else
      *out = v;
  }
  im_free(t);
  return st;
}

static im_status_t grow(void **p, size_t n, size_t elem) {
  if (n % 64) return IM_OK;
  void *q = im_realloc(*p, (n + 64) * elem);
  if (!q) return im_error(IM_ERR_NOMEM, "out of memory");
  *p = q;
  return IM_OK;
}

im_status_t im__s3_parse_list(const char *xml, size_t len, im__s3_list_t *out) {
  memset(out, 0, sizeof *out);
  xmlDocPtr doc;
  xmlNodePtr root;
  im_status_t st = xml_read(xml, len, "ListBucketResult", &doc, &root);
  if (st) return st;
  for (xmlNodePtr c = root->children; c && !st; c = c->next) {
    if (out->n + out->n_prefixes >= S3_MAX_ENTRIES) {
      st = im_error(IM_ERR_LIMIT, "S3 listing: more than %d entries in one page", S3_MAX_ENTRIES);
    } else if (is_elem(c, "Contents")) {
      xmlNodePtr k = child(c, "Key");
      if (!k) {
        st = im_error(IM_ERR_FORMAT, "S3 listing: an object without a <Key>");
        break;
      }
      int64_t size = 0;
      if ((st = parse_size(child(c, "Size"), &size))) break;
      if ((st = grow((void **)&out->keys, out->n, sizeof *out->keys)) ||
          (st = grow((void **)&out->sizes, out->n, sizeof *out->sizes)))
        break;
      char *key = text_of(k);
      if (!key) {
        st = im_error(IM_ERR_NOMEM, "out of memory");
        break;
      }
      out->keys[out->n] = key;
      out->sizes[out->n++] = size;
    } else if (is_elem(c, "CommonPrefixes")) {
      xmlNodePtr p = child(c, "Prefix");
      if (!p) {
        st = im_error(IM_ERR_FORMAT, "S3 listing: <CommonPrefixes> without a <Prefix>");
        break;
      }
      if ((st = grow((void **)&out->prefixes, out->n_prefixes, sizeof *out->prefixes))) break;
      char *pre = text_of(p);
      if (!pre) {
        st = im_error(IM_ERR_NOMEM, "out of memory");
        break;
      }
      out->prefixes[out->n_prefixes++] = pre;
    } else if (is_elem(c, "IsTruncated")) {
      char *t = text_of(c);
      if (!t) st = im_error(IM_ERR_NOMEM, "out of memory");
      else if (!strcmp(t, "true")) out->truncated = 1;
      else if (strcmp(t, "false")) st = im_error(IM_ERR_FORMAT, "S3 listing: <IsTruncated> is '%.20s'", t);
      im_free(t);
    } else if (is_elem(c, "NextContinuationToken")) {
      im_free(out->next_token);
      if (!(out->next_token = text_of(c))) st = im_error(IM_ERR_NOMEM, "out of memory");
    }
  }
  if (!st && out->truncated && (!out->next_token || !*out->next_token))
    st = im_error(IM_ERR_FORMAT, "S3 listing: truncated without a <NextContinuationToken>");
  xmlFreeDoc(doc);
  if (st) im__s3_list_clear(out);
  return st;
}

static im_status_t element_text(const char *xml, size_t len, const char *root_name, const char *name, char **out) {
  *out = NULL;
  xmlDocPtr doc;
  xmlNodePtr root;
  im_status_t st = xml_read(xml, len, root_name, &doc, &root);
  if (st) return st;
  xmlNodePtr n = child(root, name);
  if (n && !(*out = text_of(n))) st = im_error(IM_ERR_NOMEM, "out of memory");
  xmlFreeDoc(doc);
  return st;
}

im_status_t im__s3_parse_error(const char *xml, size_t len, char **code, char **message) {
  *code = *message = NULL;
  im_status_t st = element_text(xml, len, "Error", "Code", code);
  if (!st) st = element_text(xml, len, "Error", "Message", message);
  if (st) {
    im_free(*code);
    *code = NULL;
  }
  return st;
}

im_status_t im__s3_parse_upload_id(const char *xml, size_t len, char **upload_id) {
  im_status_t st = element_text(xml, len, "InitiateMultipartUploadResult", "UploadId", upload_id);
  if (!st && (!*upload_id || !**upload_id)) {
    im_free(*upload_id);
    *upload_id = NULL;
    st = im_error(IM_ERR_FORMAT, "S3 answer: no <UploadId> in the multipart upload's answer");
  }
  return st;
}
