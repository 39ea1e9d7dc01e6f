/* ResNet with BasicBlocks (resnet18, resnet34) in torchvision's layout and
 * names: conv1 7x7/2, bn1, relu, maxpool 3x3/2, layer1..layer4 (the first
 * block of layers 2-4 downsamples with stride 2 and a 1x1 conv + BN shortcut
 * named downsample.0/.1), global average pool, [dropout], fc. Widths are
 * 64/128/256/512 times the width option; init as torchvision's ResNet. */
#include <stdio.h>

#include "nn/nn_impl.h"

/* torchvision's BasicBlock: conv3x3(stride)-bn-relu-conv3x3-bn, + identity or downsample(x), relu. */
static int basic_block(im_nn_model_t *m, int x, const char *pre, int cin, int cout, int stride) {
  char n[64];
  snprintf(n, sizeof n, "%s.conv1", pre);
  int y = im__nn_conv(m, x, n, cin, cout, 3, stride, 1, 1, 0);
  snprintf(n, sizeof n, "%s.bn1", pre);
  y = im__nn_relu(m, im__nn_bn(m, y, n, cout));
  snprintf(n, sizeof n, "%s.conv2", pre);
  y = im__nn_conv(m, y, n, cout, cout, 3, 1, 1, 1, 0);
  snprintf(n, sizeof n, "%s.bn2", pre);
  y = im__nn_bn(m, y, n, cout);
  int id = x;
  if (stride != 1 || cin != cout) {
    snprintf(n, sizeof n, "%s.downsample.0", pre);
    id = im__nn_conv(m, x, n, cin, cout, 1, stride, 0, 1, 0);
    snprintf(n, sizeof n, "%s.downsample.1", pre);
    id = im__nn_bn(m, id, n, cout);
  }
  return im__nn_relu(m, im__nn_add(m, y, id));
}

im_status_t im__nn_build_resnet(im_nn_model_t *m, const int *default_depths) {
  (void)default_depths; /* resolved into m->opts.depths */
  m->style = IM__NN_STYLE_RESNET;
  const int c0 = im__nn_width(m, 64);
  int x = im__nn_input(m, m->opts.in_channels);
  x = im__nn_conv(m, x, "conv1", m->opts.in_channels, c0, 7, 2, 3, 1, 0);
  x = im__nn_relu(m, im__nn_bn(m, x, "bn1", c0));
  x = im__nn_maxpool(m, x, 3, 2, 1);
  int cin = c0;
  for (int s = 0; s < 4; s++) {
    const int cout = im__nn_width(m, 64 << s);
    for (int b = 0; b < m->opts.depths[s]; b++) {
      char pre[32];
      snprintf(pre, sizeof pre, "layer%d.%d", s + 1, b);
      x = basic_block(m, x, pre, cin, cout, (b == 0 && s > 0) ? 2 : 1);
      cin = cout;
    }
  }
  x = im__nn_gap(m, x);
  x = im__nn_dropout(m, x, m->opts.dropout);
  im__nn_linear(m, x, "fc", cin, m->opts.num_classes);
  return m->build_err;
}
