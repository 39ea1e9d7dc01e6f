/* Compiles a pipeline to Kubeflow Pipelines v2 IR YAML, as the KFP SDK would
 * for container components: runtime parameters on root.inputDefinitions, one
 * component and executor per step running the imops image (outputs written to
 * KFP's output files by `imops pipeline exec`), conditional steps wrapped in
 * comp-condition-N groups with triggerPolicy.condition in CEL over
 * pipelinechannel inputs (dsl.If), dependentTasks, caching, retries,
 * resources, and a second document (PlatformSpec) mounting the workspace PVC
 * on every executor (kfp-kubernetes' pvcMount). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imops/version.h"
#include "imops/yaml.h"
#include "pipeline/pipeline_impl.h"

#define SDK_VERSION "kfp-2.14.3"

static const char *kfp_type(im__ptype_t t) {
  static const char *names[] = {"STRING", "NUMBER_INTEGER", "NUMBER_DOUBLE", "BOOLEAN"};
  return names[t];
}

static const char *py_type(im__ptype_t t) {
  static const char *names[] = {"str", "int", "float", "bool"};
  return names[t];
}

/* The group (condition-N) number of each conditional step, 0 for the others. */
static void number_groups(const im_pipeline_t *p, int *group) {
  int k = 0;
  for (int i = 0; i < p->n_steps; i++) group[i] = p->steps[i].when ? ++k : 0;
}

/* Adds the references of a template to params (names) and outs ("step-output" -> [step, output]). */
static void refs_of_tmpl(const im__tmpl_t *t, json_t *params, json_t *outs) {
  for (int i = 0; i < t->n; i++) {
    const im__tpart_t *pt = &t->parts[i];
    if (pt->kind == 1) json_object_set_new(params, pt->text, json_true());
    if (pt->kind == 2) {
      char key[300];
      snprintf(key, sizeof key, "%s-%s", pt->text, pt->output);
      json_object_set_new(outs, key, json_pack("[ss]", pt->text, pt->output));
    }
  }
}

static void refs_of_expr(const im_pipeline_expr_t *e, json_t *params, json_t *outs) {
  if (!e) return;
  if (e->k == IM__E_PARAM) json_object_set_new(params, e->name, json_true());
  if (e->k == IM__E_OUTPUT) {
    char key[300];
    snprintf(key, sizeof key, "%s-%s", e->name, e->output);
    json_object_set_new(outs, key, json_pack("[ss]", e->name, e->output));
  }
  refs_of_expr(e->a, params, outs);
  refs_of_expr(e->b, params, outs);
}

static void step_refs(const im__pstep_t *s, json_t *params, json_t *outs) {
  for (int i = 0; i < s->n_args; i++) refs_of_tmpl(&s->args[i], params, outs);
  for (int i = 0; i < s->n_outputs; i++) refs_of_tmpl(&s->outputs[i].file, params, outs);
}

static json_t *param_type(const im_pipeline_t *p, const char *name) {
  int pi = im__pipeline_param_index(p, name);
  return json_pack("{s:s}", "parameterType", kfp_type(pi >= 0 ? p->params[pi].type : IM__PT_STRING));
}

/* inputDefinitions.parameters for referenced params and outputs, names prefixed (e.g. "pipelinechannel--"). */
static json_t *input_defs(const im_pipeline_t *p, json_t *params, json_t *outs, const char *prefix) {
  json_t *in = json_object();
  const char *key;
  json_t *v;
  char name[300];
  json_object_foreach(params, key, v) {
    snprintf(name, sizeof name, "%s%s", prefix, key);
    json_object_set_new(in, name, param_type(p, key));
  }
  json_object_foreach(outs, key, v) {
    snprintf(name, sizeof name, "%s%s", prefix, key);
    json_object_set_new(in, name, json_pack("{s:s}", "parameterType", "STRING"));
  }
  if (json_object_size(in)) return json_pack("{s:o}", "parameters", in);
  json_decref(in);
  return NULL;
}

