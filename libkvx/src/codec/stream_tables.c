/*
 * stream_tables.c - the rotated method's per-stream tables: a stream's CDF comes either from its
 * exact symbol counts (CacheGen's table) or from a Gaussian given by two numbers, its centre and
 * spread (docs/codec-container.md, "Stream tables").
 *
 * Why: at the chunk sizes real systems use (a few hundred tokens), exact counts cost about ten
 * bytes per stream, an eighth of a low-rate blob; rotated coefficients are sums over a whole
 * head, close to Gaussian, and three bytes describe them nearly as well. The writer keeps the
 * counts where they code the stream in fewer bits (with the table's own bytes counted).
 *
 * The model's CDF is integer arithmetic on a fixed table, so every reader, on any host, derives
 * the same table from the same three bytes.
 */
#include <math.h>
#include <string.h>

#include "container.h"

enum {
    GAUSS_ONE = 1u << 31,   /* probability 1 in the model's fixed point */
    GAUSS_LAST = 512,       /* z = 8 (64 entries per unit): the last entry, equal to GAUSS_ONE */
    GAUSS_SUBSTEP_BITS = 8, /* z is interpolated in 1/256 of a step */
    CENTER_STEPS = 16,      /* the centre is stored in 1/16 of a symbol */
    SPREAD_STEPS = 16,      /* the spread is stored in 1/16 of an octave */
    SPREAD_ZERO = 64,       /* spread code of a deviation of one symbol */
    /* z = |diff| / 16 symbols over sigma / 2^20, in 1/(64 * 256): |diff| * 2^30 / sigma */
    Z_SHIFT = 20 + 6 + GAUSS_SUBSTEP_BITS - 4
};

/* round(2^31 * Phi(i / 64)), i = 0 .. 512, Phi the standard normal CDF. */
static const uint32_t gauss_phi[GAUSS_LAST + 1] = {
#include "stream_tables_phi.inc"
};

/* round(65536 * 2^(j / 16)), j = 0 .. 15: sigma of a spread code, in 1/2^20 of a symbol, is
 * sigma_fraction[code % 16] << (code / 16). */
static const uint32_t sigma_fraction[SPREAD_STEPS] = {65536,  68438,  71468,  74632, 77936,  81386,
                                                      84990,  88752,  92682,  96785, 101070, 105545,
                                                      110218, 115098, 120194, 125515};

/* Phi((boundary - centre) / sigma) in GAUSS_ONE units, for a boundary `diff` sixteenths of a
 * symbol from the centre: a truncating division and a linear interpolation of the table. */
static uint32_t gauss_below(int64_t diff, uint64_t sigma)
{
    uint64_t magnitude = (uint64_t)(diff < 0 ? -diff : diff);
    uint64_t z = (magnitude << Z_SHIFT) / sigma;
    uint64_t step = z >> GAUSS_SUBSTEP_BITS, part = z & ((1u << GAUSS_SUBSTEP_BITS) - 1);
    uint32_t p = GAUSS_ONE;
    if (step < GAUSS_LAST)
        p = gauss_phi[step] +
            (uint32_t)(((uint64_t)(gauss_phi[step + 1] - gauss_phi[step]) * part) >>
                       GAUSS_SUBSTEP_BITS);
    return diff < 0 ? GAUSS_ONE - p : p;
}

void kvx_codec_cdf_from_model(stream_model m, int32_t top, int32_t num_bins, uint16_t *cdf)
{
    uint64_t sigma = (uint64_t)sigma_fraction[m.spread % SPREAD_STEPS] << (m.spread / SPREAD_STEPS);
    uint64_t scale = (uint64_t)(0xffff - num_bins);
    for (int32_t s = 0; s <= num_bins; s++) {
        /* The mass below symbol s: up to the boundary s - 1/2, all of it past the top symbol. */
        uint64_t below = s == 0    ? 0
                         : s > top ? GAUSS_ONE
                                   : gauss_below((int64_t)(2 * s - 1) * (CENTER_STEPS / 2) -
                                                     (int64_t)m.center,
                                                 sigma);
        cdf[s] = (uint16_t)(((scale * below) >> 31) + (uint64_t)s);
    }
}

/* The model whose mean and deviation are the counts' (rounded to what three bytes hold). */
static stream_model fit_model(const uint16_t *counts, int32_t top, int64_t tokens)
{
    double sum = 0, squares = 0;
    for (int32_t s = 0; s <= top; s++) {
        sum += (double)s * counts[s];
        squares += (double)s * s * counts[s];
    }
    double mean = sum / (double)tokens, variance = squares / (double)tokens - mean * mean;
    long center = lround(mean * CENTER_STEPS), spread = 0;
    if (variance > 0)
        spread = lround(SPREAD_STEPS * 0.5 * log2(variance)) + SPREAD_ZERO;
    center = center<0 ? 0 : center>(long) top * CENTER_STEPS ? (long)top * CENTER_STEPS : center;
    spread = spread < 0 ? 0 : spread > 255 ? 255 : spread;
    return (stream_model){(uint16_t)center, (uint8_t)spread, 1};
}

/* Bits the range coder saves on these counts under the model's table instead of the counts'
 * (negative when it spends more): per symbol, log2 of its share under the one over the other. */
static float model_gain_bits(const uint16_t *counts, int32_t top, const uint16_t *exact,
                             const uint16_t *model)
{
    float gain = 0;
    for (int32_t s = 0; s <= top; s++)
        if (counts[s])
            gain += counts[s] *
                    log2f((float)(model[s + 1] - model[s]) / (float)(exact[s + 1] - exact[s]));
    return gain;
}

int64_t kvx_codec_counts_bytes(const uint16_t *counts, int32_t symbols, int32_t first_scale)
{
    int32_t first, n;
    kvx_codec_count_span(counts, symbols, &first, &n);
    int64_t bytes = varint_size((uint32_t)(first * first_scale)) + varint_size((uint32_t)n);
    for (int32_t s = first; s < first + n; s++)
        bytes += varint_size(counts[s]);
    return bytes;
}

int64_t kvx_codec_choose_table(const layout *lo, int64_t row, const uint16_t *counts,
                               int64_t tokens, uint16_t *cdf, stream_model *model)
{
    int32_t nb = lo->num_bins, top = rotated_top(lo, row);
    uint16_t gauss_cdf[KVX_CODEC_MAX_BINS + 1];
    kvx_codec_cdf_from_counts(counts, nb, tokens, cdf);
    int64_t exact_bytes = kvx_codec_counts_bytes(counts, row_symbols(lo, row), 2);
    *model = (stream_model){0, 0, 0};
    if (tokens == 0)
        return exact_bytes;
    stream_model fitted = fit_model(counts, top, tokens);
    kvx_codec_cdf_from_model(fitted, top, nb, gauss_cdf);
    int64_t model_bytes = varint_size(2u * fitted.center + 1) + 1;
    if (model_gain_bits(counts, top, cdf, gauss_cdf) <= 8.0f * (float)(model_bytes - exact_bytes))
        return exact_bytes;
    memcpy(cdf, gauss_cdf, (size_t)(nb + 1) * sizeof *cdf);
    *model = fitted;
    return model_bytes;
}
