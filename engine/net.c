/* The energy network: composition of the layers in layers.c, walked forward
 * for Phi, forward-mode for the tangent, and in reverse for grad_x Phi and the
 * dual (second-order) parameter gradient. See net.h for the contract. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vapo/error.h"
#include "vapo/layers.h"
#include "vapo/net.h"
#include "vapo/rng.h"

typedef struct {
    int cin, cout, k;
    size_t v, g, b; /* parameter offsets */
    size_t w;       /* offset of the normalised weight in net->weights */
} conv_mod;

typedef struct {
    int level, cin, cout;
    conv_mod c1, c2, sc; /* sc.cout == 0: identity shortcut */
    size_t scale;        /* parameter offset of the ReZero gain */
    int up, skip;        /* U-Net decoder: up = 1 on a level's first block, whose input is the
                          * concatenation [output of encoder block `skip`; upsampled previous output] */
} block_mod;

/* Saved activations of one pass (primal, or tangent with the same layout). */
typedef struct {
    float *x;                                 /* input, CNHW */
    float *c0;                                /* conv_in output */
    float **in, **h1, **c1, **h2, **c2, **y;  /* per block */
    float *gated[VAPO_MAX_LEVELS];            /* per head: its activation, */
    float *sum[VAPO_MAX_LEVELS];              /* spatial sum */
    float *head_phi[VAPO_MAX_LEVELS];         /* and output (the last head's is phi) */
    float *flat, *hidden, *hidden_act, *global_phi; /* global head (arch.global_head) */
    float *out_act, *out_conv, *f, *res;      /* U-Net output: act, conv, f (scaled), x - f */
    float *phi;
} act_set;

struct vapo_net {
    vapo_backend *be;
    vapo_arch arch;
    vapo_param *params;
    int nparam_tensors;
    size_t nparams, nweights;
    float *theta;   /* parameters (backend) */
    uint64_t version;         /* theta's version: a process-wide unique number per change */
    uint64_t weights_version; /* theta's version when `weights` were computed; 0: never */
    float *weights; /* weight-normalised conv weights (backend) */
    float *wgrad;   /* their gradients during the dual pass (backend) */
    conv_mod conv_in;
    conv_mod heads[VAPO_MAX_LEVELS]; /* cout == 0: that level has no head */
    size_t anchor;                   /* parameter offset of mu (arch.anchor) */
    conv_mod global_hidden, global_out; /* arch.global_head: dense layers on the flat last level */
    conv_mod conv_out;               /* arch.unet: last decoder output -> f(x) */
    size_t out_scale;                /* parameter offset of f's per-channel gain (starts at 0: f = 0) */
    size_t out_offset;               /* parameter offset of Phi's constant (vapo-train sets it: E[Phi] = 0) */
    block_mod *blocks;
    int nblocks;

    int batch, capacity; /* current batch; batch the buffers are sized for */
    float *arena[3];     /* primal, tangent, scratch */
    act_set fwd, tan;
    float *scratch[8];   /* reverse-pass adjoint buffers */
    float *skip_arena;   /* U-Net: the adjoints of the skip connections, held until the */
    float *skip_adj[VAPO_MAX_LEVELS], *skip_adjd[VAPO_MAX_LEVELS]; /* encoder's reverse pass reaches them */
    float *ones;         /* `capacity` ones: the seed of grad_x Phi */
    int have_forward, have_tangent;
    /* The adjoints of vapo_net_backward_keep, which the next dual backward with
     * phidot_bar = 1 reads as its tangent adjoints instead of recomputing them
     * (tape_step). */
    float *tape;
    size_t tape_cap;
    int tape_ok; /* the tape holds the last forward's adjoints */
};

/* ---- structure ------------------------------------------------------------- */

static int level_h(const vapo_net *n, int l) { return n->arch.in_h >> l; }
static int level_w(const vapo_net *n, int l) { return n->arch.in_w >> l; }
static size_t level_cols(const vapo_net *n, int l, int batch)
{
    return (size_t)batch * level_h(n, l) * level_w(n, l);
}

static int add_param(vapo_net *n, const char *name, int ndim, const int *shape, size_t *offset)
{
    vapo_param *grown = realloc(n->params, sizeof *grown * (n->nparam_tensors + 1));
    if (!grown)
        return vapo_fail("out of memory");
    n->params = grown;
    vapo_param *p = &n->params[n->nparam_tensors++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->count = 1;
    for (int i = 0; i < ndim; i++)
        p->shape[i] = shape[i], p->count *= (size_t)shape[i];
    p->offset = n->nparams;
    n->nparams += p->count;
    *offset = p->offset;
    return 0;
}

static int add_conv(vapo_net *n, const char *prefix, int cin, int cout, int k, conv_mod *c)
{
    char name[64];
    c->cin = cin, c->cout = cout, c->k = k;
    int vshape[4] = {cout, cin, k, k}, cshape[1] = {cout};
    snprintf(name, sizeof name, "%s.v", prefix);
    if (add_param(n, name, 4, vshape, &c->v))
        return -1;
    snprintf(name, sizeof name, "%s.g", prefix);
    if (add_param(n, name, 1, cshape, &c->g))
        return -1;
    snprintf(name, sizeof name, "%s.b", prefix);
    if (add_param(n, name, 1, cshape, &c->b))
        return -1;
    c->w = n->nweights;
    n->nweights += (size_t)cout * cin * k * k;
    return 0;
}

/* Index of the (encoder) block whose output is level l's output. */
static int level_output(const vapo_net *n, int l) { return (l + 1) * n->arch.blocks - 1; }

static int add_block(vapo_net *n, block_mod *b, const char *group, int level, int j, int cin, int cout)
{
    const vapo_arch *a = &n->arch;
    char prefix[64];
    const int cshape[1] = {cout};
    b->level = level, b->cin = cin, b->cout = cout;
    snprintf(prefix, sizeof prefix, "%s.%d.blocks.%d.conv1", group, level, j);
    if (add_conv(n, prefix, cin, cout, a->kernel, &b->c1))
        return -1;
    snprintf(prefix, sizeof prefix, "%s.%d.blocks.%d.conv2", group, level, j);
    if (add_conv(n, prefix, cout, cout, a->kernel, &b->c2))
        return -1;
    snprintf(prefix, sizeof prefix, "%s.%d.blocks.%d.scale", group, level, j);
    if (add_param(n, prefix, 1, cshape, &b->scale))
        return -1;
    snprintf(prefix, sizeof prefix, "%s.%d.blocks.%d.shortcut", group, level, j);
    return cin != cout ? add_conv(n, prefix, cin, cout, a->kernel, &b->sc) : 0;
}

/* The U-Net's decoder (blocks after the encoder's, levels-2 .. 0) and output:
 * each level starts from [encoder output; upsampled coarser output]
 * concatenated, and f = scale * conv(act(last output)). */
static int build_decoder(vapo_net *n)
{
    const vapo_arch *a = &n->arch;
    int i = a->levels * a->blocks, cin = a->widths[a->levels - 1];
    for (int l = a->levels - 2; l >= 0; l--)
        for (int j = 0; j < a->blocks; j++, i++) {
            block_mod *b = &n->blocks[i];
            b->up = j == 0, b->skip = level_output(n, l);
            if (add_block(n, b, "up", l, j, (j == 0 ? a->widths[l] : 0) + cin, a->widths[l]))
                return -1;
            cin = a->widths[l];
        }
    const int cshape[1] = {a->in_c}, one[1] = {1};
    if (add_conv(n, "out.conv", cin, a->in_c, a->kernel, &n->conv_out) ||
        add_param(n, "out.scale", 1, cshape, &n->out_scale))
        return -1;
    return add_param(n, "out.offset", 1, one, &n->out_offset);
}

static int build_structure(vapo_net *n)
{
    const vapo_arch *a = &n->arch;
    n->nblocks = (a->unet ? 2 * a->levels - 1 : a->levels) * a->blocks;
    n->blocks = calloc(n->nblocks, sizeof *n->blocks);
    if (!n->blocks)
        return vapo_fail("out of memory");
    if (add_conv(n, "conv_in", a->in_c, a->widths[0], a->kernel, &n->conv_in))
        return -1;
    int cin = a->widths[0];
    for (int l = 0, i = 0; l < a->levels; l++)
        for (int j = 0; j < a->blocks; j++, i++) {
            if (add_block(n, &n->blocks[i], "levels", l, j, cin, a->widths[l]))
                return -1;
            cin = a->widths[l];
        }
    if (a->unet)
        return build_decoder(n);
    const int last = a->levels - 1;
    if (add_conv(n, "head", cin, 1, 1, &n->heads[last]))
        return -1;
    /* after every other parameter, so a single-head network keeps its layout */
    for (int l = 0; l < last && a->multiscale_head; l++) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "levels.%d.head", l);
        if (add_conv(n, prefix, a->widths[l], 1, 1, &n->heads[l]))
            return -1;
    }
    const int image[3] = {a->in_c, a->in_h, a->in_w};
    if (a->anchor && add_param(n, "anchor", 3, image, &n->anchor))
        return -1;
    if (!a->global_head)
        return 0;
    const int flat = a->widths[last] * level_h(n, last) * level_w(n, last);
    if (add_conv(n, "global.hidden", flat, a->global_head, 1, &n->global_hidden))
        return -1;
    return add_conv(n, "global.out", a->global_head, 1, 1, &n->global_out);
}

