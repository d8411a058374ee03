/*
 * rope.c - kvx_rope_rerotate and kvx_rope_apply: the checks every backend relies on, then
 * dispatch.
 *
 * After these checks a backend may assume: dtypes are FLOAT32/FLOAT16/BFLOAT16 (tensors, cache)
 * and INT32/INT64 (positions); rot_dim is even and fits every head; strides are non-negative and
 * every element offset the views can produce fits in int64 bytes; pointers are non-NULL and
 * aligned to their element size where data will be touched; no element is rotated twice (the
 * head vectors of a tensor, and query and key, share no rotated element); and, for backends that
 * run on host memory, positions come as a checked int64 copy whose every entry lies in
 * [0, max_position), so the cache is never read out of bounds.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "../core/kvx_internal.h"

static int is_float_dtype(int32_t dtype)
{
    return dtype == KVX_DTYPE_FLOAT32 || dtype == KVX_DTYPE_FLOAT16 || dtype == KVX_DTYPE_BFLOAT16;
}

static int32_t check_cache(const kvx_rope_cache *c)
{
    int32_t rc;
    if (!is_float_dtype(c->dtype))
        return FAIL_ARG("cache->dtype: expected KVX_DTYPE_FLOAT32, FLOAT16 or BFLOAT16, got %d",
                        (int)c->dtype);
    if (c->rot_dim < 2 || c->rot_dim % 2 != 0)
        return FAIL_ARG("cache->rot_dim: expected an even number >= 2, got %d", (int)c->rot_dim);
    if (c->pairing != KVX_ROPE_NEOX && c->pairing != KVX_ROPE_GPTJ)
        return FAIL_ARG("cache->pairing: expected KVX_ROPE_NEOX (0) or KVX_ROPE_GPTJ (1), got %d",
                        (int)c->pairing);
    if ((rc = kvx_check_field("cache", "max_position", c->max_position, 1, INT64_MAX)))
        return rc;
    if (!c->cos_sin)
        return FAIL_ARG("cache->cos_sin: expected a [%lld, %d] table, got NULL",
                        (long long)c->max_position, (int)c->rot_dim);
    if ((rc = kvx_check_dtype_aligned("cache->cos_sin", c->cos_sin, 1, c->dtype)))
        return rc;
    int64_t max_offset = c->rot_dim - 1;
    if ((rc = kvx_check_extent("cache", "row_stride", c->row_stride, c->max_position, &max_offset)))
        return rc;
    return kvx_check_bytes_fit("cache", max_offset, kvx_dtype_size(c->dtype));
}

/* ---------------------------------------------------------------- overlap
 *
 * Backends rotate different head vectors at once (GPU threads, CPU threads, vector lanes), each
 * reading and then writing its own pairs. Where two head vectors share an element, it would be
 * rotated twice, in an order (a race, on a GPU) that differs between backends, so such views are
 * refused for every backend. Only the first rot_dim elements of a head vector are read or written,
 * so only those count.
 */

/* One index of a tensor's view: heads, tokens or layers. */
typedef struct rope_dim {
    const char *field; /* the stride's field, for messages */
    const char *unit;  /* what one index is, for messages */
    int64_t count;
    int64_t stride; /* elements */
} rope_dim;

/* The dims of t with more than one index (tokens only if with_tokens), smallest stride first;
 * equal strides keep the order heads, tokens, layers. Returns how many there are. */
static int sorted_dims(const kvx_rope_tensor *t, int with_tokens, rope_dim dims[3])
{
    const rope_dim all[3] = {{"head_stride", "head", t->num_heads, t->head_stride},
                             {"token_stride", "token", t->num_tokens, t->token_stride},
                             {"layer_stride", "layer", t->num_layers, t->layer_stride}};
    int n = 0;
    for (int i = 0; i < 3; i++) {
        if (all[i].count < 2 || (i == 1 && !with_tokens))
            continue;
        int at = n++;
        for (; at > 0 && dims[at - 1].stride > all[i].stride; at--)
            dims[at] = dims[at - 1];
        dims[at] = all[i];
    }
    return n;
}

