/* MLflow model registry endpoints: registered-models create/get/rename/
 * update/delete/search/set-tag/delete-tag/alias (POST set, DELETE delete,
 * GET get-by-alias)/get-latest-versions (POST and GET); model-versions
 * create/get/update/delete/search/transition-stage/set-tag/delete-tag/
 * get-download-uri. Thin over the store. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "imops/track_json.h"
#include "server/server_impl.h"

static im_status_t done(srv_ctx_t *c, im_status_t st) { return st ? im__srv_store_fail(c, st) : im__srv_ok(c, NULL); }

static im_status_t answer_model(srv_ctx_t *c, im_status_t st, im_track_model_t *m) {
  if (st) return im__srv_store_fail(c, st);
  json_t *j = im__srv_obj1("registered_model", im_track_model_json(m));
  im_track_model_free(m);
  return j ? im__srv_ok(c, j) : im_error(IM_ERR_NOMEM, "out of memory");
}

static im_status_t answer_version(srv_ctx_t *c, im_status_t st, im_track_model_version_t *v) {
  if (st) return im__srv_store_fail(c, st);
  json_t *j = im__srv_obj1("model_version", im_track_model_version_json(v));
  im_track_model_version_free(v);
  return j ? im__srv_ok(c, j) : im_error(IM_ERR_NOMEM, "out of memory");
}

static im_status_t answer_versions(srv_ctx_t *c, im_track_model_version_list_t *l) {
  json_t *arr = json_array();
  for (int64_t i = 0; arr && i < l->n; i++) json_array_append_new(arr, im_track_model_version_json(&l->items[i]));
  im_status_t st = im__srv_ok_list(c, "model_versions", arr, l->next_page_token);
  im_track_model_version_list_free(l);
  return st;
}

/* ---- registered models ------------------------------------------------------------------ */

static im_status_t model_create(srv_ctx_t *c) {
  const char *name;
  im_status_t st = im__srv_req(c, "name", &name);
  if (st) return st;
  im_track_kv_t *tags;
  int n;
  if ((st = im__srv_kvs(c, "tags", &tags, &n))) return st;
  im_track_model_t *m = NULL;
  st = im_track_model_create(c->st, name, im__srv_str(c, "description"), tags, n, &m);
  im_free(tags);
  return answer_model(c, st, m);
}

static im_status_t model_get(srv_ctx_t *c) {
  const char *name;
  im_status_t st = im__srv_req(c, "name", &name);
  if (st) return st;
  im_track_model_t *m = NULL;
  st = im_track_model_get(c->st, name, &m);
  return answer_model(c, st, m);
}

static im_status_t model_rename(srv_ctx_t *c) {
  const char *name, *new_name;
  im_status_t st;
  if ((st = im__srv_req(c, "name", &name)) || (st = im__srv_req(c, "new_name", &new_name))) return st;
  im_track_model_t *m = NULL;
  st = im_track_model_rename(c->st, name, new_name, &m);
  return answer_model(c, st, m);
}

static im_status_t model_update(srv_ctx_t *c) {
  const char *name;
  im_status_t st = im__srv_req(c, "name", &name);
  if (st) return st;
  im_track_model_t *m = NULL;
  st = im_track_model_update(c->st, name, im__srv_str(c, "description"), &m);
  return answer_model(c, st, m);
}

static im_status_t model_delete(srv_ctx_t *c) {
  const char *name;
  im_status_t st = im__srv_req(c, "name", &name);
  return st ? st : done(c, im_track_model_delete(c->st, name));
}

/* MLflow >= 2.21 clients append this clause to every registered-model search to
 * leave prompts out; models have no such tag, so MLflow's server drops the clause
 * and excludes the models tagged as prompts instead (an anti-join). Same here. */
#define PROMPT_TAG "mlflow.prompt.is_prompt"
#define PROMPT_CLAUSE "tag.`" PROMPT_TAG "` != 'true'"

static const char *strip_prompt_clause(const char *filter, char **copy) {
  *copy = NULL;
  if (!filter) return NULL;
  size_t n = strlen(filter), k = strlen(PROMPT_CLAUSE);
  if (n == k && !strcmp(filter, PROMPT_CLAUSE)) return NULL;
  if (n > k + 5 && !strcmp(filter + n - k, PROMPT_CLAUSE) && !strncasecmp(filter + n - k - 5, " AND ", 5) &&
      (*copy = im_strndup(filter, n - k - 5)))
    return *copy;
  return filter;
}

static int is_prompt(const im_track_model_t *m) {
  for (int i = 0; i < m->n_tags; i++)
    if (!strcmp(m->tags[i].key, PROMPT_TAG) && !strcasecmp(m->tags[i].value, "true")) return 1;
  return 0;
}

