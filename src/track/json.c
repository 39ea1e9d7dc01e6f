/* The tracking entities as JSON in MLflow's REST shapes (see track_json.h). */
#include <math.h>
#include <stdio.h>

#include "imops/track_json.h"

json_t *im_track_double_json(double v) {
  if (isnan(v)) return json_string("NaN");
  if (isinf(v)) return json_string(v > 0 ? "Infinity" : "-Infinity");
  return json_real(v);
}

static json_t *tags_json(const im_track_tag_t *t, int n) {
  json_t *a = json_array();
  for (int i = 0; a && i < n; i++)
    json_array_append_new(a, json_pack("{s:s, s:s}", "key", t[i].key ? t[i].key : "", "value", t[i].value ? t[i].value : ""));
  return a;
}

static void set_str(json_t *o, const char *k, const char *v) {
  if (v && *v) json_object_set_new(o, k, json_string(v));
}

static void set_time(json_t *o, const char *k, int64_t t) {
  if (t != IM_TRACK_NO_TIME) json_object_set_new(o, k, json_integer(t));
}

json_t *im_track_experiment_json(const im_track_experiment_t *e) {
  json_t *o = json_object();
  if (!o) return NULL;
  set_str(o, "experiment_id", e->experiment_id);
  set_str(o, "name", e->name);
  set_str(o, "artifact_location", e->artifact_location);
  set_str(o, "lifecycle_stage", e->lifecycle_stage);
  set_time(o, "creation_time", e->creation_time);
  set_time(o, "last_update_time", e->last_update_time);
  if (e->n_tags) json_object_set_new(o, "tags", tags_json(e->tags, e->n_tags));
  return o;
}

json_t *im_track_metric_json(const im_track_metric_t *m) {
  json_t *o = json_object();
  if (!o) return NULL;
  json_object_set_new(o, "key", json_string(m->key ? m->key : ""));
  json_object_set_new(o, "value", im_track_double_json(m->value));
  json_object_set_new(o, "timestamp", json_integer(m->timestamp));
  json_object_set_new(o, "step", json_integer(m->step));
  return o;
}

json_t *im_track_run_json(const im_track_run_t *r) {
  json_t *info = json_object(), *data = json_object(), *o = json_object();
  if (!info || !data || !o) {
    json_decref(info);
    json_decref(data);
    json_decref(o);
    return NULL;
  }
  set_str(info, "run_id", r->run_id);
  set_str(info, "run_uuid", r->run_id);
  set_str(info, "run_name", r->run_name);
  set_str(info, "experiment_id", r->experiment_id);
  json_object_set_new(info, "user_id", json_string(r->user_id ? r->user_id : ""));
  json_object_set_new(info, "status", json_string(im_track_run_status_name(r->status)));
  set_time(info, "start_time", r->start_time);
  set_time(info, "end_time", r->end_time);
  set_str(info, "artifact_uri", r->artifact_uri);
  set_str(info, "lifecycle_stage", r->lifecycle_stage);
  json_t *metrics = json_array();
  for (int i = 0; metrics && i < r->n_metrics; i++) json_array_append_new(metrics, im_track_metric_json(&r->metrics[i]));
  if (r->n_metrics) json_object_set_new(data, "metrics", metrics);
  else json_decref(metrics);
  if (r->n_params) json_object_set_new(data, "params", tags_json(r->params, r->n_params));
  if (r->n_tags) json_object_set_new(data, "tags", tags_json(r->tags, r->n_tags));
  json_object_set_new(o, "info", info);
  json_object_set_new(o, "data", data);
  json_object_set_new(o, "inputs", json_object());
  return o;
}

json_t *im_track_model_version_json(const im_track_model_version_t *v) {
  json_t *o = json_object();
  if (!o) return NULL;
  char ver[32];
  snprintf(ver, sizeof ver, "%lld", (long long)v->version);
  set_str(o, "name", v->name);
  json_object_set_new(o, "version", json_string(ver));
  set_time(o, "creation_timestamp", v->creation_time);
  set_time(o, "last_updated_timestamp", v->last_updated_time);
  set_str(o, "user_id", v->user_id);
  json_object_set_new(o, "current_stage", json_string(v->current_stage ? v->current_stage : "None"));
  set_str(o, "description", v->description);
  set_str(o, "source", v->source);
  set_str(o, "run_id", v->run_id);
  set_str(o, "run_link", v->run_link);
  json_object_set_new(o, "status", json_string(v->status && *v->status ? v->status : "READY"));
  set_str(o, "status_message", v->status_message);
  if (v->n_tags) json_object_set_new(o, "tags", tags_json(v->tags, v->n_tags));
  if (v->n_aliases) {
    json_t *a = json_array();
    for (int i = 0; a && i < v->n_aliases; i++) json_array_append_new(a, json_string(v->aliases[i]));
    json_object_set_new(o, "aliases", a);
  }
  return o;
}

json_t *im_track_model_json(const im_track_model_t *m) {
  json_t *o = json_object();
  if (!o) return NULL;
  set_str(o, "name", m->name);
  set_time(o, "creation_timestamp", m->creation_time);
  set_time(o, "last_updated_timestamp", m->last_updated_time);
  set_str(o, "user_id", m->user_id);
  set_str(o, "description", m->description);
  if (m->n_latest) {
    json_t *a = json_array();
    for (int i = 0; a && i < m->n_latest; i++) json_array_append_new(a, im_track_model_version_json(&m->latest_versions[i]));
    json_object_set_new(o, "latest_versions", a);
  }
  if (m->n_tags) json_object_set_new(o, "tags", tags_json(m->tags, m->n_tags));
  if (m->n_aliases) {
    json_t *a = json_array();
    for (int i = 0; a && i < m->n_aliases; i++) {
      char ver[32];
      snprintf(ver, sizeof ver, "%lld", (long long)m->aliases[i].version);
      json_array_append_new(a, json_pack("{s:s, s:s}", "alias", m->aliases[i].alias, "version", ver));
    }
    json_object_set_new(o, "aliases", a);
  }
  return o;
}
