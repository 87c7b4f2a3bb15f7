/* Checkpoints (engine/ckpt.c): round trips, metadata, atomic saves, and a
 * corruption catalogue (hand-built bad headers, every truncation, byte flips).
 *
 * Also two modes for tests/ckpt_python_check.py, the independent Python side:
 *   test_ckpt --write PATH   writes the fixture checkpoint below
 *   test_ckpt --check PATH   loads the file Python wrote and checks its contents */
#define _POSIX_C_SOURCE 200809L /* mkdtemp, setrlimit, dirent */

#include "vapo/ckpt.h"
#include "vapo/error.h"

#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;
#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            failures++;                                                                                                \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                       \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fputc('\n', stderr);                                                                                       \
        }                                                                                                              \
    } while (0)

static char tmpdir[] = "/tmp/vapo_ckpt_XXXXXX";

static const char *in_tmp(const char *name)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    if (snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name) >= (int)sizeof buf[k])
        abort(); /* the tests' own names are short */
    return buf[k];
}

static int write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = (n == 0 || fwrite(p, 1, n, f) == n);
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* Whole file into a malloc'd buffer (NULL if missing). */
static unsigned char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)len + 1);
    if (p && fread(p, 1, (size_t)len, f) != (size_t)len) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *n = (size_t)len;
    return p;
}

static int count_temp_files(void)
{
    DIR *d = opendir(tmpdir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strstr(e->d_name, ".tmp.") != NULL;
    if (d)
        closedir(d);
    return n;
}

static void remove_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            unlink(in_tmp(e->d_name));
    if (d)
        closedir(d);
    rmdir(tmpdir);
}

/* ---- the fixture, mirrored in ckpt_python_check.py ------------------------- */

static float conv_w[12];
static const double scale = 3.141592653589793;
static const int64_t steps[3] = {INT64_MIN, -1, INT64_MAX};
static const uint8_t mask[5] = {0, 1, 2, 254, 255};
static float special[3];

/* The odd-length "mask" puts "special" at a misaligned offset, exercising the
 * loader's aligned copies. */
static int fixture(vapo_tensor_ref *t)
{
    for (int i = 0; i < 12; i++)
        conv_w[i] = (float)i * 0.25f - 1.5f;
    special[0] = INFINITY;
    special[1] = -0.0f;
    special[2] = NAN;
    vapo_tensor_ref f[] = {
        {"conv.w", VAPO_DT_F32, 4, {2, 3, 1, 2}, conv_w},
        {"scale", VAPO_DT_F64, 0, {0}, &scale},
        {"steps", VAPO_DT_I64, 2, {1, 3}, steps},
        {"empty", VAPO_DT_U8, 3, {2, 0, 3}, NULL},
        {"mask", VAPO_DT_U8, 1, {5}, mask},
        {"special", VAPO_DT_F32, 1, {3}, special},
    };
    memcpy(t, f, sizeof f);
    return (int)(sizeof f / sizeof f[0]);
}

static json_t *fixture_metadata(void)
{
    return json_pack("{s:s, s:{s:[i,i], s:i, s:s, s:b, s:{s:n, s:f}}, s:[f,f], s:i, s:b, s:s, s:s}", "format",
                     "vapo-ckpt-1", "arch", "widths", 32, 64, "depth", 2, "act", "gelu", "wn", 1, "nested", "none",
                     "x", 0.1, "calib", 1.5, -2.25, "step", 1200, "ema", 0, "note", "plain text, not JSON", "looks",
                     "[1, 2]");
}

static int64_t ref_bytes(const vapo_tensor_ref *t)
{
    int64_t n = vapo_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; d++)
        n *= t->shape[d];
    return n;
}

/* ---- round trips ------------------------------------------------------------ */