/* A number no net's parameters have had: versions never repeat, so a
 * backend's (weight pointer, version) key outlives a freed net safely. */
static uint64_t new_version(void)
{
    static uint64_t last;
    return __atomic_add_fetch(&last, 1, __ATOMIC_RELAXED);
}

vapo_net *vapo_net_create(vapo_backend *be, const vapo_arch *arch)
{
    if (vapo_arch_validate(arch))
        return NULL;
    vapo_net *n = calloc(1, sizeof *n);
    if (!n) {
        vapo_fail("out of memory");
        return NULL;
    }
    n->be = be;
    n->arch = *arch;
    n->version = new_version();
    if (build_structure(n))
        goto fail;
    n->theta = be->alloc(be, sizeof(float) * n->nparams);
    n->weights = be->alloc(be, sizeof(float) * n->nweights);
    n->wgrad = be->alloc(be, sizeof(float) * n->nweights);
    if (!n->theta || !n->weights || !n->wgrad) {
        vapo_fail("out of memory for %zu parameters", n->nparams);
        goto fail;
    }
    return n;
fail:
    vapo_net_free(n);
    return NULL;
}

static void free_acts(vapo_net *n)
{
    for (int i = 0; i < 3; i++) {
        if (n->arena[i])
            n->be->free(n->be, n->arena[i]);
        n->arena[i] = NULL;
    }
    if (n->ones)
        n->be->free(n->be, n->ones);
    if (n->skip_arena)
        n->be->free(n->be, n->skip_arena);
    if (n->tape)
        n->be->free(n->be, n->tape);
    n->ones = n->skip_arena = n->tape = NULL;
    n->tape_cap = 0;
    n->tape_ok = 0;
    act_set *sets[2] = {&n->fwd, &n->tan};
    for (int s = 0; s < 2; s++) {
        free(sets[s]->in);
        memset(sets[s], 0, sizeof *sets[s]);
    }
    n->capacity = 0;
}

void vapo_net_free(vapo_net *n)
{
    if (!n)
        return;
    free_acts(n);
    if (n->theta)
        n->be->free(n->be, n->theta);
    if (n->weights)
        n->be->free(n->be, n->weights);
    if (n->wgrad)
        n->be->free(n->be, n->wgrad);
    free(n->params);
    free(n->blocks);
    free(n);
}

const vapo_arch *vapo_net_arch(const vapo_net *n) { return &n->arch; }
vapo_backend *vapo_net_backend(const vapo_net *n) { return n->be; }
size_t vapo_net_param_count(const vapo_net *n) { return n->nparams; }
void vapo_net_params_changed(vapo_net *n) { n->version = new_version(); }
float *vapo_net_params(vapo_net *n)
{
    vapo_net_params_changed(n);
    return n->theta;
}
size_t vapo_net_input_size(const vapo_net *n) { return (size_t)n->arch.in_c * n->arch.in_h * n->arch.in_w; }

int vapo_net_params_list(const vapo_net *n, const vapo_param **list)
{
    *list = n->params;
    return n->nparam_tensors;
}

const vapo_param *vapo_net_param_find(const vapo_net *n, const char *name)
{
    for (int i = 0; i < n->nparam_tensors; i++)
        if (!strcmp(n->params[i].name, name))
            return &n->params[i];
    return NULL;
}

/* ---- activation memory: one arena per role, carved by a bump pointer ------- */

typedef struct {
    float *base;
    size_t used;
} bump;

static float *take(bump *b, size_t count)
{
    float *p = b->base ? b->base + b->used : NULL;
    b->used += (count + 15) & ~(size_t)15; /* keep 64-byte alignment */
    return p;
}

/* Lays out one act_set for `batch` (pointers only when the arena exists). */
static size_t layout_set(vapo_net *n, act_set *s, float *base, int batch)
{
    bump b = {base, 0};
    const vapo_arch *a = &n->arch;
    s->x = take(&b, (size_t)a->in_c * level_cols(n, 0, batch));
    s->c0 = take(&b, (size_t)a->widths[0] * level_cols(n, 0, batch));
    float *prev = s->c0;
    for (int i = 0; i < n->nblocks; i++) {
        const block_mod *m = &n->blocks[i];
        const size_t cols = level_cols(n, m->level, batch);
        if (i > 0 && m->level != n->blocks[i - 1].level)
            prev = take(&b, (size_t)m->cin * cols); /* pooled input */
        s->in[i] = prev;
        s->h1[i] = take(&b, (size_t)m->cin * cols);
        s->c1[i] = take(&b, (size_t)m->cout * cols);
        s->h2[i] = take(&b, (size_t)m->cout * cols);
        s->c2[i] = take(&b, (size_t)m->cout * cols);
        s->y[i] = prev = take(&b, (size_t)m->cout * cols);
    }
    for (int l = 0; l < a->levels; l++) {
        if (!n->heads[l].cout)
            continue;
        s->gated[l] = take(&b, (size_t)a->widths[l] * level_cols(n, l, batch));
        s->sum[l] = take(&b, (size_t)a->widths[l] * batch);
        s->head_phi[l] = take(&b, (size_t)batch);
    }
    if (a->global_head) {
        s->flat = take(&b, (size_t)n->global_hidden.cin * batch);
        s->hidden = take(&b, (size_t)a->global_head * batch);
        s->hidden_act = take(&b, (size_t)a->global_head * batch);
        s->global_phi = take(&b, (size_t)batch);
    }
    if (a->unet) {
        const size_t image = (size_t)a->in_c * level_cols(n, 0, batch);
        s->out_act = take(&b, (size_t)a->widths[0] * level_cols(n, 0, batch));
        s->out_conv = take(&b, image);
        s->f = take(&b, image);
        s->res = take(&b, image);
        s->phi = take(&b, (size_t)batch);
    } else {
        s->phi = s->head_phi[a->levels - 1];
    }
    return b.used;
}