static im_status_t model_search(srv_ctx_t *c) {
  im_track_search_t q;
  const char **ob;
  im_status_t st = im__srv_search_args(c, &q, &ob);
  if (st) return st;
  char *copy;
  const char *f = strip_prompt_clause(q.filter, &copy);
  int no_prompts = f != q.filter;
  q.filter = f;
  im_track_model_list_t *l = NULL;
  st = im_track_model_search(c->st, &q, &l);
  im_free(ob);
  im_free(copy);
  if (st) return im__srv_store_fail(c, st);
  json_t *arr = json_array();
  for (int64_t i = 0; arr && i < l->n; i++)
    if (!no_prompts || !is_prompt(&l->items[i])) json_array_append_new(arr, im_track_model_json(&l->items[i]));
  st = im__srv_ok_list(c, "registered_models", arr, l->next_page_token);
  im_track_model_list_free(l);
  return st;
}

static im_status_t model_set_tag(srv_ctx_t *c) {
  const char *name, *key;
  im_status_t st;
  if ((st = im__srv_req(c, "name", &name)) || (st = im__srv_req(c, "key", &key))) return st;
  const char *value = im__srv_str(c, "value");
  return done(c, im_track_model_set_tag(c->st, name, key, value ? value : ""));
}

static im_status_t model_delete_tag(srv_ctx_t *c) {
  const char *name, *key;
  im_status_t st;
  if ((st = im__srv_req(c, "name", &name)) || (st = im__srv_req(c, "key", &key))) return st;
  return done(c, im_track_model_delete_tag(c->st, name, key));
}

static im_status_t alias_set(srv_ctx_t *c) {
  const char *name, *alias;
  int64_t version;
  im_status_t st;
  if ((st = im__srv_req(c, "name", &name)) || (st = im__srv_req(c, "alias", &alias)) ||
      (st = im__srv_version(c, "version", &version)))
    return st;
  return done(c, im_track_model_set_alias(c->st, name, alias, version));
}

static im_status_t alias_delete(srv_ctx_t *c) {
  const char *name, *alias;
  im_status_t st;
  if ((st = im__srv_req(c, "name", &name)) || (st = im__srv_req(c, "alias", &alias))) return st;
  return done(c, im_track_model_delete_alias(c->st, name, alias));
}

static im_status_t alias_get(srv_ctx_t *c) {
  const char *name, *alias;
  im_status_t st;
  if ((st = im__srv_req(c, "name", &name)) || (st = im__srv_req(c, "alias", &alias))) return st;
  im_track_model_version_t *v = NULL;
  st = im_track_model_version_get_by_alias(c->st, name, alias, &v);
  return answer_version(c, st, v);
}

static im_status_t latest_versions(srv_ctx_t *c) {
  const char *name;
  im_status_t st = im__srv_req(c, "name", &name);
  if (st) return st;
  const char **stages;
  int n;
  if ((st = im__srv_strs(c, "stages", &stages, &n))) return st;
  im_track_model_version_list_t *l = NULL;
  st = im_track_model_latest_versions(c->st, name, stages, n, &l);
  im_free(stages);
  return st ? im__srv_store_fail(c, st) : answer_versions(c, l);
}

/* ---- model versions ------------------------------------------------------------------------ */

static im_status_t version_create(srv_ctx_t *c) {
  const char *name, *source;
  im_status_t st;
  if ((st = im__srv_req(c, "name", &name)) || (st = im__srv_req(c, "source", &source))) return st;
  im_track_kv_t *tags;
  int n;
  if ((st = im__srv_kvs(c, "tags", &tags, &n))) return st;
  im_track_model_version_create_t vc = {
      .name = name,
      .source = source,
      .run_id = im__srv_str(c, "run_id"),
      .run_link = im__srv_str(c, "run_link"),
      .description = im__srv_str(c, "description"),
      .tags = tags,
      .n_tags = n,
  };
  if (vc.run_id && !*vc.run_id) vc.run_id = NULL;
  im_track_model_version_t *v = NULL;
  st = im_track_model_version_create(c->st, &vc, &v);
  im_free(tags);
  return answer_version(c, st, v);
}

static im_status_t name_version(srv_ctx_t *c, const char **name, int64_t *version) {
  im_status_t st = im__srv_req(c, "name", name);
  return st ? st : im__srv_version(c, "version", version);
}

static im_status_t version_get(srv_ctx_t *c) {
  const char *name;
  int64_t ver;
  im_status_t st = name_version(c, &name, &ver);
  if (st) return st;
  im_track_model_version_t *v = NULL;
  st = im_track_model_version_get(c->st, name, ver, &v);
  return answer_version(c, st, v);
}

static im_status_t version_update(srv_ctx_t *c) {
  const char *name;
  int64_t ver;
  im_status_t st = name_version(c, &name, &ver);
  if (st) return st;
  im_track_model_version_t *v = NULL;
  st = im_track_model_version_update(c->st, name, ver, im__srv_str(c, "description"), &v);
  return answer_version(c, st, v);
}

static im_status_t version_delete(srv_ctx_t *c) {
  const char *name;
  int64_t ver;
  im_status_t st = name_version(c, &name, &ver);
  return st ? st : done(c, im_track_model_version_delete(c->st, name, ver));
}

