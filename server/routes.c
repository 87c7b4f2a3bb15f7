#include "routes.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "vapo/error.h"
#include "vapo/image.h"
#include "vapo/ode.h"

#include "assets.h"
#include "b64.h"
#include "clock.h"
#include "json_lenient.h"

/* Limits of request values that are not server options. */
#define RTOL_MIN 1e-6
#define ATOL_MIN 1e-9
#define TOL_MAX 1.0
#define T_END_MAX 10.0
#define FIRST_MAX 1000000000LL
#define SEED_RANDOM_BITS 53 /* random seeds stay exact in JavaScript numbers */
#define GRID_PAD 2
#define GRID_PAD_VALUE 1.0f /* white lines between tiles */
/* Bodies: /generate and /interpolate need a few hundred bytes of JSON; the
 * limit leaves room for pretty-printing. /energy's JSON is a list of base64
 * PNGs plus this much per image (quotes, a data: prefix, indentation) and in
 * all. Parsing allocates per JSON value, so the value count is bounded too. */
#define JSON_BODY_MAX (8u << 10)
#define ENERGY_JSON_PER_IMAGE 64u
#define ENERGY_JSON_EXTRA 1024u
#define JSON_VALUES_MAX 64 /* beyond the images */

enum { FMT_PNG, FMT_GRID, FMT_JSON };

struct route_work {
    job *j;
    int format, cols;
    int seed_given;
    int images;           /* energy: images scored (the job has images x rows_per rows) */
    vapo_score_kind score; /* energy */
    int rows_per;          /* energy: rows per image */
};

job *route_work_job(route_work *w) { return w->j; }
int route_work_images(const route_work *w) { return w->images ? w->images : w->j ? w->j->n : 0; }

long long route_work_nfe(const route_work *w)
{
    long long total = 0;
    for (int i = 0; w && w->j && w->j->nfe && i < w->j->n; i++)
        total += w->j->nfe[i];
    return total;
}

void route_work_free(route_work *w)
{
    if (!w)
        return;
    job_free(w->j);
    free(w);
}

/* ---- request parsing ----------------------------------------------------------------- */

/* Parses the body as a JSON object. Non-finite literals (NaN, Infinity), which
 * JSON does not have but some encoders write, come back as the strings "NaN",
 * "Infinity", "-Infinity", so that the field check can say what is wrong with
 * the value (422) rather than call the whole body malformed. */
/* An upper bound on the values a JSON text holds: its containers and commas
 * outside strings, plus one. Cheap, and run before the parser allocates. */
static size_t json_values_bound(const unsigned char *p, size_t len)
{
    size_t n = 1;
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        if (in_string) {
            if (p[i] == '\\')
                i++;
            else if (p[i] == '"')
                in_string = 0;
        } else if (p[i] == '"') {
            in_string = 1;
        } else {
            n += p[i] == ',' || p[i] == '{' || p[i] == '[';
        }
    }
    return n;
}

static json_t *parse_object(const route_input *in, size_t max_values, reply *out)
{
    if (in->body_len == 0)
        return json_object();
    size_t values = json_values_bound(in->body, in->body_len);
    if (values > max_values) {
        reply_error(out, 422, NULL, "the body holds %zu JSON values or more; this route takes at most %zu", values,
                    max_values);
        return NULL;
    }
    json_error_t err;
    json_t *root = json_parse_lenient((const char *)in->body, in->body_len, &err);
    if (!root) {
        reply_error(out, 400, NULL, "malformed JSON at line %d, column %d: %s", err.line, err.column, err.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        reply_error(out, 422, NULL, "the body must be a JSON object");
        return NULL;
    }
    return root;
}

static int check_fields(json_t *obj, const char *const *known, reply *out)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        int ok = 0;
        for (int i = 0; known[i]; i++)
            ok |= !strcmp(key, known[i]);
        if (!ok) {
            char list[256] = "";
            for (int i = 0; known[i]; i++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", known[i]);
            reply_error(out, 422, NULL, "unknown field '%s' (expected: %s)", key, list);
            return -1;
        }
    }
    return 0;
}

/* Integer field in lo..hi: 0 ok (or absent: *out untouched), -1 with the reply set. */
static int get_int(json_t *obj, const char *key, long long lo, long long hi, long long *out, reply *r)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        reply_error(r, 422, NULL, "'%s' must be an integer in %lld..%lld", key, lo, hi);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

