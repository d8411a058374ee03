/*
 * codec_rotated.cu - the container's rotated method (docs/codec-container.md, method 1) as
 * quantize and dequantize kernels on CUDA and HIP GPUs: the CPU backend's bits.
 *
 * One thread block per (row, token), launched as CacheGen's (codec_gpu.h). The block holds
 * `piece` channels of the token in shared memory: the whole token where it fits PIECE floats,
 * else as many whole heads as fit. Every value comes from rotated_token.h, as on the CPU: the
 * load multiplies by 1 / head_size, the transform makes kvx_rot_hadamard's passes (groups of 8,
 * then two spans a pass, then one), a butterfly per thread with a barrier between passes. Each
 * butterfly adds the same two values as the CPU's, so the coefficients are the same bits; the
 * largest |coefficient| is an integer max of float bits (non-negative floats order like their
 * bits), the CPU's value in any order of reduction.
 *
 * Quantize: pass 1 rotates every piece, checks the values against the limit and reduces the max;
 * then the scale and its check; pass 2 quantizes, rotating each piece again where the token
 * took more than one. A token the method refuses (a value not finite or above the limit, or a
 * scale rounding up past it) is skipped and recorded for kvx_synchronize(), as CacheGen's
 * non-finite tokens are (the CPU backend rejects the call up front instead).
 * Dequantize: per piece, coefficients from the symbols, the same transform, the dtype.
 *
 * Bits: the build forbids contraction (--fmad=false, -ffp-contract=off), so x * (1 / n) and the
 * butterflies' sums, c * factor, and the symbol's level times the step stay separate roundings;
 * the divisions MAX / scale and scale / MAX, once a token, are IEEE divisions on every target
 * (nvcc's default -prec-div=true; HIP's float division is correctly rounded by default).
 */
#include "../codec/rotated_token.h"
#include "codec_gpu.h"

/* Floats of shared memory a block holds a token in: the whole token up to this many channels,
 * else whole heads. One head must fit, so the GPU takes head_size up to MAX_HEAD (32 KiB: within
 * the 48 KiB a block gets without opting in, in every architecture built). */
#define PIECE 4096
#define MAX_HEAD 8192

/* Channels in the piece at `first`: `piece`, or fewer for the token's last (whole heads: piece
 * and the channels are multiples of head_size). */
__device__ inline int piece_size(long long channels, long long first, int piece)
{
    return channels - first < piece ? (int)(channels - first) : piece;
}

/* Channels first .. first + n - 1 of token x, times 1 / d, into v (then a barrier). Returns 0
 * when one of this thread's values is not finite or above limit. */
__device__ int load_piece(float *v, const void *x, int dtype, long long first, int n, float inverse,
                          float limit)
{
    int within = 1;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        const float value = kvx_cc_load(x, dtype, first + c);
        within &= fabsf(value) <= limit; /* false for NaN */
        v[c] = value * inverse;
    }
    __syncthreads();
    return within;
}

/* Each head of d values among the n in v transformed in place, in kvx_rot_hadamard's passes
 * (then a barrier): each thread takes whole groups of up to 8 values (spans 1, 2, 4), then one
 * butterfly at a time (4 * q - 3 * (q mod len) is butterfly q's first value). */
__device__ void rotate_piece(float *v, int n, int d)
{
    const int group = d < 8 ? d : 8;
    for (int g = threadIdx.x * group; g < n; g += blockDim.x * group)
        kvx_rot_hadamard(v + g, group);
    __syncthreads();
    int len = group;
    for (; 4 * len <= d; len <<= 2) {
        for (int q = threadIdx.x; q < n / 4; q += blockDim.x)
            kvx_rot_butterfly4(v, 4 * q - 3 * (q & (len - 1)), len);
        __syncthreads();
    }
    if (len < d) { /* one span left: d / 2 */
        for (int q = threadIdx.x; q < n / 2; q += blockDim.x)
            kvx_rot_butterfly2(v, 2 * q - (q & (len - 1)), len);
        __syncthreads();
    }
}