static size_t max_block_tensor(const vapo_net *n, int batch)
{
    size_t m = (size_t)n->arch.in_c * level_cols(n, 0, batch);
    const size_t global = (size_t)(n->global_hidden.cin > n->arch.global_head ? n->global_hidden.cin
                                                                                 : n->arch.global_head);
    if (global * batch > m) /* the global head's reverse pass runs in these buffers too */
        m = global * batch;
    for (int i = 0; i < n->nblocks; i++) {
        const block_mod *b = &n->blocks[i];
        size_t c = (size_t)(b->cin > b->cout ? b->cin : b->cout) * level_cols(n, b->level, batch);
        if (c > m)
            m = c;
    }
    return m;
}

/* Floats per reverse-pass scratch buffer (8 of them), 64-byte aligned. */
static size_t scratch_floats(const vapo_net *n, int batch)
{
    return (max_block_tensor(n, batch) + 15) & ~(size_t)15;
}

static int alloc_set(vapo_net *n, act_set *s, int batch, int arena)
{
    float **ptrs = calloc(6 * (size_t)n->nblocks, sizeof *ptrs);
    if (!ptrs)
        return vapo_fail("out of memory");
    s->in = ptrs, s->h1 = ptrs + n->nblocks, s->c1 = ptrs + 2 * n->nblocks;
    s->h2 = ptrs + 3 * n->nblocks, s->c2 = ptrs + 4 * n->nblocks, s->y = ptrs + 5 * n->nblocks;
    size_t floats = layout_set(n, s, NULL, batch);
    n->arena[arena] = n->be->alloc(n->be, sizeof(float) * floats);
    if (!n->arena[arena])
        return vapo_fail("out of memory for activations of a batch of %d (%zu MiB)", batch,
                         (sizeof(float) * floats) >> 20);
    return 0;
}

/* The U-Net's skip adjoints (and their tangents) for `batch`, laid out when
 * base is not NULL; returns the floats they take. */
static size_t layout_skips(vapo_net *n, float *base, int batch)
{
    bump b = {base, 0};
    for (int l = 0; l < n->arch.levels - 1 && n->arch.unet; l++) {
        n->skip_adj[l] = take(&b, (size_t)n->arch.widths[l] * level_cols(n, l, batch));
        n->skip_adjd[l] = take(&b, (size_t)n->arch.widths[l] * level_cols(n, l, batch));
    }
    return b.used;
}

/* Points the activation sets and the reverse-pass scratch at the arenas for
 * `batch` <= capacity: every buffer's size is linear in the batch. */
static void lay_out(vapo_net *n, int batch)
{
    layout_set(n, &n->fwd, n->arena[0], batch);
    layout_set(n, &n->tan, n->arena[1], batch);
    const size_t each = scratch_floats(n, batch);
    for (int i = 0; i < 8; i++)
        n->scratch[i] = n->arena[2] + i * each;
    layout_skips(n, n->skip_arena, batch);
    n->batch = batch;
}

/* Sizes every buffer for `batch`. The arenas only grow: a smaller batch (the
 * sampler's, as trajectories finish) reuses them with a new layout. */
static int reserve(vapo_net *n, int batch)
{
    if (batch == n->batch)
        return 0;
    if (batch <= n->capacity) {
        lay_out(n, batch);
        return 0;
    }
    free_acts(n);
    n->batch = n->capacity = 0;
    if (alloc_set(n, &n->fwd, batch, 0) || alloc_set(n, &n->tan, batch, 1))
        return -1;
    n->arena[2] = n->be->alloc(n->be, sizeof(float) * scratch_floats(n, batch) * 8);
    n->ones = n->be->alloc(n->be, sizeof(float) * batch);
    const size_t skips = layout_skips(n, NULL, batch);
    n->skip_arena = skips ? n->be->alloc(n->be, sizeof(float) * skips) : NULL;
    float *host = malloc(sizeof(float) * batch);
    if (!n->arena[2] || !n->ones || !host || (skips && !n->skip_arena)) {
        free(host);
        return vapo_fail("out of memory for the reverse pass of a batch of %d", batch);
    }
    for (int i = 0; i < batch; i++)
        host[i] = 1.0f;
    n->be->upload(n->be, n->ones, host, sizeof(float) * batch);
    free(host);
    n->capacity = batch;
    lay_out(n, batch);
    return 0;
}

/* ---- initialisation ---------------------------------------------------------- */

static void fill_normal(vapo_net *n, uint64_t seed, uint64_t stream, size_t off, size_t count, float std,
                        float *host)
{
    vapo_rng_normal(seed, stream, 0, count, host + off);
    for (size_t i = 0; i < count; i++)
        host[off + i] *= std;
    (void)n;
}

static void init_conv(vapo_net *n, const conv_mod *c, uint64_t seed, uint64_t stream, float *host)
{
    const size_t fan_in = (size_t)c->cin * c->k * c->k;
    fill_normal(n, seed, stream, c->v, c->cout * fan_in, 1.0f / sqrtf((float)fan_in), host);
    for (int o = 0; o < c->cout; o++)
        host[c->g + o] = 1.0f;
}

int vapo_net_set_scales(vapo_net *n, float value)
{
    float *host = malloc(sizeof(float) * n->nparams);
    if (!host)
        return vapo_fail("out of memory");
    n->be->download(n->be, host, n->theta, sizeof(float) * n->nparams);
    int found = 0;
    for (int i = 0; i < n->nparam_tensors; i++) {
        const size_t len = strlen(n->params[i].name);
        if (len >= 6 && !strcmp(n->params[i].name + len - 6, ".scale")) {
            for (size_t k = 0; k < n->params[i].count; k++)
                host[n->params[i].offset + k] = value;
            found++;
        }
    }
    n->be->upload(n->be, vapo_net_params(n), host, sizeof(float) * n->nparams);
    free(host);
    return found ? 0 : vapo_fail("the network has no ReZero scale parameters");
}

int vapo_net_init(vapo_net *n, uint64_t seed)
{
    float *host = calloc(n->nparams, sizeof *host);
    if (!host)
        return vapo_fail("out of memory");
    uint64_t stream = VAPO_STREAM_INIT;
    init_conv(n, &n->conv_in, seed, stream++, host);
    for (int i = 0; i < n->nblocks; i++) {
        init_conv(n, &n->blocks[i].c1, seed, stream++, host);
        init_conv(n, &n->blocks[i].c2, seed, stream++, host);
        if (n->blocks[i].sc.cout)
            init_conv(n, &n->blocks[i].sc, seed, stream++, host);
    }
    for (int l = n->arch.levels - 1; l >= 0; l--) /* the last level's head first: the stream order of one head */
        if (n->heads[l].cout)
            init_conv(n, &n->heads[l], seed, stream++, host);
    if (n->arch.global_head) {
        init_conv(n, &n->global_hidden, seed, stream++, host);
        init_conv(n, &n->global_out, seed, stream++, host);
    }
    if (n->arch.unet)
        init_conv(n, &n->conv_out, seed, stream++, host);
    n->be->upload(n->be, vapo_net_params(n), host, sizeof(float) * n->nparams);
    free(host);
    return 0;
}

/* ---- forward and tangent --------------------------------------------------------- */

static vapo_conv_shape conv_shape(const vapo_net *n, const conv_mod *c, int level)
{
    return (vapo_conv_shape){c->cin, c->cout, c->k, n->batch, level_h(n, level), level_w(n, level), n->weights_version};
}

