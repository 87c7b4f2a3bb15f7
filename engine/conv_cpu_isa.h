/* The vector bodies of conv_cpu.c's direct 3x3 convolution, one copy per
 * instruction set: conv_cpu.c includes this file once per ISA with
 *   ISA_TARGET   the target attribute string ("avx512f,fma", "avx2,fma")
 *   ISA_NAME(x)  a name suffix for the functions defined here
 *   V, VW        the vector type and its width in floats
 *   VLOAD, VSTORE, VZERO, VSET1, VFMA  its intrinsics
 *   COB_F, PV_F  the forward tile: output channels x pixel vectors (registers)
 *   COB_W        output channels per weight-gradient task (9 COB_W accumulators)
 * Nothing here decides threads or layout; conv_cpu.c does (see its comment). */

#define ISA_FN static __attribute__((target(ISA_TARGET)))
#define ISA_INLINE static inline __attribute__((always_inline, target(ISA_TARGET)))

/* acc[c][p] over all input channels and taps, in the fixed order ci, then tap:
 * one FMA chain per output element whatever the batch (batch invariance). */
ISA_INLINE void ISA_NAME(fwd_body)(const conv3_geom *g, const float *xp, const float *w, int cob, int pv,
                                    float *tb)
{
    V acc[COB_F][PV_F];
    #pragma GCC unroll 8
    for (int c = 0; c < COB_F; c++)
        #pragma GCC unroll 8
        for (int p = 0; p < PV_F; p++)
            acc[c][p] = VZERO;
    const size_t wstride = (size_t)g->cin * g->ntap;
    for (int ci = 0; ci < g->cin; ci++) {
        const float *xc = xp + (size_t)ci * g->ps, *wc = w + (size_t)ci * g->ntap;
        for (int k = 0; k < g->ntap; k++) {
            const float *xk = xc + g->tap[k];
            V xv[PV_F];
            #pragma GCC unroll 8
            for (int p = 0; p < PV_F; p++)
                if (p < pv)
                    xv[p] = VLOAD(xk + p * VW);
            #pragma GCC unroll 8
            for (int c = 0; c < COB_F; c++)
                if (c < cob) {
                    const V wb = VSET1(wc[c * wstride + k]);
                    #pragma GCC unroll 8
                    for (int p = 0; p < PV_F; p++)
                        if (p < pv)
                            acc[c][p] = VFMA(wb, xv[p], acc[c][p]);
                }
        }
    }
    #pragma GCC unroll 8
    for (int c = 0; c < COB_F; c++)
        #pragma GCC unroll 8
        for (int p = 0; p < PV_F; p++)
            if (c < cob && p < pv)
                VSTORE(tb + ((size_t)c * PV_F + p) * VW, acc[c][p]);
}

/* One tile: cob <= COB_F output channels (weights w, rows cin*ntap apart) at
 * pv <= PV_F pixel vectors of the padded grid starting at xp; results to
 * tb[c][PV_F*VW]. Each (cob, pv) pair gets its own compiled body, so the
 * accumulators stay in registers. COB_F <= 4 and PV_F <= 6. */
ISA_FN void ISA_NAME(fwd_tile)(const conv3_geom *g, const float *xp, const float *w, int cob, int pv, float *tb)
{
#define FWD_CASE(C, P)                                                                                  \
    case (C) * 16 + (P): ISA_NAME(fwd_body)(g, xp, w, C, P, tb); return;
#define FWD_ROW(C) FWD_CASE(C, 1) FWD_CASE(C, 2) FWD_CASE(C, 3) FWD_CASE(C, 4) FWD_CASE(C, 5) FWD_CASE(C, 6)
    switch (cob * 16 + pv) {
        FWD_ROW(1) FWD_ROW(2) FWD_ROW(3) FWD_ROW(4)
    }
#undef FWD_ROW
#undef FWD_CASE
}

/* out[c*9 + k] = sum over nimg images and the grid of dyg[c] * xg shifted by
 * tap k: dyg rows are g->qg floats (zero off the image), one per (channel,
 * image), images `dstride` apart; xg is one padded channel, images g->ps apart.
 * Sums run image by image, pixel vector by vector, then across lanes: a fixed
 * order for a given chunk of images. */
ISA_INLINE void ISA_NAME(wgrad_body)(const conv3_geom *g, const float *dyg, size_t dstride, const float *xg,
                                      int nimg, int cob, float *out)
{
    V acc[COB_W][9];
    #pragma GCC unroll 8
    for (int c = 0; c < COB_W; c++)
        #pragma GCC unroll 9
        for (int k = 0; k < 9; k++)
            acc[c][k] = VZERO;
    const int nv = g->qg / VW;
    for (int img = 0; img < nimg; img++) {
        const float *x = xg + (size_t)img * g->ps, *d = dyg + (size_t)img * g->qg;
        for (int q = 0; q < nv; q++) {
            V dv[COB_W];
            #pragma GCC unroll 8
            for (int c = 0; c < COB_W; c++)
                if (c < cob)
                    dv[c] = VLOAD(d + c * dstride + (size_t)q * VW);
            #pragma GCC unroll 9
            for (int k = 0; k < 9; k++) {
                V xv = VLOAD(x + g->tap[k] + (size_t)q * VW);
                __asm__("" : "+v"(xv)); /* one load for COB_W FMAs: gcc would fold it into each */
                #pragma GCC unroll 8
                for (int c = 0; c < COB_W; c++)
                    if (c < cob)
                        acc[c][k] = VFMA(dv[c], xv, acc[c][k]);
            }
        }
    }
    #pragma GCC unroll 8
    for (int c = 0; c < COB_W; c++)
        #pragma GCC unroll 9
        for (int k = 0; k < 9; k++)
            if (c < cob) {
                float lanes[VW];
                VSTORE(lanes, acc[c][k]);
                out[c * 9 + k] = hsum_lanes(lanes, VW);
            }
}

ISA_FN void ISA_NAME(wgrad_task)(const conv3_geom *g, const float *dyg, size_t dstride, const float *xg, int nimg,
                                 int cob, float *out)
{
    switch (cob) {
    case 1: ISA_NAME(wgrad_body)(g, dyg, dstride, xg, nimg, 1, out); return;
    case 2: ISA_NAME(wgrad_body)(g, dyg, dstride, xg, nimg, 2, out); return;
    default: ISA_NAME(wgrad_body)(g, dyg, dstride, xg, nimg, COB_W, out); return;
    }
}

#undef ISA_FN
#undef ISA_INLINE
/* the parameters of this instance, so that the next one can set its own */
#undef ISA_TARGET
#undef ISA_NAME
#undef V
#undef VW
#undef VLOAD
#undef VSTORE
#undef VZERO
#undef VSET1
#undef VFMA
#undef COB_F
#undef PV_F
#undef COB_W
