/* Reference softmax cross-entropy with label smoothing, mean over the batch,
 * as torch.nn.CrossEntropyLoss(label_smoothing=eps). Log-sum-exp in double
 * with the row maximum subtracted. */
#include <math.h>

#include "backend/ref/ref.h"

/* Row r of z (K logits): its maximum and log-sum-exp. */
static double row_lse(const float *z, int64_t K) {
  double mx = -INFINITY, s = 0.0;
  for (int64_t k = 0; k < K; k++)
    if (z[k] > mx) mx = z[k];
  for (int64_t k = 0; k < K; k++) s += exp((double)z[k] - mx);
  return mx + log(s);
}

/* logits is (N, K), labels (N) I32 in [0, K); loss has one element, probs (N, K) or NULL; assigned.
 * With logp = z - lse(z) and q = (1-eps) onehot(label) + eps/K:
 * loss = (1/N) sum_n -sum_k q_k logp_k = (1/N) sum_n [-(1-eps) logp_label - (eps/K) sum_k logp_k]. */
im_status_t im__ref_softmax_xent_forward(im_backend_t *b, const im_xent_params_t *p, im__ct *logits, im__ct *labels,
                                         im__t *loss, im__t *probs) {
  const int64_t N = logits->shape[0], K = logits->shape[1];
  const double eps = p->label_smoothing;
  const float *z = logits->data;
  const int32_t *lab = labels->data;
  float *pd = probs ? probs->data : NULL;
  double total = 0.0;
  for (int64_t n = 0; n < N; n++) {
    const float *zr = z + n * K;
    const double lse = row_lse(zr, K);
    double sum_logp = 0.0;
    for (int64_t k = 0; k < K; k++) {
      const double lp = (double)zr[k] - lse;
      sum_logp += lp;
      if (pd) pd[n * K + k] = (float)exp(lp);
    }
    total += -(1.0 - eps) * ((double)zr[lab[n]] - lse) - eps / (double)K * sum_logp;
  }
  ((float *)loss->data)[0] = (float)(total / (double)N);
  return IM_OK;
}

/* logits is (N, K), labels (N); dlogits is (N, K), assigned: (softmax(z) - q) / N. */
im_status_t im__ref_softmax_xent_backward(im_backend_t *b, const im_xent_params_t *p, im__ct *logits, im__ct *labels,
                                          im__t *dlogits) {
  const int64_t N = logits->shape[0], K = logits->shape[1];
  const double eps = p->label_smoothing;
  const float *z = logits->data;
  const int32_t *lab = labels->data;
  float *dz = dlogits->data;
  for (int64_t n = 0; n < N; n++) {
    const float *zr = z + n * K;
    const double lse = row_lse(zr, K);
    for (int64_t k = 0; k < K; k++) {
      const double q = (k == lab[n] ? 1.0 - eps : 0.0) + eps / (double)K;
      dz[n * K + k] = (float)((exp((double)zr[k] - lse) - q) / (double)N);
    }
  }
  return IM_OK;
}
