/* hogwild kernels for quantized weights, AVX2 + FMA: y [M, N] (+)= x [M, K] @ dequant(W) [N, K]^T
 * * scale + b for the ggml block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K,
 * MXFP4, NVFP4), reading the blocks where they lie (hogwild.quant.weights.QuantWeight: row n
 * is K / block consecutive blocks in ggml's byte layout).
 *
 * Why: a decode pass reads every weight once and little else, so its time is the weight
 * bytes over the memory bandwidth; 4-bit blocks are ~7 x fewer bytes than fp32 and ~3.5 x
 * fewer than bf16. Widening them to fp32 in memory first would throw that away.
 *
 * Two ways to compute with a block are built, both over the same block decoders (each
 * 32-weight chunk becomes 32 int8 values q, 8 fp32 lane scales s and an optional additive
 * min: w = q * s + mn):
 * - QMODE_INT8: each row of x is quantized to int8 with one fp32 scale per 32 values (and
 *   the scale times the sum of the int8 values, for the formats with a min), and a chunk's
 *   dot product is integer
 *   (maddubs + madd: 32 multiply-adds in two instructions), scaled once in fp32. For the
 *   K-quants (super-blocks of 256 with integer sub-block scales) x gets one scale per 256
 *   and int16 sums per 16 instead, so a whole super-block is one integer sum: the quants
 *   times x times the sub-block scales, the mins times the sums (ggml's own arithmetic for
 *   these formats), then two fp32 steps per super-block;
 * - QMODE_F32: the chunk is widened to fp32 in registers and multiplied with fp32 x (FMA).
 * hw_qlinear uses one mode for every call (hw_qlinear_mode; bench/quant_linear.py measures
 * both): choosing by row count would give a row other bits alone than batched.
 *
 * Batch invariance (as hw_linear in hogwild_cpu.c): every output element is reduced in one
 * order fixed by K alone. In QMODE_INT8 (x rounded per row first, which depends on that row
 * only): acc (8 lanes) = sum over chunks c ascending of cvt(isum_c) * (s_c * dx_c), one FMA
 * per chunk; for the formats with a min, after each run of 8 chunks (an octet),
 * acc = fma(mn[octet], xsum[octet], acc) (missing chunks of the last octet count 0). For the
 * K-quants, per super-block ascending: acc = fma(cvt(isum), d * dx, acc) then (Q4_K, Q5_K)
 * acc = fma(cvt(imin), -(dmin * dx), acc), isum and imin exact int32 lanes (Q6_K: one FMA
 * of isum minus its offset of 32 per quant). In
 * QMODE_F32: acc = sum over chunks and their 4 groups of 8 of w * x, one FMA each. Then the
 * 8 lanes are summed by qreduce8's tree, multiplied by scale, the corrections added in their
 * given order (t += x[m, j] * delta), then the bias, then y (accumulate: y + t). Rows tiled in
 * registers, column panels, column groups and the thread split change the schedule only:
 * a tile shape is the same code with other constants, and threads split columns only.
 * The build turns off floating-point contraction, so no expression is fused differently in
 * different tiles. tests/test_quant_kernels.py checks it bit for bit.
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* format codes: ggml's type ids (hogwild.quant.weights.FORMATS), plus fp32 and bf16 */
enum {
    QF_F32 = 0, QF_Q4_0 = 2, QF_Q4_1 = 3, QF_Q5_0 = 6, QF_Q5_1 = 7, QF_Q8_0 = 8,
    QF_Q4_K = 12, QF_Q5_K = 13, QF_Q6_K = 14, QF_BF16 = 30, QF_MXFP4 = 39, QF_NVFP4 = 40
};
enum { QMODE_INT8 = 0, QMODE_F32 = 1 };

#define QMR 4      /* rows per register tile */
#define QNR_MAX 4  /* columns per micro-panel, at most */
#define QGROUP_BYTES 196608 /* weight bytes of a column group (stays in L2 while row tiles pass) */

static int q_mode = QMODE_INT8;

/* ------------------------------------------------------------------ scalar decoders */

/* IEEE half to float (exact; F16C) */
static inline float q_half(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* Two adjacent halves (d, m of Q4_1/Q5_1) converted in one instruction: [d, m, 0, 0] */
static inline __m128 q_half2(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128((int)v));
}

static inline float q_bits(uint32_t bits) {
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* MXFP4's E8M0 scale, halved: the int8 value table below holds E2M1 values doubled */
static inline float q_e8m0_half(uint8_t e) {
    return q_bits(e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23);
}

/* NVFP4's unsigned E4M3 sub-block scale, halved (same doubled value table); 0x7f (NaN) and
 * 0 read as 0, as ggml and the gguf package decode them; the top bit is ignored */
static inline float q_ue4m3_half(uint8_t x) {
    if (x == 0 || x == 0x7f) return 0.0f;
    uint32_t e = (x >> 3) & 0xfu, m = x & 7u;
    if (e == 0) return (float)m * 0.0009765625f; /* m * 2^-9 / 2 */
    return q_bits(((e + 119) << 23) | (m << 20)); /* (1 + m/8) * 2^(e-7) / 2 */
}

/* Q4_K/Q5_K: the 6-bit scale and min of sub-block i from the 12 packed bytes */
static inline void q_scale_min(const uint8_t *p, int i, int *sc, int *mn) {
    if (i < 4) {
        *sc = p[i] & 63;
        *mn = p[i + 4] & 63;
    } else {
        *sc = (p[i + 4] & 0xf) | ((p[i - 4] >> 6) << 4);
        *mn = (p[i + 4] >> 4) | ((p[i] >> 6) << 4);
    }
}

/* All eight 6-bit scales and mins of a Q4_K/Q5_K super-block at once, one per byte (little
 * endian: sub-block i in byte i), with 32-bit word operations on the 12 packed bytes. */
static inline void q_scales_mins(const uint8_t *p, uint64_t *scales, uint64_t *mins) {
    uint32_t w0, w1, w2;
    memcpy(&w0, p, 4);
    memcpy(&w1, p + 4, 4);
    memcpy(&w2, p + 8, 4);
    const uint32_t low6 = 0x3f3f3f3fu, low4 = 0x0f0f0f0fu, top2 = 0x03030303u;
    uint32_t sc_lo = w0 & low6, sc_hi = (w2 & low4) | (((w0 >> 6) & top2) << 4);
    uint32_t mn_lo = w1 & low6, mn_hi = ((w2 >> 4) & low4) | (((w1 >> 6) & top2) << 4);
    *scales = sc_lo | ((uint64_t)sc_hi << 32);
    *mins = mn_lo | ((uint64_t)mn_hi << 32);
}

/* ------------------------------------------------------------------ chunk decoders */

/* One chunk of 32 weights: q (int8, element order), s (fp32 scale of each int32 lane of a
 * madd result, i.e. of bytes 4l .. 4l+3), mn (additive min; formats with one). */
typedef struct {
    __m256i q;
    __m256 s;
    float mn;
} QChunk;

/* What a super-block's header decodes to, once per block and column (K-quants, NVFP4). */
typedef struct {
    float s[16];
    float mn[8];
} QHead;

static inline int q_block(int fmt) {
    return fmt == QF_Q4_K || fmt == QF_Q5_K || fmt == QF_Q6_K ? 256 : fmt == QF_NVFP4 ? 64 : 32;
}

static inline int q_bytes(int fmt) {
    switch (fmt) {
    case QF_Q4_0: return 18;
    case QF_Q4_1: return 20;
    case QF_Q5_0: return 22;
    case QF_Q5_1: return 24;
    case QF_Q8_0: return 34;
    case QF_Q4_K: return 144;
    case QF_Q5_K: return 176;
    case QF_Q6_K: return 210;
    case QF_MXFP4: return 17;
    case QF_NVFP4: return 36;
    default: return 0;
    }
}

/* signed q: multiplied with the sign trick; unsigned q (0..31) go straight into maddubs */
static inline int q_signed(int fmt) { return fmt != QF_Q4_1 && fmt != QF_Q5_1 && fmt != QF_Q4_K && fmt != QF_Q5_K; }
static inline int q_has_min(int fmt) { return !q_signed(fmt); }

/* two 16-byte halves of nibbles: low nibbles first (elements 0..15), high after */
static inline __m256i q_nibbles(const uint8_t *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)p), m = _mm_set1_epi8(0x0f);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