/* A reference to step q's output o, as seen from the root dag. */
static json_t *root_output_source(const im_pipeline_t *p, const int *group, int q, const char *o) {
  char task[80], key[300];
  if (group[q]) {
    snprintf(task, sizeof task, "condition-%d", group[q]);
    snprintf(key, sizeof key, "pipelinechannel--%s-%s", p->steps[q].name, o);
  } else {
    snprintf(task, sizeof task, "%s", p->steps[q].name);
    snprintf(key, sizeof key, "%s", o);
  }
  return json_pack("{s:{s:s,s:s}}", "taskOutputParameter", "producerTask", task, "outputParameterKey", key);
}

static json_t *dependent_tasks(const im_pipeline_t *p, const int *group, int i) {
  json_t *a = json_array();
  const im__pstep_t *s = &p->steps[i];
  for (int k = 0; k < s->n_deps; k++) {
    int d = s->deps[k];
    char task[80];
    if (group[d]) snprintf(task, sizeof task, "condition-%d", group[d]);
    else snprintf(task, sizeof task, "%s", p->steps[d].name);
    int dup = 0;
    for (size_t j = 0; j < json_array_size(a); j++) dup |= !strcmp(json_string_value(json_array_get(a, j)), task);
    if (!dup) json_array_append_new(a, json_string(task));
  }
  /* sorted, as the SDK writes them */
  size_t n = json_array_size(a);
  for (size_t x = 1; x < n; x++)
    for (size_t y = x; y > 0 && strcmp(json_string_value(json_array_get(a, y - 1)), json_string_value(json_array_get(a, y))) > 0; y--) {
      json_t *t = json_incref(json_array_get(a, y));
      json_array_set(a, y, json_array_get(a, y - 1));
      json_array_set_new(a, y - 1, t);
    }
  return a;
}

/* The task of step i inside its dag; inner: inside a condition group (inputs come as pipelinechannel--x). */
static json_t *step_task(const im_pipeline_t *p, const int *group, int i, int inner) {
  const im__pstep_t *s = &p->steps[i];
  json_t *params = json_object(), *outs = json_object(), *inputs = json_object();
  step_refs(s, params, outs);
  const char *key;
  json_t *v;
  json_object_foreach(params, key, v) {
    char chan[300];
    snprintf(chan, sizeof chan, "pipelinechannel--%s", key);
    json_object_set_new(inputs, key, json_pack("{s:s}", "componentInputParameter", inner ? chan : key));
  }
  json_object_foreach(outs, key, v) {
    int q = im_pipeline_step_index(p, json_string_value(json_array_get(v, 0)));
    if (inner) {
      char chan[300];
      snprintf(chan, sizeof chan, "pipelinechannel--%s", key);
      json_object_set_new(inputs, key, json_pack("{s:s}", "componentInputParameter", chan));
    } else {
      json_object_set_new(inputs, key, root_output_source(p, group, q, json_string_value(json_array_get(v, 1))));
    }
  }
  char comp[100];
  snprintf(comp, sizeof comp, "comp-%s", s->name);
  json_t *t = json_object();
  json_object_set_new(t, "cachingOptions", s->cache ? json_pack("{s:b}", "enableCache", 1) : json_object());
  json_object_set_new(t, "componentRef", json_pack("{s:s}", "name", comp));
  if (!inner) {
    json_t *deps = dependent_tasks(p, group, i);
    if (json_array_size(deps)) json_object_set_new(t, "dependentTasks", deps);
    else json_decref(deps);
  }
  if (json_object_size(inputs)) json_object_set_new(t, "inputs", json_pack("{s:o}", "parameters", inputs));
  else json_decref(inputs);
  if (s->retries)
    json_object_set_new(t, "retryPolicy",
                        json_pack("{s:I,s:s,s:f,s:s}", "maxRetryCount", (json_int_t)s->retries, "backoffDuration", "0s",
                                  "backoffFactor", 2.0, "backoffMaxDuration", "3600s"));
  json_object_set_new(t, "taskInfo", json_pack("{s:s}", "name", s->name));
  json_decref(params);
  json_decref(outs);
  return t;
}

