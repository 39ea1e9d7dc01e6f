/* ConvNeXt in torchvision's layout and names (features.0 stem conv 4x4/4 +
 * LayerNorm2d; stages features.1/3/5/7 of CNBlocks; downsampling
 * features.2/4/6 = LayerNorm2d + conv 2x2/2; global average pool;
 * classifier.0 LayerNorm2d, classifier.2 Linear), initialized as torchvision
 * does (trunc_normal std 0.02 for conv and Linear weights, zero biases,
 * layer_scale constant). A CNBlock: dwconv 7x7 (block.0), to NHWC, LayerNorm
 * (block.2, eps 1e-6), Linear dim->4dim (block.3), GELU, Linear 4dim->dim
 * (block.5), to NCHW, times layer_scale [dim,1,1], stochastic depth, + input. */
#include <stdio.h>

#include "nn/nn_impl.h"

#define LN_EPS 1e-6f

static int cnblock(im_nn_model_t *m, int x, const char *pre, int dim, float sd_prob) {
  char n[64];
  /* layer_scale is the block's own parameter: registered before the children, as in state_dict(). */
  const int64_t ls_shape[3] = {dim, 1, 1};
  int ls = im__nn_entry(m, pre, "layer_scale", IM_NN_STATE_PARAM, 3, ls_shape, IM__NN_INIT_CONST,
                        (double)m->opts.layer_scale, 0);
  snprintf(n, sizeof n, "%s.block.0", pre);
  int y = im__nn_conv(m, x, n, dim, dim, 7, 1, 3, dim, 1);
  y = im__nn_to_nhwc(m, y);
  snprintf(n, sizeof n, "%s.block.2", pre);
  y = im__nn_ln(m, y, n, dim, LN_EPS);
  snprintf(n, sizeof n, "%s.block.3", pre);
  y = im__nn_gelu(m, im__nn_linear(m, y, n, dim, 4 * dim));
  snprintf(n, sizeof n, "%s.block.5", pre);
  y = im__nn_linear(m, y, n, 4 * dim, dim);
  y = im__nn_to_nchw(m, y);
  y = im__nn_scale(m, y, ls, dim);
  y = im__nn_drop_path(m, y, sd_prob);
  return im__nn_add(m, y, x);
}

im_status_t im__nn_build_convnext(im_nn_model_t *m, const int *default_depths, const int *dims) {
  (void)default_depths; /* resolved into m->opts.depths */
  m->style = IM__NN_STYLE_CONVNEXT;
  int d[4];
  for (int s = 0; s < 4; s++) d[s] = im__nn_width(m, dims[s]);
  int total = 0;
  for (int s = 0; s < 4; s++) total += m->opts.depths[s];
  int x = im__nn_input(m, m->opts.in_channels);
  x = im__nn_conv(m, x, "features.0.0", m->opts.in_channels, d[0], 4, 4, 0, 1, 1);
  x = im__nn_ln2d(m, x, "features.0.1", d[0], LN_EPS);
  int block_id = 0;
  for (int s = 0; s < 4; s++) {
    for (int b = 0; b < m->opts.depths[s]; b++) {
      char pre[32];
      snprintf(pre, sizeof pre, "features.%d.%d", 1 + 2 * s, b);
      /* torchvision: sd_prob = stochastic_depth_prob * stage_block_id / (total_stage_blocks - 1.0) */
      float sd = total > 1 ? (float)((double)m->opts.drop_path * block_id / (total - 1.0)) : 0.0f;
      x = cnblock(m, x, pre, d[s], sd);
      block_id++;
    }
    if (s < 3) {
      char n[32];
      snprintf(n, sizeof n, "features.%d.0", 2 + 2 * s);
      x = im__nn_ln2d(m, x, n, d[s], LN_EPS);
      snprintf(n, sizeof n, "features.%d.1", 2 + 2 * s);
      x = im__nn_conv(m, x, n, d[s], d[s + 1], 2, 2, 0, 1, 1);
    }
  }
  x = im__nn_gap(m, x); /* [N, C]: LayerNorm2d on [N,C,1,1] is a LayerNorm over C */
  x = im__nn_ln(m, x, "classifier.0", d[3], LN_EPS);
  x = im__nn_dropout(m, x, m->opts.dropout);
  im__nn_linear(m, x, "classifier.2", d[3], m->opts.num_classes);
  return m->build_err;
}