/*
 * No two head vectors of t share a rotated element. The rule: taking the dims from the smallest
 * stride up, each stride must clear everything the dims inside it span (rot_dim elements for
 * the innermost). It is exact for every layout that nests its dims, whatever their order and
 * padding ([T, H, D], [L, T, H, D], [H, T, D], a view into a fused qkv tensor): such views are
 * disjoint exactly when it holds. It refuses only views whose dims interleave (tokens placed
 * between the heads of another token), which no engine makes. And it proves that each token's
 * vectors, taken in the order of these dims, lie at increasing addresses, which the check of
 * query against key relies on. O(1), nothing allocated.
 */
static int32_t check_self_overlap(const char *name, const kvx_rope_tensor *t, int32_t rot_dim)
{
    rope_dim dims[3];
    int n = t->num_tokens > 0 ? sorted_dims(t, 1, dims) : 0;
    int64_t extent = rot_dim; /* the strides fit int64 (check_tensor): so do the extents */
    for (int i = 0; i < n; i++) {
        const rope_dim *d = &dims[i];
        if (d->stride < extent) {
            if (i == 0)
                return FAIL_ARG("%s->%s: expected >= cache->rot_dim (%d), the elements a head "
                                "rotates, got %lld: %ss overlap, so elements would be rotated "
                                "twice",
                                name, d->field, (int)rot_dim, (long long)d->stride, d->unit);
            return FAIL_ARG("%s->%s: expected >= %lld, the elements one %s's %ss%s%s%s span, got "
                            "%lld: %ss overlap, so elements would be rotated twice",
                            name, d->field, (long long)extent, d->unit, dims[0].unit,
                            i == 2 ? " and " : "", i == 2 ? dims[1].unit : "", i == 2 ? "s" : "",
                            (long long)d->stride, d->unit);
        }
        extent += d->stride * (d->count - 1);
    }
    return KVX_OK;
}

static int32_t check_tensor(const char *name, const kvx_rope_tensor *t, const kvx_rope_cache *c)
{
    int32_t rc;
    if (!is_float_dtype(t->dtype))
        return FAIL_ARG("%s->dtype: expected KVX_DTYPE_FLOAT32, FLOAT16 or BFLOAT16, got %d", name,
                        (int)t->dtype);
    if ((rc = kvx_check_field(name, "num_layers", t->num_layers, 1, INT32_MAX)) ||
        (rc = kvx_check_field(name, "num_heads", t->num_heads, 1, INT32_MAX)) ||
        (rc = kvx_check_field(name, "num_tokens", t->num_tokens, 0, INT64_MAX)))
        return rc;
    if (t->head_size < c->rot_dim)
        return FAIL_ARG("%s->head_size: expected >= cache->rot_dim (%d), got %d", name,
                        (int)c->rot_dim, (int)t->head_size);
    if (t->reserved0 != 0)
        return FAIL_ARG("%s->reserved0: expected 0, got %d", name, (int)t->reserved0);
    if (t->num_tokens > 0 && !t->base)
        return FAIL_ARG("%s->base: expected a pointer, got NULL", name);
    if (t->num_tokens > 0 && !kvx_is_aligned(t->base, kvx_dtype_size(t->dtype))) {
        char field[32];
        snprintf(field, sizeof field, "%s->base", name);
        return kvx_check_dtype_aligned(field, t->base, t->num_tokens, t->dtype);
    }
    int64_t max_offset = t->head_size - 1;
    if ((rc = kvx_check_extent(name, "layer_stride", t->layer_stride, t->num_layers,
                               &max_offset)) ||
        (rc = kvx_check_extent(name, "token_stride", t->token_stride, t->num_tokens,
                               &max_offset)) ||
        (rc = kvx_check_extent(name, "head_stride", t->head_stride, t->num_heads, &max_offset)) ||
        (rc = kvx_check_bytes_fit(name, max_offset, kvx_dtype_size(t->dtype))))
        return rc;
    return check_self_overlap(name, t, c->rot_dim);
}

/* The rotated elements of one token of a tensor, rot_dim each, as byte intervals from an origin,
 * produced in increasing order (check_self_overlap proved the order). */
typedef struct token_walk {
    int64_t origin, width; /* bytes */
    rope_dim inner, outer; /* strides in bytes */
    int64_t i, o;
} token_walk;

