/* Running a planned model: forward (training or eval mode), the softmax
 * cross-entropy loss and its gradient, backward in reverse topological order,
 * gradient zeroing, and batched inference with probabilities. Nothing here
 * allocates: every tensor is a view into the plan block or the slabs. */
#include <math.h>
#include <string.h>

#include "nn/nn_impl.h"

static im_status_t check_input(const im_nn_model_t *m, const im_tensor_t *x, const char *fn, int64_t max_n) {
  if (!m->planned) return im_error(IM_ERR_STATE, "%s: the model is not planned (call im_nn_plan first)", fn);
  if (!x || x->dtype != IM_F32 || x->ndim != 4 || x->shape[1] != m->plan_c || x->shape[2] != m->plan_h ||
      x->shape[3] != m->plan_w || x->shape[0] < 1 || (max_n > 0 && x->shape[0] > max_n) || !x->data)
    return im_error(IM_ERR_ARG, "%s: x must be F32 [n, %lld, %lld, %lld] with 1 <= n%s%lld, got %s [%lld, %lld, %lld, %lld]",
                    fn, (long long)m->plan_c, (long long)m->plan_h, (long long)m->plan_w, max_n > 0 ? " <= " : "",
                    max_n > 0 ? (long long)max_n : 0LL, x ? im_dtype_name(x->dtype) : "NULL",
                    x && x->ndim > 0 ? (long long)x->shape[0] : 0LL, x && x->ndim > 1 ? (long long)x->shape[1] : 0LL,
                    x && x->ndim > 2 ? (long long)x->shape[2] : 0LL, x && x->ndim > 3 ? (long long)x->shape[3] : 0LL);
  return IM_OK;
}

im_status_t im_nn_forward(im_nn_model_t *m, const im_tensor_t *x, int training, im_tensor_t *logits) {
  im_status_t st = check_input(m, x, "im_nn_forward", m->plan_batch);
  if (st != IM_OK) return st;
  if (training && !m->plan_training)
    return im_error(IM_ERR_STATE, "im_nn_forward: training mode needs a training plan (im_nn_plan(..., 1))");
  m->phase = IM__NN_PHASE_IDLE;
  m->have_logits = 0;
  im__nn_set_batch(m, x->shape[0]);
  if (m->lanes && !training) {
    im_tensor_t y;
    if ((st = im__nn_lanes_forward(m, x, &y)) != IM_OK) return st;
    m->have_logits = 1;
    if (logits) *logits = y;
    return IM_OK;
  }
  im__nn_node_t *in = &m->nodes[0];
  if ((st = im_backend_tensor_set(m->be, &in->out, x->data, im_tensor_nbytes(x))) != IM_OK) return st;
  for (size_t i = 1; i < m->n_nodes; i++) {
    im__nn_node_t *nd = &m->nodes[i];
    const double t0 = m->node_s ? im_time_now() : 0.0;
    if ((st = im__nn_layer_forward(m, nd, training)) != IM_OK) return st;
    if (m->node_s) m->node_s[i] += im_time_now() - t0;
  }
  m->have_logits = 1;
  if (training) m->phase = IM__NN_PHASE_FORWARD;
  if (logits) *logits = m->nodes[m->n_nodes - 1].out;
  return IM_OK;
}

void im__nn_time_nodes(im_nn_model_t *m, double *acc) { m->node_s = acc; }

size_t im__nn_node_count(const im_nn_model_t *m) { return m->n_nodes; }

const char *im__nn_node_op(const im_nn_model_t *m, size_t i) {
  return i < m->n_nodes ? im__nn_op_name(m->nodes[i].op) : "?";
}

im_status_t im_nn_loss(im_nn_model_t *m, const int32_t *labels, float label_smoothing, float *loss) {
  if (!m->planned || !m->have_logits) return im_error(IM_ERR_STATE, "im_nn_loss: no forward to take the loss of");
  if (!labels) return im_error(IM_ERR_ARG, "im_nn_loss: labels is NULL");
  if (!(label_smoothing >= 0.0f && label_smoothing <= 1.0f))
    return im_error(IM_ERR_ARG, "im_nn_loss: label_smoothing %g is out of range [0, 1]", (double)label_smoothing);
  const im_tensor_t *lg = &m->nodes[m->n_nodes - 1].out;
  const int64_t k = lg->shape[1];
  for (int64_t i = 0; i < m->cur_n; i++)
    if (labels[i] < 0 || labels[i] >= k)
      return im_error(IM_ERR_ARG, "im_nn_loss: label %d of sample %lld is out of range [0, %lld)", (int)labels[i],
                      (long long)i, (long long)k);
  im_status_t st = im_backend_tensor_set(m->be, &m->labels, labels, sizeof *labels * (size_t)m->cur_n);
  const im_xent_params_t p = {label_smoothing};
  if (st == IM_OK) st = im_op_softmax_xent_forward(m->be, &p, lg, &m->labels, &m->loss, NULL);
  float v = 0.0f;
  if (st == IM_OK) st = im_backend_tensor_get(m->be, &m->loss, &v, sizeof v);
  if (st == IM_OK && (m->phase == IM__NN_PHASE_FORWARD || m->phase == IM__NN_PHASE_LOSS)) {
    st = im_op_softmax_xent_backward(m->be, &p, lg, &m->labels, &m->nodes[m->n_nodes - 1].grad);
    m->phase = st == IM_OK ? IM__NN_PHASE_LOSS : IM__NN_PHASE_IDLE;
  }
  if (st == IM_OK && loss) *loss = v;
  return st;
}

