/* The tracking entities as JSON in MLflow's REST shapes (service.proto and
 * model_registry.proto field names; int64 as numbers; ids as strings; NaN and
 * infinities as the strings "NaN", "Infinity", "-Infinity"). Shared by the
 * CLI's --json output and the tracking server. Each returns a new reference
 * (NULL only when out of memory). */
#ifndef IMOPS_TRACK_JSON_H
#define IMOPS_TRACK_JSON_H

#include <jansson.h>

#include "imops/track.h"

#ifdef __cplusplus
extern "C" {
#endif

/** {"experiment_id", "name", "artifact_location", "lifecycle_stage", "creation_time", "last_update_time", "tags"} */
json_t *im_track_experiment_json(const im_track_experiment_t *e);
/** {"info": RunInfo, "data": {"metrics", "params", "tags"}, "inputs": {}} */
json_t *im_track_run_json(const im_track_run_t *r);
/** {"key", "value", "timestamp", "step"} */
json_t *im_track_metric_json(const im_track_metric_t *m);
/** A double the way protobuf's JSON mapping writes it. */
json_t *im_track_double_json(double v);
/** RegisteredModel: {"name", "creation_timestamp", "last_updated_timestamp", "description", "latest_versions", "tags", "aliases"} */
json_t *im_track_model_json(const im_track_model_t *m);
/** ModelVersion: {"name", "version" (string), "creation_timestamp", ..., "current_stage", "source", "run_id", "status", "tags", "aliases"} */
json_t *im_track_model_version_json(const im_track_model_version_t *v);

#ifdef __cplusplus
}
#endif
#endif