static void walk_start(token_walk *w, const kvx_rope_tensor *t, int32_t rot_dim, int64_t origin)
{
    int64_t size = kvx_dtype_size(t->dtype);
    rope_dim dims[3], one = {"", "", 1, 0};
    int n = sorted_dims(t, 0, dims);
    w->origin = origin;
    w->width = rot_dim * size;
    w->inner = n > 0 ? dims[0] : one;
    w->outer = n > 1 ? dims[1] : one;
    w->inner.stride *= size;
    w->outer.stride *= size;
    w->i = w->o = 0;
}

static int walk_done(const token_walk *w) { return w->o == w->outer.count; }

static int64_t walk_at(const token_walk *w)
{
    return w->origin + w->o * w->outer.stride + w->i * w->inner.stride;
}

static void walk_next(token_walk *w)
{
    if (++w->i == w->inner.count) {
        w->i = 0;
        w->o++;
    }
}

/* Bytes from t's base to the end of the last element it rotates in one token (tokens: 1) or in
 * all of them. */
static uint64_t rotated_end(const kvx_rope_tensor *t, int32_t rot_dim, int64_t tokens)
{
    int64_t end = rot_dim + (int64_t)(t->num_layers - 1) * t->layer_stride +
                  (tokens - 1) * t->token_stride + (int64_t)(t->num_heads - 1) * t->head_stride;
    return (uint64_t)end * (uint64_t)kvx_dtype_size(t->dtype); /* < 2^63 + 8: check_tensor */
}

/*
 * key and query share no rotated element. Views into one fused qkv tensor (vLLM, SGLang: query
 * = qkv[:, :q_size], key = qkv[:, q_size:q_size + k_size]) interleave token by token, so their
 * address ranges overlap although their elements do not: ranges that do not overlap settle it,
 * else the two must step through tokens alike (one token stride in bytes, and one token of both
 * spanning at most that stride), and then one token's rotated intervals of both, merged in
 * address order, must not overlap (each tensor's come in order, check_self_overlap, so the walk
 * is linear and allocates nothing). Overlapping ranges with other strides are refused: no
 * engine makes them.
 */
static int32_t check_query_key_overlap(const kvx_rope_tensor *q, const kvx_rope_tensor *k,
                                       int32_t rot_dim)
{
    if (q->num_tokens == 0)
        return KVX_OK;
    uintptr_t qb = (uintptr_t)q->base, kb = (uintptr_t)k->base;
    uint64_t q_span = rotated_end(q, rot_dim, q->num_tokens);
    uint64_t k_span = rotated_end(k, rot_dim, k->num_tokens);
    if (kb >= qb ? kb - qb >= q_span : qb - kb >= k_span)
        return KVX_OK;
    /* No memory is 2^61 bytes large; below that, the byte offsets that follow fit int64. */
    if (q_span > ((uint64_t)1 << 61) || k_span > ((uint64_t)1 << 61))
        return FAIL_ARG("key: overlaps query (the same elements would be rotated twice); pass "
                        "disjoint tensors");
    int64_t key_origin = kb >= qb ? (int64_t)(kb - qb) : -(int64_t)(qb - kb);
    if (q->num_tokens > 1) {
        int64_t q_step = q->token_stride * kvx_dtype_size(q->dtype);
        int64_t k_step = k->token_stride * kvx_dtype_size(k->dtype);
        if (q_step != k_step)
            return FAIL_ARG("key: shares memory with query, with another token stride (%lld "
                            "bytes against %lld): pass disjoint tensors, or views of one tensor",
                            (long long)k_step, (long long)q_step);
        int64_t lo = key_origin < 0 ? key_origin : 0;
        int64_t q_end = (int64_t)rotated_end(q, rot_dim, 1);
        int64_t k_end = key_origin + (int64_t)rotated_end(k, rot_dim, 1);
        int64_t footprint = (q_end > k_end ? q_end : k_end) - lo;
        if (footprint > q_step)
            return FAIL_ARG("key: shares memory with query, and one token of the two spans %lld "
                            "bytes, more than their token stride (%lld bytes): pass disjoint "
                            "tensors, or views of one tensor whose tokens do not interleave",
                            (long long)footprint, (long long)q_step);
    }
    token_walk qw, kw;
    walk_start(&qw, q, rot_dim, 0);
    walk_start(&kw, k, rot_dim, key_origin);
    int64_t end = INT64_MIN;
    while (!walk_done(&qw) || !walk_done(&kw)) {
        token_walk *w = walk_done(&kw) || (!walk_done(&qw) && walk_at(&qw) <= walk_at(&kw)) ? &qw
                                                                                            : &kw;
        int64_t at = walk_at(w);
        if (at < end)
            return FAIL_ARG("key: overlaps query (the same elements would be rotated twice); "
                            "pass disjoint tensors");
        end = at + w->width;
        walk_next(w);
    }
    return KVX_OK;
}