/* byte l = 0x10 where bit l of the 32 bits is set, else 0 (Q5_0/Q5_1's fifth bits) */
static inline __m256i q_bit4(uint32_t bits) {
    const __m256i spread = _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL, 0x0101010101010101LL, 0);
    const __m256i sel = _mm256_set1_epi64x(0x8040201008040201LL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), spread);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, sel), sel), _mm256_set1_epi8(0x10));
}

/* E2M1 values doubled, the table MXFP4 and NVFP4 index */
static inline __m256i q_fp4_table(void) {
    return _mm256_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12,
                            0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
}

/* The header of the block holding chunk c (formats whose blocks hold several chunks). */
static inline __attribute__((always_inline)) void q_head(const uint8_t *row, int blk, int fmt, QHead *h) {
    const uint8_t *b = row + (size_t)blk * q_bytes(fmt);
    if (fmt == QF_Q4_K || fmt == QF_Q5_K) {
        float d = q_half(b), dmin = q_half(b + 2);
        for (int i = 0; i < 8; i++) {
            int sc, mn;
            q_scale_min(b + 4, i, &sc, &mn);
            h->s[i] = d * (float)sc;
            h->mn[i] = -(dmin * (float)mn);
        }
    } else if (fmt == QF_Q6_K) {
        float d = q_half(b + 208);
        for (int i = 0; i < 16; i++) h->s[i] = d * (float)(int8_t)b[192 + i];
    } else if (fmt == QF_NVFP4) {
        for (int i = 0; i < 4; i++) h->s[i] = q_ue4m3_half(b[i]);
    }
}

/* Chunk c of a row (c counts 32-weight chunks from the row's start); h: its block's header. */
static inline __attribute__((always_inline)) QChunk q_chunk(const uint8_t *row, int c, int fmt, const QHead *h) {
    QChunk r;
    r.mn = 0.0f;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    switch (fmt) {
    case QF_Q8_0: {
        const uint8_t *b = row + (size_t)c * 34;
        r.q = _mm256_loadu_si256((const __m256i *)(b + 2));
        r.s = _mm256_set1_ps(q_half(b));
        break;
    }
    case QF_Q4_0: {
        const uint8_t *b = row + (size_t)c * 18;
        r.q = _mm256_sub_epi8(q_nibbles(b + 2), _mm256_set1_epi8(8));
        r.s = _mm256_set1_ps(q_half(b));
        break;
    }
    case QF_Q4_1: {
        const uint8_t *b = row + (size_t)c * 20;
        __m128 dm = q_half2(b);
        r.q = q_nibbles(b + 4);
        r.s = _mm256_broadcastss_ps(dm);
        r.mn = _mm_cvtss_f32(_mm_movehdup_ps(dm));
        break;
    }
    case QF_Q5_0: {
        const uint8_t *b = row + (size_t)c * 22;
        uint32_t qh;
        memcpy(&qh, b + 2, 4);
        r.q = _mm256_sub_epi8(_mm256_or_si256(q_nibbles(b + 6), q_bit4(qh)), _mm256_set1_epi8(16));
        r.s = _mm256_set1_ps(q_half(b));
        break;
    }
    case QF_Q5_1: {
        const uint8_t *b = row + (size_t)c * 24;
        uint32_t qh;
        memcpy(&qh, b + 4, 4);
        __m128 dm = q_half2(b);
        r.q = _mm256_or_si256(q_nibbles(b + 8), q_bit4(qh));
        r.s = _mm256_broadcastss_ps(dm);
        r.mn = _mm_cvtss_f32(_mm_movehdup_ps(dm));
        break;
    }
    case QF_Q4_K:
    case QF_Q5_K: {
        int i = c & 7;
        const uint8_t *b = row + (size_t)(c >> 3) * (fmt == QF_Q4_K ? 144 : 176);
        const uint8_t *qs = b + (fmt == QF_Q4_K ? 16 : 48) + 32 * (i >> 1);
        __m256i v = _mm256_loadu_si256((const __m256i *)qs);
        r.q = _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(4 * (i & 1))), m4);
        if (fmt == QF_Q5_K) {
            __m256i hb = _mm256_srl_epi16(_mm256_loadu_si256((const __m256i *)(b + 16)), _mm_cvtsi32_si128(i));
            r.q = _mm256_or_si256(r.q, _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(1)), 4));
        }
        r.s = _mm256_set1_ps(h->s[i]);
        r.mn = h->mn[i];
        break;
    }
    case QF_Q6_K: {
        int i = c & 7, half = i >> 2, s2 = i & 3;
        const uint8_t *b = row + (size_t)(c >> 3) * 210;
        __m256i lo = _mm256_loadu_si256((const __m256i *)(b + 64 * half + 32 * (s2 & 1)));
        lo = _mm256_and_si256(_mm256_srl_epi16(lo, _mm_cvtsi32_si128(4 * (s2 >> 1))), m4);
        __m256i hi = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * half));
        hi = _mm256_and_si256(_mm256_srl_epi16(hi, _mm_cvtsi32_si128(2 * s2)), _mm256_set1_epi8(3));
        r.q = _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), _mm256_set1_epi8(32));
        r.s = _mm256_setr_m128(_mm_set1_ps(h->s[2 * i]), _mm_set1_ps(h->s[2 * i + 1]));
        break;
    }
    case QF_MXFP4: {
        const uint8_t *b = row + (size_t)c * 17;
        r.q = _mm256_shuffle_epi8(q_fp4_table(), q_nibbles(b + 1));
        r.s = _mm256_set1_ps(q_e8m0_half(b[0]));
        break;
    }
    default: { /* QF_NVFP4: 4 sub-blocks of 16; 8 bytes each: low nibbles, then high */
        int i = c & 1;
        const uint8_t *b = row + (size_t)(c >> 1) * 36;
        __m128i v = _mm_loadu_si128((const __m128i *)(b + 4 + 16 * i)), m = _mm_set1_epi8(0x0f);
        __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
        __m256i idx = _mm256_set_m128i(_mm_unpackhi_epi64(lo, hi), _mm_unpacklo_epi64(lo, hi));
        r.q = _mm256_shuffle_epi8(q_fp4_table(), idx);
        r.s = _mm256_setr_m128(_mm_set1_ps(h->s[2 * i]), _mm_set1_ps(h->s[2 * i + 1]));
        break;
    }
    }
    return r;
}

/* ------------------------------------------------------------------ activations */

