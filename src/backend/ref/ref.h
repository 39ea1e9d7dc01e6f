/* The reference kernels (internal to src/backend): plain C loops, one file
 * per op family, each the spec for its op. Signatures are the vtable's
 * (backend_impl.h); arguments arrive checked and with parameters resolved. */
#ifndef IMOPS_BACKEND_REF_H
#define IMOPS_BACKEND_REF_H

#include "backend/backend_impl.h"

/* ref_conv.c */
im_status_t im__ref_conv2d_forward(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *w, im__ct *bias,
                                   im__t *y);
im_status_t im__ref_conv2d_forward_fused_add(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *w,
                                             im__ct *bias, im__ct *residual, im_act_t act, im__t *y);
im_status_t im__ref_conv2d_backward_data(im_backend_t *b, const im_conv2d_params_t *p, im__ct *dy, im__ct *w,
                                         im__t *dx);
im_status_t im__ref_conv2d_backward_weight(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *dy,
                                           im__t *dw, im__t *dbias);
/* ref_norm.c */
im_status_t im__ref_batchnorm_forward_train(im_backend_t *b, const im_batchnorm_params_t *p, im__ct *x, im__ct *gamma,
                                            im__ct *beta, im__t *running_mean, im__t *running_var, im__t *y,
                                            im__t *save_mean, im__t *save_invstd);
im_status_t im__ref_batchnorm_forward_train_fused(im_backend_t *b, const im_batchnorm_params_t *p, im__ct *x,
                                                  im__ct *gamma, im__ct *beta, im__t *running_mean,
                                                  im__t *running_var, im_act_t act, im__t *y, im__t *save_mean,
                                                  im__t *save_invstd);
im_status_t im__ref_batchnorm_forward_eval(im_backend_t *b, const im_batchnorm_params_t *p, im__ct *x, im__ct *gamma,
                                           im__ct *beta, im__ct *running_mean, im__ct *running_var, im__t *y);
im_status_t im__ref_batchnorm_backward(im_backend_t *b, im__ct *x, im__ct *dy, im__ct *gamma, im__ct *save_mean,
                                       im__ct *save_invstd, im__t *dx, im__t *dgamma, im__t *dbeta);
im_status_t im__ref_batchnorm_backward_fused(im_backend_t *b, im__ct *x, im__ct *y, im_act_t act, im__ct *dy,
                                             im__ct *gamma, im__ct *save_mean, im__ct *save_invstd, im__t *dx,
                                             im__t *dgamma, im__t *dbeta);
im_status_t im__ref_layernorm_forward(im_backend_t *b, const im_layernorm_params_t *p, im__ct *x, im__ct *gamma,
                                      im__ct *beta, im__t *y, im__t *save_mean, im__t *save_invstd);
im_status_t im__ref_layernorm_backward(im_backend_t *b, im__ct *x, im__ct *dy, im__ct *gamma, im__ct *save_mean,
                                       im__ct *save_invstd, im__t *dx, im__t *dgamma, im__t *dbeta);
/* ref_eltwise.c */
im_status_t im__ref_relu_forward(im_backend_t *b, im__ct *x, im__t *y);
im_status_t im__ref_conv2d_forward_fused(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *w,
                                         im__ct *bias, im_act_t act, im__t *y);
im_status_t im__ref_relu_backward(im_backend_t *b, im__ct *y, im__ct *dy, im__t *dx);
im_status_t im__ref_gelu_forward(im_backend_t *b, im__ct *x, im__t *y);
im_status_t im__ref_gelu_backward(im_backend_t *b, im__ct *x, im__ct *dy, im__t *dx);
im_status_t im__ref_dropout_forward(im_backend_t *b, float p, uint64_t seed, im__ct *x, im__t *y, im__t *mask);
im_status_t im__ref_dropout_backward(im_backend_t *b, float p, im__ct *mask, im__ct *dy, im__t *dx);
im_status_t im__ref_add(im_backend_t *b, im__ct *x1, im__ct *x2, im__t *y);
im_status_t im__ref_add_backward(im_backend_t *b, im__ct *dy, im__t *dx1, im__t *dx2);
im_status_t im__ref_fill(im_backend_t *b, im__t *t, float v);
/* ref_pool.c */
im_status_t im__ref_maxpool2d_forward(im_backend_t *b, const im_pool2d_params_t *p, im__ct *x, im__t *y,
                                      im__t *indices);
im_status_t im__ref_maxpool2d_backward(im_backend_t *b, const im_pool2d_params_t *p, im__ct *dy, im__ct *indices,
                                       im__t *dx);
im_status_t im__ref_avgpool2d_forward(im_backend_t *b, const im_pool2d_params_t *p, im__ct *x, im__t *y);
im_status_t im__ref_avgpool2d_backward(im_backend_t *b, const im_pool2d_params_t *p, im__ct *dy, im__t *dx);
im_status_t im__ref_global_avgpool_forward(im_backend_t *b, im__ct *x, im__t *y);
im_status_t im__ref_global_avgpool_backward(im_backend_t *b, im__ct *dy, im__t *dx);
/* ref_linear.c */
im_status_t im__ref_linear_forward(im_backend_t *b, im__ct *x, im__ct *w, im__ct *bias, im__t *y);
im_status_t im__ref_linear_backward_data(im_backend_t *b, im__ct *dy, im__ct *w, im__t *dx);
im_status_t im__ref_linear_backward_weight(im_backend_t *b, im__ct *x, im__ct *dy, im__t *dw, im__t *dbias);
/* ref_loss.c */
im_status_t im__ref_softmax_xent_forward(im_backend_t *b, const im_xent_params_t *p, im__ct *logits, im__ct *labels,
                                         im__t *loss, im__t *probs);
im_status_t im__ref_softmax_xent_backward(im_backend_t *b, const im_xent_params_t *p, im__ct *logits, im__ct *labels,
                                          im__t *dlogits);
/* ref_layout.c */
im_status_t im__ref_nchw_to_nhwc(im_backend_t *b, im__ct *x, im__t *y);
im_status_t im__ref_nhwc_to_nchw(im_backend_t *b, im__ct *x, im__t *y);

#endif