static int get_number(json_t *obj, const char *key, double lo, double hi, int lo_open, double *out, reply *r)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 0;
    double x = json_is_number(v) ? json_number_value(v) : NAN;
    if (!isfinite(x) || x > hi || (lo_open ? x <= lo : x < lo)) {
        char got[64];
        if (json_is_number(v))
            snprintf(got, sizeof got, "%g", x);
        else if (json_is_string(v))
            snprintf(got, sizeof got, "\"%.40s\"", json_string_value(v));
        else
            snprintf(got, sizeof got, "a %s", json_is_boolean(v) ? "boolean" : json_is_array(v) ? "list" : "object");
        reply_error(r, 422, NULL, "'%s' must be a finite number in %s%g, %g], got %s", key, lo_open ? "(" : "[", lo,
                    hi, got);
        return -1;
    }
    *out = x;
    return 0;
}

static int get_string(json_t *obj, const char *key, const char **out, reply *r)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v)) {
        reply_error(r, 422, NULL, "'%s' must be a string", key);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

/* Solver options on top of the model's sampling defaults. */
static int parse_solver(app *a, json_t *obj, const model_info *mi, vapo_ode_config *ode, reply *r)
{
    *ode = mi->sampling;
    ode->max_nfe = a->cfg->max_nfe;
    ode->h0 = 0;
    ode->shared_step = 0;
    const char *solver = NULL;
    long long steps = ode->steps;
    if (get_string(obj, "solver", &solver, r))
        return -1;
    if (solver && vapo_ode_method_parse(solver, &ode->method)) {
        reply_error(r, 422, NULL, "unknown solver '%.40s' (expected rk45, euler, heun or rk4)", solver);
        return -1;
    }
    if (get_number(obj, "rtol", RTOL_MIN, TOL_MAX, 0, &ode->rtol, r) ||
        get_number(obj, "atol", ATOL_MIN, TOL_MAX, 0, &ode->atol, r) ||
        get_number(obj, "t_end", 0, T_END_MAX, 1, &ode->t_end, r) ||
        get_int(obj, "steps", 1, a->cfg->max_steps, &steps, r))
        return -1;
    ode->steps = (int)steps;
    const long long need = vapo_ode_fixed_nfe(ode);
    if (need > a->cfg->max_nfe) {
        reply_error(r, 422, NULL, "%s with %d steps needs %lld evaluations per sample, above the limit of %d",
                    vapo_ode_method_name(ode->method), ode->steps, need, a->cfg->max_nfe);
        return -1;
    }
    if (vapo_ode_config_validate(ode)) {
        reply_error(r, 422, NULL, "%s", vapo_last_error());
        return -1;
    }
    return 0;
}

static json_t *solver_json(const vapo_ode_config *ode)
{
    return json_pack("{s:s, s:f, s:f, s:f, s:i}", "solver", vapo_ode_method_name(ode->method), "t_end", ode->t_end,
                     "rtol", ode->rtol, "atol", ode->atol, "steps", ode->steps);
}

static const model_info *ready_model(app *a, reply *out)
{
    const model_info *mi = batcher_model(a->b);
    if (!mi)
        reply_error(out, 503, "not_ready", "the model is still loading");
    return mi;
}

static uint64_t random_seed(void)
{
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)ts.tv_sec;
    }
    return s & ((1ull << SEED_RANDOM_BITS) - 1);
}

static route_work *work_new(app *a, job_kind kind, int n, int d, reply *out)
{
    route_work *w = calloc(1, sizeof *w);
    job *j = w ? job_create(kind, n, d) : NULL;
    if (!j) {
        free(w);
        reply_error(out, 503, "overloaded", "out of memory for %d images", n);
        return NULL;
    }
    j->deadline = clock_now() + a->cfg->timeout_s;
    w->j = j;
    return w;
}

/* ---- replies of ended jobs -------------------------------------------------------------- */

/* Non-OK job states as errors; 1 if it set the reply. */
static int job_error(const job *j, reply *out)
{
    switch (j->status) {
    case JOB_OK: return 0;
    case JOB_CANCELLED: reply_error(out, 499, NULL, "%s", j->message); break;
    case JOB_TIMEOUT: reply_error(out, 504, NULL, "%s", j->message); break;
    case JOB_TOO_HARD: reply_error(out, 422, NULL, "%s", j->message); break;
    case JOB_SHUTDOWN: reply_error(out, 503, "shutting_down", "%s", j->message); break;
    default: reply_error(out, 500, NULL, "%s", j->message[0] ? j->message : "internal error"); break;
    }
    return 1;
}