static void normalise_weights(vapo_net *n, const conv_mod *c)
{
    n->be->weightnorm_forward(n->be, c->cout, c->cin * c->k * c->k, n->weights + c->w, n->theta + c->v,
                              n->theta + c->g);
}

/* The weight-normalised weights of theta's current version: computed once
 * per version (sampling and serving call the net many times between
 * changes; training changes theta every step). */
static void refresh_weights(vapo_net *n)
{
    if (n->weights_version == n->version)
        return;
    n->weights_version = n->version;
    normalise_weights(n, &n->conv_in);
    for (int i = 0; i < n->nblocks; i++) {
        normalise_weights(n, &n->blocks[i].c1);
        normalise_weights(n, &n->blocks[i].c2);
        if (n->blocks[i].sc.cout)
            normalise_weights(n, &n->blocks[i].sc);
    }
    for (int l = 0; l < n->arch.levels; l++)
        if (n->heads[l].cout)
            normalise_weights(n, &n->heads[l]);
    if (n->arch.global_head) {
        normalise_weights(n, &n->global_hidden);
        normalise_weights(n, &n->global_out);
    }
    if (n->arch.unet)
        normalise_weights(n, &n->conv_out);
}

/* A conv of the primal pass adds its bias; the tangent pass has none. */
static void run_conv_as(vapo_net *n, const conv_mod *c, const vapo_conv_shape *s, float *y, const float *x,
                        int tangent)
{
    if (tangent)
        vapo_conv_tangent(n->be, s, y, x, n->weights + c->w);
    else
        vapo_conv_fwd(n->be, s, y, x, n->weights + c->w, n->theta + c->b);
}

static void run_conv(vapo_net *n, const conv_mod *c, int level, float *y, const float *x, int tangent)
{
    const vapo_conv_shape s = conv_shape(n, c, level);
    run_conv_as(n, c, &s, y, x, tangent);
}

/* y = f(x) on the primal pass; ydot = f'(x) xdot on the tangent pass. */
static void run_act(vapo_net *n, vapo_act a, size_t count, float *out, const float *primal_in,
                    const float *tangent_in, int tangent)
{
    if (tangent)
        n->be->act_tangent(n->be, a, count, out, primal_in, tangent_in);
    else
        n->be->act_forward(n->be, a, count, out, primal_in);
}

/* The heads' dense layers: 1x1 convolutions on one column per sample. */
static vapo_conv_shape dense_shape(const vapo_net *n, const conv_mod *c)
{
    return (vapo_conv_shape){c->cin, c->cout, 1, n->batch, 1, 1, n->weights_version};
}

static void run_dense(vapo_net *n, const conv_mod *c, float *y, const float *x, int tangent)
{
    const vapo_conv_shape s = dense_shape(n, c);
    run_conv_as(n, c, &s, y, x, tangent);
}

/* Head of level l: act -> spatial sum -> linear, into s->head_phi[l]. */
static void head_forward(vapo_net *n, act_set *s, int l, int tangent)
{
    const int c = n->arch.widths[l], out = level_output(n, l);
    const size_t hw = (size_t)level_h(n, l) * level_w(n, l);
    run_act(n, n->arch.head_act, c * hw * n->batch, s->gated[l], n->fwd.y[out], s->y[out], tangent);
    vapo_sum_fwd(n->be, (size_t)c * n->batch, hw, s->sum[l], s->gated[l]);
    run_dense(n, &n->heads[l], s->head_phi[l], s->sum[l], tangent);
}

/* The last level's gated features, [C][N][HW], as one column per sample,
 * [C*HW][N] (the input of a 1x1 convolution over a 1x1 "image"), and back. */
static void flatten_last(vapo_net *n, float *flat, const float *gated, int back)
{
    const int last = n->arch.levels - 1, hw = level_h(n, last) * level_w(n, last);
    const size_t plane = (size_t)hw * n->batch;
    for (int c = 0; c < n->arch.widths[last]; c++)
        if (back)
            n->be->cnhw_to_nchw(n->be, n->batch, hw, 1, (float *)gated + c * plane, flat + c * plane);
        else
            n->be->nchw_to_cnhw(n->be, n->batch, hw, 1, flat + c * plane, gated + c * plane);
}

/* Global head: dense(act(dense(flat))) on the whole last level, so that Phi
 * can couple distant positions (the spatial sums cannot). */
static void global_forward(vapo_net *n, act_set *s, int tangent)
{
    flatten_last(n, s->flat, s->gated[n->arch.levels - 1], 0);
    run_dense(n, &n->global_hidden, s->hidden, s->flat, tangent);
    run_act(n, n->arch.act, (size_t)n->arch.global_head * n->batch, s->hidden_act, n->fwd.hidden, s->hidden,
            tangent);
    run_dense(n, &n->global_out, s->global_phi, s->hidden_act, tangent);
}

/* A U-Net decoder level's input: in CNHW a channel concatenation is two
 * adjacent slabs, the skip's copy and the upsampled coarser output. */
static void concat_up(vapo_net *n, act_set *s, int i)
{
    const block_mod *m = &n->blocks[i];
    const size_t skip = (size_t)n->blocks[m->skip].cout * level_cols(n, m->level, n->batch);
    n->be->copy(n->be, s->in[i], s->y[m->skip], sizeof(float) * skip);
    vapo_upsample_fwd(n->be, (size_t)n->blocks[i - 1].cout * n->batch, level_h(n, m->level + 1),
                      level_w(n, m->level + 1), s->in[i] + skip, s->y[i - 1]);
}

/* Phi's constant per unit of its parameter (net.h) */
static float offset_unit(const vapo_net *n)
{
    return 0.5f * VAPO_UNET_OFFSET_UNIT * n->arch.quadratic * (float)vapo_net_input_size(n);
}

/* The U-Net's f = scale * conv(act(last output)), res = x - f and
 * Phi = C - kappa/2 |res|^2 with C = offset_unit * c; on the tangent pass
 * resdot = u - fdot and Phidot = -kappa <res, resdot> (add_sample_dots: one row
 * per channel and image). The constant gives the spectral-gap term lambda Phi^2 the free level that
 * the WRN's head bias gives it: without it, that term pulls f towards x. */
static void add_sample_dots(vapo_net *n, float a, const float *x, const float *y, float *out);

static void unet_output(vapo_net *n, act_set *s, int tangent)
{
    vapo_backend *be = n->be;
    const act_set *p = &n->fwd;
    const int last = n->nblocks - 1;
    const size_t cols = level_cols(n, 0, n->batch), count = (size_t)n->arch.in_c * cols;
    run_act(n, n->arch.act, n->arch.widths[0] * cols, s->out_act, p->y[last], s->y[last], tangent);
    run_conv(n, &n->conv_out, 0, s->out_conv, s->out_act, tangent);
    vapo_scale_fwd(be, n->arch.in_c, cols, s->f, s->out_conv, n->theta + n->out_scale);
    be->copy(be, s->res, s->x, sizeof(float) * count);
    be->axpy(be, count, -1.0f, s->f, s->res);
    be->zero(be, s->phi, sizeof(float) * n->batch);
    add_sample_dots(n, tangent ? -n->arch.quadratic : -0.5f * n->arch.quadratic, p->res, s->res, s->phi);
    if (!tangent) {
        float *c = n->scratch[0];
        be->scale_forward(be, 1, n->batch, c, n->ones, n->theta + n->out_offset);
        be->axpy(be, n->batch, offset_unit(n), c, s->phi);
    }
}