/* Row m of x as int8 per 32 values: xq = round(x * 127 / amax), xd = amax / 127, xs = xd
 * times the sum of the 32 xq (for the formats with a min: the mins multiply the same rounded
 * x as the quants, as ggml's Q8_1 does). With the exact sum of x instead, a Q4_1 weight's
 * error was its quant part d * q (all of one sign, mean ~7.5 d) times the rounding of x, not
 * the centred d * q + m: 2-3 x the linear's error and 4 x the KL of llama.cpp on the same
 * file (docs/quantization.md, "Quality"). Per row, so a row rounds the same whatever else is
 * in the call. xs rows are cp long, zero after the last chunk. */
static void q_quantize_row(const float *x, int K, int8_t *xq, float *xd, float *xs, int cp) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    int C = K / 32;
    for (int c = 0; c < C; c++) {
        const float *p = x + (size_t)c * 32;
        __m256 v0 = _mm256_loadu_ps(p), v1 = _mm256_loadu_ps(p + 8), v2 = _mm256_loadu_ps(p + 16),
               v3 = _mm256_loadu_ps(p + 24);
        __m256 mx = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                                  _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        xd[c] = amax / 127.0f;
        __m256 id = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, id)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, id));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, id)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, id));
        __m256i isum = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(isum), _mm256_extracti128_si256(isum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        xs[c] = xd[c] * (float)_mm_cvtsi128_si32(s4);  /* |sum| <= 32 * 127: exact in fp32 */
        __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        _mm256_storeu_si256((__m256i *)(xq + (size_t)c * 32), _mm256_permutevar8x32_epi32(packed, perm));
    }
    for (int c = C; c < cp; c++) xs[c] = 0.0f;
}

/* ------------------------------------------------------------------ tiles */

/* Where chunk c (32 values) of a super-block sits in the K-quants' xq: in each group of four
 * chunks the order is 0, 2, 1, 3, so that one 512-bit load gives chunks 4g and 4g+2 and the
 * next 4g+1 and 4g+3: the halves the AVX-512 tile decodes from one 512-bit load of quants. */
static inline int q_xpos(int c) { return (c & ~3) | ((c & 1) << 1) | ((c >> 1) & 1); }

/* Row m of x for the K-quants: per 256 values xq = round(x * 127 / amax) (chunks in q_xpos
 * order), xd = amax / 127, and bs = the int16 sums of xq per 16, in value order (the mins'
 * and Q6_K's offsets' partners). */
static void q_quantize_row256(const float *x, int K, int8_t *xq, float *xd, int16_t *bs) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int sb = 0; sb < K / 256; sb++) {
        const float *p = x + (size_t)sb * 256;
        __m256 mx = _mm256_setzero_ps();
        for (int i = 0; i < 256; i += 8) mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(p + i)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        xd[sb] = amax / 127.0f;
        __m256 id = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
        for (int c = 0; c < 8; c++) {
            const float *q = p + 32 * c;
            __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(q), id));
            __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(q + 8), id));
            __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(q + 16), id));
            __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(q + 24), id));
            __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
            _mm256_storeu_si256((__m256i *)(xq + (size_t)sb * 256 + 32 * q_xpos(c)), _mm256_permutevar8x32_epi32(packed, perm));
            int32_t lanes[8];
            _mm256_storeu_si256((__m256i *)lanes, _mm256_add_epi32(i0, i1));
            bs[sb * 16 + 2 * c] = (int16_t)(lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7]);
            _mm256_storeu_si256((__m256i *)lanes, _mm256_add_epi32(i2, i3));
            bs[sb * 16 + 2 * c + 1] = (int16_t)(lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7]);
        }
    }
}

static inline int q_kquant(int fmt) { return fmt == QF_Q4_K || fmt == QF_Q5_K || fmt == QF_Q6_K; }

typedef struct {
    const uint8_t *w;
    size_t row_bytes;
    const float *x;   /* fp32 x [M, K] (QMODE_F32, corrections) */
    const int8_t *xq; /* QMODE_INT8: [M, K] */
    const float *xd;  /* [M, C] */
    const float *xs;  /* [M, CP] */
    const int16_t *bs; /* K-quants: [M, K / 16]; xd is then [M, K / 256] */
    const float *b;
    float *y;
    float scale;
    const int32_t *fix_start, *fix_j;
    const float *fix_delta;
    int M, N, K, C, CP, accumulate;
} QJob;