__global__ void __launch_bounds__(KVX_QUANT_THREADS) quantize_rotated(const kvx_quant_args a)
{
    KVX_DYNAMIC_SHARED(float, v);
    __shared__ unsigned int largest_bits, refused;
    const kvx_token_rows &g = a.g;
    const int d = a.rot.head_size, piece = a.rot.piece;
    const float inverse = 1.0f / (float)d, limit = a.rot.limit;
    const long long items = g.rows * g.tokens;
    for (long long i = blockIdx.x; i < items; i += gridDim.x) {
        const long long r = i / g.tokens, t = i - r * g.tokens;
        const void *x = a.x + r * g.row_stride + t * g.token_stride;
        if (threadIdx.x == 0)
            largest_bits = refused = 0;
        __syncthreads();
        unsigned int mine = 0;
        int within = 1;
        for (long long first = 0; first < g.channels; first += piece) {
            const int n = piece_size(g.channels, first, piece);
            within &= load_piece(v, x, g.dtype, first, n, inverse, limit);
            rotate_piece(v, n, d);
            for (int c = threadIdx.x; c < n; c += blockDim.x) {
                const unsigned int bits = kvx_f32_to_bits(fabsf(v[c]));
                mine = bits > mine ? bits : mine;
            }
            __syncthreads(); /* all have read the piece before the next one replaces it */
        }
        atomicMax(&largest_bits, mine);
        if (!within)
            atomicExch(&refused, 1u);
        __syncthreads();
        const float scale = kvx_rot_scale_up(kvx_bits_to_f32(largest_bits));
        const int skip = refused || !(scale <= limit);
        __syncthreads(); /* all have read them before thread 0 resets them for the next token */
        if (skip) {
            if (threadIdx.x == 0)
                kvx_gpu_record_error(a.error, KVX_GPU_ROTATED_RANGE, d, a.first_row + r, t);
            continue;
        }
        const int32_t max_int = g.max_int[r];
        uint8_t *out = a.symbols + i * g.channels;
        if (scale == 0.0f) {
            for (long long c = threadIdx.x; c < g.channels; c += blockDim.x)
                out[c] = (uint8_t)max_int;
        } else {
            const float factor = (float)max_int / scale;
            for (long long first = 0; first < g.channels; first += piece) {
                const int n = piece_size(g.channels, first, piece);
                if (piece < g.channels) { /* else pass 1 left the token in shared memory */
                    load_piece(v, x, g.dtype, first, n, inverse, limit);
                    rotate_piece(v, n, d);
                }
                for (int c = threadIdx.x; c < n; c += blockDim.x)
                    out[first + c] = kvx_rot_symbol(v[c], factor, max_int);
                if (piece < g.channels)
                    __syncthreads(); /* all have read the piece before the next one */
            }
        }
        if (threadIdx.x == 0)
            a.scales[i] = scale;
    }
}

/* Value c of a token's output: the dtype, float16 and bfloat16 saturating. */
__device__ inline void store_value(void *out, int dtype, long long c, float value)
{
    if (dtype == KVX_DTYPE_FLOAT32)
        ((float *)out)[c] = value;
    else if (dtype == KVX_DTYPE_BFLOAT16)
        ((uint16_t *)out)[c] = kvx_rot_to_bf16(value);
    else
        ((uint16_t *)out)[c] = kvx_rot_to_f16(value);
}

__global__ void __launch_bounds__(KVX_QUANT_THREADS) dequantize_rotated(const kvx_dequant_args a)
{
    KVX_DYNAMIC_SHARED(float, v);
    const kvx_token_rows &g = a.g;
    const int d = a.rot.head_size, piece = a.rot.piece;
    const long long items = g.rows * g.tokens;
    for (long long i = blockIdx.x; i < items; i += gridDim.x) {
        const long long r = i / g.tokens, t = i - r * g.tokens;
        const int32_t max_int = g.max_int[r];
        const float step = a.scales[i] / (float)max_int;
        const uint8_t *symbols = a.symbols + i * g.channels;
        char *out = a.out + r * g.row_stride + t * g.token_stride;
        for (long long first = 0; first < g.channels; first += piece) {
            const int n = piece_size(g.channels, first, piece);
            for (int c = threadIdx.x; c < n; c += blockDim.x)
                v[c] = kvx_rot_value(symbols[first + c], max_int, step);
            __syncthreads();
            rotate_piece(v, n, d);
            for (int c = threadIdx.x; c < n; c += blockDim.x)
                store_value(out, g.dtype, first + c, v[c]);
            __syncthreads(); /* all have read the piece before the next one replaces it */
        }
    }
}

/* The launches' constants: the piece a block holds (a multiple of head_size: PIECE and head_size
 * are powers of two, and head_size divides the channels); KVX_ERR_UNSUPPORTED when one head does
 * not fit. */
static int32_t rotation_for(int64_t head_size, int64_t channels, kvx_rotation *rot)
{
    if (head_size > MAX_HEAD)
        return kvx_fail(KVX_ERR_UNSUPPORTED,
                        "head_size: the %s backend's rotated method supports up to %d (one head "
                        "in shared memory), got %lld",
                        KVX_GPU_NAME, MAX_HEAD, (long long)head_size);
    const int64_t most = head_size > PIECE ? head_size : PIECE;
    rot->head_size = (int)head_size;
    rot->piece = (int)(channels < most ? channels : most);
    rot->limit = kvx_rot_limit(head_size);
    return KVX_OK;
}

extern "C" int32_t kvx_gpu_codec_quantize_rotated(const kvx_codec_quantize_rotated_args *args,
                                                  const kvx_stream *stream)
{
    kvx_rotation rot = {};
    int32_t rc = rotation_for(args->head_size, args->base.num_channels, &rot);
    return rc ? rc : kvx_quantize_launches(quantize_rotated, &args->base, rot, stream);
}

extern "C" int32_t kvx_gpu_codec_dequantize_rotated(const kvx_codec_dequantize_rotated_args *args,
                                                    const kvx_stream *stream)
{
    kvx_rotation rot = {};
    int32_t rc = rotation_for(args->head_size, args->base.num_channels, &rot);
    return rc ? rc : kvx_dequantize_launches(dequantize_rotated, &args->base, rot, stream);
}