/* One walk for both passes: the tangent pass is the forward pass with each
 * non-linearity replaced by its derivative at the saved primal point. */
static void walk_forward(vapo_net *n, act_set *s, int tangent)
{
    vapo_backend *be = n->be;
    const act_set *p = &n->fwd;
    float *tmp = n->scratch[0];
    run_conv(n, &n->conv_in, 0, s->c0, s->x, tangent);
    for (int i = 0; i < n->nblocks; i++) {
        const block_mod *m = &n->blocks[i];
        const size_t cols = level_cols(n, m->level, n->batch);
        if (m->up)
            concat_up(n, s, i);
        else if (i > 0 && m->level != n->blocks[i - 1].level)
            vapo_pool_fwd(be, (size_t)m->cin * n->batch, level_h(n, m->level - 1), level_w(n, m->level - 1),
                          s->in[i], s->y[i - 1]);
        run_act(n, n->arch.act, m->cin * cols, s->h1[i], p->in[i], s->in[i], tangent);
        run_conv(n, &m->c1, m->level, s->c1[i], s->h1[i], tangent);
        run_act(n, n->arch.act, m->cout * cols, s->h2[i], p->c1[i], s->c1[i], tangent);
        run_conv(n, &m->c2, m->level, s->c2[i], s->h2[i], tangent);
        vapo_scale_fwd(be, m->cout, cols, tmp, s->c2[i], n->theta + m->scale);
        if (m->sc.cout) {
            run_conv(n, &m->sc, m->level, s->y[i], s->in[i], tangent);
            be->axpy(be, m->cout * cols, 1.0f, tmp, s->y[i]);
        } else {
            be->add(be, m->cout * cols, s->y[i], s->in[i], tmp);
        }
    }
    for (int l = n->arch.levels - 1; l >= 0; l--) {
        if (!n->heads[l].cout)
            continue;
        head_forward(n, s, l, tangent);
        if (s->head_phi[l] != s->phi)
            be->axpy(be, n->batch, 1.0f, s->head_phi[l], s->phi);
    }
    if (n->arch.global_head) {
        global_forward(n, s, tangent);
        be->axpy(be, n->batch, 1.0f, s->global_phi, s->phi);
    }
    if (n->arch.unet)
        unet_output(n, s, tangent);
}

static int check_batch(int batch)
{
    if (batch < 1 || batch > (1 << 20))
        return vapo_fail("batch size must be 1..%d, got %d", 1 << 20, batch);
    return 0;
}

/* out[b] += a * <x_b, y_b> over sample b of two inputs in the net's CNHW
 * layout: per-(channel, sample) row dots into scratch, then a sum over channels. */
static void add_sample_dots(vapo_net *n, float a, const float *x, const float *y, float *out)
{
    const int rows = n->arch.in_c * n->batch;
    float *dots = n->scratch[0];
    n->be->zero(n->be, dots, sizeof(float) * rows);
    n->be->scale_backward_param(n->be, rows, (size_t)n->arch.in_h * n->arch.in_w, dots, x, y);
    for (int c = 0; c < n->arch.in_c; c++)
        n->be->axpy(n->be, n->batch, a, dots + (size_t)c * n->batch, out);
}

/* The anchor's -kappa/2 |x - mu|^2 = -kappa/2 |x|^2 + kappa <mu, x> - kappa/2 |mu|^2.
 * Per channel the batch is an N x HW matrix X (CNHW), so <mu, x_b> for every b
 * is X mu: a 1x1 convolution of the one-pixel "image" mu with X as its filter
 * bank. The same view gives X^T a (conv_backward_data) and X += a mu^T
 * (conv_backward_filter), so every backend runs it with its convolutions. */
static vapo_conv_shape rows_shape(const vapo_net *n)
{
    return (vapo_conv_shape){n->arch.in_h * n->arch.in_w, n->batch, 1, 1, 1, 1, 0};
}

/* out[b] += a <mu, x_b>; tmp holds `batch` floats. */
static void add_anchor_dots(vapo_net *n, float a, const float *x, float *out, float *tmp)
{
    const vapo_conv_shape s = rows_shape(n);
    const size_t hw = (size_t)s.cin, plane = hw * n->batch;
    for (int c = 0; c < n->arch.in_c; c++) {
        n->be->conv_forward(n->be, &s, tmp, n->theta + n->anchor + c * hw, x + c * plane, NULL);
        n->be->axpy(n->be, n->batch, a, tmp, out);
    }
}

/* Phi's quadratic part: -kappa/2 |x|^2, and with the anchor kappa <mu, x> - kappa/2 |mu|^2. */
static void add_quadratic(vapo_net *n, const float *x, float *phi)
{
    const float kappa = n->arch.quadratic;
    add_sample_dots(n, -0.5f * kappa, x, x, phi);
    if (!n->arch.anchor)
        return;
    const float *mu = n->theta + n->anchor;
    const double mu2 = n->be->dot(n->be, vapo_net_input_size(n), mu, mu);
    add_anchor_dots(n, kappa, x, phi, n->scratch[0]);
    n->be->axpy(n->be, n->batch, (float)(-0.5 * kappa * mu2), n->ones, phi);
}

int vapo_net_forward(vapo_net *n, int batch, const float *x, float *phi)
{
    if (check_batch(batch) || reserve(n, batch))
        return -1;
    refresh_weights(n);
    const vapo_arch *a = &n->arch;
    n->be->nchw_to_cnhw(n->be, batch, a->in_c, a->in_h * a->in_w, n->fwd.x, x);
    walk_forward(n, &n->fwd, 0);
    if (a->quadratic != 0.0f && !a->unet) /* the U-Net's Phi is its quadratic */
        add_quadratic(n, n->fwd.x, n->fwd.phi);
    n->be->copy(n->be, phi, n->fwd.phi, sizeof(float) * batch);
    n->have_forward = 1;
    n->have_tangent = 0;
    n->tape_ok = 0;
    return 0;
}

int vapo_net_tangent(vapo_net *n, const float *u, float *phi_dot)
{
    if (!n->have_forward)
        return vapo_fail("vapo_net_tangent needs a forward pass first");
    const vapo_arch *a = &n->arch;
    n->be->nchw_to_cnhw(n->be, n->batch, a->in_c, a->in_h * a->in_w, n->tan.x, u);
    walk_forward(n, &n->tan, 1);
    if (phi_dot) { /* the dual pass reads the tangent activations, not Phidot: the loss step skips this */
        if (a->quadratic != 0.0f && !a->unet)
            add_sample_dots(n, -a->quadratic, n->fwd.x, n->tan.x, n->tan.phi);
        if (a->anchor)
            add_anchor_dots(n, a->quadratic, n->tan.x, n->tan.phi, n->scratch[0]);
        n->be->copy(n->be, phi_dot, n->tan.phi, sizeof(float) * n->batch);
    }
    n->have_tangent = 1;
    return 0;
}

/* ---- reverse passes ------------------------------------------------------------ */

/* Adjoint state of the reverse walk. `dual` carries tangent adjoints (gd) and
 * parameter gradients; the plain backward pass carries only g.
 *
 * The tape. With phidot_bar = 1 the dual pass's tangent adjoints are the
 * adjoints of Phi itself (Phidot = grad_x Phi . u is linear in the tangents,
 * with the primal adjoints as coefficients), which vapo_net_backward has
 * just computed with the same operations: the training step ran every data
 * adjoint twice. vapo_net_backward_keep records them (TAPE_RECORD: a copy at
 * each tape_step), and the dual pass then skips every op that only feeds the
 * tangent adjoints (gd_ops) and points them at the records (TAPE_REPLAY):
 * the same numbers, bit for bit. Both walks run the same code, so the
 * tape_steps come in the same order. */