static json_t *finite_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

/* One PNG per row as base64 strings; NULL when out of memory. */
static json_t *rows_as_base64_png(const job *j, const model_info *mi)
{
    json_t *list = json_array();
    for (int i = 0; i < j->n && list; i++) {
        unsigned char *png = NULL;
        size_t len = 0;
        char *b64 = NULL;
        if (vapo_png_encode(j->x + (size_t)i * j->d, mi->c, mi->h, mi->w, &png, &len) == 0)
            b64 = b64_encode(png, len);
        free(png);
        if (!b64) {
            json_decref(list);
            return NULL;
        }
        json_array_append_new(list, json_string(b64));
        free(b64);
    }
    return list;
}

static void reply_png_rows(const job *j, const model_info *mi, int cols, reply *out)
{
    unsigned char *png = NULL;
    size_t len = 0;
    int rc;
    if (j->n == 1 && cols <= 1) {
        rc = vapo_png_encode(j->x, mi->c, mi->h, mi->w, &png, &len);
    } else {
        vapo_image grid = {0};
        rc = vapo_image_grid_u8(j->x, j->n, mi->c, mi->h, mi->w, cols, GRID_PAD, GRID_PAD_VALUE, &grid);
        if (rc == 0)
            rc = vapo_png_encode_u8(&grid, &png, &len);
        vapo_image_free(&grid);
    }
    if (rc) {
        free(png);
        reply_error(out, 500, NULL, "PNG encoding failed: %s", vapo_last_error());
        return;
    }
    reply_bytes(out, 200, "image/png", png, len);
}

