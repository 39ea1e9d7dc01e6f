/* Internal contracts of the pipeline module: the parsed pipeline, condition
 * expression trees, reference templates, and helpers shared by the parser,
 * the runner and the Kubeflow compiler. Only src/pipeline (and its tests and
 * fuzzers) include this. */
#ifndef IMOPS_PIPELINE_IMPL_H
#define IMOPS_PIPELINE_IMPL_H

#include <jansson.h>

#include "imops/core.h"
#include "imops/pipeline.h"

typedef enum { IM__PT_STRING = 0, IM__PT_INT, IM__PT_FLOAT, IM__PT_BOOL } im__ptype_t;
const char *im__ptype_name(im__ptype_t t);

typedef struct {
  char *name;
  im__ptype_t type;
  json_t *def;      /* default (typed), NULL: required */
  json_t *allowed;  /* array of typed values, NULL: any */
  char *description;
  int line, col;
} im__pparam_t;

/* Condition expressions. */
typedef enum {
  IM__E_OR = 0, IM__E_AND, IM__E_NOT, IM__E_EQ, IM__E_NE, IM__E_IN, IM__E_NOT_IN, IM__E_TRUTH,
  IM__E_PARAM, IM__E_OUTPUT, IM__E_CONST
} im__ekind_t;

struct im_pipeline_expr {
  im__ekind_t k;
  struct im_pipeline_expr *a, *b; /* operands */
  int n;                          /* IN / NOT IN: list */
  struct im_pipeline_expr **items;
  char *name;   /* PARAM: parameter; OUTPUT: step */
  char *output; /* OUTPUT: output name */
  json_t *val;  /* CONST */
  int col;      /* 1-based column in the text */
};

/* A string with {{params.x}} / {{steps.s.outputs.o}} references, split into parts. */
typedef struct {
  int kind; /* 0 text, 1 param, 2 output */
  char *text; /* text, or the parameter / step name */
  char *output;
} im__tpart_t;

typedef struct {
  int n;
  im__tpart_t *parts;
} im__tmpl_t;

typedef struct {
  char *name;
  char *json_key; /* NULL: none */
  im__tmpl_t file; /* n == 0: none */
} im__pout_t;

typedef struct {
  im__tmpl_t path;
  char **include, **exclude;
  int n_include, n_exclude;
} im__pinput_t;

typedef struct {
  char *name;
  int line, col;
  im__tmpl_t *args;
  int n_args;
  char *when_text;
  struct im_pipeline_expr *when;
  im__pout_t *outputs;
  int n_outputs;
  im__pinput_t *inputs;
  int n_inputs;
  char *cpu, *memory, *gpu_type;
  int64_t gpus;
  int64_t retries;
  int cache;
  char *description;
  int *deps; /* step indices: after: and implied */
  int n_deps;
  char **refs_params; /* distinct parameters referenced (args, when, inputs, outputs) */
  int n_refs_params;
} im__pstep_t;

struct im_pipeline {
  char *name, *description, *file;
  im__pparam_t *params;
  int n_params;
  im__pstep_t *steps;
  int n_steps;
  int *order;
  char *spec_json;
};

int im__pipeline_param_index(const im_pipeline_t *p, const char *name);
/** A typed value as a command-line string (im_free). */
char *im__pipeline_value_str(const json_t *v);
/** Renders a template with values (params object, outputs object). IM_ERR_NOT_FOUND for a missing output. */
im_status_t im__tmpl_render(const im__tmpl_t *t, const json_t *params, const json_t *outputs, char **out);
/** Renders a template for Kubeflow: references become {{$.inputs.parameters['name']}} with the names
 * params -> "<param>", outputs -> "<step>-<output>". */
char *im__tmpl_kfp(const im__tmpl_t *t);
/** Loads JSON text (NULL or "" = empty object); NULL on a parse error (with im_error set). */
json_t *im__json_obj(const char *text);
/** Evaluates a tree against loaded values. */
im_status_t im__expr_eval(const struct im_pipeline_expr *e, const json_t *params, const json_t *outputs, int *result);
/** The condition as a CEL expression over pipelinechannel inputs (im_free). */
char *im__expr_cel(const im_pipeline_t *p, const struct im_pipeline_expr *e);

#endif