/* [sum(a0), ..., sum(a7)] in one fixed tree (the same for every tile shape) */
static inline __m256 qreduce8(const __m256 *a) {
    __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* Finish a tile: lanes summed, scale, corrections in their order, bias, store or accumulate. */
static inline __attribute__((always_inline)) void q_finish(const QJob *j, __m256 a[QMR][QNR_MAX], int MR, int NR,
                                                           int m0, int n0) {
    for (int i = 0; i < MR; i++) {
        __m256 v[8];
        for (int c = 0; c < 8; c++) v[c] = c < NR ? a[i][c] : _mm256_setzero_ps();
        float s[8];
        _mm256_storeu_ps(s, qreduce8(v));
        const float *xr = j->x + (size_t)(m0 + i) * j->K;
        float *yr = j->y + (size_t)(m0 + i) * j->N + n0;
        for (int c = 0; c < NR; c++) {
            float t = s[c] * j->scale;
            if (j->fix_start)
                for (int f = j->fix_start[n0 + c]; f < j->fix_start[n0 + c + 1]; f++) t += xr[j->fix_j[f]] * j->fix_delta[f];
            if (j->b) t += j->b[n0 + c];
            yr[c] = j->accumulate ? yr[c] + t : t;
        }
    }
}

#ifndef Q_AHEAD
#define Q_AHEAD 4096
#endif
/* Prefetch the `bytes` of weight blocks that lie Q_AHEAD bytes after `blk`. A thread reads
 * its columns' rows as one forward stream, and the hardware prefetchers stop at every 4 KB
 * page, so each page began with a wait for memory. Prefetching one page ahead took a native
 * pass of Qwen2.5-Coder-1.5B (Q4_K_M, 2 threads, 1k context) from 110 to 84 ms at N = 1 and
 * from 157 to 118 ms at N = 4 (1 KB ahead: 97 ms, 2 KB 87, 8 KB 88;
 * docs/results/quant/prefetch/README.md). Prefetches never fault, so reading past the end is
 * harmless. */
static inline __attribute__((always_inline)) void q_prefetch(const uint8_t *blk, int bytes) {
    for (int o = 0; o < bytes; o += 64) _mm_prefetch((const char *)blk + Q_AHEAD + o, _MM_HINT_T0);
}

/* Rows m0 .. m0+MR-1 x columns n0 .. n0+NR-1, all of K, int8 activations. */
static inline __attribute__((always_inline)) void q_tile_int(const QJob *j, int fmt, int MR, int NR, int m0, int n0) {
    __m256 a[QMR][QNR_MAX];
    const uint8_t *wr[QNR_MAX];
    const __m256i ones = _mm256_set1_epi16(1);
    const int sgn = q_signed(fmt), hasmin = q_has_min(fmt), per = q_block(fmt) / 32;
    for (int c = 0; c < NR; c++) wr[c] = j->w + (size_t)(n0 + c) * j->row_bytes;
    for (int i = 0; i < MR; i++)
        for (int c = 0; c < NR; c++) a[i][c] = _mm256_setzero_ps();
    QHead hd[QNR_MAX];
    for (int o = 0; o < j->C; o += 8) {
        int oc = j->C - o < 8 ? j->C - o : 8;
        float mnb[QNR_MAX][8];
        for (int c = o; c < o + oc; c++) {
            if (c % per == 0)
                for (int col = 0; col < NR; col++) {
                    q_prefetch(wr[col] + (size_t)(c / per) * q_bytes(fmt), 1);
                    if (per > 1) q_head(wr[col], c / per, fmt, &hd[col]);
                }
            QChunk ch[QNR_MAX];
            __m256i qa[QNR_MAX];
            for (int col = 0; col < NR; col++) {
                ch[col] = q_chunk(wr[col], c, fmt, &hd[col]);
                if (sgn) qa[col] = _mm256_sign_epi8(ch[col].q, ch[col].q);
                if (hasmin) mnb[col][c - o] = ch[col].mn;
            }
            for (int i = 0; i < MR; i++) {
                __m256i xv = _mm256_loadu_si256((const __m256i *)(j->xq + (size_t)(m0 + i) * j->K + (size_t)c * 32));
                __m256 dx = _mm256_broadcast_ss(j->xd + (size_t)(m0 + i) * j->C + c);
                for (int col = 0; col < NR; col++) {
                    __m256i p = sgn ? _mm256_maddubs_epi16(qa[col], _mm256_sign_epi8(xv, ch[col].q))
                                    : _mm256_maddubs_epi16(ch[col].q, xv);
                    __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
                    a[i][col] = _mm256_fmadd_ps(f, _mm256_mul_ps(ch[col].s, dx), a[i][col]);
                }
            }
        }
        if (hasmin)
            for (int col = 0; col < NR; col++) {
                for (int t = oc; t < 8; t++) mnb[col][t] = 0.0f;
                __m256 mv = _mm256_loadu_ps(mnb[col]);
                for (int i = 0; i < MR; i++)
                    a[i][col] = _mm256_fmadd_ps(mv, _mm256_loadu_ps(j->xs + (size_t)(m0 + i) * j->CP + o), a[i][col]);
            }
    }
    q_finish(j, a, MR, NR, m0, n0);
}

/* A K-quant super-block's header: d, dmin, the sub-block scales as int16 (Q4_K/Q5_K: 8,
 * Q6_K: 16, signed) and `off`, what the x sums per 16 are multiplied with in madd (the mins,
 * each twice; Q6_K: 32 x its scales, the offset of its unsigned quants). */
static inline __attribute__((always_inline)) void q_khead(int fmt, const uint8_t *b, int16_t *sc, __m256i *off,
                                                          float *d, float *dmin) {
    if (fmt == QF_Q6_K) {
        *d = q_half(b + 208);
        *dmin = 0.0f;
        __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + 192)));
        _mm256_storeu_si256((__m256i *)sc, s16);
        *off = _mm256_slli_epi16(s16, 5);
    } else {
        *d = q_half(b);
        *dmin = q_half(b + 2);
        uint64_t scales, mins;
        q_scales_mins(b + 4, &scales, &mins);
        _mm_storeu_si128((__m128i *)sc, _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)scales)));
        __m128i m8 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mins)); /* m0 .. m7 */
        *off = _mm256_set_m128i(_mm_unpackhi_epi16(m8, m8), _mm_unpacklo_epi16(m8, m8));
    }
}

/* Chunks 2p and 2p+1 of a K-quant super-block (64 weights) as unsigned quants qa, qb, with
 * their int16 scale vectors sa, sb (one scale per 16 bytes: per madd lane pair). */
static inline __attribute__((always_inline)) void q_kpair(int fmt, const uint8_t *b, const int16_t *sc, int p,
                                                          __m256i *qa, __m256i *qb, __m256i *sa, __m256i *sb) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    if (fmt == QF_Q6_K) {
        int half = p >> 1, s2 = 2 * (p & 1); /* chunks 2p (s2) and 2p+1 (s2 + 1) of half p/2 */
        __m256i l0 = _mm256_loadu_si256((const __m256i *)(b + 64 * half));
        __m256i l1 = _mm256_loadu_si256((const __m256i *)(b + 64 * half + 32));
        __m256i h = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * half));
        __m128i shl = _mm_cvtsi32_si128(4 * (s2 >> 1));
        __m256i h0 = _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * s2)), _mm256_set1_epi8(3));
        __m256i h1 = _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * s2 + 2)), _mm256_set1_epi8(3));
        *qa = _mm256_or_si256(_mm256_and_si256(_mm256_srl_epi16(l0, shl), m4), _mm256_slli_epi16(h0, 4));
        *qb = _mm256_or_si256(_mm256_and_si256(_mm256_srl_epi16(l1, shl), m4), _mm256_slli_epi16(h1, 4));
        *sa = _mm256_setr_m128i(_mm_set1_epi16(sc[4 * p]), _mm_set1_epi16(sc[4 * p + 1]));
        *sb = _mm256_setr_m128i(_mm_set1_epi16(sc[4 * p + 2]), _mm_set1_epi16(sc[4 * p + 3]));
    } else {
        __m256i v = _mm256_loadu_si256((const __m256i *)(b + (fmt == QF_Q4_K ? 16 : 48) + 32 * p));
        *qa = _mm256_and_si256(v, m4);
        *qb = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        if (fmt == QF_Q5_K) {
            __m256i h = _mm256_loadu_si256((const __m256i *)(b + 16)), one = _mm256_set1_epi8(1);
            *qa = _mm256_or_si256(*qa, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * p)), one), 4));
            *qb = _mm256_or_si256(*qb, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * p + 1)), one), 4));
        }
        *sa = _mm256_set1_epi16(sc[2 * p]);
        *sb = _mm256_set1_epi16(sc[2 * p + 1]);
    }
}

/* A super-block's two fp32 steps for one (row, column): is (the quants' integer sum in 8
 * lanes) and the x sums per 16 against `off`. The same in the AVX2 and AVX-512 tiles. */
static inline __attribute__((always_inline)) __m256 q_kfinish(int fmt, __m256 a, __m256i is, __m256i bsum, __m256i off,
                                                              float d, float dmin, float dx) {
    __m256i o = _mm256_madd_epi16(bsum, off);
    if (fmt == QF_Q6_K)
        return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(is, o)), _mm256_set1_ps(d * dx), a);
    a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_set1_ps(d * dx), a);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(o), _mm256_set1_ps(-(dmin * dx)), a);
}

/* Q4_K/Q5_K/Q6_K with K-quant activations (QMODE_INT8): a super-block at a time, its
 * chunks in pairs (64 weights); the quants (unsigned) meet x in maddubs, the sub-block scales
 * in madd, and all of it adds up in int32 lanes until the super-block's two fp32 steps. */