static char *nfe_list(const job *j)
{
    size_t cap = (size_t)j->n * 12 + 1, len = 0;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    s[0] = 0;
    for (int i = 0; i < j->n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s%d", i ? "," : "", j->nfe[i]);
    return s;
}

static void header_nfe(const job *j, reply *out)
{
    char *s = nfe_list(j);
    if (s)
        reply_header(out, "X-Vapo-NFE", "%s", s);
    free(s);
}

/* ---- GET routes -------------------------------------------------------------------------- */

static route_work *get_healthz(app *a, const route_input *in, reply *out)
{
    (void)a, (void)in;
    reply_json(out, 200, json_pack("{s:s}", "status", "ok"));
    return NULL;
}

static route_work *get_readyz(app *a, const route_input *in, reply *out)
{
    (void)in;
    if (atomic_load(&a->draining))
        reply_error(out, 503, "shutting_down", "the server is shutting down");
    else if (ready_model(a, out))
        reply_json(out, 200, json_pack("{s:s}", "status", "ready"));
    return NULL;
}

static route_work *get_metrics(app *a, const route_input *in, reply *out)
{
    (void)in;
    size_t len;
    char *text = metrics_render(a->mx, &len);
    if (!text)
        reply_error(out, 500, NULL, "out of memory");
    else
        reply_bytes(out, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    return NULL;
}

/* The dataset's name without where it was on the trainer's machine: the
 * trainer records its --data argument ("fashion-mnist", "cifar10:DIR",
 * "folder:DIR", or a path). */
static void dataset_name(const char *data, char *out, size_t len)
{
    size_t n = strcspn(data, ":");
    if (n == 0 || memchr(data, '/', n)) { /* a bare path: its last component */
        const char *slash = strrchr(data, '/');
        snprintf(out, len, "%s", slash ? slash + 1 : data);
    } else {
        snprintf(out, len, "%.*s", (int)n, data);
    }
}

/* The OOD calibration as /v1/model shows it: which scores are calibrated and
 * the default, plus the measured quality stored in the checkpoint, if any. */
static json_t *ood_json(const model_info *mi)
{
    const vapo_ood *o = mi->ood;
    json_t *scores = json_array();
    for (int k = 0; k < VAPO_SCORE_KINDS; k++)
        if (o->calib[k].count > 0 && vapo_ood_available(o, (vapo_score_kind)k))
            json_array_append_new(scores, json_string(vapo_score_name((vapo_score_kind)k)));
    const int calibrated = o->calib[VAPO_SCORE_ENERGY].count > 0;
    return json_pack("{s:b, s:f, s:i, s:s, s:o}", "calibrated", calibrated, "keep", o->keep, "count",
                     o->calib[VAPO_SCORE_ENERGY].count, "default_score", vapo_score_name(o->default_score), "scores",
                     scores);
}

static route_work *get_model(app *a, const route_input *in, reply *out)
{
    (void)in;
    const model_info *mi = ready_model(a, out);
    if (!mi)
        return NULL;
    const serve_config *c = a->cfg;
    char dataset[sizeof mi->dataset];
    dataset_name(mi->dataset, dataset, sizeof dataset);
    json_t *o = json_pack("{s:s, s:s, s:s, s:[i,i,i], s:I, s:I, s:f, s:o, s:s, s:o}", "preset", mi->preset,
                          "dataset", dataset, "file", mi->file, "shape", mi->c, mi->h, mi->w, "parameters",
                          (json_int_t)mi->params, "training_step", (json_int_t)mi->step, "omega", mi->omega,
                          "sampling", solver_json(&mi->sampling), "backend", mi->backend, "ood", ood_json(mi));
    json_t *limits = json_pack("{s:i, s:i, s:i, s:i, s:i, s:I, s:f}", "max_images", c->max_images, "max_steps",
                               c->max_steps, "max_nfe", c->max_nfe, "max_batch", c->max_batch, "max_queue",
                               c->max_queue, "max_body_bytes", (json_int_t)c->max_body_bytes, "timeout_s",
                               c->timeout_s);
    if (o) {
        json_object_set_new(o, "limits", limits);
        if (mi->quality)
            json_object_set_new(o, "quality", json_deep_copy(mi->quality));
    } else {
        json_decref(limits);
    }
    reply_json(out, 200, o);
    return NULL;
}

static route_work *get_openapi(app *a, const route_input *in, reply *out)
{
    (void)a, (void)in;
    reply_static(out, 200, "application/yaml", asset_openapi_yaml, asset_openapi_yaml_len);
    return NULL;
}

static route_work *get_page(app *a, const route_input *in, reply *out)
{
    (void)a, (void)in;
    reply_static(out, 200, "text/html; charset=utf-8", asset_page_html, asset_page_html_len);
    return NULL;
}

/* ---- POST /generate ----------------------------------------------------------------------- */

static const char *const generate_fields[] = {"n", "seed", "first", "format", "cols", "solver",
                                              "rtol", "atol", "steps", "t_end", NULL};

static route_work *post_generate(app *a, const route_input *in, reply *out)
{
    const model_info *mi = ready_model(a, out);
    json_t *req = mi ? parse_object(in, JSON_VALUES_MAX, out) : NULL;
    if (!req)
        return NULL;
    route_work *w = NULL;
    long long n = 1, seed = -1, first = 0, cols = 0;
    const char *format = NULL;
    vapo_ode_config ode;
    if (check_fields(req, generate_fields, out) || get_int(req, "n", 1, a->cfg->max_images, &n, out) ||
        get_int(req, "seed", 0, INT64_MAX, &seed, out) || get_int(req, "first", 0, FIRST_MAX, &first, out) ||
        get_string(req, "format", &format, out) || parse_solver(a, req, mi, &ode, out))
        goto done;
    int fmt = n == 1 ? FMT_PNG : FMT_GRID;
    if (format) {
        if (!strcmp(format, "png"))
            fmt = FMT_PNG;
        else if (!strcmp(format, "grid"))
            fmt = FMT_GRID;
        else if (!strcmp(format, "json"))
            fmt = FMT_JSON;
        else {
            reply_error(out, 422, NULL, "unknown format '%.40s' (expected png, grid or json)", format);
            goto done;
        }
    }
    if (fmt == FMT_PNG && n != 1) {
        reply_error(out, 422, NULL, "format png returns one image, but n is %lld: use grid or json", n);
        goto done;
    }
    if (get_int(req, "cols", 1, n, &cols, out))
        goto done;
    w = work_new(a, JOB_SAMPLE, (int)n, mi->d, out);
    if (!w)
        goto done;
    w->format = fmt;
    w->cols = (int)cols;
    w->seed_given = seed >= 0;
    w->j->seed = seed >= 0 ? (uint64_t)seed : random_seed();
    w->j->first = (int)first;
    w->j->ode = ode;
done:
    json_decref(req);
    return w;
}

static void finish_generate(app *a, route_work *w, reply *out)
{
    job *j = w->j;
    const model_info *mi = batcher_model(a->b);
    if (!mi || job_error(j, out))
        goto done;
    if (w->format == FMT_JSON) {
        json_t *images = rows_as_base64_png(j, mi);
        json_t *nfe = json_array(), *energy = json_array();
        for (int i = 0; i < j->n; i++) {
            json_array_append_new(nfe, json_integer(j->nfe[i]));
            json_array_append_new(energy, finite_or_null(j->phi[i]));
        }
        if (!images) {
            json_decref(nfe), json_decref(energy);
            reply_error(out, 500, NULL, "PNG encoding failed");
            goto done;
        }
        reply_json(out, 200,
                   json_pack("{s:I, s:i, s:[i,i,i], s:o, s:o, s:o, s:o}", "seed", (json_int_t)j->seed, "first",
                             j->first, "shape", mi->c, mi->h, mi->w, "solver", solver_json(&j->ode), "images",
                             images, "nfe", nfe, "energy", energy));
    } else {
        reply_png_rows(j, mi, w->format == FMT_PNG ? 1 : w->cols, out);
        header_nfe(j, out);
    }
    reply_header(out, "X-Vapo-Seed", "%llu", (unsigned long long)j->seed);
    reply_header(out, "X-Vapo-First", "%d", j->first);
done:
    route_work_free(w);
}

/* ---- POST /interpolate --------------------------------------------------------------------- */

static const char *const interpolate_fields[] = {"seed_a", "seed_b", "frames", "format", "solver",
                                                 "rtol",   "atol",   "steps",  "t_end",  NULL};

static route_work *post_interpolate(app *a, const route_input *in, reply *out)
{
    const model_info *mi = ready_model(a, out);
    json_t *req = mi ? parse_object(in, JSON_VALUES_MAX, out) : NULL;
    if (!req)
        return NULL;
    route_work *w = NULL;
    long long seed_a = -1, seed_b = -1, frames = 8;
    const char *format = NULL;
    vapo_ode_config ode;
    if (check_fields(req, interpolate_fields, out) || get_int(req, "seed_a", 0, INT64_MAX, &seed_a, out) ||
        get_int(req, "seed_b", 0, INT64_MAX, &seed_b, out) ||
        get_int(req, "frames", 2, a->cfg->max_images, &frames, out) || get_string(req, "format", &format, out) ||
        parse_solver(a, req, mi, &ode, out))
        goto done;
    if (seed_a < 0 || seed_b < 0) {
        reply_error(out, 422, NULL, "'seed_a' and 'seed_b' are required");
        goto done;
    }
    int fmt = FMT_PNG;
    if (format && !strcmp(format, "json"))
        fmt = FMT_JSON;
    else if (format && strcmp(format, "png")) {
        reply_error(out, 422, NULL, "unknown format '%.40s' (expected png or json)", format);
        goto done;
    }
    w = work_new(a, JOB_INTERPOLATE, (int)frames, mi->d, out);
    if (!w)
        goto done;
    w->format = fmt;
    w->j->seed = (uint64_t)seed_a;
    w->j->seed_b = (uint64_t)seed_b;
    w->j->ode = ode;
done:
    json_decref(req);
    return w;
}

static void finish_interpolate(app *a, route_work *w, reply *out)
{
    job *j = w->j;
    const model_info *mi = batcher_model(a->b);
    if (!mi || job_error(j, out))
        goto done;
    if (w->format == FMT_JSON) {
        json_t *frames = rows_as_base64_png(j, mi);
        json_t *s = json_array(), *nfe = json_array(), *energy = json_array();
        for (int i = 0; i < j->n; i++) {
            json_array_append_new(s, json_real(j->n > 1 ? (double)i / (j->n - 1) : 0.0));
            json_array_append_new(nfe, json_integer(j->nfe[i]));
            json_array_append_new(energy, finite_or_null(j->phi[i]));
        }
        if (!frames) {
            json_decref(s), json_decref(nfe), json_decref(energy);
            reply_error(out, 500, NULL, "PNG encoding failed");
            goto done;
        }
        reply_json(out, 200,
                   json_pack("{s:I, s:I, s:o, s:[i,i,i], s:o, s:o, s:o, s:o}", "seed_a", (json_int_t)j->seed,
                             "seed_b", (json_int_t)j->seed_b, "s", s, "shape", mi->c, mi->h, mi->w, "solver",
                             solver_json(&j->ode), "frames", frames, "nfe", nfe, "energy", energy));
    } else {
        reply_png_rows(j, mi, j->n, out);
        header_nfe(j, out);
    }
done:
    route_work_free(w);
}

/* ---- POST /energy ---------------------------------------------------------------------------- */

/* The largest PNG of a model-sized image: stored (uncompressed) 16-bit RGBA
 * rows with their filter bytes, plus 1/64 for deflate blocks and chunk
 * headers, plus 16 KiB of other chunks (an ICC profile, text). */
static size_t png_size_bound(const model_info *mi)
{
    size_t raw = (size_t)mi->h * (1 + (size_t)mi->w * 4 * 2);
    return raw + raw / 64 + (16u << 10);
}

/* Width and height from a PNG's IHDR without decoding it; -1 if not a PNG. */
static int png_peek_size(const unsigned char *p, size_t len, int *w, int *h)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len < 24 || memcmp(p, sig, 8) || memcmp(p + 12, "IHDR", 4))
        return -1;
    uint32_t pw = (uint32_t)p[16] << 24 | (uint32_t)p[17] << 16 | (uint32_t)p[18] << 8 | p[19];
    uint32_t ph = (uint32_t)p[20] << 24 | (uint32_t)p[21] << 16 | (uint32_t)p[22] << 8 | p[23];
    *w = pw > 1u << 30 ? 1 << 30 : (int)pw;
    *h = ph > 1u << 30 ? 1 << 30 : (int)ph;
    return 0;
}