static void test_round_trip(void)
{
    vapo_tensor_ref t[8];
    int n = fixture(t);
    json_t *meta = fixture_metadata();
    const char *path = in_tmp("rt.safetensors");
    CHECK(vapo_ckpt_save(path, t, n, meta) == 0, "save: %s", vapo_last_error());
    vapo_ckpt *ck = vapo_ckpt_load(path);
    CHECK(ck, "load: %s", vapo_last_error());
    if (!ck) {
        json_decref(meta);
        return;
    }
    CHECK(vapo_ckpt_count(ck) == n, "count %d, want %d", vapo_ckpt_count(ck), n);
    for (int i = 0; i < n && i < vapo_ckpt_count(ck); i++) {
        const vapo_tensor_ref *g = vapo_ckpt_tensor(ck, i);
        CHECK(strcmp(g->name, t[i].name) == 0, "tensor %d is '%s', want '%s' (order kept)", i, g->name, t[i].name);
        CHECK(g->dtype == t[i].dtype && g->ndim == t[i].ndim, "'%s': dtype/ndim differ", t[i].name);
        CHECK(memcmp(g->shape, t[i].shape, (size_t)t[i].ndim * sizeof(int64_t)) == 0, "'%s': shape differs",
              t[i].name);
        int64_t b = ref_bytes(&t[i]);
        CHECK(b == 0 || memcmp(g->data, t[i].data, (size_t)b) == 0, "'%s': bytes differ", t[i].name);
        CHECK(g->data && (uintptr_t)g->data % (uintptr_t)vapo_dtype_size(g->dtype) == 0, "'%s': data misaligned",
              t[i].name);
        CHECK(vapo_ckpt_find(ck, t[i].name) == g, "find('%s')", t[i].name);
    }
    CHECK(vapo_ckpt_find(ck, "nope") == NULL, "find of a missing name");
    CHECK(vapo_ckpt_tensor(ck, n) == NULL && vapo_ckpt_tensor(ck, -1) == NULL, "tensor index out of range");

    /* read_f32: the right shape copies; anything else is a clear error. */
    float w[12] = {0};
    CHECK(vapo_ckpt_read_f32(ck, "conv.w", 4, (int64_t[]){2, 3, 1, 2}, w) == 0 && memcmp(w, conv_w, sizeof w) == 0,
          "read_f32: %s", vapo_last_error());
    CHECK(vapo_ckpt_read_f32(ck, "conv.w", 4, (int64_t[]){2, 3, 2, 1}, w) < 0 &&
              strstr(vapo_last_error(), "has shape [2, 3, 1, 2], expected [2, 3, 2, 1]"),
          "wrong shape: '%s'", vapo_last_error());
    CHECK(vapo_ckpt_read_f32(ck, "conv.w", 3, (int64_t[]){2, 3, 2}, w) < 0, "wrong ndim");
    CHECK(vapo_ckpt_read_f32(ck, "scale", 0, NULL, w) < 0 && strstr(vapo_last_error(), "is F64, expected F32"),
          "wrong dtype: '%s'", vapo_last_error());
    CHECK(vapo_ckpt_read_f32(ck, "nope", 0, NULL, w) < 0 && strstr(vapo_last_error(), "no tensor 'nope'"),
          "missing: '%s'", vapo_last_error());
    float sp[3];
    CHECK(vapo_ckpt_read_f32(ck, "special", 1, (int64_t[]){3}, sp) == 0 && isinf(sp[0]) && signbit(sp[1]) &&
              isnan(sp[2]),
          "special values");

    /* Metadata: objects and arrays come back parsed, scalars as their text. */
    const json_t *m = vapo_ckpt_metadata(ck);
    CHECK(json_is_object(m) && json_object_size(m) == json_object_size(meta), "metadata size");
    CHECK(json_equal(json_object_get(m, "arch"), json_object_get(meta, "arch")), "nested arch object differs");
    CHECK(json_equal(json_object_get(m, "calib"), json_object_get(meta, "calib")), "calib array differs");
    CHECK(json_real_value(json_object_get(json_object_get(json_object_get(m, "arch"), "nested"), "x")) == 0.1,
          "real 0.1 not exact");
    const char *expect_str[][2] = {{"format", "vapo-ckpt-1"}, {"step", "1200"}, {"ema", "false"},
                                   {"note", "plain text, not JSON"}};
    for (int i = 0; i < 4; i++) {
        const char *s = json_string_value(json_object_get(m, expect_str[i][0]));
        CHECK(s && strcmp(s, expect_str[i][1]) == 0, "metadata '%s' = '%s', want '%s'", expect_str[i][0],
              s ? s : "(not a string)", expect_str[i][1]);
    }
    CHECK(json_is_array(json_object_get(m, "looks")), "string holding array text comes back parsed (documented)");
    vapo_ckpt_free(ck);
    json_decref(meta);

    /* An empty checkpoint: no tensors, no metadata. */
    path = in_tmp("empty.safetensors");
    CHECK(vapo_ckpt_save(path, NULL, 0, NULL) == 0, "empty save: %s", vapo_last_error());
    ck = vapo_ckpt_load(path);
    CHECK(ck && vapo_ckpt_count(ck) == 0 && json_object_size(vapo_ckpt_metadata(ck)) == 0, "empty load: %s",
          vapo_last_error());
    vapo_ckpt_free(ck);
    size_t len;
    unsigned char *raw = read_file(path, &len);
    CHECK(raw && len == 16 && raw[0] == 8 && memcmp(raw + 8, "{}      ", 8) == 0, "empty file layout");
    free(raw);
}