static inline __attribute__((always_inline)) void q_tile_k(const QJob *j, int fmt, int MR, int NR, int m0, int n0) {
    __m256 a[QMR][QNR_MAX];
    const uint8_t *wr[QNR_MAX];
    const int SB = j->K / 256, bytes = q_bytes(fmt);
    for (int c = 0; c < NR; c++) wr[c] = j->w + (size_t)(n0 + c) * j->row_bytes;
    for (int i = 0; i < MR; i++)
        for (int c = 0; c < NR; c++) a[i][c] = _mm256_setzero_ps();
    for (int sb = 0; sb < SB; sb++) {
        __m256i is[QMR][QNR_MAX], off[QNR_MAX];
        int16_t sc[QNR_MAX][16];
        float d[QNR_MAX], dmin[QNR_MAX];
        const uint8_t *blk[QNR_MAX];
        for (int col = 0; col < NR; col++) {
            blk[col] = wr[col] + (size_t)sb * bytes;
            q_prefetch(blk[col], bytes);
            q_khead(fmt, blk[col], sc[col], &off[col], &d[col], &dmin[col]);
        }
        for (int i = 0; i < MR; i++)
            for (int col = 0; col < NR; col++) is[i][col] = _mm256_setzero_si256();
        for (int p = 0; p < 4; p++) {
            __m256i qa[QNR_MAX], qb[QNR_MAX], sa[QNR_MAX], sbv[QNR_MAX];
            for (int col = 0; col < NR; col++) q_kpair(fmt, blk[col], sc[col], p, &qa[col], &qb[col], &sa[col], &sbv[col]);
            for (int i = 0; i < MR; i++) {
                const int8_t *xr = j->xq + (size_t)(m0 + i) * j->K + (size_t)sb * 256;
                __m256i xa = _mm256_loadu_si256((const __m256i *)(xr + 32 * q_xpos(2 * p)));
                __m256i xb = _mm256_loadu_si256((const __m256i *)(xr + 32 * q_xpos(2 * p + 1)));
                for (int col = 0; col < NR; col++)
                    is[i][col] = _mm256_add_epi32(is[i][col],
                                                  _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(qa[col], xa), sa[col]),
                                                                   _mm256_madd_epi16(_mm256_maddubs_epi16(qb[col], xb), sbv[col])));
            }
        }
        for (int i = 0; i < MR; i++) {
            __m256i bsum = _mm256_loadu_si256((const __m256i *)(j->bs + (size_t)(m0 + i) * (j->K / 16) + (size_t)sb * 16));
            float dx = j->xd[(size_t)(m0 + i) * SB + sb];
            for (int col = 0; col < NR; col++) a[i][col] = q_kfinish(fmt, a[i][col], is[i][col], bsum, off[col], d[col], dmin[col], dx);
        }
    }
    q_finish(j, a, MR, NR, m0, n0);
}

/* The K-quant tile on AVX-512 (BW): two chunk pairs per 512-bit step, so half the multiply-
 * add instructions per row, and 32 registers for tiles of up to 8 rows. The same integers
 * end up in the same 8 lanes (the two 256-bit halves are added, exactly, before the fp32
 * steps), so it gives the AVX2 tile's bits: the ISA changes speed, never a result. */
#define Q_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define QMR5 8
#define QNR5 2

/* Q6_K's scale of each int16 madd lane of q_kquad's lo (chunks 4pp, 4pp+2) and hi (4pp+1,
 * 4pp+3): 8 lanes per 16 quants, chunk c owning scales 2c and 2c+1 */
#define Q6I(a, b, c, d) {a, a, a, a, a, a, a, a, b, b, b, b, b, b, b, b, c, c, c, c, c, c, c, c, d, d, d, d, d, d, d, d}
static const int16_t Q6_SCALE_IDX[2][2][32] = {
    {Q6I(0, 1, 4, 5), Q6I(2, 3, 6, 7)},
    {Q6I(8, 9, 12, 13), Q6I(10, 11, 14, 15)},
};

/* Chunks 4pp .. 4pp+3 of a K-quant super-block for the AVX-512 tile: lo = chunks 4pp, 4pp+2
 * (one per 256-bit half), hi = 4pp+1, 4pp+3, decoded from 512-bit loads, with their int16
 * scale vectors (one scale per 16 bytes, as in q_kpair). */
static inline __attribute__((always_inline)) Q_AVX512 void q_kquad(int fmt, const uint8_t *b, const int16_t *sc, int pp,
                                                                   __m512i *lo, __m512i *hi, __m512i *slo, __m512i *shi) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i halves = _mm512_setr_epi64(0, 0, 0, 0, 1, 1, 1, 1); /* 0 in the low half, 1 in the high */
    if (fmt == QF_Q6_K) {
        /* half pp of the block: chunk 4pp+r has ql bytes 64pp + 32 (r & 1), shifted 4 (r >> 1),
         * and qh bytes 128 + 32 pp shifted 2r; scales 16 (pp) + 4r / 2 .. */
        __m512i l0 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b + 64 * pp)));
        __m512i l1 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b + 64 * pp + 32)));
        __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b + 128 + 32 * pp)));
        __m512i four = _mm512_slli_epi64(halves, 2);                     /* 0 | 4 per 16-bit lane */
        four = _mm512_or_si512(four, _mm512_slli_epi64(four, 16));
        four = _mm512_or_si512(four, _mm512_slli_epi64(four, 32));
        __m512i two = _mm512_add_epi16(four, _mm512_set1_epi16(2));      /* 2 | 6 */
        __m512i three = _mm512_set1_epi8(3);
        *lo = _mm512_or_si512(_mm512_and_si512(_mm512_srlv_epi16(l0, four), m4),
                              _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(h, four), three), 4));
        *hi = _mm512_or_si512(_mm512_and_si512(_mm512_srlv_epi16(l1, four), m4),
                              _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(h, two), three), 4));
        __m512i s16 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)sc));
        /* chunk c's scales: sc[2c] (its first 16 bytes), sc[2c+1] (the next 16) */
        __m512i ilo = _mm512_loadu_si512(Q6_SCALE_IDX[pp][0]), ihi = _mm512_loadu_si512(Q6_SCALE_IDX[pp][1]);
        *slo = _mm512_permutexvar_epi16(ilo, s16);
        *shi = _mm512_permutexvar_epi16(ihi, s16);
    } else {
        __m512i v = _mm512_loadu_si512(b + (fmt == QF_Q4_K ? 16 : 48) + 64 * pp); /* qs of pairs 2pp, 2pp+1 */
        *lo = _mm512_and_si512(v, m4);
        *hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        if (fmt == QF_Q5_K) {
            /* chunk c's fifth bits: bit c of qh; lo halves are chunks 4pp, 4pp+2 */
            __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b + 16)));
            __m512i sh = _mm512_slli_epi64(halves, 1);
            sh = _mm512_or_si512(sh, _mm512_slli_epi64(sh, 16));
            sh = _mm512_or_si512(sh, _mm512_slli_epi64(sh, 32));
            sh = _mm512_add_epi16(sh, _mm512_set1_epi16((short)(4 * pp))); /* 4pp | 4pp+2 */
            __m512i one = _mm512_set1_epi8(1);
            *lo = _mm512_or_si512(*lo, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(h, sh), one), 4));
            sh = _mm512_add_epi16(sh, _mm512_set1_epi16(1));
            *hi = _mm512_or_si512(*hi, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(h, sh), one), 4));
        }
        __m256i a = _mm256_set1_epi16(sc[4 * pp]), c2 = _mm256_set1_epi16(sc[4 * pp + 2]);
        __m256i b1 = _mm256_set1_epi16(sc[4 * pp + 1]), d3 = _mm256_set1_epi16(sc[4 * pp + 3]);
        *slo = _mm512_inserti64x4(_mm512_castsi256_si512(a), c2, 1);
        *shi = _mm512_inserti64x4(_mm512_castsi256_si512(b1), d3, 1);
    }
}