static im_status_t run_backward(im_nn_model_t *m) {
  im_status_t st = IM_OK;
  for (size_t i = m->n_nodes - 1; i >= 1 && st == IM_OK; i--) st = im__nn_layer_backward(m, (int)i);
  m->phase = IM__NN_PHASE_IDLE; /* activations were overwritten by gradients: once per forward */
  return st;
}

im_status_t im_nn_backward(im_nn_model_t *m) {
  if (m->phase != IM__NN_PHASE_LOSS)
    return im_error(IM_ERR_STATE, "im_nn_backward: needs a training forward and its im_nn_loss (once per forward)");
  return run_backward(m);
}

im_status_t im_nn_backward_from(im_nn_model_t *m, const im_tensor_t *dlogits) {
  if (m->phase != IM__NN_PHASE_FORWARD && m->phase != IM__NN_PHASE_LOSS)
    return im_error(IM_ERR_STATE, "im_nn_backward_from: needs a training forward (once per forward)");
  im_tensor_t *g = &m->nodes[m->n_nodes - 1].grad;
  if (!dlogits || dlogits->dtype != IM_F32 || dlogits->ndim != 2 || dlogits->shape[0] != g->shape[0] ||
      dlogits->shape[1] != g->shape[1])
    return im_error(IM_ERR_ARG, "im_nn_backward_from: dlogits must be F32 [%lld, %lld]", (long long)g->shape[0],
                    (long long)g->shape[1]);
  im_status_t st = im_backend_tensor_set(m->be, g, dlogits->data, im_tensor_nbytes(g));
  if (st != IM_OK) return st;
  return run_backward(m);
}

void im_nn_zero_grad(im_nn_model_t *m) { memset(m->gslab.data, 0, im_tensor_nbytes(&m->gslab)); }

/* Row-wise softmax in place, accumulated in double. */
static void softmax_rows(float *p, int64_t rows, int64_t k) {
  for (int64_t r = 0; r < rows; r++, p += k) {
    float mx = p[0];
    for (int64_t j = 1; j < k; j++)
      if (p[j] > mx) mx = p[j];
    double s = 0.0;
    for (int64_t j = 0; j < k; j++) s += exp((double)p[j] - mx);
    for (int64_t j = 0; j < k; j++) p[j] = (float)(exp((double)p[j] - mx) / s);
  }
}

im_status_t im_nn_predict(im_nn_model_t *m, const im_tensor_t *x, im_tensor_t *logits, im_tensor_t *probs) {
  im_status_t st = check_input(m, x, "im_nn_predict", 0);
  if (st != IM_OK) return st;
  const int64_t n = x->shape[0], k = m->opts.num_classes;
  im_tensor_t *outs[2] = {logits, probs};
  for (int i = 0; i < 2; i++)
    if (outs[i] && (outs[i]->dtype != IM_F32 || outs[i]->ndim != 2 || outs[i]->shape[0] != n ||
                    outs[i]->shape[1] != k || !outs[i]->data))
      return im_error(IM_ERR_ARG, "im_nn_predict: %s must be F32 [%lld, %lld]", i ? "probs" : "logits", (long long)n,
                      (long long)k);
  const int64_t per = x->shape[1] * x->shape[2] * x->shape[3];
  for (int64_t s = 0; s < n; s += m->plan_batch) {
    const int64_t cnt = n - s < m->plan_batch ? n - s : m->plan_batch;
    im_tensor_t xv, lg;
    (void)im_tensor_view(&xv, IM_F32, 4, (int64_t[]){cnt, x->shape[1], x->shape[2], x->shape[3]},
                         im_tensor_f32(x) + s * per);
    if ((st = im_nn_forward(m, &xv, 0, &lg)) != IM_OK) return st;
    const size_t bytes = sizeof(float) * (size_t)(cnt * k);
    if (logits && (st = im_backend_tensor_get(m->be, &lg, im_tensor_f32(logits) + s * k, bytes)) != IM_OK) return st;
    if (probs) {
      float *p = im_tensor_f32(probs) + s * k;
      if (logits) memcpy(p, im_tensor_f32(logits) + s * k, bytes);
      else if ((st = im_backend_tensor_get(m->be, &lg, p, bytes)) != IM_OK) return st;
      softmax_rows(p, cnt, k);
    }
  }
  return IM_OK;
}