static json_t *step_component(const im_pipeline_t *p, int i) {
  const im__pstep_t *s = &p->steps[i];
  json_t *params = json_object(), *outs = json_object();
  step_refs(s, params, outs);
  char exec[100];
  snprintf(exec, sizeof exec, "exec-%s", s->name);
  json_t *c = json_pack("{s:s}", "executorLabel", exec), *in = input_defs(p, params, outs, "");
  if (in) json_object_set_new(c, "inputDefinitions", in);
  if (s->n_outputs) {
    json_t *od = json_object();
    for (int k = 0; k < s->n_outputs; k++)
      json_object_set_new(od, s->outputs[k].name, json_pack("{s:s}", "parameterType", "STRING"));
    json_object_set_new(c, "outputDefinitions", json_pack("{s:o}", "parameters", od));
  }
  json_decref(params);
  json_decref(outs);
  return c;
}

static json_t *condition_component(const im_pipeline_t *p, const int *group, int i) {
  const im__pstep_t *s = &p->steps[i];
  json_t *params = json_object(), *outs = json_object();
  step_refs(s, params, outs);
  refs_of_expr(s->when, params, outs);
  char chan[300];
  json_t *dag = json_pack("{s:{s:o}}", "tasks", s->name, step_task(p, group, i, 1));
  json_t *c = json_pack("{s:o}", "dag", dag), *in = input_defs(p, params, outs, "pipelinechannel--");
  if (in) json_object_set_new(c, "inputDefinitions", in);
  if (s->n_outputs) {
    json_t *od = json_object(), *dout = json_object();
    for (int k = 0; k < s->n_outputs; k++) {
      snprintf(chan, sizeof chan, "pipelinechannel--%s-%s", s->name, s->outputs[k].name);
      json_object_set_new(od, chan, json_pack("{s:s}", "parameterType", "STRING"));
      json_object_set_new(dout, chan,
                          json_pack("{s:{s:s,s:s}}", "valueFromParameter", "producerSubtask", s->name,
                                    "outputParameterKey", s->outputs[k].name));
    }
    json_object_set_new(dag, "outputs", json_pack("{s:o}", "parameters", dout));
    json_object_set_new(c, "outputDefinitions", json_pack("{s:o}", "parameters", od));
  }
  json_decref(params);
  json_decref(outs);
  return c;
}

static json_t *condition_task(const im_pipeline_t *p, const int *group, int i) {
  const im__pstep_t *s = &p->steps[i];
  json_t *params = json_object(), *outs = json_object(), *in = json_object();
  step_refs(s, params, outs);
  refs_of_expr(s->when, params, outs);
  const char *key;
  json_t *v;
  char chan[300], name[64];
  json_object_foreach(params, key, v) {
    snprintf(chan, sizeof chan, "pipelinechannel--%s", key);
    json_object_set_new(in, chan, json_pack("{s:s}", "componentInputParameter", key));
  }
  json_object_foreach(outs, key, v) {
    snprintf(chan, sizeof chan, "pipelinechannel--%s", key);
    int q = im_pipeline_step_index(p, json_string_value(json_array_get(v, 0)));
    json_object_set_new(in, chan, root_output_source(p, group, q, json_string_value(json_array_get(v, 1))));
  }
  snprintf(name, sizeof name, "condition-%d", group[i]);
  char comp[80];
  snprintf(comp, sizeof comp, "comp-condition-%d", group[i]);
  json_t *t = json_pack("{s:{s:s}}", "componentRef", "name", comp);
  json_t *deps = dependent_tasks(p, group, i);
  if (json_array_size(deps)) json_object_set_new(t, "dependentTasks", deps);
  else json_decref(deps);
  if (json_object_size(in)) json_object_set_new(t, "inputs", json_pack("{s:o}", "parameters", in));
  else json_decref(in);
  json_object_set_new(t, "taskInfo", json_pack("{s:s}", "name", name));
  char *cel = im__expr_cel(p, s->when);
  json_object_set_new(t, "triggerPolicy", json_pack("{s:s}", "condition", cel ? cel : "true"));
  im_free(cel);
  json_decref(params);
  json_decref(outs);
  return t;
}

