/* The reference backend: its vtable (every op a plain C kernel from this
 * folder, default host memory) and its constructor. */
#include "backend/ref/ref.h"

const im_backend_i im__ref_iface = {
    .version = IM_BACKEND_IFACE_VERSION,
    .name = "ref",
    .flags = IM_BACKEND_F_HOST,
    .conv2d_forward = im__ref_conv2d_forward,
    .conv2d_backward_data = im__ref_conv2d_backward_data,
    .conv2d_backward_weight = im__ref_conv2d_backward_weight,
    .batchnorm_forward_train = im__ref_batchnorm_forward_train,
    .batchnorm_forward_eval = im__ref_batchnorm_forward_eval,
    .batchnorm_backward = im__ref_batchnorm_backward,
    .layernorm_forward = im__ref_layernorm_forward,
    .layernorm_backward = im__ref_layernorm_backward,
    .relu_forward = im__ref_relu_forward,
    .relu_backward = im__ref_relu_backward,
    .gelu_forward = im__ref_gelu_forward,
    .gelu_backward = im__ref_gelu_backward,
    .maxpool2d_forward = im__ref_maxpool2d_forward,
    .maxpool2d_backward = im__ref_maxpool2d_backward,
    .avgpool2d_forward = im__ref_avgpool2d_forward,
    .avgpool2d_backward = im__ref_avgpool2d_backward,
    .global_avgpool_forward = im__ref_global_avgpool_forward,
    .global_avgpool_backward = im__ref_global_avgpool_backward,
    .linear_forward = im__ref_linear_forward,
    .linear_backward_data = im__ref_linear_backward_data,
    .linear_backward_weight = im__ref_linear_backward_weight,
    .dropout_forward = im__ref_dropout_forward,
    .dropout_backward = im__ref_dropout_backward,
    .add = im__ref_add,
    .add_backward = im__ref_add_backward,
    .softmax_xent_forward = im__ref_softmax_xent_forward,
    .softmax_xent_backward = im__ref_softmax_xent_backward,
    .nchw_to_nhwc = im__ref_nchw_to_nhwc,
    .nhwc_to_nchw = im__ref_nhwc_to_nchw,
    .fill = im__ref_fill,
    .conv2d_forward_fused = im__ref_conv2d_forward_fused,
    .batchnorm_forward_train_fused = im__ref_batchnorm_forward_train_fused,
    .batchnorm_backward_fused = im__ref_batchnorm_backward_fused,
};

im_status_t im_backend_ref_new(im_backend_t **out) { return im__backend_new(&im__ref_iface, NULL, out); }
