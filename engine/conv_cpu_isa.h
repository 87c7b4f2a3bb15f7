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
#ifdef VHSUM
                out[c * 9 + k] = VHSUM(acc[c][k]);
#else
                float lanes[VW];
                VSTORE(lanes, acc[c][k]);
                out[c * 9 + k] = hsum_lanes(lanes, VW);
#endif
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

/* Winograd F(2x2, 3x3), the transforms (conv_cpu.c's comment); lanes are
 * tiles, so a tile's numbers never depend on its neighbours. */

/* one h x w plane into its eight planes q (wino_geom), zero-bordered */
__attribute__((unused)) /* AVX-512 has wino_pad_perm */
ISA_FN void ISA_NAME(wino_pad)(const wino_geom *wg, int h, int w, const float *src, float *q)
{
    memset(q, 0, sizeof(float) * 8 * wg->pq);
    for (int r = 0; r < h; r++) { /* padded row r + 1, column c + 1 */
        float *qr = q + (size_t)((r + 1) & 1) * 2 * wg->pq + (size_t)((r + 1) >> 1) * wg->tw;
        const float *s = src + (size_t)r * w;
        for (int c = 0; c < w; c++) {
            float *p = qr + (size_t)((c + 1) & 1) * wg->pq;
            const int b = (c + 1) >> 1;
            if (b < wg->tw)
                p[b] = s[c];
            if (b >= 1)
                p[4 * wg->pq + b - 1] = s[c];
        }
    }
}

/* v[e es + p VW + lane] = (B^T d B)[e] for the nvec lane vectors from lane l0
 * of one input channel's parity planes q (wino_geom). */
ISA_FN void ISA_NAME(wino_in)(const wino_geom *wg, const float *q, int l0, int nvec, float *v, size_t es)
{
    for (int p = 0; p < nvec; p++) {
        const float *ql = q + l0 + p * VW;
        V a[4][4]; /* B^T d */
        #pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const float *c = ql + (size_t)(4 * (j >> 1) + (j & 1)) * wg->pq;
            const V d0 = VLOAD(c), d1 = VLOAD(c + 2 * wg->pq), d2 = VLOAD(c + wg->tw),
                    d3 = VLOAD(c + 2 * wg->pq + wg->tw);
            a[0][j] = VSUB(d0, d2);
            a[1][j] = VADD(d1, d2);
            a[2][j] = VSUB(d2, d1);
            a[3][j] = VSUB(d1, d3);
        }
        float *o = v + (size_t)p * VW;
        #pragma GCC unroll 4
        for (int k = 0; k < 4; k++) { /* (B^T d) B */
            VSTORE(o + (4 * k + 0) * es, VSUB(a[k][0], a[k][2]));
            VSTORE(o + (4 * k + 1) * es, VADD(a[k][1], a[k][2]));
            VSTORE(o + (4 * k + 2) * es, VSUB(a[k][2], a[k][1]));
            VSTORE(o + (4 * k + 3) * es, VSUB(a[k][1], a[k][3]));
        }
    }
}

/* o[k os + lane] = (A^T m A)[k] (k = 2 row + column of the 2 x 2 outputs)
 * for nvec lane vectors of m[e es + lane] */
ISA_FN void ISA_NAME(wino_out)(const float *m, size_t es, int nvec, float *o, int os)
{
    for (int p = 0; p < nvec; p++) {
        const float *q = m + (size_t)p * VW;
        V s[2][4]; /* A^T m */
        #pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const V m0 = VLOAD(q + j * es), m1 = VLOAD(q + (4 + j) * es), m2 = VLOAD(q + (8 + j) * es),
                    m3 = VLOAD(q + (12 + j) * es);
            s[0][j] = VADD(VADD(m0, m1), m2);
            s[1][j] = VSUB(VSUB(m1, m2), m3);
        }
        #pragma GCC unroll 2
        for (int r = 0; r < 2; r++) {
            VSTORE(o + (2 * r) * os + p * VW, VADD(VADD(s[r][0], s[r][1]), s[r][2]));
            VSTORE(o + (2 * r + 1) * os + p * VW, VSUB(VSUB(s[r][1], s[r][2]), s[r][3]));
        }
    }
}

/* The tiles of lanes [l0, l0 + nlanes) of o (wino_out's) into the image
 * plane y (h x w): assigned + b, or added when accumulate; odd sides drop
 * a tile's last row or column. */
__attribute__((unused)) /* AVX-512 has wino_put_perm */
ISA_FN void ISA_NAME(wino_put)(const wino_geom *wg, int h, int w, const float *o, int os, int l0, int nlanes,
                               float *y, float b, int accumulate)
{
    const int l1 = l0 + nlanes < wg->nl ? l0 + nlanes : wg->nl;
    for (int l = l0; l < l1;) {
        const int ty = l / wg->tw, tx0 = l % wg->tw;
        const int end = (ty + 1) * wg->tw < l1 ? (ty + 1) * wg->tw : l1; /* this tile row's lanes */
        const int tx1 = end - ty * wg->tw;
        /* tiles whose two columns are in the image; on odd w the last is cut */
        const int full = tx1 == wg->tw && (w & 1) ? tx1 - 1 : tx1;
        const float *oo = o + (l - l0) - tx0;
        for (int r = 0; r < 2 && 2 * ty + r < h; r++) {
            float *yr = y + (size_t)(2 * ty + r) * w;
            const float *e0 = oo + (2 * r) * os, *e1 = oo + (2 * r + 1) * os;
            if (accumulate) {
                for (int x = tx0; x < full; x++) {
                    yr[2 * x] += e0[x];
                    yr[2 * x + 1] += e1[x];
                }
                if (full < tx1 && full >= tx0)
                    yr[2 * full] += e0[full];
            } else {
                for (int x = tx0; x < full; x++) {
                    yr[2 * x] = e0[x] + b;
                    yr[2 * x + 1] = e1[x] + b;
                }
                if (full < tx1 && full >= tx0)
                    yr[2 * full] = e0[full] + b;
            }
        }
        l = end;
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
#undef VADD
#undef VHSUM
#undef VSUB
#undef COB_F
#undef PV_F
#undef COB_W