/* Bad input to save fails before touching the file system. */
static void test_save_rejects(void)
{
    float x[2] = {1, 2};
    const char *path = in_tmp("rej.safetensors");
    struct {
        vapo_tensor_ref t[2];
        int n;
        const char *needle;
    } cases[] = {
        {{{"a", VAPO_DT_F32, 1, {2}, x}, {"a", VAPO_DT_F32, 1, {2}, x}}, 2, "duplicate"},
        {{{"__metadata__", VAPO_DT_F32, 1, {2}, x}}, 1, "reserved"},
        {{{"a", VAPO_DT_F32, 9, {2}, x}}, 1, "dimensions"},
        {{{"a", VAPO_DT_F32, 1, {-2}, x}}, 1, "negative"},
        {{{"a", VAPO_DT_F32, 1, {2}, NULL}}, 1, "no data"},
        {{{NULL, VAPO_DT_F32, 1, {2}, x}}, 1, "no name"},
        {{{"a", (vapo_dtype)7, 1, {2}, x}}, 1, "dtype"},
        {{{"a", VAPO_DT_F64, 3, {INT64_C(1) << 30, INT64_C(1) << 30, INT64_C(1) << 30}, x}}, 1, "overflow"},
        {{{"a\xff", VAPO_DT_F32, 1, {2}, x}}, 1, "UTF-8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = vapo_ckpt_save(path, cases[i].t, cases[i].n, NULL);
        CHECK(rc < 0 && strstr(vapo_last_error(), cases[i].needle), "save case %zu: rc %d, error '%s', want '%s'", i,
              rc, vapo_last_error(), cases[i].needle);
        CHECK(access(path, F_OK) != 0, "save case %zu left a file", i);
    }
    json_t *arr = json_array();
    CHECK(vapo_ckpt_save(path, NULL, 0, arr) < 0 && strstr(vapo_last_error(), "object"), "array metadata");
    json_decref(arr);
    CHECK(count_temp_files() == 0, "temp files left behind");
}

/* Atomic saves: a failure leaves the old file byte for byte and no temp file. */
static void test_atomic_save(void)
{
    const char *path = in_tmp("atomic.safetensors");
    vapo_tensor_ref t[8];
    int n = fixture(t);
    CHECK(vapo_ckpt_save(path, t, n, NULL) == 0, "first save: %s", vapo_last_error());
    size_t old_len, len;
    unsigned char *old = read_file(path, &old_len);

    /* Unwritable places, even for root. */
    CHECK(vapo_ckpt_save(in_tmp("no/such/dir/x.safetensors"), t, n, NULL) < 0 &&
              strstr(vapo_last_error(), "cannot create temp file"),
          "missing folder: '%s'", vapo_last_error());
    CHECK(vapo_ckpt_save("/proc/vapo_ckpt_test.safetensors", t, n, NULL) < 0, "save into /proc succeeded");

    /* A write that fails midway (a full disk, simulated by a file size limit). */
    float big[4096] = {0};
    vapo_tensor_ref bt = {"big", VAPO_DT_F32, 1, {4096}, big};
    struct rlimit saved;
    getrlimit(RLIMIT_FSIZE, &saved);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {1000, saved.rlim_max};
    setrlimit(RLIMIT_FSIZE, &lim);
    int rc = vapo_ckpt_save(path, &bt, 1, NULL);
    setrlimit(RLIMIT_FSIZE, &saved);
    signal(SIGXFSZ, old_handler);
    CHECK(rc < 0 && strstr(vapo_last_error(), "writing the temp file failed"), "short write: rc %d '%s'", rc,
          vapo_last_error());

    /* A rename that fails: the target is a folder. */
    const char *dirpath = in_tmp("adir");
    mkdir(dirpath, 0700);
    CHECK(vapo_ckpt_save(dirpath, t, n, NULL) < 0 && strstr(vapo_last_error(), "rename"), "rename onto a folder: '%s'",
          vapo_last_error());
    rmdir(dirpath);

    unsigned char *now = read_file(path, &len);
    CHECK(old && now && len == old_len && memcmp(old, now, len) == 0, "old file changed by a failed save");
    CHECK(count_temp_files() == 0, "temp files left behind");
    vapo_ckpt *ck = vapo_ckpt_load(path);
    CHECK(ck && vapo_ckpt_count(ck) == n, "old file no longer loads: %s", vapo_last_error());
    vapo_ckpt_free(ck);

    /* A successful save replaces it. */
    CHECK(vapo_ckpt_save(path, &bt, 1, NULL) == 0, "replace: %s", vapo_last_error());
    ck = vapo_ckpt_load(path);
    CHECK(ck && vapo_ckpt_count(ck) == 1 && vapo_ckpt_find(ck, "big"), "replaced file");
    vapo_ckpt_free(ck);
    free(old);
    free(now);
}

/* ---- corruption catalogue ------------------------------------------------- */

/* Writes [len][header][data] and loads it; hlen < 0 means strlen(header). */
static vapo_ckpt *load_raw(const char *header, int64_t hlen, size_t dlen)
{
    size_t hl = strlen(header);
    uint64_t l = hlen < 0 ? hl : (uint64_t)hlen;
    unsigned char *buf = calloc(1, 8 + hl + dlen);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(l >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < dlen; i++)
        buf[8 + hl + i] = (unsigned char)(i * 7 + 1);
    write_file(in_tmp("raw.safetensors"), buf, 8 + hl + dlen);
    free(buf);
    return vapo_ckpt_load(in_tmp("raw.safetensors"));
}

static void expect_bad(int line, const char *header, int64_t hlen, size_t dlen, const char *needle)
{
    vapo_ckpt *ck = load_raw(header, hlen, dlen);
    const char *e = vapo_last_error();
    if (ck || !strstr(e, needle) || !strstr(e, "raw.safetensors")) {
        failures++;
        fprintf(stderr, "FAIL line %d: header %s: %s, error '%s', want '%s'\n", line, header,
                ck ? "loaded" : "failed", e, needle);
    }
    vapo_ckpt_free(ck);
}
#define BAD(h, dlen, needle) expect_bad(__LINE__, h, -1, dlen, needle)
#define T(name, dt, shape, offs) "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" offs "}"

static void test_corruption_catalogue(void)
{
    /* Files shorter than the length field. */
    for (size_t n = 0; n < 8; n++) {
        write_file(in_tmp("raw.safetensors"), "\x10\0\0\0\0\0\0\0", n);
        vapo_ckpt *ck = vapo_ckpt_load(in_tmp("raw.safetensors"));
        CHECK(!ck && strstr(vapo_last_error(), "shorter than the 8-byte"), "%zu-byte file: '%s'", n,
              vapo_last_error());
        vapo_ckpt_free(ck);
    }
    CHECK(!vapo_ckpt_load(in_tmp("missing.safetensors")) && strstr(vapo_last_error(), "cannot open"), "missing file");
    CHECK(!vapo_ckpt_load(tmpdir) && strstr(vapo_last_error(), "not a regular file"), "folder: '%s'",
          vapo_last_error());

    /* The header length. */
    expect_bad(__LINE__, "{}", 0, 0, "header length is 0");
    expect_bad(__LINE__, "{}", 3, 0, "larger than");
    expect_bad(__LINE__, "{}", INT64_C(1) << 40, 0, "100 MB");
    expect_bad(__LINE__, "{}", INT64_MAX, 0, "100 MB");

    /* The header text. */
    BAD("{\"a\":", 0, "not valid JSON");
    BAD("{} x", 0, "not valid JSON");
    BAD("{\"a\xff\":{}}", 0, "not valid JSON");                         /* invalid UTF-8 */
    BAD("{\"a\":{\"dtype\":\"F\xc3\"}}", 0, "not valid JSON");          /* truncated UTF-8 sequence */
    BAD("[1, 2]", 0, "not a JSON object");
    BAD("\"text\"", 0, "not valid JSON");
    BAD("{" T("a", "F32", "[2]", "[0,8]") "," T("a", "F32", "[2]", "[8,16]") "}", 16, "duplicate");

    /* Tensor entries. */
    BAD("{\"a\":5}", 0, "entry is not an object");
    BAD("{" T("a", "F16", "[2]", "[0,4]") "}", 4, "unsupported dtype 'F16'");
    BAD("{" T("a", "f32", "[2]", "[0,8]") "}", 8, "unsupported dtype");
    BAD("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype");
    BAD("{\"a\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype");
    BAD("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "missing shape");
    BAD("{" T("a", "F32", "2", "[0,8]") "}", 8, "missing shape");
    BAD("{" T("a", "F32", "[-2]", "[0,8]") "}", 8, "shape[0]");
    BAD("{" T("a", "F32", "[1,2.0]", "[0,8]") "}", 8, "shape[1]");
    BAD("{" T("a", "F32", "[\"2\"]", "[0,8]") "}", 8, "shape[0]");
    BAD("{" T("a", "F32", "[null]", "[0,8]") "}", 8, "shape[0]");
    BAD("{" T("a", "U8", "[1,1,1,1,1,1,1,1,1]", "[0,1]") "}", 1, "9 dimensions, at most 8");
    BAD("{" T("a", "U8", "[4294967296,4294967296,4294967296]", "[0,8]") "}", 8, "overflows");
    BAD("{" T("a", "F64", "[4611686018427387904]", "[0,8]") "}", 8, "overflows");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "data_offsets");
    BAD("{" T("a", "F32", "[2]", "[0]") "}", 8, "data_offsets");
    BAD("{" T("a", "F32", "[2]", "[0,8,8]") "}", 8, "data_offsets");
    BAD("{" T("a", "F32", "[2]", "{}") "}", 8, "data_offsets");
    BAD("{" T("a", "F32", "[2]", "[-8,0]") "}", 8, "data_offsets");
    BAD("{" T("a", "F32", "[2]", "[0,8.0]") "}", 8, "data_offsets");
    BAD("{" T("a", "F32", "[2]", "[0,99999999999999999999]") "}", 8, "not valid JSON"); /* beyond int64 */
    BAD("{" T("a", "F32", "[2]", "[8,0]") "}", 8, "outside the data section");
    BAD("{" T("a", "F32", "[2]", "[0,8]") "}", 4, "outside the data section");
    BAD("{" T("a", "F32", "[2]", "[0,4]") "}", 4, "span 4 bytes but F32 shape [2] needs 8");
    BAD("{" T("a", "F32", "[]", "[0,8]") "}", 8, "needs 4");

    /* How the tensors tile the data section. */
    BAD("{" T("a", "F32", "[2]", "[0,8]") "," T("b", "F32", "[2]", "[4,12]") "}", 12, "overlap");
    BAD("{" T("a", "F32", "[2]", "[0,8]") "," T("b", "F32", "[2]", "[0,8]") "}", 8, "overlap");
    BAD("{" T("a", "F32", "[2]", "[0,8]") "," T("b", "U8", "[0]", "[4,4]") "}", 8, "overlap");
    BAD("{" T("a", "F32", "[2]", "[0,8]") "," T("b", "F32", "[2]", "[12,20]") "}", 20, "gap of 4 bytes");
    BAD("{" T("a", "F32", "[2]", "[4,12]") "}", 12, "gap of 4 bytes");
    BAD("{" T("a", "F32", "[2]", "[0,8]") "}", 12, "data section is 12 bytes but the tensors end at 8");
    BAD("{}", 4, "data section is 4 bytes");

    /* __metadata__. */
    BAD("{\"__metadata__\":[]}", 0, "__metadata__ is not an object");
    BAD("{\"__metadata__\":\"x\"}", 0, "__metadata__ is not an object");
    BAD("{\"__metadata__\":{\"k\":1}}", 0, "value 'k' is not a string");
    BAD("{\"__metadata__\":{\"k\":{\"a\":\"b\"}}}", 0, "value 'k' is not a string");

    /* Valid files other writers may produce: JSON order differing from data
     * order, a misaligned F32 after an odd U8, empty tensors sharing an offset,
     * padding, and a header length not a multiple of 8. */
    vapo_ckpt *ck = load_raw("{\"__metadata__\":{\"k\":\"v\"}," T("x", "F32", "[2]", "[3,11]") "," T(
                                 "u", "U8", "[3]", "[0,3]") "," T("e", "I64", "[0,5]", "[11,11]") "," T("f", "F64", "[0]",
                                                                                                        "[11,11]") "}   ",
                             -1, 11);
    CHECK(ck && vapo_ckpt_count(ck) == 4, "valid odd file: %s", vapo_last_error());
    if (ck) {
        const vapo_tensor_ref *x = vapo_ckpt_find(ck, "x"), *u = vapo_ckpt_find(ck, "u");
        unsigned char want[8];
        for (int i = 0; i < 8; i++)
            want[i] = (unsigned char)((3 + i) * 7 + 1);
        CHECK(x && (uintptr_t)x->data % 4 == 0 && memcmp(x->data, want, 8) == 0, "misaligned F32 copied");
        CHECK(u && memcmp(u->data, "\x01\x08\x0f", 3) == 0, "U8 bytes");
        CHECK(strcmp(vapo_ckpt_tensor(ck, 0)->name, "x") == 0, "header order kept");
        const char *k = json_string_value(json_object_get(vapo_ckpt_metadata(ck), "k"));
        CHECK(k && strcmp(k, "v") == 0, "metadata k");
    }
    vapo_ckpt_free(ck);
}

/* Every strict prefix of a valid file must fail cleanly. */
static void test_truncation(const unsigned char *file, size_t len)
{
    const char *p = in_tmp("trunc.safetensors");
    int bad = 0;
    for (size_t l = 0; l < len; l++) {
        write_file(p, file, l);
        vapo_ckpt *ck = vapo_ckpt_load(p);
        if (ck || !vapo_last_error()[0]) {
            if (bad++ < 5)
                fprintf(stderr, "FAIL: truncation to %zu of %zu bytes %s\n", l, len, ck ? "loaded" : "gave no error");
        }
        vapo_ckpt_free(ck);
    }
    CHECK(bad == 0, "%d truncations misbehaved", bad);
    printf("truncation: %zu lengths, all rejected\n", len);
}

/* A file that loads must be self-consistent; touching every byte lets ASan
 * catch any out-of-bounds pointer. */
static int consistent(const vapo_ckpt *ck, size_t file_len)
{
    int64_t total = 0;
    unsigned sum = 0;
    for (int i = 0; i < vapo_ckpt_count(ck); i++) {
        const vapo_tensor_ref *t = vapo_ckpt_tensor(ck, i);
        int64_t b = ref_bytes(t);
        for (int64_t k = 0; k < b; k++)
            sum += ((const unsigned char *)t->data)[k];
        total += b;
        if (vapo_ckpt_find(ck, t->name) != t || t->ndim < 0 || t->ndim > VAPO_CKPT_MAX_DIMS)
            return 0;
    }
    (void)sum;
    return total <= (int64_t)file_len && json_is_object(vapo_ckpt_metadata(ck));
}

/* Single-byte flips at every position, three random values each. */
static void test_flips(const unsigned char *file, size_t len)
{
    const char *p = in_tmp("flip.safetensors");
    unsigned char *buf = malloc(len);
    uint64_t s = 0x9e3779b97f4a7c15u;
    int loaded = 0, failed = 0, bad = 0;
    for (size_t pos = 0; pos < len; pos++) {
        for (int r = 0; r < 3; r++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            memcpy(buf, file, len);
            buf[pos] ^= (unsigned char)(1 + s % 255);
            write_file(p, buf, len);
            vapo_ckpt *ck = vapo_ckpt_load(p);
            if (ck) {
                loaded++;
                if (!consistent(ck, len) && bad++ < 5)
                    fprintf(stderr, "FAIL: flip at %zu loaded inconsistently\n", pos);
            } else if (!vapo_last_error()[0]) {
                if (bad++ < 5)
                    fprintf(stderr, "FAIL: flip at %zu failed without a message\n", pos);
            } else {
                failed++;
            }
            vapo_ckpt_free(ck);
        }
    }
    free(buf);
    CHECK(bad == 0, "%d flips misbehaved", bad);
    printf("flips: %d loaded consistently, %d rejected cleanly\n", loaded, failed);
}

/* ---- the Python side ---------------------------------------------------------- */

/* What ckpt_python_check.py writes by hand (and with safetensors, if present). */
static int check_python_file(const char *path)
{
    vapo_ckpt *ck = vapo_ckpt_load(path);
    CHECK(ck, "load: %s", vapo_last_error());
    if (!ck)
        return 1;
    CHECK(vapo_ckpt_count(ck) == 5, "count %d, want 5", vapo_ckpt_count(ck));
    const vapo_tensor_ref *u = vapo_ckpt_find(ck, "u"), *d = vapo_ckpt_find(ck, "d"), *i = vapo_ckpt_find(ck, "i"),
                          *e = vapo_ckpt_find(ck, "e");
    CHECK(u && u->dtype == VAPO_DT_U8 && u->ndim == 1 && u->shape[0] == 3 && memcmp(u->data, "\x07\x08\x09", 3) == 0,
          "tensor u");
    float x[4];
    CHECK(vapo_ckpt_read_f32(ck, "x", 2, (int64_t[]){2, 2}, x) == 0 && x[0] == 1.5f && x[1] == -2.0f &&
              x[2] == 0.25f && x[3] == 1e10f,
          "tensor x: %s", vapo_last_error());
    CHECK(d && d->dtype == VAPO_DT_F64 && d->ndim == 0 && *(const double *)d->data == -0.5, "tensor d");
    CHECK(i && i->dtype == VAPO_DT_I64 && i->ndim == 1 && i->shape[0] == 2 && ((const int64_t *)i->data)[0] == -3 &&
              ((const int64_t *)i->data)[1] == INT64_C(1) << 40,
          "tensor i");
    CHECK(e && e->dtype == VAPO_DT_F32 && e->ndim == 1 && e->shape[0] == 0, "tensor e");
    const json_t *m = vapo_ckpt_metadata(ck);
    json_t *arch = json_pack("{s:i, s:[i,i]}", "depth", 2, "widths", 8, 16);
    CHECK(json_equal(json_object_get(m, "arch"), arch), "metadata arch");
    CHECK(json_is_string(json_object_get(m, "step")) && strcmp(json_string_value(json_object_get(m, "step")), "77") == 0,
          "metadata step");
    CHECK(json_is_string(json_object_get(m, "format")) &&
              strcmp(json_string_value(json_object_get(m, "format")), "py-hand") == 0,
          "metadata format");
    json_decref(arch);
    vapo_ckpt_free(ck);
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write") == 0) {
        vapo_tensor_ref t[8];
        int n = fixture(t);
        json_t *meta = fixture_metadata();
        int rc = vapo_ckpt_save(argv[2], t, n, meta);
        json_decref(meta);
        if (rc < 0)
            fprintf(stderr, "save: %s\n", vapo_last_error());
        return rc < 0;
    }
    if (argc == 3 && strcmp(argv[1], "--check") == 0)
        return check_python_file(argv[2]);

    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_save_rejects();
    test_atomic_save();
    test_corruption_catalogue();

    vapo_tensor_ref t[8];
    int n = fixture(t);
    json_t *meta = fixture_metadata();
    const char *path = in_tmp("fuzz.safetensors");
    CHECK(vapo_ckpt_save(path, t, n, meta) == 0, "save: %s", vapo_last_error());
    json_decref(meta);
    size_t len = 0;
    unsigned char *file = read_file(path, &len);
    if (file) {
        test_truncation(file, len);
        test_flips(file, len);
    }
    free(file);

    remove_tmpdir();
    if (failures) {
        fprintf(stderr, "test_ckpt: %d failures\n", failures);
        return 1;
    }
    printf("test_ckpt: all passed\n");
    return 0;
}