/* Decodes one PNG into dst (d floats); 0, or -1 with a 422 reply. */
static int load_png(const model_info *mi, const unsigned char *png, size_t len, const char *what, float *dst,
                    reply *out)
{
    int w, h;
    if (png_peek_size(png, len, &w, &h)) {
        reply_error(out, 422, NULL, "%s is not a PNG image", what);
        return -1;
    }
    if (w != mi->w || h != mi->h) {
        reply_error(out, 422, NULL,
                    "%s is %dx%d (width x height); the model expects %dx%d images with %d channel%s "
                    "(other channel counts are converted)",
                    what, w, h, mi->w, mi->h, mi->c, mi->c == 1 ? "" : "s");
        return -1;
    }
    vapo_image img = {0};
    if (vapo_png_decode_limited(png, len, (size_t)mi->w * mi->h, &img)) {
        reply_error(out, 422, NULL, "%s is not a valid PNG: %s", what, vapo_last_error());
        return -1;
    }
    int rc = vapo_image_to_float(&img, mi->c, dst);
    vapo_image_free(&img);
    if (rc) {
        reply_error(out, 422, NULL, "%s: %s", what, vapo_last_error());
        return -1;
    }
    return 0;
}

static int media_is(const char *content_type, const char *type)
{
    if (!content_type)
        return 0;
    while (*content_type == ' ')
        content_type++;
    size_t n = strlen(type);
    return !strncasecmp(content_type, type, n) &&
           (content_type[n] == 0 || content_type[n] == ';' || content_type[n] == ' ');
}

