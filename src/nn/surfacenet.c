/* surfacenet: the small, fast CNN of the flagship task (SurfaceCNN of the
 * performance anchors), and smallcnn, the same with a stride-1 stem for 28x28
 * grey images. Three conv3x3+BN+ReLU stages (32, 64, 128 channels times
 * width; the first two followed by maxpool 2), global average pooling,
 * optional dropout, a Linear classifier. Convs have no bias (BN follows).
 * Names conv1, bn1, conv2, bn2, conv3, bn3, fc (PyTorch module: SurfaceNet in
 * tools/ref/gen_model_fixtures.py); initialized as torchvision's ResNet. */
#include "nn/nn_impl.h"

im_status_t im__nn_build_surfacenet(im_nn_model_t *m) {
  m->style = IM__NN_STYLE_RESNET;
  const int c1 = im__nn_width(m, 32), c2 = im__nn_width(m, 64), c3 = im__nn_width(m, 128);
  int x = im__nn_input(m, m->opts.in_channels);
  x = im__nn_conv(m, x, "conv1", m->opts.in_channels, c1, 3, m->opts.stem_stride, 1, 1, 0);
  x = im__nn_relu(m, im__nn_bn(m, x, "bn1", c1));
  x = im__nn_maxpool(m, x, 2, 2, 0);
  x = im__nn_conv(m, x, "conv2", c1, c2, 3, 1, 1, 1, 0);
  x = im__nn_relu(m, im__nn_bn(m, x, "bn2", c2));
  x = im__nn_maxpool(m, x, 2, 2, 0);
  x = im__nn_conv(m, x, "conv3", c2, c3, 3, 1, 1, 1, 0);
  x = im__nn_relu(m, im__nn_bn(m, x, "bn3", c3));
  x = im__nn_gap(m, x);
  x = im__nn_dropout(m, x, m->opts.dropout);
  im__nn_linear(m, x, "fc", c3, m->opts.num_classes);
  return m->build_err;
}