static int32_t check_positions_dtype(int32_t dtype)
{
    if (dtype != KVX_DTYPE_INT64 && dtype != KVX_DTYPE_INT32)
        return FAIL_ARG("positions_dtype: expected KVX_DTYPE_INT64 (%d) or KVX_DTYPE_INT32 (%d), "
                        "got %d",
                        KVX_DTYPE_INT64, KVX_DTYPE_INT32, (int)dtype);
    return KVX_OK;
}

/*
 * Positions a host backend (the CPU's) rotates by: a checked int64 copy of the caller's array, so
 * that the kernels, which read a position several times (prefetching, one slice of pairs at a
 * time), read only values that were checked, whatever another thread writes to the caller's
 * array during the call. Each caller value is read once. The decode step's few tokens fit on the
 * stack; longer arrays are copied to the heap, where the copy costs little next to the rotation.
 */
#define STACK_POSITIONS 256

typedef struct checked_positions {
    int64_t *values;
    int64_t on_stack[STACK_POSITIONS];
} checked_positions;

static int64_t caller_position(const void *positions, int32_t dtype, int64_t t)
{
    return dtype == KVX_DTYPE_INT64 ? kvx_read_once_i64(positions, t)
                                    : kvx_read_once_i32(positions, t);
}

static void release_positions(checked_positions *checked)
{
    if (checked->values != checked->on_stack)
        free(checked->values);
    checked->values = NULL;
}

/* Fills *checked from the caller's array, failing (nothing copied for the caller to free) when
 * a position is outside [0, max_position). Called before anything is modified. */
static int32_t check_positions(const char *name, const void *positions, int32_t dtype,
                               int64_t count, int64_t max_position, checked_positions *checked)
{
    checked->values = count <= STACK_POSITIONS ? checked->on_stack
                                               : malloc((size_t)count * sizeof(int64_t));
    if (!checked->values)
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "%s: cannot allocate a copy of %lld positions", name,
                        (long long)count);
    for (int64_t t = 0; t < count; t++) {
        int64_t p = caller_position(positions, dtype, t);
        if (p < 0 || p >= max_position) {
            release_positions(checked);
            return FAIL_ARG("%s[%lld]: expected a position in [0, %lld) (the cache's "
                            "max_position), got %lld",
                            name, (long long)t, (long long)max_position, (long long)p);
        }
        checked->values[t] = p;
    }
    return KVX_OK;
}

/* Device backends read positions where they live; the CPU backend's are host memory. */
static int positions_on_host(const kvx_backend *backend)
{
    return backend->device_type == KVX_DEVICE_CPU;
}

/* Checked copies of the old and new positions into old_pos / new_pos, both or neither. */
static int32_t check_rerotation(const void *old_positions, const void *new_positions, int32_t dtype,
                                int64_t count, int64_t max_position, checked_positions *old_pos,
                                checked_positions *new_pos)
{
    int32_t rc = check_positions("old_positions", old_positions, dtype, count, max_position,
                                 old_pos);
    if (rc)
        return rc;
    if ((rc = check_positions("new_positions", new_positions, dtype, count, max_position, new_pos)))
        release_positions(old_pos);
    return rc;
}

/* The caller's cache, read once into *c (kvx_read_struct) and checked. */
static int32_t read_cache(const kvx_rope_cache *user, kvx_rope_cache *c)
{
    int32_t rc = kvx_read_struct("cache", "kvx_rope_cache", user, c, sizeof *c);
    return rc ? rc : check_cache(c);
}