/* The energy job for n images scored by k: the rows of each image (its
 * noised copies for the multiscale score) are made as each PNG is decoded. */
static route_work *energy_work(app *a, const model_info *mi, vapo_score_kind k, int n, reply *out)
{
    const int per = vapo_ood_rows(mi->ood, k);
    route_work *w = work_new(a, JOB_ENERGY, n * per, mi->d, out);
    if (w) {
        w->images = n, w->score = k, w->rows_per = per;
        w->j->want_norm = vapo_ood_needs_grad(k);
        w->j->nfeat = vapo_ood_features(mi->ood, k);
        if (w->j->nfeat && !(w->j->feat = malloc(sizeof(float) * (size_t)n * per * w->j->nfeat))) {
            route_work_free(w);
            reply_error(out, 503, "overloaded", "out of memory");
            return NULL;
        }
    }
    return w;
}

/* Decodes image i's PNG and writes its rows; 0, or -1 with a 422 reply. */
static int energy_image(const model_info *mi, route_work *w, int i, const unsigned char *png, size_t len,
                        const char *what, reply *out)
{
    float *x = malloc(sizeof(float) * mi->d);
    if (!x) {
        reply_error(out, 503, "overloaded", "out of memory");
        return -1;
    }
    int rc = load_png(mi, png, len, what, x, out);
    if (!rc)
        vapo_ood_expand(mi->ood, w->score, mi->d, x, w->j->x + (size_t)i * w->rows_per * mi->d);
    free(x);
    return rc;
}

