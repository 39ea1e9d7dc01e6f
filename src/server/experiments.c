/* MLflow experiment endpoints: create, get, get-by-name, search (POST and
 * GET), update (rename), delete, restore, set-experiment-tag. Thin over the
 * store; artifact locations are shown as clients should use them
 * (mlflow-artifacts:/... for what this server stores). */
#include <string.h>

#include "imops/track_json.h"
#include "server/server_impl.h"

/* The experiment as JSON, with its artifact location as clients should see it. */
static json_t *experiment_json(srv_ctx_t *c, const im_track_experiment_t *e) {
  json_t *j = im_track_experiment_json(e);
  if (j && e->artifact_location && *e->artifact_location) {
    char *pub = im__srv_public_uri(c->srv, e->artifact_location);
    json_t *v = pub ? json_string(pub) : NULL;
    im_free(pub);
    if (!v || json_object_set_new(j, "artifact_location", v)) {
      json_decref(j);
      return NULL;
    }
  }
  return j;
}

static im_status_t answer_experiment(srv_ctx_t *c, im_status_t st, im_track_experiment_t *e) {
  if (st) return im__srv_store_fail(c, st);
  json_t *j = im__srv_obj1("experiment", experiment_json(c, e));
  im_track_experiment_free(e);
  return j ? im__srv_ok(c, j) : im_error(IM_ERR_NOMEM, "out of memory");
}

static im_status_t create(srv_ctx_t *c) {
  const char *name;
  im_status_t st = im__srv_req(c, "name", &name);
  if (st) return st;
  im_track_kv_t *tags;
  int n;
  if ((st = im__srv_kvs(c, "tags", &tags, &n))) return st;
  char *id = NULL;
  st = im_track_experiment_create(c->st, name, im__srv_str(c, "artifact_location"), tags, n, &id);
  im_free(tags);
  if (st) return im__srv_store_fail(c, st);
  json_t *j = im__srv_obj1("experiment_id", json_string(id));
  im_free(id);
  return j ? im__srv_ok(c, j) : im_error(IM_ERR_NOMEM, "out of memory");
}

static im_status_t get(srv_ctx_t *c) {
  const char *id;
  im_status_t st = im__srv_req(c, "experiment_id", &id);
  if (st) return st;
  im_track_experiment_t *e = NULL;
  st = im_track_experiment_get(c->st, id, &e);
  return answer_experiment(c, st, e);
}

static im_status_t get_by_name(srv_ctx_t *c) {
  const char *name;
  im_status_t st = im__srv_req(c, "experiment_name", &name);
  if (st) return st;
  im_track_experiment_t *e = NULL;
  st = im_track_experiment_get_by_name(c->st, name, &e);
  return answer_experiment(c, st, e);
}

static im_status_t search(srv_ctx_t *c) {
  im_track_search_t q;
  const char **ob;
  im_status_t st = im__srv_search_args(c, &q, &ob);
  if (st) return st;
  im_track_view_t view;
  if ((st = im__srv_view(c, "view_type", &view))) {
    im_free(ob);
    return st;
  }
  im_track_experiment_list_t *l = NULL;
  st = im_track_experiment_search(c->st, view, &q, &l);
  im_free(ob);
  if (st) return im__srv_store_fail(c, st);
  json_t *arr = json_array();
  for (int64_t i = 0; arr && i < l->n; i++) json_array_append_new(arr, experiment_json(c, &l->items[i]));
  st = im__srv_ok_list(c, "experiments", arr, l->next_page_token);
  im_track_experiment_list_free(l);
  return st;
}

static im_status_t update(srv_ctx_t *c) {
  const char *id;
  im_status_t st = im__srv_req(c, "experiment_id", &id);
  if (st) return st;
  const char *new_name = im__srv_str(c, "new_name");
  if (new_name && *new_name) {
    st = im_track_experiment_rename(c->st, id, new_name);
  } else {
    im_track_experiment_t *e = NULL; /* nothing to change: still 404 for an unknown id */
    st = im_track_experiment_get(c->st, id, &e);
    im_track_experiment_free(e);
  }
  return st ? im__srv_store_fail(c, st) : im__srv_ok(c, NULL);
}

static im_status_t delete_or_restore(srv_ctx_t *c, int restore) {
  const char *id;
  im_status_t st = im__srv_req(c, "experiment_id", &id);
  if (st) return st;
  st = restore ? im_track_experiment_restore(c->st, id) : im_track_experiment_delete(c->st, id);
  return st ? im__srv_store_fail(c, st) : im__srv_ok(c, NULL);
}

static im_status_t delete_(srv_ctx_t *c) { return delete_or_restore(c, 0); }
static im_status_t restore(srv_ctx_t *c) { return delete_or_restore(c, 1); }

static im_status_t set_tag(srv_ctx_t *c) {
  const char *id, *key;
  im_status_t st;
  if ((st = im__srv_req(c, "experiment_id", &id)) || (st = im__srv_req(c, "key", &key))) return st;
  const char *value = im__srv_str(c, "value");
  st = im_track_experiment_set_tag(c->st, id, key, value ? value : "");
  return st ? im__srv_store_fail(c, st) : im__srv_ok(c, NULL);
}

im_status_t im__srv_routes_experiments(im_server_t *s) {
  static const srv_route_t r[] = {
      {"POST", "mlflow/experiments/create", create},
      {"GET", "mlflow/experiments/get", get},
      {"GET", "mlflow/experiments/get-by-name", get_by_name},
      {"POST", "mlflow/experiments/search", search},
      {"GET", "mlflow/experiments/search", search},
      {"POST", "mlflow/experiments/update", update},
      {"POST", "mlflow/experiments/delete", delete_},
      {"POST", "mlflow/experiments/restore", restore},
      {"POST", "mlflow/experiments/set-experiment-tag", set_tag},
  };
  return im__srv_add_routes(s, r, sizeof r / sizeof r[0], SRV_STORE);
}