/* The same for a tensor to rotate with cache c. */
static int32_t read_tensor(const char *name, const kvx_rope_tensor *user, kvx_rope_tensor *t,
                           const kvx_rope_cache *c)
{
    int32_t rc = kvx_read_struct(name, "kvx_rope_tensor", user, t, sizeof *t);
    return rc ? rc : check_tensor(name, t, c);
}

int32_t kvx_rope_rerotate(const kvx_rope_tensor *keys, const kvx_rope_cache *cache,
                          const void *old_positions, const void *new_positions,
                          int32_t positions_dtype, const kvx_stream *stream)
{
    int32_t rc;
    kvx_rope_cache c;
    kvx_rope_tensor k;
    kvx_clear_error();
    if ((rc = read_cache(cache, &c)) || (rc = read_tensor("keys", keys, &k, &c)) ||
        (rc = check_positions_dtype(positions_dtype)) ||
        (rc = kvx_check_array("old_positions", old_positions, k.num_tokens, "entries")) ||
        (rc = kvx_check_array("new_positions", new_positions, k.num_tokens, "entries")) ||
        (rc = kvx_check_dtype_aligned("old_positions", old_positions, k.num_tokens,
                                      positions_dtype)) ||
        (rc = kvx_check_dtype_aligned("new_positions", new_positions, k.num_tokens,
                                      positions_dtype)))
        return rc;
    KVX_DISPATCH(backend, stream, rope_rerotate, "rope_rerotate");
    if (k.num_tokens == 0)
        return KVX_OK;
    kvx_rope_rerotate_args args = {&k, &c, old_positions, new_positions, positions_dtype};
    if (!positions_on_host(backend))
        return backend->rope_rerotate(&args, stream);
    checked_positions old_pos, new_pos;
    if ((rc = check_rerotation(old_positions, new_positions, positions_dtype, k.num_tokens,
                               c.max_position, &old_pos, &new_pos)))
        return rc;
    args.old_positions = old_pos.values;
    args.new_positions = new_pos.values;
    args.positions_dtype = KVX_DTYPE_INT64;
    rc = backend->rope_rerotate(&args, stream);
    release_positions(&old_pos);
    release_positions(&new_pos);
    return rc;
}

int32_t kvx_rope_apply(const kvx_rope_tensor *query, const kvx_rope_tensor *key,
                       const kvx_rope_cache *cache, const void *positions, int32_t positions_dtype,
                       const kvx_stream *stream)
{
    int32_t rc;
    kvx_rope_cache c;
    kvx_rope_tensor q, k;
    kvx_clear_error();
    if ((rc = read_cache(cache, &c)) || (rc = read_tensor("query", query, &q, &c)))
        return rc;
    if (key) {
        if ((rc = read_tensor("key", key, &k, &c)))
            return rc;
        if (k.num_tokens != q.num_tokens)
            return FAIL_ARG("key->num_tokens: expected query->num_tokens (%lld), got %lld",
                            (long long)q.num_tokens, (long long)k.num_tokens);
        if ((rc = check_query_key_overlap(&q, &k, c.rot_dim)))
            return rc;
    }
    if ((rc = check_positions_dtype(positions_dtype)) ||
        (rc = kvx_check_array("positions", positions, q.num_tokens, "entries")) ||
        (rc = kvx_check_dtype_aligned("positions", positions, q.num_tokens, positions_dtype)))
        return rc;
    KVX_DISPATCH(backend, stream, rope_apply, "rope_apply");
    if (q.num_tokens == 0)
        return KVX_OK;
    kvx_rope_apply_args args = {&q, key ? &k : NULL, &c, positions, positions_dtype};
    if (!positions_on_host(backend))
        return backend->rope_apply(&args, stream);
    checked_positions pos;
    if ((rc = check_positions("positions", positions, positions_dtype, q.num_tokens, c.max_position,
                              &pos)))
        return rc;
    args.positions = pos.values;
    args.positions_dtype = KVX_DTYPE_INT64;
    rc = backend->rope_apply(&args, stream);
    release_positions(&pos);
    return rc;
}
