/* libFuzzer target for the trainer state that training checkpoints keep
 * (trainer-<seq>.json, read back by imops train --resume): any bytes either
 * give IM_ERR_FORMAT, or a state whose counters are counts that fit together
 * (batch within the epoch, correct within seen), whose history is bounded and
 * whose float options are finite; the state is then written back the way the
 * trainer writes its options and parsed again to the same options.
 *
 *   mkdir -p /tmp/fz && ./fuzz_trainer_state -max_total_time=30 /tmp/fz tests/fuzz/corpus/trainer_state
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "train/train_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  im_train_opts_t o = im_train_defaults();
  im__train_state_t s;
  im_status_t st = im__train_state_parse(data, size, &o, &s);
  if (st != IM_OK) {
    if (st != IM_ERR_FORMAT && st != IM_ERR_NOMEM) abort();
    im__train_state_free(&s);
    return 0;
  }
  if (s.epoch < 0 || s.batch < 0 || s.global_step < 0 || s.batch > s.steps_per_epoch || s.epoch_correct < 0 ||
      s.epoch_correct > s.epoch_count || s.log_correct < 0 || s.log_correct > s.log_count || s.best_epoch < 0 ||
      s.bad_epochs < 0)
    abort();
  if (!isfinite(s.epoch_loss_sum) || !isfinite(s.epoch_seconds) || !isfinite(s.log_loss_sum) || !s.data_hash)
    abort();
  if ((s.n_hist && !s.hist) || s.n_hist > 1000000) abort();
  for (size_t i = 0; i < s.n_hist; i++)
    if (s.hist[i].epoch < 0) abort();
  if (s.has_rng && !(s.rng.s[0] | s.rng.s[1] | s.rng.s[2] | s.rng.s[3])) abort();
  if (!isfinite(o.width) || !isfinite(o.dropout) || !isfinite(o.drop_path)) abort();
  /* the options round-trip: written as the trainer writes them, read back the same */
  json_t *oj = im__train_opts_json(&o);
  im_train_opts_t o2 = im_train_defaults();
  if (!oj || im__train_opts_from_json(oj, &o2) != IM_OK) abort();
  json_t *oj2 = im__train_opts_json(&o2);
  if (!oj2 || !json_equal(oj, oj2)) abort();
  json_decref(oj);
  json_decref(oj2);
  im__train_state_free(&s);
  return 0;
}