static json_t *executor(const im_pipeline_t *p, int i, const im_pipeline_kfp_opts_t *o, const char *home) {
  const im__pstep_t *s = &p->steps[i];
  json_t *args = json_array();
  if (s->n_outputs) {
    json_array_append_new(args, json_string("pipeline"));
    json_array_append_new(args, json_string("exec"));
    for (int k = 0; k < s->n_outputs; k++) {
      const im__pout_t *out = &s->outputs[k];
      char buf[600];
      snprintf(buf, sizeof buf, "%s={{$.outputs.parameters['%s'].output_file}}", out->name, out->name);
      json_array_append_new(args, json_string("--output"));
      json_array_append_new(args, json_string(buf));
      if (out->json_key) {
        snprintf(buf, sizeof buf, "%s=%s", out->name, out->json_key);
        json_array_append_new(args, json_string("--json-key"));
        json_array_append_new(args, json_string(buf));
      }
      if (out->file.n) {
        char *f = im__tmpl_kfp(&out->file);
        snprintf(buf, sizeof buf, "%s=%s", out->name, f ? f : "");
        im_free(f);
        json_array_append_new(args, json_string("--file"));
        json_array_append_new(args, json_string(buf));
      }
    }
    json_array_append_new(args, json_string("--"));
  }
  for (int k = 0; k < s->n_args; k++) {
    char *a = im__tmpl_kfp(&s->args[k]);
    json_array_append_new(args, json_string(a ? a : ""));
    im_free(a);
  }
  json_t *c = json_pack("{s:s,s:[s],s:o}", "image", o && o->image ? o->image : "imops:" IM_VERSION_STRING, "command",
                        o && o->binary ? o->binary : "/usr/local/bin/imops", "args", args);
  if (home) json_object_set_new(c, "env", json_pack("[{s:s,s:s}]", "name", "IMOPS_HOME", "value", home));
  json_t *res = json_object();
  if (s->cpu) json_object_set_new(res, "resourceCpuLimit", json_string(s->cpu));
  if (s->memory) json_object_set_new(res, "resourceMemoryLimit", json_string(s->memory));
  if (s->gpus) {
    char cnt[24];
    snprintf(cnt, sizeof cnt, "%lld", (long long)s->gpus);
    json_object_set_new(res, "accelerator", json_pack("{s:s,s:s}", "resourceType", s->gpu_type ? s->gpu_type : "nvidia.com/gpu",
                                                      "resourceCount", cnt));
  }
  if (json_object_size(res)) json_object_set_new(c, "resources", res);
  else json_decref(res);
  return json_pack("{s:o}", "container", c);
}

static char *header_comment(const im_pipeline_t *p) {
  im_buf_t b = {0};
  im_buf_printf(&b, "PIPELINE DEFINITION\nName: %s\n", p->name);
  if (p->description) {
    char *d = im_strdup(p->description);
    for (char *c = d; c && *c; c++)
      if (*c == '\n') *c = ' ';
    im_buf_printf(&b, "Description: %s\n", d ? d : "");
    im_free(d);
  }
  if (p->n_params) im_buf_printf(&b, "Inputs:\n");
  for (int i = 0; i < p->n_params; i++) {
    const im__pparam_t *pp = &p->params[i];
    im_buf_printf(&b, "   %s: %s", pp->name, py_type(pp->type));
    if (pp->def) {
      char *v = im__pipeline_value_str(pp->def);
      if (pp->type == IM__PT_STRING) im_buf_printf(&b, " [Default: '%s']", v ? v : "");
      else if (pp->type == IM__PT_BOOL) im_buf_printf(&b, " [Default: %s]", json_is_true(pp->def) ? "True" : "False");
      else im_buf_printf(&b, " [Default: %s]", v ? v : "");
      im_free(v);
    }
    im_buf_printf(&b, "\n");
  }
  if (b.len && b.data[b.len - 1] == '\n') b.len--;
  im_buf_append(&b, "", 1);
  return b.data;
}

