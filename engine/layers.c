#include "vapo/layers.h"

static size_t conv_in_size(const vapo_conv_shape *s) { return (size_t)s->cin * s->batch * s->h * s->w; }

void vapo_conv_fwd(vapo_backend *be, const vapo_conv_shape *s, float *y, const float *x, const float *w,
                   const float *b)
{
    be->conv_forward(be, s, y, x, w, b);
}

void vapo_conv_tangent(vapo_backend *be, const vapo_conv_shape *s, float *ydot, const float *xdot,
                       const float *w)
{
    be->conv_forward(be, s, ydot, xdot, w, NULL); /* the bias has no tangent */
}

void vapo_conv_bwd(vapo_backend *be, const vapo_conv_shape *s, float *dx, const float *dy, const float *w)
{
    if (be->conv_backward_data_set) {
        be->conv_backward_data_set(be, s, dx, dy, w);
        return;
    }
    be->zero(be, dx, sizeof(float) * conv_in_size(s));
    be->conv_backward_data(be, s, dx, dy, w);
}

void vapo_conv_dual(vapo_backend *be, const vapo_conv_shape *s, float *dx, float *dxdot, float *dw, float *db,
                    const float *x, const float *xdot, const float *dy, const float *dydot, const float *w)
{
    if (dw) {
        be->conv_backward_filter(be, s, dw, db, dy, x);
        be->conv_backward_filter(be, s, dw, NULL, dydot, xdot);
    }
    if (dx)
        vapo_conv_bwd(be, s, dx, dy, w);
    if (dxdot)
        vapo_conv_bwd(be, s, dxdot, dydot, w);
}

void vapo_scale_fwd(vapo_backend *be, int c, size_t n, float *y, const float *x, const float *s)
{
    be->scale_forward(be, c, n, y, x, s);
}

void vapo_scale_dual(vapo_backend *be, int c, size_t n, float *dx, float *dxdot, float *ds, const float *x,
                     const float *xdot, const float *dy, const float *dydot, const float *s)
{
    if (ds) {
        be->scale_backward_param(be, c, n, ds, dy, x);
        if (dydot)
            be->scale_backward_param(be, c, n, ds, dydot, xdot);
    }
    if (dx)
        be->scale_forward(be, c, n, dx, dy, s);
    if (dxdot)
        be->scale_forward(be, c, n, dxdot, dydot, s);
}

void vapo_pool_fwd(vapo_backend *be, size_t planes, int h, int w, float *y, const float *x)
{
    be->avgpool2_forward(be, planes, h, w, y, x);
}

void vapo_pool_bwd(vapo_backend *be, size_t planes, int h, int w, float *dx, const float *dy)
{
    be->avgpool2_backward(be, planes, h, w, dx, dy);
}

void vapo_upsample_fwd(vapo_backend *be, size_t planes, int h, int w, float *y, const float *x)
{
    be->upsample2_forward(be, planes, h, w, y, x);
}

void vapo_upsample_bwd(vapo_backend *be, size_t planes, int h, int w, float *dx, const float *dy)
{
    be->upsample2_backward(be, planes, h, w, dx, dy);
}

void vapo_sum_fwd(vapo_backend *be, size_t planes, size_t hw, float *y, const float *x)
{
    be->rowsum_forward(be, planes, hw, y, x);
}

void vapo_sum_bwd(vapo_backend *be, size_t planes, size_t hw, float *dx, const float *dy)
{
    be->rowsum_backward(be, planes, hw, dx, dy);
}