static inline __attribute__((always_inline)) Q_AVX512 void q_tile_k512(const QJob *j, int fmt, int MR, int NR, int m0,
                                                                       int n0) {
    __m256 a[QMR5][QNR5];
    const uint8_t *wr[QNR5];
    const int SB = j->K / 256, bytes = q_bytes(fmt);
    for (int c = 0; c < NR; c++) wr[c] = j->w + (size_t)(n0 + c) * j->row_bytes;
    for (int i = 0; i < MR; i++)
        for (int c = 0; c < NR; c++) a[i][c] = _mm256_setzero_ps();
    for (int sb = 0; sb < SB; sb++) {
        __m512i is[QMR5][QNR5];
        __m256i off[QNR5];
        int16_t sc[QNR5][16];
        float d[QNR5], dmin[QNR5];
        const uint8_t *blk[QNR5];
        for (int col = 0; col < NR; col++) {
            blk[col] = wr[col] + (size_t)sb * bytes;
            q_prefetch(blk[col], bytes);
            q_khead(fmt, blk[col], sc[col], &off[col], &d[col], &dmin[col]);
        }
        for (int i = 0; i < MR; i++)
            for (int col = 0; col < NR; col++) is[i][col] = _mm512_setzero_si512();
        for (int pp = 0; pp < 2; pp++) {
            /* lo: chunks 4pp (low 256 bits) and 4pp+2; hi: 4pp+1 and 4pp+3; x in q_xpos order */
            __m512i lo[QNR5], hi[QNR5], slo[QNR5], shi[QNR5];
            for (int col = 0; col < NR; col++) q_kquad(fmt, blk[col], sc[col], pp, &lo[col], &hi[col], &slo[col], &shi[col]);
            for (int i = 0; i < MR; i++) {
                const int8_t *xr = j->xq + (size_t)(m0 + i) * j->K + (size_t)sb * 256 + 128 * pp;
                __m512i x0 = _mm512_loadu_si512(xr), x1 = _mm512_loadu_si512(xr + 64);
                for (int col = 0; col < NR; col++)
                    is[i][col] = _mm512_add_epi32(is[i][col],
                                                  _mm512_add_epi32(_mm512_madd_epi16(_mm512_maddubs_epi16(lo[col], x0), slo[col]),
                                                                   _mm512_madd_epi16(_mm512_maddubs_epi16(hi[col], x1), shi[col])));
            }
        }
        for (int i = 0; i < MR; i++) {
            __m256i bsum = _mm256_loadu_si256((const __m256i *)(j->bs + (size_t)(m0 + i) * (j->K / 16) + (size_t)sb * 16));
            float dx = j->xd[(size_t)(m0 + i) * SB + sb];
            for (int col = 0; col < NR; col++) {
                __m256i is8 = _mm256_add_epi32(_mm512_castsi512_si256(is[i][col]), _mm512_extracti64x4_epi64(is[i][col], 1));
                a[i][col] = q_kfinish(fmt, a[i][col], is8, bsum, off[col], d[col], dmin[col], dx);
            }
        }
    }
    /* q_finish reads a [QMR][QNR_MAX]: hand it the rows in groups of at most QMR */
    for (int i0 = 0; i0 < MR; i0 += QMR) {
        __m256 t[QMR][QNR_MAX];
        int mr = MR - i0 < QMR ? MR - i0 : QMR;
        for (int i = 0; i < mr; i++)
            for (int c = 0; c < NR; c++) t[i][c] = a[i0 + i][c];
        q_finish(j, t, mr, NR, m0 + i0, n0);
    }
}

#define QT5(FMT, MR, NR) \
    case MR * 16 + NR: q_tile_k512(j, FMT, MR, NR, m0, n0); return;
#define DEFINE_K512_TILES(NAME, FMT)                                                                      \
    static Q_AVX512 void NAME##_any(const QJob *j, int mr, int nr, int m0, int n0) { q_tile_k512(j, FMT, mr, nr, m0, n0); } \
    static Q_AVX512 void NAME(const QJob *j, int mode, int mr, int nr, int m0, int n0) {              \
        (void)mode;                                                                                        \
        switch (mr * 16 + nr) {                                                                            \
            QT5(FMT, 8, 1) QT5(FMT, 4, 1) QT5(FMT, 1, 2) QT5(FMT, 2, 2) QT5(FMT, 3, 2) QT5(FMT, 4, 2)      \
        default: NAME##_any(j, mr, nr, m0, n0);                                                            \
        }                                                                                                  \
    }
DEFINE_K512_TILES(qt5_q4_k, QF_Q4_K)
DEFINE_K512_TILES(qt5_q5_k, QF_Q5_K)
DEFINE_K512_TILES(qt5_q6_k, QF_Q6_K)

/* Whether the AVX-512 tiles run: the CPU has AVX-512 F/BW/VL/DQ, unless hw_qlinear_isa
 * turned them off or HOGWILD_KERNEL_ISA=avx2 caps the kernels. They give the AVX2 tiles'
 * bits (see q_tile_k512). */
static int q_isa_forced = 0;

int hw_cpu_avx512(void); /* hogwild_cpu.c, linked into the same library */

int hw_isa_cap(void);    /* hogwild_cpu.c */
static inline int q_isa(void) { return q_isa_forced ? q_isa_forced : hw_cpu_avx512() && hw_isa_cap() != 1 ? 2 : 1; }

/* Force the quantized kernels' instruction set: 1 AVX2, 2 AVX-512, 0 the best available;
 * -1 only asks. Returns the one in force, or -1 when the CPU lacks the requested one. For
 * tests and benchmarks (not thread safe against concurrent calls). */
int hw_qlinear_isa(int request) {
    if (request == 2 && !hw_cpu_avx512()) return -1;
    if (request >= 0 && request <= 2) q_isa_forced = request;
    return q_isa();
}

/* The same tile with the chunk widened to fp32 in registers and fp32 x (QMODE_F32). */
static inline __attribute__((always_inline)) void q_tile_f32(const QJob *j, int fmt, int MR, int NR, int m0, int n0) {
    __m256 a[QMR][QNR_MAX];
    const uint8_t *wr[QNR_MAX];
    const int hasmin = q_has_min(fmt), per = q_block(fmt) / 32;
    for (int c = 0; c < NR; c++) wr[c] = j->w + (size_t)(n0 + c) * j->row_bytes;
    for (int i = 0; i < MR; i++)
        for (int c = 0; c < NR; c++) a[i][c] = _mm256_setzero_ps();
    QHead hd[QNR_MAX];
    for (int c = 0; c < j->C; c++) {
        if (c % per == 0)
            for (int col = 0; col < NR; col++) {
                q_prefetch(wr[col] + (size_t)(c / per) * q_bytes(fmt), 1);
                if (per > 1) q_head(wr[col], c / per, fmt, &hd[col]);
            }
        QChunk ch[QNR_MAX];
        for (int col = 0; col < NR; col++) ch[col] = q_chunk(wr[col], c, fmt, &hd[col]);
        for (int g = 0; g < 4; g++) {
            __m256 wf[QNR_MAX];
            for (int col = 0; col < NR; col++) {
                __m128i part = g < 2 ? _mm256_castsi256_si128(ch[col].q) : _mm256_extracti128_si256(ch[col].q, 1);
                if (g & 1) part = _mm_srli_si128(part, 8);
                __m256 qf = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part));
                __m256 sg = _mm256_permutevar8x32_ps(ch[col].s, _mm256_set1_epi32(2 * g));
                wf[col] = hasmin ? _mm256_fmadd_ps(qf, sg, _mm256_set1_ps(ch[col].mn)) : _mm256_mul_ps(qf, sg);
            }
            for (int i = 0; i < MR; i++) {
                __m256 xv = _mm256_loadu_ps(j->x + (size_t)(m0 + i) * j->K + (size_t)c * 32 + 8 * g);
                for (int col = 0; col < NR; col++) a[i][col] = _mm256_fmadd_ps(wf[col], xv, a[i][col]);
            }
        }
    }
    q_finish(j, a, MR, NR, m0, n0);
}

