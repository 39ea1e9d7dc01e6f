/* YAML documents for the configuration files imops reads (sweep configs,
 * pipeline files) and writes (Kubeflow, Katib): a libyaml parse into a small
 * tree that keeps each node's source position, so that errors can name the
 * file, line and column; the YAML 1.2 core schema for plain scalars; and an
 * emitter from JSON (jansson) trees to block-style YAML.
 *
 *   im_yaml_doc_t *d;
 *   if (im_yaml_load_file("sweep.yaml", &d)) { ... im_last_error() names file:line:col ... }
 *   const im_yaml_node_t *m = im_yaml_map_get(im_yaml_root(d), "method");
 *   if (m && im_yaml_is_str(m)) ... m->str ...
 *   im_yaml_free(d);
 *
 * Limits (outside input): documents over 16 MiB, nesting deeper than 64 and
 * more than 1,000,000 nodes are errors; duplicate mapping keys are errors;
 * mapping keys must be scalars; anchors and aliases are resolved (an alias
 * shares its target's node). Only the first document of a stream is read;
 * a second one is an error.
 */
#ifndef IMOPS_YAML_H
#define IMOPS_YAML_H

#include <stddef.h>
#include <stdint.h>

#include "imops/core.h"
#include "imops/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  IM_YAML_SCALAR = 0,
  IM_YAML_SEQ = 1,
  IM_YAML_MAP = 2,
} im_yaml_kind_t;

/** What a scalar is under the YAML 1.2 core schema (quoted scalars and those
 * tagged !!str are strings). */
typedef enum {
  IM_YAML_STR = 0,
  IM_YAML_NULL = 1,  /* null, Null, NULL, ~, or empty */
  IM_YAML_BOOL = 2,  /* true/false in the three spellings */
  IM_YAML_INT = 3,   /* decimal, 0o octal, 0x hex, with sign */
  IM_YAML_FLOAT = 4, /* decimal with '.' or exponent, .inf, .nan */
} im_yaml_type_t;

typedef struct im_yaml_node im_yaml_node_t;
struct im_yaml_node {
  im_yaml_kind_t kind;
  int line, col;       /* 1-based position of the node's start */
  /* scalars */
  const char *str;     /* the text, NUL-terminated (may contain NULs: len) */
  size_t len;
  im_yaml_type_t type; /* resolved type */
  int64_t i;           /* IM_YAML_INT value, IM_YAML_BOOL 0/1 */
  double d;            /* IM_YAML_INT and IM_YAML_FLOAT value */
  /* sequences (items) and mappings (keys[i] -> items[i]) */
  size_t n;
  im_yaml_node_t **items;
  im_yaml_node_t **keys; /* mappings: scalar keys, in source order */
};

typedef struct im_yaml_doc im_yaml_doc_t;

/** Parses text (len bytes). name is used in error messages ("name:line:col:
 * what"); NULL: "<yaml>". An empty document gives a root null scalar.
 * IM_ERR_FORMAT for bad YAML or a limit, IM_ERR_NOMEM. */
IM_NODISCARD im_status_t im_yaml_parse(const char *text, size_t len, const char *name, im_yaml_doc_t **out);
/** Reads and parses a file (IM_ERR_IO when it cannot be read). */
IM_NODISCARD im_status_t im_yaml_load_file(const char *path, im_yaml_doc_t **out);
void im_yaml_free(im_yaml_doc_t *d);

const im_yaml_node_t *im_yaml_root(const im_yaml_doc_t *d);
/** The name given to the parse (for error messages). */
const char *im_yaml_name(const im_yaml_doc_t *d);

/** The value of key in mapping m, or NULL (also when m is not a mapping). */
const im_yaml_node_t *im_yaml_map_get(const im_yaml_node_t *m, const char *key);
/** 1 when node is a scalar of that type. */
int im_yaml_is(const im_yaml_node_t *node, im_yaml_type_t type);
/** 1 for a scalar that is a number (INT or FLOAT). */
int im_yaml_is_number(const im_yaml_node_t *node);

/** Converts a node to a jansson tree (json_t *, returned as void * so that
 * this header does not need jansson.h): mappings to objects, sequences to
 * arrays, scalars by their type (.inf/.nan become strings "inf"/"nan" since
 * JSON has none). NULL on allocation failure. The caller json_decref's it. */
void *im_yaml_to_json(const im_yaml_node_t *node);

/** Appends json (a json_t *) to b as a block-style YAML document (keys in the
 * object's order, strings quoted when the plain form would read back as
 * another type or is not plain-safe). comment, when not NULL, is written
 * first as "# " lines. */
IM_NODISCARD im_status_t im_yaml_emit_json(const void *json, const char *comment, im_buf_t *b);

#ifdef __cplusplus
}
#endif
#endif