enum { TAPE_OFF, TAPE_RECORD, TAPE_REPLAY };

typedef struct {
    float *g, *gd;  /* adjoint of the current tensor and of its tangent */
    float *x, *xd;  /* adjoint being produced for the layer input */
    float *t, *td, *u, *ud;
    float *grad;    /* parameter gradients (NULL: plain backward) */
    int tape;       /* TAPE_* */
    size_t pos;     /* floats of the tape so far */
    float *junk;    /* replay: where the tangent outputs no one reads go */
} rev;

/* whether the walk computes the tangent adjoints itself */
static int gd_ops(const rev *r) { return r->grad && r->tape != TAPE_REPLAY; }
/* a tangent output: NULL (not computed) or junk (computed, unread) on replay */
static float *gd_opt(const rev *r, float *gd) { return r->tape == TAPE_REPLAY ? NULL : gd; }
static float *gd_out(const rev *r, float *gd) { return r->tape == TAPE_REPLAY ? r->junk : gd; }

/* The adjoint g just computed (count floats) is the tangent adjoint *gd of
 * the dual pass: recorded, or on replay, read back. */
static void tape_step(vapo_net *n, rev *r, float **gd, const float *g, size_t count)
{
    if (r->tape == TAPE_RECORD && r->pos + count <= n->tape_cap)
        n->be->copy(n->be, n->tape + r->pos, g, sizeof(float) * count);
    else if (r->tape == TAPE_REPLAY)
        *gd = n->tape + r->pos;
    if (r->tape != TAPE_OFF)
        r->pos += (count + 15) & ~(size_t)15;
}

static void swap_io(rev *r)
{
    float *t = r->g, *td = r->gd;
    r->g = r->x, r->gd = r->xd;
    r->x = t, r->xd = td;
}

static void conv_reverse_as(vapo_net *n, rev *r, const conv_mod *c, const vapo_conv_shape *s, float *dx,
                            float *dxdot, const float *x, const float *xdot, const float *dy, const float *dydot)
{
    const float *w = n->weights + c->w;
    if (r->grad)
        vapo_conv_dual(n->be, s, dx, gd_opt(r, dxdot), n->wgrad + c->w, r->grad + c->b, x, xdot, dy, dydot, w);
    else
        vapo_conv_bwd(n->be, s, dx, dy, w);
}

static void conv_reverse(vapo_net *n, rev *r, const conv_mod *c, int level, float *dx, float *dxdot,
                         const float *x, const float *xdot, const float *dy, const float *dydot)
{
    const vapo_conv_shape s = conv_shape(n, c, level);
    conv_reverse_as(n, r, c, &s, dx, dxdot, x, xdot, dy, dydot);
}

static void act_reverse(vapo_net *n, rev *r, vapo_act a, size_t count, float *dx, float *dxdot,
                        const float *x, const float *xdot, const float *dy, const float *dydot)
{
    if (r->grad)
        n->be->act_dual_backward(n->be, a, count, dx, gd_out(r, dxdot), x, xdot, dy, dydot);
    else
        n->be->act_backward(n->be, a, count, dx, x, dy);
}

static void block_reverse(vapo_net *n, rev *r, int i)
{
    const block_mod *m = &n->blocks[i];
    const act_set *p = &n->fwd, *t = &n->tan;
    const size_t cols = level_cols(n, m->level, n->batch);
    const size_t in_count = (size_t)m->cin * cols, out_count = (size_t)m->cout * cols;
    const int dual = r->grad != NULL;
    vapo_scale_dual(n->be, m->cout, cols, r->t, dual ? gd_opt(r, r->td) : NULL, dual ? r->grad + m->scale : NULL,
                    p->c2[i], t->c2[i], r->g, r->gd, n->theta + m->scale);
    tape_step(n, r, &r->td, r->t, out_count);
    conv_reverse(n, r, &m->c2, m->level, r->u, r->ud, p->h2[i], t->h2[i], r->t, r->td);
    tape_step(n, r, &r->ud, r->u, out_count);
    act_reverse(n, r, n->arch.act, out_count, r->t, r->td, p->c1[i], t->c1[i], r->u, r->ud);
    tape_step(n, r, &r->td, r->t, out_count);
    conv_reverse(n, r, &m->c1, m->level, r->u, r->ud, p->h1[i], t->h1[i], r->t, r->td);
    tape_step(n, r, &r->ud, r->u, in_count);
    act_reverse(n, r, n->arch.act, in_count, r->x, r->xd, p->in[i], t->in[i], r->u, r->ud);
    if (m->sc.cout) {
        conv_reverse(n, r, &m->sc, m->level, r->t, r->td, p->in[i], t->in[i], r->g, r->gd);
        n->be->axpy(n->be, in_count, 1.0f, r->t, r->x);
        if (gd_ops(r))
            n->be->axpy(n->be, in_count, 1.0f, r->td, r->xd);
    } else {
        n->be->axpy(n->be, in_count, 1.0f, r->g, r->x);
        if (gd_ops(r))
            n->be->axpy(n->be, in_count, 1.0f, r->gd, r->xd);
    }
    tape_step(n, r, &r->xd, r->x, in_count);
    swap_io(r);
}

/* Adjoint of level l's output from its head, into dy (and dyd on the dual
 * pass); r->t and r->u (and their tangents) are scratch. */
static void head_reverse(vapo_net *n, rev *r, int l, float *dy, float *dyd, const float *phi_bar,
                         const float *phidot_bar, int add_global)
{
    vapo_backend *be = n->be;
    const act_set *p = &n->fwd, *t = &n->tan;
    const int c = n->arch.widths[l], out = level_output(n, l);
    const size_t hw = (size_t)level_h(n, l) * level_w(n, l), count = c * hw * n->batch;
    const vapo_conv_shape hs = dense_shape(n, &n->heads[l]);
    conv_reverse_as(n, r, &n->heads[l], &hs, r->t, r->td, p->sum[l], t->sum[l], phi_bar, phidot_bar);
    vapo_sum_bwd(be, (size_t)c * n->batch, hw, r->u, r->t);
    if (gd_ops(r))
        vapo_sum_bwd(be, (size_t)c * n->batch, hw, r->ud, r->td);
    if (add_global) { /* the global head reads the same gated features: its adjoint is in r->x */
        be->axpy(be, count, 1.0f, r->x, r->u);
        if (gd_ops(r))
            be->axpy(be, count, 1.0f, r->xd, r->ud);
    }
    tape_step(n, r, &r->ud, r->u, count);
    act_reverse(n, r, n->arch.head_act, count, dy, dyd, p->y[out], t->y[out], r->u, r->ud);
}

/* Adjoint of the last level's gated features from the global head, into r->x
 * (r->xd); r->t, r->u, r->g and their tangents are scratch. */
static void global_reverse(vapo_net *n, rev *r, const float *phi_bar, const float *phidot_bar)
{
    const act_set *p = &n->fwd, *t = &n->tan;
    const vapo_conv_shape hs = dense_shape(n, &n->global_hidden), os = dense_shape(n, &n->global_out);
    const size_t hidden = (size_t)hs.cout * n->batch;
    conv_reverse_as(n, r, &n->global_out, &os, r->t, r->td, p->hidden_act, t->hidden_act, phi_bar, phidot_bar);
    tape_step(n, r, &r->td, r->t, hidden);
    act_reverse(n, r, n->arch.act, hidden, r->u, r->ud, p->hidden, t->hidden, r->t, r->td);
    tape_step(n, r, &r->ud, r->u, hidden);
    conv_reverse_as(n, r, &n->global_hidden, &hs, r->g, r->gd, p->flat, t->flat, r->u, r->ud);
    flatten_last(n, r->g, r->x, 1);
    if (gd_ops(r))
        flatten_last(n, r->gd, r->xd, 1);
}