/* QMODE_INT8's tile: the K-quants' super-block tile or the per-chunk one. */
static inline __attribute__((always_inline)) void q_tile_i8(const QJob *j, int fmt, int MR, int NR, int m0, int n0) {
    if (q_kquant(fmt))
        q_tile_k(j, fmt, MR, NR, m0, n0);
    else
        q_tile_int(j, fmt, MR, NR, m0, n0);
}

/* Micro-panel width for M rows: 4 x 2 tiles (1-2-row calls: 1 x 4) for the chunk tiles,
 * 4 x 1 (1 x 2) for the K-quants' tile, which holds integer sums besides the accumulators. */
static inline int q_panel(int fmt, int mode, int M) {
    if (mode == QMODE_INT8 && q_kquant(fmt)) return M <= (q_isa() != 2 ? 2 : fmt == QF_Q6_K ? 3 : 4) ? 2 : 1;
    return M <= 2 ? 4 : 2;
}

/* Rows per register tile: 8 in the AVX-512 K-quant tile, else QMR. */
static inline int q_rows(int fmt, int mode) { return mode == QMODE_INT8 && q_kquant(fmt) && q_isa() == 2 ? QMR5 : QMR; }

/* Per format and mode: the bulk tile shapes with constant MR and NR (accumulators in
 * registers), and the rest (the last, narrower panel) through the same code with variables. */
#define QT(MODE, FMT, MR, NR) \
    case MR * 16 + NR: q_tile_##MODE(j, FMT, MR, NR, m0, n0); return;
#define DEFINE_Q_TILES(NAME, FMT, I8_SHAPES)                                                              \
    static void NAME##_i8_any(const QJob *j, int mr, int nr, int m0, int n0) { q_tile_i8(j, FMT, mr, nr, m0, n0); } \
    static void NAME##_f32_any(const QJob *j, int mr, int nr, int m0, int n0) { q_tile_f32(j, FMT, mr, nr, m0, n0); } \
    static void NAME(const QJob *j, int mode, int mr, int nr, int m0, int n0) {                         \
        if (mode == QMODE_INT8) {                                                                          \
            switch (mr * 16 + nr) {                                                                        \
                I8_SHAPES(FMT)                                                                             \
            default: NAME##_i8_any(j, mr, nr, m0, n0);                                                     \
            }                                                                                              \
        } else {                                                                                           \
            switch (mr * 16 + nr) {                                                                        \
                QT(f32, FMT, 4, 2) QT(f32, FMT, 3, 2) QT(f32, FMT, 2, 2) QT(f32, FMT, 1, 2) QT(f32, FMT, 1, 4) \
                QT(f32, FMT, 2, 4)                                                                         \
            default: NAME##_f32_any(j, mr, nr, m0, n0);                                                    \
            }                                                                                              \
        }                                                                                                  \
    }
#define CHUNK_SHAPES(FMT) QT(i8, FMT, 4, 2) QT(i8, FMT, 3, 2) QT(i8, FMT, 2, 2) QT(i8, FMT, 1, 2) QT(i8, FMT, 1, 4) \
    QT(i8, FMT, 2, 4)
#define KQUANT_SHAPES(FMT) QT(i8, FMT, 4, 1) QT(i8, FMT, 3, 1) QT(i8, FMT, 2, 1) QT(i8, FMT, 1, 1) QT(i8, FMT, 1, 2) \
    QT(i8, FMT, 2, 2)
DEFINE_Q_TILES(qt_q4_0, QF_Q4_0, CHUNK_SHAPES)
DEFINE_Q_TILES(qt_q4_1, QF_Q4_1, CHUNK_SHAPES)
DEFINE_Q_TILES(qt_q5_0, QF_Q5_0, CHUNK_SHAPES)
DEFINE_Q_TILES(qt_q5_1, QF_Q5_1, CHUNK_SHAPES)
DEFINE_Q_TILES(qt_q8_0, QF_Q8_0, CHUNK_SHAPES)
DEFINE_Q_TILES(qt_q4_k, QF_Q4_K, KQUANT_SHAPES)
DEFINE_Q_TILES(qt_q5_k, QF_Q5_K, KQUANT_SHAPES)
DEFINE_Q_TILES(qt_q6_k, QF_Q6_K, KQUANT_SHAPES)
DEFINE_Q_TILES(qt_mxfp4, QF_MXFP4, CHUNK_SHAPES)
DEFINE_Q_TILES(qt_nvfp4, QF_NVFP4, CHUNK_SHAPES)

typedef void (*QTiles)(const QJob *, int, int, int, int, int);

static QTiles q_tiles(int fmt) {
    switch (fmt) {
    case QF_Q4_0: return qt_q4_0;
    case QF_Q4_1: return qt_q4_1;
    case QF_Q5_0: return qt_q5_0;
    case QF_Q5_1: return qt_q5_1;
    case QF_Q8_0: return qt_q8_0;
    case QF_Q4_K: return qt_q4_k;
    case QF_Q5_K: return qt_q5_k;
    case QF_Q6_K: return qt_q6_k;
    case QF_MXFP4: return qt_mxfp4;
    case QF_NVFP4: return qt_nvfp4;
    default: return NULL;
    }
}

/* ------------------------------------------------------------------ entry points */

/* Select the arithmetic of every later call: QMODE_INT8 (0) or QMODE_F32 (1); returns the
 * mode in force (-1 selects nothing). For benchmarks and tests: one process, one mode. */
int hw_qlinear_mode(int mode) {
    if (mode == QMODE_INT8 || mode == QMODE_F32) q_mode = mode;
    return q_mode;
}

/* Whether `fmt` is a quantized format these kernels read. */
int hw_qformat_supported(int fmt) { return q_tiles(fmt) != NULL; }

/* y [M, N] (+)= x [M, K] @ dequant(w) [N, K]^T * scale + corrections + b.
 *
 * w: N rows of K / block blocks of format fmt (ggml type id). Corrections (NULL: none):
 * column n gets t += x[m, fix_j[f]] * fix_delta[f] for f in fix_start[n] .. fix_start[n+1]-1,
 * in that order, after the scaled product (hogwild.quant.weights.QuantWeight's fix_index
 * and fix_delta, grouped by column). y must not overlap x. Returns 0, -1 when scratch could
 * not be allocated, -2 for an unknown format or a K that is not a multiple of its block. */