/* The "score" field: absent means the model's default; it must name a score
 * the model has calibrated. */
static int parse_score(json_t *req, const model_info *mi, vapo_score_kind *k, reply *out)
{
    json_t *v = json_object_get(req, "score");
    *k = mi->ood->default_score;
    if (!v)
        return 0;
    if (!json_is_string(v) || vapo_score_parse(json_string_value(v), k)) {
        reply_error(out, 422, NULL, "'score' must be one of %s", vapo_score_choices());
        return -1;
    }
    if (mi->ood->calib[*k].count <= 0 || !vapo_ood_available(mi->ood, *k)) {
        reply_error(out, 422, NULL, "the model has no calibration for the score '%s' (see /v1/model: ood.scores)",
                    vapo_score_name(*k));
        return -1;
    }
    return 0;
}

static route_work *post_energy(app *a, const route_input *in, reply *out)
{
    const model_info *mi = ready_model(a, out);
    if (!mi)
        return NULL;
    route_work *w = NULL;
    if (media_is(in->content_type, "image/png")) {
        w = energy_work(a, mi, mi->ood->default_score, 1, out);
        if (w && energy_image(mi, w, 0, in->body, in->body_len, "the image", out)) {
            route_work_free(w);
            return NULL;
        }
        return w;
    }
    json_t *req = parse_object(in, JSON_VALUES_MAX + (size_t)a->cfg->max_images, out);
    if (!req)
        return NULL;
    static const char *const fields[] = {"images", "score", NULL};
    json_t *images = json_object_get(req, "images");
    vapo_score_kind k;
    if (check_fields(req, fields, out) || parse_score(req, mi, &k, out))
        goto done;
    if (!json_is_array(images) || json_array_size(images) < 1 ||
        json_array_size(images) > (size_t)a->cfg->max_images) {
        reply_error(out, 422, NULL, "'images' must be a list of 1..%d base64 PNG strings", a->cfg->max_images);
        goto done;
    }
    w = energy_work(a, mi, k, (int)json_array_size(images), out);
    for (size_t i = 0; w && i < json_array_size(images); i++) {
        json_t *v = json_array_get(images, i);
        char what[32];
        snprintf(what, sizeof what, "images[%zu]", i);
        if (!json_is_string(v)) {
            reply_error(out, 422, NULL, "%s must be a base64 string", what);
            goto fail;
        }
        size_t len;
        int oom;
        unsigned char *png = b64_decode(json_string_value(v), json_string_length(v), &len, &oom);
        if (!png) {
            if (oom)
                reply_error(out, 503, "overloaded", "out of memory");
            else
                reply_error(out, 422, NULL, "%s is not valid base64", what);
            goto fail;
        }
        int rc = energy_image(mi, w, (int)i, png, len, what, out);
        free(png);
        if (rc)
            goto fail;
    }
done:
    json_decref(req);
    return w;
fail:
    route_work_free(w);
    json_decref(req);
    return NULL;
}