/* out[c, b, :] = a coef[b] v[c, b, :] over the image channels (CNHW); rep
 * holds in_c * batch floats. */
static void scale_samples(vapo_net *n, float a, const float *coef, const float *v, float *out, float *rep)
{
    const int rows = n->arch.in_c * n->batch;
    n->be->zero(n->be, rep, sizeof(float) * rows);
    for (int c = 0; c < n->arch.in_c; c++)
        n->be->axpy(n->be, n->batch, a, coef, rep + (size_t)c * n->batch);
    n->be->scale_forward(n->be, rows, (size_t)n->arch.in_h * n->arch.in_w, out, v, rep);
}

/* Reverse of unet_output down to the adjoint of the last block's output, in
 * r->g (r->gd). With Phi = C - kappa/2 |r|^2, Phidot = -kappa <r, rdot> and
 * r = x - f: fbar = kappa (phi_bar r + phidot_bar rdot), fdotbar = kappa phidot_bar r.
 * r->x is scratch, r->t, r->u (and tangents) carry the adjoints. */
static void unet_output_reverse(vapo_net *n, rev *r, const float *phi_bar, const float *phidot_bar)
{
    vapo_backend *be = n->be;
    const act_set *p = &n->fwd, *t = &n->tan;
    const float kappa = n->arch.quadratic;
    const int dual = r->grad != NULL, last = n->nblocks - 1;
    const size_t cols = level_cols(n, 0, n->batch), image = (size_t)n->arch.in_c * cols;
    if (dual) { /* dPhi/dc = the offset's unit */
        be->zero(be, r->x, sizeof(float));
        be->scale_backward_param(be, 1, n->batch, r->x, phi_bar, n->ones);
        be->axpy(be, 1, offset_unit(n), r->x, r->grad + n->out_offset);
    }
    scale_samples(n, kappa, phi_bar, p->res, r->t, r->x);
    tape_step(n, r, &r->td, r->t, image); /* fdotbar = kappa r: the plain pass's fbar */
    if (dual) {
        scale_samples(n, kappa, phidot_bar, t->res, r->u, r->x);
        be->axpy(be, image, 1.0f, r->u, r->t);
        if (gd_ops(r))
            scale_samples(n, kappa, phidot_bar, p->res, r->td, r->x);
    }
    vapo_scale_dual(be, n->arch.in_c, cols, r->u, dual ? gd_opt(r, r->ud) : NULL,
                    dual ? r->grad + n->out_scale : NULL, p->out_conv, t->out_conv, r->t, r->td,
                    n->theta + n->out_scale);
    tape_step(n, r, &r->ud, r->u, image);
    conv_reverse(n, r, &n->conv_out, 0, r->t, r->td, p->out_act, t->out_act, r->u, r->ud);
    tape_step(n, r, &r->td, r->t, n->arch.widths[0] * cols);
    act_reverse(n, r, n->arch.act, n->arch.widths[0] * cols, r->g, r->gd, p->y[last], t->y[last], r->t, r->td);
}

/* Reverse of concat_up: the skip's slab of the adjoint in r->g is held for
 * the encoder, the upsampled slab goes to the coarser output (into r->g). */
static void concat_up_reverse(vapo_net *n, rev *r, int i)
{
    const block_mod *m = &n->blocks[i];
    const int l = m->level;
    const size_t skip = (size_t)n->blocks[m->skip].cout * level_cols(n, l, n->batch);
    const size_t planes = (size_t)n->blocks[i - 1].cout * n->batch;
    n->be->copy(n->be, n->skip_adj[l], r->g, sizeof(float) * skip);
    vapo_upsample_bwd(n->be, planes, level_h(n, l + 1), level_w(n, l + 1), r->x, r->g + skip);
    if (gd_ops(r)) {
        n->be->copy(n->be, n->skip_adjd[l], r->gd, sizeof(float) * skip);
        vapo_upsample_bwd(n->be, planes, level_h(n, l + 1), level_w(n, l + 1), r->xd, r->gd + skip);
    }
    tape_step(n, r, &r->xd, r->x, planes * level_h(n, l + 1) * level_w(n, l + 1));
    swap_io(r);
}

/* Reverse walk from the heads (or the U-Net's output) down to the adjoint of conv_in's output. */
static void walk_reverse(vapo_net *n, rev *r, const float *phi_bar, const float *phidot_bar)
{
    vapo_backend *be = n->be;
    const int last = n->arch.levels - 1;
    if (n->arch.global_head)
        global_reverse(n, r, phi_bar, phidot_bar);
    if (n->arch.unet)
        unet_output_reverse(n, r, phi_bar, phidot_bar);
    else
        head_reverse(n, r, last, r->g, r->gd, phi_bar, phidot_bar, n->arch.global_head);
    const int top = n->arch.unet ? 0 : last; /* the level of the walk's first adjoint */
    tape_step(n, r, &r->gd, r->g, (size_t)n->arch.widths[top] * level_cols(n, top, n->batch));
    for (int i = n->nblocks - 1; i >= 0; i--) {
        const int l = n->blocks[i].level;
        const size_t count = (size_t)n->arch.widths[l] * level_cols(n, l, n->batch);
        if (i == level_output(n, l) && l < n->arch.levels - 1 && n->heads[l].cout) {
            /* r->x is free until block_reverse writes it */
            head_reverse(n, r, l, r->x, r->xd, phi_bar, phidot_bar, 0);
            be->axpy(be, count, 1.0f, r->x, r->g);
            if (gd_ops(r))
                be->axpy(be, count, 1.0f, r->xd, r->gd);
            tape_step(n, r, &r->gd, r->g, count);
        }
        if (n->arch.unet && i == level_output(n, l) && l < n->arch.levels - 1) { /* the skip's adjoint */
            be->axpy(be, count, 1.0f, n->skip_adj[l], r->g);
            if (gd_ops(r))
                be->axpy(be, count, 1.0f, n->skip_adjd[l], r->gd);
            tape_step(n, r, &r->gd, r->g, count);
        }
        block_reverse(n, r, i);
        const block_mod *m = &n->blocks[i];
        if (m->up) {
            concat_up_reverse(n, r, i);
        } else if (i > 0 && m->level != n->blocks[i - 1].level) {
            const size_t planes = (size_t)m->cin * n->batch;
            const int h = level_h(n, m->level - 1), w = level_w(n, m->level - 1);
            vapo_pool_bwd(be, planes, h, w, r->x, r->g);
            if (gd_ops(r))
                vapo_pool_bwd(be, planes, h, w, r->xd, r->gd);
            tape_step(n, r, &r->xd, r->x, planes * h * w);
            swap_io(r);
        }
    }
}

static rev rev_buffers(vapo_net *n, float *grad)
{
    float **s = n->scratch;
    return (rev){s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], grad, TAPE_OFF, 0, s[1]};
}

/* Records the walk's adjoints when keep (a tape that is too small is grown
 * for the next call, and this one is not kept). */
