/* Sweep state in the tracking store: sweeps, their trials and the agents that
 * run them (tables of schema v3/v4). Several agents, in several processes, may
 * share one sweep: im_track_sweep_claim hands each trial to exactly one agent
 * (BEGIN IMMEDIATE, conditional UPDATE / INSERT), never more trials than the
 * sweep's max_trials, and marks trials of agents whose heartbeat went stale as
 * FAILED first. The search itself (what the next trial's parameters are) is
 * the caller's: it is asked through a callback inside the claiming transaction,
 * so that it sees every trial so far and no other agent can interleave.
 *
 * Trial states: PENDING, CLAIMED, RUNNING, FINISHED, FAILED, KILLED, PRUNED.
 * Sweep states: PENDING, RUNNING, PAUSED, FINISHED, CANCELED, FAILED. */
#ifndef IMOPS_TRACK_SWEEP_H
#define IMOPS_TRACK_SWEEP_H

#include <stdint.h>

#include "imops/core.h"
#include "imops/track.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  char *sweep_id;      /* 8 lowercase hex digits (generated) */
  char *name;
  char *experiment_id; /* NULL when none */
  char *config;        /* JSON text */
  char *method;        /* grid, random, bayes */
  char *metric_name;   /* NULL when none */
  char *metric_goal;   /* minimize, maximize or NULL */
  char *state;
  int64_t max_trials;  /* 0: unlimited */
  int64_t creation_time, last_update_time;
} im_track_sweep_t;

typedef struct {
  int64_t trial;       /* 1-based number within the sweep */
  char *params;        /* JSON object text */
  char *state;
  char *agent_id;      /* NULL while unclaimed */
  char *run_id;        /* NULL until the trial's run exists */
  int64_t claimed_time, heartbeat_time, finished_time; /* IM_TRACK_NO_TIME when unset */
  double objective;    /* NaN when none */
} im_track_sweep_trial_t;

/** One intermediate value a trial reported (its step-th, 1-based). */
typedef struct {
  int64_t trial, step;
  double value;
} im_track_sweep_step_t;

void im_track_sweep_free(im_track_sweep_t *w);
void im_track_sweep_list_free(im_track_sweep_t *items, int64_t n);
void im_track_sweep_trials_free(im_track_sweep_trial_t *items, int64_t n);

/** Creates a sweep from in's name, experiment_id, config, method, metric_name,
 * metric_goal, max_trials (sweep_id, state and times are ignored); the new id
 * goes to *id_out (im_free). */
IM_NODISCARD im_status_t im_track_sweep_create(im_track_store_t *s, const im_track_sweep_t *in, char **id_out);
/** Unknown id: IM_ERR_NOT_FOUND. */
IM_NODISCARD im_status_t im_track_sweep_get(im_track_store_t *s, const char *sweep_id, im_track_sweep_t **out);
/** Every sweep, newest first. */
IM_NODISCARD im_status_t im_track_sweep_list(im_track_store_t *s, im_track_sweep_t **items, int64_t *n);
IM_NODISCARD im_status_t im_track_sweep_set_state(im_track_store_t *s, const char *sweep_id, const char *state);
/** The sweep's trials in trial order. */
IM_NODISCARD im_status_t im_track_sweep_trials(im_track_store_t *s, const char *sweep_id, im_track_sweep_trial_t **items,
                                               int64_t *n);

/** Asked inside the claim for the next trial's parameters (a JSON object,
 * im_malloc'd, into *params) given every trial so far. Returning
 * IM_ERR_NOT_FOUND means the search space is exhausted (grid); any other
 * failure aborts the claim. */
typedef im_status_t (*im_track_sweep_suggest_fn)(void *user, const im_track_sweep_trial_t *trials, int64_t n,
                                                 char **params);

/** Claims the next trial for agent_id in one write transaction: trials
 * CLAIMED/RUNNING whose heartbeat is older than stale_ms (> 0) become FAILED;
 * if the sweep is not PENDING/RUNNING, or max_trials (> 0) trials exist, or
 * limit (> 0) trials exist, or suggest reports exhaustion, *out is NULL (done).
 * Otherwise the oldest PENDING trial is claimed, else a new trial with
 * suggest's parameters is inserted CLAIMED. The sweep becomes RUNNING. */
IM_NODISCARD im_status_t im_track_sweep_claim(im_track_store_t *s, const char *sweep_id, const char *agent_id,
                                              int64_t stale_ms, int64_t limit, im_track_sweep_suggest_fn suggest,
                                              void *user, im_track_sweep_trial_t **out);
/** Updates a trial that agent_id holds: state (NULL: unchanged), run_id (NULL:
 * unchanged), objective (NaN: unchanged); the heartbeat is refreshed and a
 * final state sets finished_time. A trial the agent no longer holds (reclaimed
 * as stale) is IM_ERR_STATE. */
IM_NODISCARD im_status_t im_track_sweep_trial_update(im_track_store_t *s, const char *sweep_id, int64_t trial,
                                                     const char *agent_id, const char *state, const char *run_id,
                                                     double objective);
/** Records a trial's step-th intermediate value (replacing one reported before). */
IM_NODISCARD im_status_t im_track_sweep_report(im_track_store_t *s, const char *sweep_id, int64_t trial, int64_t step,
                                               double value);
/** Every intermediate value of the sweep, by trial then step. */
IM_NODISCARD im_status_t im_track_sweep_steps(im_track_store_t *s, const char *sweep_id, im_track_sweep_step_t **items,
                                              int64_t *n);
/** Registers an agent (state RUNNING) / ends it (FINISHED, FAILED). */
IM_NODISCARD im_status_t im_track_sweep_agent_start(im_track_store_t *s, const char *sweep_id, const char *agent_id,
                                                    const char *host, int64_t pid);
IM_NODISCARD im_status_t im_track_sweep_agent_end(im_track_store_t *s, const char *agent_id, const char *state);

#ifdef __cplusplus
}
#endif
#endif