int hw_qlinear(const float *x, const void *w, int fmt, float scale, const int32_t *fix_start, const int32_t *fix_j,
               const float *fix_delta, const float *b, float *y, int M, int N, int K, int accumulate, int threads) {
    QTiles tiles = q_tiles(fmt);
    if (!tiles || K <= 0 || K % q_block(fmt)) return -2;
    if (q_mode == QMODE_INT8 && q_kquant(fmt) && q_isa() == 2)
        tiles = fmt == QF_Q4_K ? qt5_q4_k : fmt == QF_Q5_K ? qt5_q5_k : qt5_q6_k;
    if (M <= 0 || N <= 0) return 0;
    int mode = q_mode, C = K / 32, CP = (C + 7) & ~7;
    QJob job = {(const uint8_t *)w, (size_t)(K / q_block(fmt)) * q_bytes(fmt), x, NULL, NULL, NULL, NULL, b, y, scale,
                fix_start, fix_j, fix_delta, M, N, K, C, CP, accumulate};
    int8_t *xq = NULL;
    float *xd = NULL;
    if (mode == QMODE_INT8 && q_kquant(fmt)) {
        size_t sbs = (size_t)M * (K / 256);
        xq = (int8_t *)malloc((size_t)M * K + sizeof(int16_t) * (size_t)M * (K / 16));
        xd = (float *)malloc(sizeof(float) * sbs);
        if (!xq || !xd) {
            free(xq);
            free(xd);
            return -1;
        }
        int16_t *bs = (int16_t *)(xq + (size_t)M * K); /* K is a multiple of 256: aligned enough */
        job.xq = xq;
        job.xd = xd;
        job.bs = bs;
#pragma omp parallel for schedule(static) num_threads(threads) if (M > 1)
        for (int m = 0; m < M; m++)
            q_quantize_row256(x + (size_t)m * K, K, xq + (size_t)m * K, xd + (size_t)m * (K / 256), bs + (size_t)m * (K / 16));
    } else if (mode == QMODE_INT8) {
        xq = (int8_t *)malloc((size_t)M * K);
        xd = (float *)malloc(sizeof(float) * ((size_t)M * C + (size_t)M * CP));
        if (!xq || !xd) {
            free(xq);
            free(xd);
            return -1;
        }
        job.xq = xq;
        job.xd = xd;
        job.xs = xd + (size_t)M * C;
#pragma omp parallel for schedule(static) num_threads(threads) if (M > 1)
        for (int m = 0; m < M; m++)
            q_quantize_row(x + (size_t)m * K, K, xq + (size_t)m * K, xd + (size_t)m * C,
                           (float *)job.xs + (size_t)m * CP, CP);
    }
    const QJob *j = &job;
    int nr = q_panel(fmt, mode, M), rows = q_rows(fmt, mode);
    int panels = (N + nr - 1) / nr;
    int group = (int)(QGROUP_BYTES / (job.row_bytes * nr));
    if (group < 1) group = 1;
#pragma omp parallel num_threads(threads)
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int p0 = (int)((int64_t)panels * t / nt), p1 = (int)((int64_t)panels * (t + 1) / nt);
        for (int g0 = p0; g0 < p1; g0 += group) {
            int g1 = g0 + group < p1 ? g0 + group : p1;
            for (int m0 = 0; m0 < M; m0 += rows) {
                int mr = M - m0 < rows ? M - m0 : rows;
                for (int p = g0; p < g1; p++) {
                    int n0 = p * nr, cols = N - n0 < nr ? N - n0 : nr;
                    tiles(j, mode, mr, cols, m0, n0);
                }
            }
        }
    }
    free(xq);
    free(xd);
    return 0;
}

/* ------------------------------------------------------------------ encoder: sub-block fit
 *
 * For each sub-block of 32 values x, the scale s >= 0 and offset m <= 0 of a 4-bit-style
 * code x ~ s * l + m (l in 0..nmax) that hogwild.quant.encode.fit_subblocks defines (that
 * function is the reference; this is the same search, vectorised, for quantize-on-load of
 * large models): with weights w_i = rms(x) + |x_i| and mn = min(min x, 0), for each of
 * steps + 1 inverse scales t_c = (nmax + lo + width * c) / (max x - mn), the codes
 * l = clamp(round(t_c * (x - mn)), 0, nmax) (round half to even) are fitted by weighted
 * least squares, s and m together (m forced to 0 when the free fit puts it above 0); the
 * candidate with the smallest weighted squared error wins (the first of equals). All equal
 * values (max = mn): s = 0, m = mn. Sums are fp32 over the 32 lanes in a fixed tree, so
 * results match the reference up to fp32 rounding (which may pick another of two candidates
 * whose errors tie within it). Returns 0. */
static inline float q_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float q_sum32(const __m256 *v) {
    return q_hsum8(_mm256_add_ps(_mm256_add_ps(v[0], v[1]), _mm256_add_ps(v[2], v[3])));
}

int hw_fit_subblocks(const float *x, int64_t count, int nmax, int steps, float lo, float width, float *scale,
                     float *offset, int threads) {
#pragma omp parallel for schedule(static, 1024) num_threads(threads)
    for (int64_t b = 0; b < count; b++) {
        const float *p = x + b * 32;
        __m256 v[4], w[4], xm[4];
        float mn = 0.0f, mx = p[0];
        for (int i = 0; i < 32; i++) {
            mn = p[i] < mn ? p[i] : mn;
            mx = p[i] > mx ? p[i] : mx;
        }
        if (mx <= mn) { /* every value equal (and <= 0) */
            scale[b] = 0.0f;
            offset[b] = mn;
            continue;
        }
        __m256 sq[4];
        for (int i = 0; i < 4; i++) {
            v[i] = _mm256_loadu_ps(p + 8 * i);
            sq[i] = _mm256_mul_ps(v[i], v[i]);
        }
        float rms = sqrtf(q_sum32(sq) / 32.0f);
        const __m256 sign = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps(), top = _mm256_set1_ps((float)nmax);
        __m256 wx[4];
        for (int i = 0; i < 4; i++) {
            w[i] = _mm256_add_ps(_mm256_set1_ps(rms), _mm256_andnot_ps(sign, v[i]));
            wx[i] = _mm256_mul_ps(w[i], v[i]);
            xm[i] = _mm256_sub_ps(v[i], _mm256_set1_ps(mn));
        }
        float sw = q_sum32(w), sx = q_sum32(wx), range = mx - mn;
        float best = INFINITY, bs = range / (float)nmax, bm = mn;
        for (int c = 0; c <= steps; c++) {
            __m256 t = _mm256_set1_ps(((float)nmax + lo + width * (float)c) / range);
            __m256 l[4], wl[4], wl2[4], wxl[4];
            for (int i = 0; i < 4; i++) {
                l[i] = _mm256_round_ps(_mm256_mul_ps(xm[i], t), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                l[i] = _mm256_min_ps(_mm256_max_ps(l[i], zero), top);
                wl[i] = _mm256_mul_ps(w[i], l[i]);
                wl2[i] = _mm256_mul_ps(wl[i], l[i]);
                wxl[i] = _mm256_mul_ps(wl[i], v[i]);
            }
            float sl = q_sum32(wl), sl2 = q_sum32(wl2), sxl = q_sum32(wxl);
            float det = sw * sl2 - sl * sl;
            if (!(det > 0.0f)) continue;
            float s = (sw * sxl - sx * sl) / det, m = (sl2 * sx - sl * sxl) / det;
            if (m > 0.0f) {
                m = 0.0f;
                s = sxl / sl2;
            }
            __m256 e[4], vs = _mm256_set1_ps(s), vm = _mm256_set1_ps(m);
            for (int i = 0; i < 4; i++) {
                __m256 r = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(vs, l[i]), vm), v[i]);
                e[i] = _mm256_mul_ps(w[i], _mm256_mul_ps(r, r));
            }
            float err = q_sum32(e);
            if (err < best) {
                best = err;
                bs = s;
                bm = m;
            }
        }
        scale[b] = bs;
        offset[b] = bm;
    }
    return 0;
}