static int backward(vapo_net *n, float *grad_x, int keep)
{
    if (!n->have_forward)
        return vapo_fail("vapo_net_backward needs a forward pass first");
    rev r = rev_buffers(n, NULL);
    r.gd = r.xd = r.td = r.ud = NULL;
    r.tape = keep ? TAPE_RECORD : TAPE_OFF;
    walk_reverse(n, &r, n->ones, NULL);
    n->tape_ok = keep && r.pos <= n->tape_cap;
    if (keep && r.pos > n->tape_cap) {
        if (n->tape)
            n->be->free(n->be, n->tape);
        n->tape = n->be->alloc(n->be, sizeof(float) * r.pos);
        n->tape_cap = n->tape ? r.pos : 0;
    }
    vapo_conv_shape s = conv_shape(n, &n->conv_in, 0);
    vapo_conv_bwd(n->be, &s, r.x, r.g, n->weights + n->conv_in.w);
    const vapo_arch *a = &n->arch;
    if (a->quadratic != 0.0f) /* -kappa x, or the U-Net's -kappa (x - f) */
        n->be->axpy(n->be, (size_t)a->in_c * n->batch * a->in_h * a->in_w, -a->quadratic,
                    a->unet ? n->fwd.res : n->fwd.x, r.x);
    if (a->anchor) { /* + kappa mu in every sample, image by image: an outer product
                        * through a GEMM (conv_backward_filter) rounds differently
                        * for different batch sizes, which batch invariance forbids */
        const size_t hw = (size_t)a->in_h * a->in_w;
        for (int c = 0; c < a->in_c; c++)
            for (int b = 0; b < n->batch; b++)
                n->be->axpy(n->be, hw, a->quadratic, n->theta + n->anchor + c * hw, r.x + (c * n->batch + b) * hw);
    }
    n->be->cnhw_to_nchw(n->be, n->batch, a->in_c, a->in_h * a->in_w, grad_x, r.x);
    return 0;
}

int vapo_net_backward(vapo_net *n, float *grad_x) { return backward(n, grad_x, 0); }

int vapo_net_backward_keep(vapo_net *n, float *grad_x) { return backward(n, grad_x, 1); }

static void weightnorm_grad(vapo_net *n, const conv_mod *c, float *grad)
{
    n->be->weightnorm_backward(n->be, c->cout, c->cin * c->k * c->k, grad + c->v, grad + c->g, n->wgrad + c->w,
                               n->theta + c->v, n->theta + c->g);
}

/* d/dmu of sum_b [phi_bar_b Phi_b + phidot_bar_b Phidot_b]: Phi_b holds
 * kappa <mu, x_b - mu/2> and Phidot_b kappa <mu, u_b>, so the gradient is
 * kappa (X^T phi_bar - (sum phi_bar) mu + U^T phidot_bar); tmp holds an image. */
static void anchor_grad(vapo_net *n, const float *phi_bar, const float *phidot_bar, float *grad, float *tmp)
{
    vapo_backend *be = n->be;
    const vapo_conv_shape s = rows_shape(n);
    const size_t hw = (size_t)s.cin, plane = hw * n->batch, d = vapo_net_input_size(n);
    const float *mu = n->theta + n->anchor;
    be->zero(be, tmp, sizeof(float) * d);
    for (int c = 0; c < n->arch.in_c; c++) {
        be->conv_backward_data(be, &s, tmp + c * hw, phi_bar, n->fwd.x + c * plane);
        be->conv_backward_data(be, &s, tmp + c * hw, phidot_bar, n->tan.x + c * plane);
    }
    be->axpy(be, d, (float)-be->dot(be, n->batch, phi_bar, n->ones), mu, tmp);
    be->axpy(be, d, n->arch.quadratic, tmp, grad);
}

int vapo_net_dual_backward(vapo_net *n, const float *phi_bar, const float *phidot_bar, float *param_grad)
{
    if (!n->have_tangent)
        return vapo_fail("vapo_net_dual_backward needs forward and tangent passes first");
    n->be->zero(n->be, n->wgrad, sizeof(float) * n->nweights);
    rev r = rev_buffers(n, param_grad);
    if (!phidot_bar && n->tape_ok)
        r.tape = TAPE_REPLAY;
    walk_reverse(n, &r, phi_bar, phidot_bar ? phidot_bar : n->ones);
    /* conv_in: only its parameters; the input adjoints are not needed */
    vapo_conv_shape s = conv_shape(n, &n->conv_in, 0);
    vapo_conv_dual(n->be, &s, NULL, NULL, n->wgrad + n->conv_in.w, param_grad + n->conv_in.b, n->fwd.x, n->tan.x,
                   r.g, r.gd, n->weights + n->conv_in.w);
    weightnorm_grad(n, &n->conv_in, param_grad);
    if (n->arch.anchor)
        anchor_grad(n, phi_bar, phidot_bar ? phidot_bar : n->ones, param_grad + n->anchor, r.t);
    for (int i = 0; i < n->nblocks; i++) {
        weightnorm_grad(n, &n->blocks[i].c1, param_grad);
        weightnorm_grad(n, &n->blocks[i].c2, param_grad);
        if (n->blocks[i].sc.cout)
            weightnorm_grad(n, &n->blocks[i].sc, param_grad);
    }
    for (int l = 0; l < n->arch.levels; l++)
        if (n->heads[l].cout)
            weightnorm_grad(n, &n->heads[l], param_grad);
    if (n->arch.global_head) {
        weightnorm_grad(n, &n->global_hidden, param_grad);
        weightnorm_grad(n, &n->global_out, param_grad);
    }
    if (n->arch.unet)
        weightnorm_grad(n, &n->conv_out, param_grad);
    return 0;
}

/* ---- features (the mahalanobis OOD score) ------------------------------------ */

int vapo_net_feature_count(const vapo_net *n)
{
    int count = n->arch.global_head;
    for (int l = 0; l < n->arch.levels; l++)
        count += n->arch.widths[l];
    return count;
}

/* Per level, the spatial sum of max(0, y) of its last block's output; then
 * the global head's hidden activations. Summed on the host in a fixed order,
 * so a sample's features do not depend on its batch. */
int vapo_net_features(vapo_net *n, float *out)
{
    if (!n->have_forward)
        return vapo_fail("network features: no forward pass to read them from");
    const vapo_arch *a = &n->arch;
    const int count = vapo_net_feature_count(n), b = n->batch;
    size_t most = (size_t)count * b;
    for (int l = 0; l < a->levels; l++)
        if ((size_t)a->widths[l] * level_cols(n, l, b) > most)
            most = (size_t)a->widths[l] * level_cols(n, l, b);
    float *y = malloc(sizeof(float) * most);
    if (!y)
        return vapo_fail("out of memory");
    int off = 0;
    for (int l = 0; l < a->levels; off += a->widths[l], l++) {
        const size_t hw = (size_t)level_h(n, l) * level_w(n, l);
        n->be->download(n->be, y, n->fwd.y[level_output(n, l)], sizeof(float) * a->widths[l] * hw * b);
        for (int c = 0; c < a->widths[l]; c++) /* [C][N][HW] */
            for (int i = 0; i < b; i++) {
                const float *p = y + ((size_t)c * b + i) * hw;
                double s = 0;
                for (size_t t = 0; t < hw; t++)
                    s += p[t] > 0 ? p[t] : 0;
                out[(size_t)i * count + off + c] = (float)s;
            }
    }
    if (a->global_head) { /* [H][N] */
        n->be->download(n->be, y, n->fwd.hidden_act, sizeof(float) * a->global_head * b);
        for (int c = 0; c < a->global_head; c++)
            for (int i = 0; i < b; i++)
                out[(size_t)i * count + off + c] = y[(size_t)c * b + i];
    }
    free(y);
    return 0;
}