im_status_t im_pipeline_compile_kfp(const im_pipeline_t *p, const im_pipeline_kfp_opts_t *o, im_buf_t *out) {
  int *group = im_calloc((size_t)p->n_steps, sizeof *group);
  if (!group) return im_error(IM_ERR_NOMEM, "out of memory");
  number_groups(p, group);
  const char *pvc = o && o->pvc ? o->pvc : "workspace-surface";
  const char *mount = o && o->mount_path ? o->mount_path : "/workspace";
  char home[512];
  snprintf(home, sizeof home, "%s", mount); /* the image's IMOPS_HOME and WORKDIR (deploy/Dockerfile) */

  json_t *components = json_object(), *executors = json_object(), *tasks = json_object(), *root_in = json_object(),
         *plat_exec = json_object();
  /* components in name order, as the SDK writes them */
  for (int k = 0; k < p->n_steps; k++) {
    int i = p->order[k];
    const im__pstep_t *s = &p->steps[i];
    char name[100];
    snprintf(name, sizeof name, "comp-%s", s->name);
    json_object_set_new(components, name, step_component(p, i));
    snprintf(name, sizeof name, "exec-%s", s->name);
    json_object_set_new(executors, name, executor(p, i, o, *pvc ? home : NULL));
    if (*pvc)
      json_object_set_new(plat_exec, name,
                          json_pack("{s:[{s:s,s:s,s:{s:{s:s}}}]}", "pvcMount", "constant", pvc, "mountPath", mount,
                                    "pvcNameParameter", "runtimeValue", "constant", pvc));
    if (group[i]) {
      snprintf(name, sizeof name, "comp-condition-%d", group[i]);
      json_object_set_new(components, name, condition_component(p, group, i));
      snprintf(name, sizeof name, "condition-%d", group[i]);
      json_object_set_new(tasks, name, condition_task(p, group, i));
    } else {
      json_object_set_new(tasks, s->name, step_task(p, group, i, 0));
    }
  }
  for (int i = 0; i < p->n_params; i++) {
    const im__pparam_t *pp = &p->params[i];
    json_t *d = json_pack("{s:s}", "parameterType", kfp_type(pp->type));
    if (pp->def) {
      json_object_set_new(d, "defaultValue", pp->type == IM__PT_INT ? json_real((double)json_integer_value(pp->def))
                                                                    : json_deep_copy(pp->def));
      json_object_set_new(d, "isOptional", json_true());
    }
    if (pp->description) json_object_set_new(d, "description", json_string(pp->description));
    json_object_set_new(root_in, pp->name, d);
  }
  json_t *root = json_pack("{s:{s:o}}", "dag", "tasks", tasks);
  if (json_object_size(root_in)) json_object_set_new(root, "inputDefinitions", json_pack("{s:o}", "parameters", root_in));
  else json_decref(root_in);
  json_t *info = json_pack("{s:s}", "name", p->name);
  if (p->description) json_object_set_new(info, "description", json_string(p->description));
  json_t *doc = json_pack("{s:o,s:{s:o},s:o,s:o,s:s,s:s}", "components", components, "deploymentSpec", "executors",
                          executors, "pipelineInfo", info, "root", root, "schemaVersion", "2.1.0", "sdkVersion",
                          SDK_VERSION);
  char *comment = header_comment(p);
  im_status_t st = doc && comment ? im_yaml_emit_json(doc, comment, out) : im_error(IM_ERR_NOMEM, "out of memory");
  if (!st && *pvc) {
    json_t *plat = json_pack("{s:{s:{s:{s:O}}}}", "platforms", "kubernetes", "deploymentSpec", "executors", plat_exec);
    st = im_buf_printf(out, "---\n");
    if (!st) st = plat ? im_yaml_emit_json(plat, NULL, out) : im_error(IM_ERR_NOMEM, "out of memory");
    json_decref(plat);
  }
  im_free(comment);
  json_decref(doc);
  json_decref(plat_exec);
  im_free(group);
  return st;
}