static im_status_t version_search(srv_ctx_t *c) {
  im_track_search_t q;
  const char **ob;
  im_status_t st = im__srv_search_args(c, &q, &ob);
  if (st) return st;
  im_track_model_version_list_t *l = NULL;
  st = im_track_model_version_search(c->st, &q, &l);
  im_free(ob);
  return st ? im__srv_store_fail(c, st) : answer_versions(c, l);
}

static im_status_t version_stage(srv_ctx_t *c) {
  const char *name, *stage;
  int64_t ver;
  int archive = 0;
  im_status_t st;
  if ((st = name_version(c, &name, &ver)) || (st = im__srv_req(c, "stage", &stage)) ||
      (st = im__srv_bool(c, "archive_existing_versions", 0, &archive)))
    return st;
  im_track_model_version_t *v = NULL;
  st = im_track_model_version_transition_stage(c->st, name, ver, stage, archive, &v);
  return answer_version(c, st, v);
}

static im_status_t version_set_tag(srv_ctx_t *c) {
  const char *name, *key;
  int64_t ver;
  im_status_t st;
  if ((st = name_version(c, &name, &ver)) || (st = im__srv_req(c, "key", &key))) return st;
  const char *value = im__srv_str(c, "value");
  return done(c, im_track_model_version_set_tag(c->st, name, ver, key, value ? value : ""));
}

static im_status_t version_delete_tag(srv_ctx_t *c) {
  const char *name, *key;
  int64_t ver;
  im_status_t st;
  if ((st = name_version(c, &name, &ver)) || (st = im__srv_req(c, "key", &key))) return st;
  return done(c, im_track_model_version_delete_tag(c->st, name, ver, key));
}

/* Where the version's files are: the source, with runs:/<id>/<path> resolved
 * through the run's artifact URI, shown as clients should use it. */
static im_status_t version_download_uri(srv_ctx_t *c) {
  const char *name;
  int64_t ver;
  im_status_t st = name_version(c, &name, &ver);
  if (st) return st;
  im_track_model_version_t *v = NULL;
  if ((st = im_track_model_version_get(c->st, name, ver, &v))) return im__srv_store_fail(c, st);
  char *loc = NULL;
  if (!strncasecmp(v->source, "runs:", 5)) {
    im_track_uri_t *u = NULL;
    im_track_run_t *r = NULL;
    st = im_track_uri_parse(v->source, &u);
    if (st == IM_OK) st = im_track_run_get(c->st, u->run_id, &r);
    if (st == IM_OK) {
      size_t n = strlen(r->artifact_uri) + strlen(u->path) + 2;
      if ((loc = im_malloc(n))) snprintf(loc, n, "%s%s%s", r->artifact_uri, *u->path ? "/" : "", u->path);
    }
    im_track_run_free(r);
    im_track_uri_free(u);
    if (st) {
      im_track_model_version_free(v);
      return im__srv_store_fail(c, st);
    }
  } else {
    loc = im_strdup(v->source);
  }
  im_track_model_version_free(v);
  char *pub = loc ? im__srv_public_uri(c->srv, loc) : NULL;
  im_free(loc);
  json_t *j = pub ? im__srv_obj1("artifact_uri", json_string(pub)) : NULL;
  im_free(pub);
  return j ? im__srv_ok(c, j) : im_error(IM_ERR_NOMEM, "out of memory");
}

im_status_t im__srv_routes_registry(im_server_t *s) {
  static const srv_route_t r[] = {
      {"POST", "mlflow/registered-models/create", model_create},
      {"GET", "mlflow/registered-models/get", model_get},
      {"POST", "mlflow/registered-models/rename", model_rename},
      {"PATCH", "mlflow/registered-models/update", model_update},
      {"DELETE", "mlflow/registered-models/delete", model_delete},
      {"GET", "mlflow/registered-models/search", model_search},
      {"POST", "mlflow/registered-models/set-tag", model_set_tag},
      {"DELETE", "mlflow/registered-models/delete-tag", model_delete_tag},
      {"POST", "mlflow/registered-models/alias", alias_set},
      {"DELETE", "mlflow/registered-models/alias", alias_delete},
      {"GET", "mlflow/registered-models/alias", alias_get},
      {"POST", "mlflow/registered-models/get-latest-versions", latest_versions},
      {"GET", "mlflow/registered-models/get-latest-versions", latest_versions},
      {"POST", "mlflow/model-versions/create", version_create},
      {"GET", "mlflow/model-versions/get", version_get},
      {"PATCH", "mlflow/model-versions/update", version_update},
      {"DELETE", "mlflow/model-versions/delete", version_delete},
      {"GET", "mlflow/model-versions/search", version_search},
      {"POST", "mlflow/model-versions/transition-stage", version_stage},
      {"POST", "mlflow/model-versions/set-tag", version_set_tag},
      {"DELETE", "mlflow/model-versions/delete-tag", version_delete_tag},
      {"GET", "mlflow/model-versions/get-download-uri", version_download_uri},
  };
  return im__srv_add_routes(s, r, sizeof r / sizeof r[0], SRV_STORE);
}