static void finish_energy(app *a, route_work *w, reply *out)
{
    job *j = w->j;
    const model_info *mi = batcher_model(a->b);
    if (!mi || job_error(j, out))
        goto done;
    const vapo_ood *o = mi->ood;
    const vapo_score_kind k = w->score;
    const int calibrated = o->calib[k].count > 0;
    json_t *results = json_array();
    for (int i = 0; i < w->images; i++) {
        const size_t row = (size_t)i * w->rows_per; /* the first row is the image itself (sigma 0) */
        const double v = vapo_ood_value(o, k, mi->c, mi->h, mi->w, j->x + row * j->d, j->phi + row, j->gnorm + row,
                                        j->feat ? j->feat + row * j->nfeat : NULL);
        json_t *r = json_pack("{s:o, s:o}", "energy", finite_or_null(j->phi[row]), "value", finite_or_null(v));
        /* uncalibrated: ood_score 1 and never in distribution (vapo_ood_score) */
        json_object_set_new(r, "ood_score", json_real(vapo_ood_score(o, k, v)));
        json_object_set_new(r, "in_distribution", json_boolean(vapo_ood_in_distribution(o, k, v)));
        json_array_append_new(results, r);
    }
    reply_json(out, 200,
               json_pack("{s:o, s:s, s:b, s:[i,i,i]}", "results", results, "score", vapo_score_name(k), "calibrated",
                         calibrated, "shape", mi->c, mi->h, mi->w));
done:
    route_work_free(w);
}

/* ---- table -------------------------------------------------------------------------------------- */

static const route table[] = {
    {"/generate", "POST", 1, ACCESS_KEY, {"application/json"}, post_generate, finish_generate},
    {"/interpolate", "POST", 1, ACCESS_KEY, {"application/json"}, post_interpolate, finish_interpolate},
    {"/energy", "POST", 1, ACCESS_KEY, {"image/png", "application/json"}, post_energy, finish_energy},
    {"/healthz", "GET, HEAD", 0, ACCESS_OPEN, {NULL}, get_healthz, NULL},
    {"/readyz", "GET, HEAD", 0, ACCESS_OPEN, {NULL}, get_readyz, NULL},
    {"/metrics", "GET, HEAD", 0, ACCESS_METRICS, {NULL}, get_metrics, NULL},
    {"/v1/model", "GET, HEAD", 0, ACCESS_KEY, {NULL}, get_model, NULL},
    {"/openapi.yaml", "GET, HEAD", 0, ACCESS_KEY, {NULL}, get_openapi, NULL},
    {"/", "GET, HEAD", 0, ACCESS_KEY, {NULL}, get_page, NULL},
};

const route *routes_find(const char *path)
{
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(table[i].path, path))
            return &table[i];
    return NULL;
}

int route_allows(const route *r, const char *method)
{
    if (r->post)
        return !strcmp(method, "POST");
    return !strcmp(method, "GET") || !strcmp(method, "HEAD");
}

const char *routes_label(const route *r) { return r ? r->path : "other"; }

size_t routes_body_limit(app *a, const route *r, const char *content_type)
{
    size_t limit = 0, cap = a->cfg->max_body_bytes;
    const model_info *mi = batcher_model(a->b);
    if (!r->post)
        return 0;
    if (r->start != post_energy)
        limit = JSON_BODY_MAX;
    else if (!mi) /* still loading: the route answers 503 before reading anything */
        limit = cap;
    else if (media_is(content_type, "image/png"))
        limit = png_size_bound(mi);
    else
        limit = ENERGY_JSON_EXTRA + (size_t)a->cfg->max_images * (4 * ((png_size_bound(mi) + 2) / 3) + ENERGY_JSON_PER_IMAGE);
    return limit < cap ? limit : cap;
}

void routes_submit_error(app *a, submit_result res, const job *j, reply *out)
{
    char retry[32];
    switch (res) {
    case SUBMIT_LATE: /* an honest Retry-After: when the work ahead leaves room for it */
        metrics_rejected(a->mx, "deadline");
        reply_error(out, 503, "overloaded",
                    "the server cannot finish this request before its deadline (%.0f s): about %.0f s of work "
                    "would be ahead of its end; retry in %.0f s", a->cfg->timeout_s, j->est_s, j->retry_after_s);
        snprintf(retry, sizeof retry, "%.0f", j->retry_after_s);
        reply_header(out, "Retry-After", retry);
        break;
    case SUBMIT_FULL:
        metrics_rejected(a->mx, "queue_full");
        reply_error(out, 503, "overloaded", "the queue is full (%d images); retry later", a->cfg->max_queue);
        reply_header(out, "Retry-After", "1");
        break;
    case SUBMIT_NOT_READY:
        metrics_rejected(a->mx, "not_ready");
        reply_error(out, 503, "not_ready", "the model is still loading");
        reply_header(out, "Retry-After", "1");
        break;
    default:
        metrics_rejected(a->mx, "shutting_down");
        reply_error(out, 503, "shutting_down", "the server is shutting down");
        break;
    }
}
