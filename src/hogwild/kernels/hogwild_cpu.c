/* hogwild CPU kernels for decode passes, AVX2 + FMA, with AVX-512 and AMX paths chosen at run
 * time on CPUs that have them (hw_isa): a few rows per pass for one run, up to
 * hogwild.kernels.MAX_ROWS (128) when a batched engine advances many runs in one call.
 *
 * Why: a decode pass is memory-bound, but on CPUs without native bf16 PyTorch's bf16 matmul
 * reaches a fraction of the memory bandwidth, and a pass of ~90 small torch ops per layer
 * spends more time in dispatch than in math. These kernels read bf16 or fp32 weights once,
 * at close to the bandwidth for few rows and close to the FMA rate for many (register tiles
 * over rows and columns), and do the per-block attention of a whole layer (store the new
 * keys, rotate queries per block, online softmax over every block of every view) in one call.
 *
 * Batch invariance: every kernel computes a row the same way whatever other rows share the
 * call, wherever the row sits in it, however many threads run and wherever its blocks sit in
 * the pool, so a row's results are the same bits alone or batched (the point of "Give Me
 * FP32 or Give Me Death?": a run must not change because other runs share its passes).
 * Schedules (tiles, blocks, threads) may depend on the shape; the order of each reduction
 * may not. hw_linear and hw_attend say how; norms, gate and key storage are per row. The
 * build turns off floating-point contraction (-ffp-contract=off) so a C expression rounds
 * the same wherever it is inlined. tests/test_kernels.py checks it bit for bit.
 *
 * Everything is computed in fp32 but on AMX tiles and AVX-512 BF16 dot products, where the
 * bf16 linear reads activations as bf16 and the attention over a bf16 store reads queries and
 * softmax weights as bf16 (amx_linear, dot_tile and tile_group say why that is worth it).
 * Built on first use by hogwild/kernels/build.py and called through ctypes; hogwild falls
 * back to plain PyTorch when it cannot be built.
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ------------------------------------------------------------------ helpers */


static inline __m256 load8_bf16(const uint16_t *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* round to nearest even, as torch's .to(torch.bfloat16) does */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u); /* NaN */
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* [sum(a0), ..., sum(a7)]: eight dot products finished at once, no horizontal sum each */
static inline __m256 reduce8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5, __m256 a6,
                             __m256 a7) {
    __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* exp(x) for x <= 0 (softmax weights): 2^n * e^r, |r| <= ln2/2, degree-7 Taylor polynomial
 * (relative error < 1e-8 before rounding). Inputs below -87 flush to 0. */
static inline __m256 exp8_nonpositive(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lo);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* r = x - n ln2, with ln2 split in two for accuracy */
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 out = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(underflow, out);
}

/* ------------------------------------------------------------------ linear */

/* y [M, N] (+)= x [M, K] @ w [N, K]^T + b, with every output element computed in one fixed
 * order whatever M is, wherever its row sits in the call and however many threads run
 * (batch invariance: a row's result never depends on the other rows of the pass). The
 * order belongs to the instruction set the kernels run on (isa_now: AVX-512 where the CPU
 * has it, see lin5_tile for its order; else AVX2), never to the batch. On AVX2:
 *
 *   acc (8 lanes) = sum over k8 = 0, 8, .. < K8 of w[n, k8:k8+8] * x[m, k8:k8+8], one FMA
 *                   per step, k ascending (K8 = K rounded down to a multiple of 8);
 *   s = the 8 lanes summed by reduce8's tree; s = fmaf(x[m, k], w[n, k], s) for the K % 8
 *   tail, k ascending; s += b[n]; y[m, n] = accumulate ? y[m, n] + s : s.
 *
 * Only the schedule around that order depends on the shape, never the arithmetic:
 * - rows in register tiles of up to LIN_MR and output columns in micro-panels of NR: each
 *   weight vector is loaded (and widened from bf16) once per tile, not once per row, and
 *   each x vector once per NR columns, so the kernel stays FMA-bound, not load-bound, as
 *   rows grow. One accumulator per element: the 12 of a 4 x 3 tile are enough independent
 *   FMA chains, and calls of 1-3 rows get wider panels (up to 8 columns) for the same;
 * - the first row tile prefetches the next panel's weights (a panel's rows are short
 *   streams the hardware prefetcher finds too late), so few rows still run at the memory
 *   bandwidth;
 * - K in blocks whose accumulators are parked in per-thread scratch between blocks, so the
 *   rows' slice of x stays in cache however many rows there are (parking and reloading a
 *   float is exact, so blocking changes no bit);
 * - columns in groups whose weights stay in cache while every row tile passes over them, so
 *   each weight is read from memory once per call;
 * - threads split the columns; nothing splits a reduction. */

#define LIN_MR 4            /* rows per register tile */
#define LIN_NR_MAX 8        /* columns per micro-panel, at most */
#define LIN_X_FLOATS 131072 /* floats of x per K block (512 KiB, stays in L2) */
#define LIN_W_BYTES 262144  /* weight bytes of a column group per K block (stays in L2) */
#define LIN_PARK_FLOATS 32768 /* parked accumulators of a column group (128 KiB) */

typedef struct {
    const float *x;
    const char *w;
    const float *b;
    float *y;
    int M, N, K;
    int Kv; /* keys the vector steps cover (K8 on AVX2); the rest is the scalar tail */
    int accumulate;
    const float *xv; /* x in the order the vector steps read it (x itself but for AVX-512 bf16) */
} LinJob;

/* 8 weights as fp32; ES (2: bf16, 4: fp32) is a compile-time constant where it is used */
static inline __attribute__((always_inline)) __m256 lin_loadw(const char *p, int es) {
    return es == 2 ? load8_bf16((const uint16_t *)p) : _mm256_loadu_ps((const float *)p);
}

static inline __attribute__((always_inline)) float lin_w1(const char *row, int k, int es) {
    return es == 2 ? bf16_to_f32(((const uint16_t *)row)[k]) : ((const float *)row)[k];
}

/* One register tile: rows m0 .. m0+MR-1, columns n0 .. n0+NR-1, keys k0 .. k1-1 (multiples
 * of 8). The accumulators start at zero (first block) or from `park` (rows of `ld` floats,
 * 8 per column) and go back there, or, after the last block, are finished into y. */
static inline __attribute__((always_inline)) void lin_tile(const LinJob *j, int es, int MR, int NR, int m0,
                                                           int n0, int k0, int k1, float *park, int ld,
                                                           int first, int last, const char *pf) {
    __m256 a[LIN_MR][LIN_NR_MAX];
    const float *xr[LIN_MR];
    const char *wr[LIN_NR_MAX];
    for (int i = 0; i < MR; i++) xr[i] = j->x + (size_t)(m0 + i) * j->K;
    for (int c = 0; c < NR; c++) wr[c] = j->w + (size_t)(n0 + c) * j->K * es;
    for (int i = 0; i < MR; i++)
        for (int c = 0; c < NR; c++)
            a[i][c] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(park + (size_t)i * ld + c * 8);
    for (int k = k0; k < k1; k += 8) {
        __m256 wv[LIN_NR_MAX];
        for (int c = 0; c < NR; c++) wv[c] = lin_loadw(wr[c] + (size_t)k * es, es);
        if (pf)
            for (int c = 0; c < NR; c++) _mm_prefetch(pf + ((size_t)c * j->K + k) * es, _MM_HINT_T0);
        for (int i = 0; i < MR; i++) {
            __m256 xv = _mm256_loadu_ps(xr[i] + k);
            for (int c = 0; c < NR; c++) a[i][c] = _mm256_fmadd_ps(wv[c], xv, a[i][c]);
        }
    }
    if (!last) {
        for (int i = 0; i < MR; i++)
            for (int c = 0; c < NR; c++) _mm256_storeu_ps(park + (size_t)i * ld + c * 8, a[i][c]);
        return;
    }
    const __m256 z = _mm256_setzero_ps();
    for (int i = 0; i < MR; i++) {
        __m256 v[8];
        for (int c = 0; c < 8; c++) v[c] = c < NR ? a[i][c] : z;
        float s[8];
        _mm256_storeu_ps(s, reduce8(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]));
        float *yr = j->y + (size_t)(m0 + i) * j->N + n0;
        for (int c = 0; c < NR; c++) {
            float t = s[c];
            for (int k = j->Kv; k < j->K; k++) t = fmaf(xr[i][k], lin_w1(wr[c], k, es), t);
            if (j->b) t += j->b[n0 + c];
            yr[c] = j->accumulate ? yr[c] + t : t;
        }
    }
}

/* The tile shapes the driver uses in bulk, with MR and NR as constants so the accumulators
 * live in registers: 4 x 3 and the 1-3-row tiles of the rows left over, and the wider panels
 * of 1-3-row calls. Other shapes (the last, narrower panel of a call) take the same code with
 * MR and NR as variables: slower, the same arithmetic. */
#define LIN_T(MR, NR) \
    case MR * 16 + NR: lin_tile(j, es, MR, NR, m0, n0, k0, k1, park, ld, first, last, pf); return;
#define DEFINE_LIN_TILES(NAME, ES)                                                                    \
    static void NAME##_any(const LinJob *j, int mr, int nr, int m0, int n0, int k0, int k1, float *park, \
                           int ld, int first, int last, const char *pf) {                             \
        lin_tile(j, ES, mr, nr, m0, n0, k0, k1, park, ld, first, last, pf);                           \
    }                                                                                                 \
    static void NAME(const LinJob *j, int mr, int nr, int m0, int n0, int k0, int k1, float *park, int ld, \
                     int first, int last, const char *pf) {                                           \
        const int es = ES;                                                                            \
        switch (mr * 16 + nr) {                                                                       \
            LIN_T(4, 3) LIN_T(3, 3) LIN_T(2, 3) LIN_T(1, 3) LIN_T(3, 4) LIN_T(2, 4) LIN_T(1, 8)       \
        default: NAME##_any(j, mr, nr, m0, n0, k0, k1, park, ld, first, last, pf);                    \
        }                                                                                             \
    }
DEFINE_LIN_TILES(lin_tiles_f32, 4)
DEFINE_LIN_TILES(lin_tiles_bf16, 2)

/* AVX-512 tiles, for CPUs that have AVX-512F/BW/VL/DQ (chosen at run time by hw_linear,
 * see isa_now; compiled for those instructions per function, so the library builds with the
 * AVX2 flags and runs on AVX2-only CPUs). 32 vector registers of 16 lanes: tiles of up to
 * 8 rows x 3 columns (24 accumulators) for 8 rows or more, 4 x 6 for 4-7 rows, 1-3 x 8
 * below; K blocks keep a row tile's x in L1 (LIN5_X_FLOATS). Measured on a Xeon with two
 * 512-bit FMA units: 1.2-1.4x the AVX2 tiles over a pass's projections at 16 rows
 * (bench/pass_parts.py; docs/results/bench-cpu/README.md).
 * The reduction order, fixed per element as on AVX2, is:
 *
 *   fp32 weights: acc (16 lanes) = sum over k16 = 0, 16, .. < K16 of w[n, k16:k16+16] *
 *                 x[m, k16:k16+16], one FMA per step, k ascending (K16 = K rounded down to a
 *                 multiple of 16);
 *   bf16 weights: acc (16 lanes) = sum over k32 = 0, 32, .. < K32, ascending, of first
 *                 w[n, k32 + 2l] * x[m, k32 + 2l] then w[n, k32 + 2l + 1] * x[m, k32 + 2l + 1]
 *                 in lane l (one FMA each; K32 = K rounded down to a multiple of 32). 32 bf16
 *                 weights (one load) give their even elements as fp32 by a shift and their
 *                 odd ones by a mask; x is reordered to match once per call (lin_even_odd);
 *   then s = sum of the 8 lane pairs (lane l + lane l + 8) by reduce8's tree, the K % 16
 *   (K % 32) tail by fmaf in ascending k, the bias, the accumulation into y, as on AVX2. */
#define HW_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#define LIN5_MR_MAX 8
#define LIN5_NR_MAX 8
#define LIN5_ACC 24 /* accumulators of the largest tile: 8 x 3, 4 x 6, 3 x 8 */
#define LIN5_X_FLOATS 6144 /* floats of x per row tile and K block (24 KiB, stays in L1) */

/* v, held in a register: without this GCC folds the load into each of the NR FMAs that use
 * it (a memory operand each), and the tile runs short of load bandwidth. */
static inline __attribute__((always_inline)) HW_AVX512 __m512 lin5_reg(__m512 v) {
    __asm__("" : "+v"(v));
    return v;
}

/* The end of an AVX-512 register tile's K block: its MR x NR accumulators go back to `park`
 * (rows of `ld` floats) unless this is the last block; after the last, each is summed into
 * s[i * NR + c]: lanes l and l + 8 first, then reduce8's tree, which sums each of its 8 inputs
 * the same way whichever inputs share the call, so the accumulators go through it 8 at a time
 * (3 calls for 24), not a row at a time. Returns whether s was written. */
static inline __attribute__((always_inline)) HW_AVX512 int lin5_park_or_sum(const __m512 *a, int MR, int NR,
                                                                            float *park, int ld, int last,
                                                                            float *s) {
    if (!last) {
        for (int i = 0; i < MR; i++)
            for (int c = 0; c < NR; c++) _mm512_storeu_ps(park + (size_t)i * ld + c * 16, a[i * NR + c]);
        return 0;
    }
    const __m256 z = _mm256_setzero_ps();
    for (int e0 = 0; e0 < MR * NR; e0 += 8) {
        __m256 v[8];
        for (int e = 0; e < 8; e++)
            v[e] = e0 + e < MR * NR ? _mm256_add_ps(_mm512_castps512_ps256(a[e0 + e]), _mm512_extractf32x8_ps(a[e0 + e], 1))
                                    : z;
        __m256 r = reduce8(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
        if (e0 + 8 <= LIN5_ACC) _mm256_storeu_ps(s + e0, r);
    }
    return 1;
}

static inline __attribute__((always_inline)) HW_AVX512 void lin5_tile(const LinJob *j, int es, int MR, int NR,
                                                                      int m0, int n0, int k0, int k1, float *park,
                                                                      int ld, int first, int last, const char *pf) {
    __m512 a[LIN5_ACC]; /* a[i * NR + c]: a flat array the compiler keeps in registers */
    const float *xr[LIN5_MR_MAX];
    const char *wr[LIN5_NR_MAX];
    const __m512i odd = _mm512_set1_epi32((int)0xffff0000u);
    for (int i = 0; i < MR; i++) xr[i] = j->xv + (size_t)(m0 + i) * j->K;
    for (int c = 0; c < NR; c++) wr[c] = j->w + (size_t)(n0 + c) * j->K * es;
    for (int i = 0; i < MR; i++)
        for (int c = 0; c < NR; c++)
            a[i * NR + c] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(park + (size_t)i * ld + c * 16);
    if (es == 4) {
        for (int k = k0; k < k1; k += 16) {
            __m512 wv[LIN5_NR_MAX];
            for (int c = 0; c < NR; c++) wv[c] = _mm512_loadu_ps((const float *)wr[c] + k);
            if (pf)
                for (int c = 0; c < NR; c++) _mm_prefetch(pf + ((size_t)c * j->K + k) * 4, _MM_HINT_T0);
            for (int i = 0; i < MR; i++) {
                __m512 xv = lin5_reg(_mm512_loadu_ps(xr[i] + k));
                for (int c = 0; c < NR; c++) a[i * NR + c] = _mm512_fmadd_ps(wv[c], xv, a[i * NR + c]);
            }
        }
    } else {
        for (int k = k0; k < k1; k += 32) {
            __m512 wv[LIN5_NR_MAX];
            if (pf)
                for (int c = 0; c < NR; c++) _mm_prefetch(pf + ((size_t)c * j->K + k) * 2, _MM_HINT_T0);
            for (int c = 0; c < NR; c++)
                wv[c] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_loadu_si512(wr[c] + (size_t)k * 2), 16));
            for (int i = 0; i < MR; i++) {
                __m512 xv = lin5_reg(_mm512_loadu_ps(xr[i] + k));
                for (int c = 0; c < NR; c++) a[i * NR + c] = _mm512_fmadd_ps(wv[c], xv, a[i * NR + c]);
            }
            for (int c = 0; c < NR; c++)
                wv[c] = _mm512_castsi512_ps(_mm512_and_si512(_mm512_loadu_si512(wr[c] + (size_t)k * 2), odd));
            for (int i = 0; i < MR; i++) {
                __m512 xv = lin5_reg(_mm512_loadu_ps(xr[i] + k + 16));
                for (int c = 0; c < NR; c++) a[i * NR + c] = _mm512_fmadd_ps(wv[c], xv, a[i * NR + c]);
            }
        }
    }
    float s[LIN5_ACC];
    if (!lin5_park_or_sum(a, MR, NR, park, ld, last, s)) return;
    for (int i = 0; i < MR; i++) {
        const float *xo = j->x + (size_t)(m0 + i) * j->K;
        float *yr = j->y + (size_t)(m0 + i) * j->N + n0;
        for (int c = 0; c < NR; c++) {
            float t = s[i * NR + c];
            for (int k = j->Kv; k < j->K; k++) t = fmaf(xo[k], lin_w1(wr[c], k, es), t);
            if (j->b) t += j->b[n0 + c];
            yr[c] = j->accumulate ? yr[c] + t : t;
        }
    }
}

#define LIN5_T(MR, NR) \
    case MR * 16 + NR: lin5_tile(j, es, MR, NR, m0, n0, k0, k1, park, ld, first, last, pf); return;
#define DEFINE_LIN5_TILES(NAME, ES)                                                                   \
    static HW_AVX512 void NAME##_any(const LinJob *j, int mr, int nr, int m0, int n0, int k0, int k1,  \
                                     float *park, int ld, int first, int last, const char *pf) {      \
        lin5_tile(j, ES, mr, nr, m0, n0, k0, k1, park, ld, first, last, pf);                          \
    }                                                                                                 \
    static HW_AVX512 void NAME(const LinJob *j, int mr, int nr, int m0, int n0, int k0, int k1, float *park, \
                               int ld, int first, int last, const char *pf) {                         \
        const int es = ES;                                                                            \
        switch (mr * 16 + nr) {                                                                       \
            LIN5_T(8, 3) LIN5_T(7, 3) LIN5_T(6, 3) LIN5_T(5, 3) LIN5_T(4, 3) LIN5_T(3, 3) LIN5_T(2, 3)  \
            LIN5_T(1, 3) LIN5_T(4, 6) LIN5_T(3, 6) LIN5_T(2, 6) LIN5_T(1, 6) LIN5_T(3, 8) LIN5_T(2, 8)  \
            LIN5_T(1, 8)                                                                              \
        default: NAME##_any(j, mr, nr, m0, n0, k0, k1, park, ld, first, last, pf);                    \
        }                                                                                             \
    }
DEFINE_LIN5_TILES(lin5_tiles_f32, 4)
DEFINE_LIN5_TILES(lin5_tiles_bf16, 2)

/* AVX-512 BF16 (isa 3): bf16 weights times x rounded to bf16 (nearest even, as on the AMX
 * tiles) by VDPBF16PS, 32 products per instruction into 16 fp32 lanes, twice the FMA tiles'
 * products per instruction; for CPUs with AVX512_BF16 and no AMX (AMD Zen 4 and later, Intel
 * Cooper Lake). Only for K a multiple of 32 (hw_linear_rounds; every supported model's
 * projections).
 *
 * The weights are read in "dot pairs" (hw_pack_pairs): panels of 16 output columns, each the
 * K/2 key pairs in order, a pair holding 16 columns x 2 keys in 64 bytes, so one load is one
 * VDPBF16PS operand and a pair of x (two bf16, broadcast) is the other. Each lane is then one
 * output element: no reduction across lanes at the end, and a panel is one contiguous stream
 * the hardware prefetcher follows (a row of the plain [N, K] layout is a stream of its own,
 * many short ones per tile). Against dot products along rows of the plain layout (the kernel
 * this replaced), bench/kernel_rows.py measured 1.4 to 2.0 x on every shape and row count of
 * the supported models, most where weights stream from memory. KernelLinear reorders its
 * weight once at load (hogwild.kernels.ops.PairedBF16); a plain bf16 weight is reordered per
 * call into scratch, which gives the same bits at the cost of a pass over the weight.
 *
 * The order, fixed per element: acc = VDPBF16PS steps over the key pairs 0, 1, .. K/2 - 1,
 * ascending (the whole of K in registers, no K blocks), each step adding the odd key's
 * product and then the even key's, rounding each sum (the instruction's definition; the
 * products of two bf16 are exact in fp32; tests/test_kernels.py holds the kernel to this bit
 * for bit), then the bias, then the accumulation into y. Nothing of it depends on the rows,
 * the tile shapes or the threads. */
#define HW_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")))
#define PAIRS_MR_MAX 8  /* rows per register tile */
#define PAIRS_NB_MAX 8  /* panels (16 columns each) per register tile */
#define PAIRS_ACC 24    /* accumulators of the largest tile: 8 x 3, 6 x 4, 4 x 6, 3 x 8 */

/* Panels p0 .. p1-1 of w [N, K] bf16 in dot pairs: out[(p * K/2 + kp) * 32 + 2c + h] =
 * w[16p + c, 2kp + h], zero for columns at or past N. */
static void pairs_pack(const uint16_t *w, uint16_t *out, int N, int K, int p0, int p1) {
    int KP = K / 2;
    for (int p = p0; p < p1; p++) {
        uint32_t *o = (uint32_t *)out + (size_t)p * KP * 16;
        for (int c = 0; c < 16; c++) {
            int n = p * 16 + c;
            const uint32_t *row = (const uint32_t *)(w + (size_t)n * K); /* K is even: pairs are aligned */
            if (n < N)
                for (int kp = 0; kp < KP; kp++) o[(size_t)kp * 16 + c] = row[kp];
            else
                for (int kp = 0; kp < KP; kp++) o[(size_t)kp * 16 + c] = 0;
        }
    }
}

/* w [N, K] bf16 (K even) -> out, ceil(N / 16) * 16 * K bf16 in dot pairs (see above). */
void hw_pack_pairs(const uint16_t *w, uint16_t *out, int N, int K, int threads) {
    int P = (N + 15) / 16;
#pragma omp parallel num_threads(threads)
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        pairs_pack(w, out, N, K, (int)((int64_t)P * t / nt), (int)((int64_t)P * (t + 1) / nt));
    }
}

/* The inverse: dot pairs -> w [N, K] bf16. */
void hw_unpack_pairs(const uint16_t *packed, uint16_t *w, int N, int K) {
    int KP = K / 2;
    for (int n = 0; n < N; n++) {
        const uint32_t *src = (const uint32_t *)packed + (size_t)(n / 16) * KP * 16 + n % 16;
        uint32_t *row = (uint32_t *)(w + (size_t)n * K);
        for (int kp = 0; kp < KP; kp++) row[kp] = src[(size_t)kp * 16];
    }
}

typedef struct {
    const uint32_t *x; /* x rounded to bf16, [M, K/2] pairs */
    const uint16_t *w; /* dot pairs */
    const float *b;
    float *y;
    int M, N, K, accumulate;
    int ld; /* floats per row of y (N, unless y and b start at a later column) */
} PairsJob;

/* Rows m0 .. m0+MR-1 by panels p0 .. p0+NB-1, all of K; the finished sums go to y. With pf,
 * `lines` 64-byte lines from pf on are fetched into L2 on the way, `per` per key pair. */
static inline __attribute__((always_inline)) HW_AVX512BF16 void pairs_tile(const PairsJob *j, int MR, int NB, int m0,
                                                                           int p0, const char *pf, int per,
                                                                           int64_t lines) {
    __m512 a[PAIRS_ACC]; /* a[i * NB + c]: a flat array the compiler keeps in registers */
    const uint32_t *xr[PAIRS_MR_MAX];
    const uint16_t *wr[PAIRS_NB_MAX];
    int KP = j->K / 2;
    for (int i = 0; i < MR; i++) xr[i] = j->x + (size_t)(m0 + i) * KP;
    for (int c = 0; c < NB; c++) wr[c] = j->w + (size_t)(p0 + c) * KP * 32;
    for (int e = 0; e < MR * NB; e++) a[e] = _mm512_setzero_ps();
    for (int kp = 0; kp < KP; kp++) {
        __m512i wv[PAIRS_NB_MAX];
        for (int c = 0; c < NB; c++) wv[c] = _mm512_loadu_si512(wr[c] + (size_t)kp * 32);
        if (pf)
            for (int c = 0; c < per; c++)
                if ((int64_t)kp * per + c < lines) _mm_prefetch(pf + ((size_t)kp * per + c) * 64, _MM_HINT_T1);
        for (int i = 0; i < MR; i++) {
            __m512i xv = _mm512_set1_epi32((int)xr[i][kp]);
            for (int c = 0; c < NB; c++)
                a[i * NB + c] = _mm512_dpbf16_ps(a[i * NB + c], (__m512bh)wv[c], (__m512bh)xv);
        }
    }
    for (int c = 0; c < NB; c++) {
        int n0 = (p0 + c) * 16, cols = j->N - n0 < 16 ? j->N - n0 : 16;
        __mmask16 live = (__mmask16)((1u << cols) - 1);
        __m512 bias = j->b ? _mm512_maskz_loadu_ps(live, j->b + n0) : _mm512_setzero_ps();
        for (int i = 0; i < MR; i++) {
            float *yr = j->y + (size_t)(m0 + i) * j->ld + n0;
            __m512 v = a[i * NB + c];
            if (j->b) v = _mm512_add_ps(v, bias);
            if (j->accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(live, yr), v);
            _mm512_mask_storeu_ps(yr, live, v);
        }
    }
}

#define PAIRS_T(MR, NB) \
    case MR * 16 + NB: pairs_tile(j, MR, NB, m0, p0, pf, per, lines); return;
static HW_AVX512BF16 void pairs_tile_any(const PairsJob *j, int mr, int nb, int m0, int p0, const char *pf, int per,
                                         int64_t lines) {
    pairs_tile(j, mr, nb, m0, p0, pf, per, lines);
}
/* Every tile shape pairs_linear makes (its row tiles, their last rows and narrower last
 * groups) unrolled, so the accumulators stay in registers. */
static HW_AVX512BF16 void pairs_tiles(const PairsJob *j, int mr, int nb, int m0, int p0, const char *pf, int per,
                                      int64_t lines) {
    switch (mr * 16 + nb) {
        PAIRS_T(8, 3) PAIRS_T(8, 2) PAIRS_T(8, 1) PAIRS_T(7, 3) PAIRS_T(7, 2) PAIRS_T(7, 1)
        PAIRS_T(6, 4) PAIRS_T(6, 3) PAIRS_T(6, 2) PAIRS_T(6, 1) PAIRS_T(5, 4) PAIRS_T(5, 3) PAIRS_T(5, 2) PAIRS_T(5, 1)
        PAIRS_T(4, 6) PAIRS_T(4, 5) PAIRS_T(4, 4) PAIRS_T(4, 3) PAIRS_T(4, 2) PAIRS_T(4, 1) PAIRS_T(3, 8) PAIRS_T(3, 7)
        PAIRS_T(3, 6) PAIRS_T(3, 5) PAIRS_T(3, 4) PAIRS_T(3, 3) PAIRS_T(3, 2) PAIRS_T(3, 1) PAIRS_T(2, 8) PAIRS_T(2, 7)
        PAIRS_T(2, 6) PAIRS_T(2, 5) PAIRS_T(2, 4) PAIRS_T(2, 3) PAIRS_T(2, 2) PAIRS_T(2, 1) PAIRS_T(1, 8) PAIRS_T(1, 7)
        PAIRS_T(1, 6) PAIRS_T(1, 5) PAIRS_T(1, 4) PAIRS_T(1, 3) PAIRS_T(1, 2) PAIRS_T(1, 1)
    default: pairs_tile_any(j, mr, nb, m0, p0, pf, per, lines);
    }
}

/* x [M, K] (K % 32 == 0) as bf16 rows, nearest even (VCVTNE2PS2BF16, as amx_pack_x). */
static HW_AVX512BF16 void dot_round_x(const float *x, uint16_t *out, int M, int K) {
    for (size_t e = 0; e < (size_t)M * K; e += 32) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + e + 16), _mm512_loadu_ps(x + e));
        _mm512_storeu_si512(out + e, (__m512i)v);
    }
}

/* The linear call that follows, when it comes right after on the same rows (the native
 * decoder's o -> gate/up -> down -> the next layer's q/k/v): its weights in dot pairs, [N, K]. */
typedef struct {
    const uint16_t *w;
    int N, K;
} PairsNext;

/* Thread t's own panels [*p0, *p1) of P among nt threads. */
static inline void own_panels(int P, int t, int nt, int *p0, int *p1) {
    *p0 = (int)((int64_t)P * t / nt);
    *p1 = (int)((int64_t)P * (t + 1) / nt);
}

/* y [M, N] (+)= x [M, K] @ w^T + b on the dot pairs: w is either already in dot pairs
 * (`packed`) or plain [N, K] bf16, reordered here group by group into per-thread scratch.
 * Each thread has its share of the panels and takes them in groups of NB, in order, running
 * every row tile over a group while its weights are in cache; a thread done with its share
 * takes its partner's last groups (threads 2i and 2i + 1), one at a time from the end, while
 * the partner goes on from the front (a count of each share's unclaimed groups keeps them
 * apart). With fixed shares one thread (the OpenMP worker) finished 0.5-1 ms of each 16-row
 * SmolLM2 pass late, the other waiting (Zen 4, 2 vCPUs); walking a share from the end
 * instead made whole passes slower (the hardware's streams run ahead, and from the end they
 * ran into done groups). Which thread computes a column changes none of its bits.
 * Tiles of 24 accumulators: one 7 x 3 or 8 x 3 tile for 7-8 rows, 6 x 4 tiles from 6 rows on
 * (4 weight loads and 6 broadcasts per 24 products; as fast as 8 x 3 and faster where 8-row
 * tiles would leave a short one), 4 x 6 for 4-5 rows, 1-3 rows x 8 panels. From three row
 * tiles on, the first streams the group's weights from memory while the others compute from
 * cache, so those others fetch the next group into L2 meanwhile, a share each: 6-12 % faster
 * at 16-24 rows on Zen 4. A short last row tile runs first, so the fetching spans more of a
 * group's time, and in a thread's last group the tiles fetch the first group of its share of
 * the call that follows (`after`, NULL: none), which would otherwise start cold: together 1.10
 * x over a 16-row SmolLM2 pass's linears on Zen 4 (bench/pass_linears.py). Ahead in a panel,
 * further ahead or with fewer row tiles, fetching by hand did no better than the hardware's
 * streams, or worse.
 * Returns 0, or -1 when scratch allocation failed. */
static HW_AVX512BF16 int pairs_linear(const float *x, const uint16_t *w, int packed, const float *b, float *y, int M,
                                      int N, int K, int accumulate, int threads, const PairsNext *after) {
    int *left = (int *)malloc(sizeof(int) * (size_t)threads); /* each share's unclaimed groups */
    if (!left) return -1;
    PairsJob job = {NULL, w, b, y, M, N, K, accumulate, N};
    int P = (N + 15) / 16;
    int mr_max = M == 7 || M == 8 ? M : M >= 6 ? 6 : M >= 4 ? 4 : M;
    int nb = mr_max >= 7 ? 3 : mr_max == 6 ? 4 : mr_max >= 4 ? 6 : 8;
    for (int t = 0; t < threads; t++) {
        int q0, q1;
        own_panels(P, t, threads, &q0, &q1);
        left[t] = (q1 - q0 + nb - 1) / nb;
    }
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int mate = nt == threads && (t ^ 1) < nt ? t ^ 1 : -1; /* whose last groups this thread may take */
        int own0, own1, mate0 = 0, mate1 = 0, own_taken = 0, stolen = 0;
        own_panels(P, t, nt, &own0, &own1);
        if (mate >= 0) own_panels(P, mate, nt, &mate0, &mate1);
        int own_groups = (own1 - own0 + nb - 1) / nb, mate_groups = (mate1 - mate0 + nb - 1) / nb;
        PairsJob mine = job;
        uint16_t *scratch = NULL;
        /* x rounded to bf16 by every thread into memory of its own: one rounding by the caller
         * into a shared buffer was serial, and it wrote lines the other core had read in the
         * call before, each store waiting for that core to let go of its copy (2 us a call for
         * 16 x 576 on Zen 4, where the rounding itself takes 0.5) */
        uint16_t *xb = (uint16_t *)malloc(sizeof(uint16_t) * (size_t)M * K);
        if (xb) dot_round_x(x, xb, M, K);
        mine.x = (const uint32_t *)xb;
        if (!xb || (!packed && !(scratch = (uint16_t *)malloc(sizeof(uint16_t) * (size_t)nb * 16 * K)))) {
#pragma omp atomic write
            failed = 1;
        }
        for (;;) {
            if (!xb || (!packed && !scratch)) break;
            /* a group of this thread's share, in order, else its mate's last unclaimed one */
            int q0, q1, gi, rest, theirs = 0;
            if (nt == threads ? (rest = __atomic_sub_fetch(&left[t], 1, __ATOMIC_RELAXED)) >= 0
                              : (rest = own_groups - own_taken - 1) >= 0) {
                q0 = own0, q1 = own1, gi = own_taken++;
            } else if (mate >= 0 && (rest = __atomic_sub_fetch(&left[mate], 1, __ATOMIC_RELAXED)) >= 0) {
                q0 = mate0, q1 = mate1, gi = mate_groups - 1 - stolen++, theirs = 1;
            } else {
                break;
            }
            int g = q0 + gi * nb, n = q1 - g < nb ? q1 - g : nb, first = g;
            if (!packed) { /* the group's panels as panels 0 .. n-1 of the scratch */
                pairs_pack(w + (size_t)g * 16 * K, scratch, N - g * 16, K, 0, n);
                mine.w = scratch;
                mine.y = y + (size_t)g * 16;
                mine.b = b ? b + (size_t)g * 16 : NULL;
                mine.N = N - g * 16; /* the columns left from the group on; y's rows stay N long */
                first = 0;
            }
            /* the group this thread takes next (the next of its share, or the one before in its
             * mate's), fetched into L2 by the row tiles after the first (which stream this
             * group's from memory), a share each, so memory keeps busy while they compute from
             * cache; a thread with nothing left to take fetches its share of the next call's
             * first group instead */
            int next = 0, ng = -1, nq0 = q0, nq1 = q1;
            int64_t KP = K / 2, lines = 0;
            const char *ahead = NULL;
            if (!theirs && rest > 0) {
                ng = gi + 1;
            } else if (mate >= 0 && (theirs ? rest : __atomic_load_n(&left[mate], __ATOMIC_RELAXED)) > 0) {
                nq0 = mate0, nq1 = mate1, ng = mate_groups - 1 - stolen;
            }
            if (packed && ng >= 0) {
                int g2 = nq0 + ng * nb;
                next = nq1 - g2 < nb ? nq1 - g2 : nb;
                lines = (int64_t)next * KP; /* 64-byte lines: one per key pair and panel */
                ahead = (const char *)(w + (size_t)g2 * KP * 32);
            } else if (packed && after) {
                int nP = (after->N + 15) / 16, n0, n1;
                own_panels(nP, t, nt, &n0, &n1);
                next = n1 - n0 < nb ? n1 - n0 : nb;
                lines = (int64_t)next * (after->K / 2);
                ahead = (const char *)(after->w + (size_t)n0 * (after->K / 2) * 32);
            }
            int tiles_n = (M + mr_max - 1) / mr_max, rem = M % mr_max;
            for (int r = 0; r < tiles_n; r++) {
                /* a short last row tile runs first: the full ones after it, more of the group's
                 * time, fetch the next group */
                int m0 = !rem ? r * mr_max : r == 0 ? M - rem : (r - 1) * mr_max;
                const char *pf = NULL;
                int64_t s0 = 0, s1 = 0;
                if (next && tiles_n >= 3 && r > 0) {
                    s0 = lines * (r - 1) / (tiles_n - 1), s1 = lines * r / (tiles_n - 1);
                    pf = ahead + s0 * 64;
                }
                pairs_tiles(&mine, M - m0 < mr_max ? M - m0 : mr_max, n, m0, first, pf,
                            (int)((s1 - s0 + KP - 1) / KP), s1 - s0);
            }
        }
        free(scratch);
        free(xb);
    }
    free(left);
    return failed ? -1 : 0;
}

/* x in the order lin5_tile's bf16 steps read it: per 32 keys below K32, the 16 even-indexed
 * values, then the 16 odd-indexed ones; the tail as it is. */
static HW_AVX512 void lin_even_odd(const float *x, float *out, int M, int K, int K32) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (int m = 0; m < M; m++) {
        const float *xr = x + (size_t)m * K;
        float *o = out + (size_t)m * K;
        int k = 0;
        for (; k < K32; k += 32) {
            __m512 lo = _mm512_loadu_ps(xr + k), hi = _mm512_loadu_ps(xr + k + 16);
            _mm512_storeu_ps(o + k, _mm512_permutex2var_ps(lo, even, hi));
            _mm512_storeu_ps(o + k + 16, _mm512_permutex2var_ps(lo, odd, hi));
        }
        for (; k < K; k++) o[k] = xr[k];
    }
}

/* Micro-panel width for a call of M rows: 12 accumulators where rows allow (4 x 3 tiles),
 * wider panels for 1-3 rows so each weight vector still feeds enough FMAs. */
static inline int lin_panel_width(int M) { return M >= 4 ? 3 : M == 3 ? 4 : M == 2 ? 4 : 8; }

/* The same on AVX-512 (32 registers): 8 x 3 or 4 x 6 tiles, 8 columns for 1-3 rows. */
static inline int lin5_panel_width(int M) { return M >= 8 ? 3 : M >= 4 ? 6 : 8; }

/* Which instruction set the linear and attention kernels use: 1 AVX2 + FMA, 2 AVX-512
 * (F, BW, VL, DQ), 3 AVX-512 with AVX512_BF16 (the dot tiles for the bf16 linear, dot_tile,
 * and tile_group's dot path for attention), 4 AMX tiles for the bf16 linear and attention
 * (amx_linear, tile_group) besides. The best this
 * CPU and OS support unless hw_isa chose otherwise. A row's bits depend on this choice (the
 * reduction orders differ, and the dot and AMX tiles read activations as bf16), never on the
 * batch. */
static int isa_forced = 0;

/* Whether the CPU has AVX-512 F/BW/VL/DQ: the one check, also used by hogwild_quant.c. */
int hw_cpu_avx512(void) {
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    }
    return known;
}

/* AMX needs three things: the CPU's AMX-TILE and AMX-BF16 (CPUID leaf 7: EDX bits 24 and
 * 22; and AVX512_BF16, which packs x), the OS saving tile state (XCR0 bits 17 and 18), and,
 * on Linux, this process's permission to use the tile data state, asked once (arch_prctl
 * ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA); a kernel that refuses it means no AMX. */
static int cpu_amx(void) {
    static int known = -1;
    if (known < 0) {
        unsigned a, b, c, d;
        known = 0;
        int tiles = hw_cpu_avx512() && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 24 & 1) && (d >> 22 & 1);
        int cvt = tiles && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 5 & 1); /* AVX512_BF16 */
        if (cvt && __get_cpuid(1, &a, &b, &c, &d) && (c >> 27 & 1)) {                /* OSXSAVE */
            unsigned lo, hi;
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            if ((lo >> 17 & 3) == 3 && syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */,
                                               18 /* XFEATURE_XTILEDATA */) == 0)
                known = 1;
        }
    }
    return known;
}

/* HOGWILD_KERNEL_ISA=avx2, =avx512 or =avx512bf16 in the environment caps the set from the first call on
 * (benchmarks compare the sets on the whole engine that way); hw_isa overrides it. */
static int isa_env(void) {
    static int known = -1;
    if (known < 0) {
        const char *e = getenv("HOGWILD_KERNEL_ISA");
        known = !e                            ? 0
                : strcmp(e, "avx2") == 0       ? 1
                : strcmp(e, "avx512") == 0     ? 2
                : strcmp(e, "avx512bf16") == 0 ? 3
                                               : 0;
    }
    return known;
}

/* The cap HOGWILD_KERNEL_ISA sets (0 none, 1 AVX2, 2 AVX-512, 3 AVX-512 BF16), for hogwild_quant.c too. */
int hw_isa_cap(void) { return isa_env(); }

/* AVX512_BF16 (CPUID leaf 7, subleaf 1: EAX bit 5) besides AVX-512: the dot tiles (isa 3). */
static int cpu_bf16(void) {
    static int known = -1;
    if (known < 0) {
        unsigned a, b, c, d;
        known = hw_cpu_avx512() && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 5 & 1);
    }
    return known;
}

static inline int isa_best(void) { return cpu_amx() ? 4 : cpu_bf16() ? 3 : hw_cpu_avx512() ? 2 : 1; }

static inline int isa_now(void) {
    if (isa_forced) return isa_forced;
    int best = isa_best(), cap = isa_env();
    return cap && cap < best ? cap : best;
}

/* request 1 (AVX2), 2 (AVX-512), 3 (AVX-512 BF16) or 4 (AMX) pins the kernels to that set, 0 goes back to the
 * default (the best supported, or what HOGWILD_KERNEL_ISA says), a negative value only asks.
 * Returns the set in effect, or -1 (nothing changed) when the CPU lacks the requested one.
 * For tests and benchmarks; not thread safe against concurrent kernel calls. */
int hw_isa(int request) {
    if (request > isa_best()) return -1;
    if (request >= 0 && request <= 4) isa_forced = request;
    return isa_now();
}

/* ------------------------------------------------------------------ AMX linear (bf16)
 *
 * On CPUs with AMX (isa 4), the bf16-weight linear runs on the tile unit: 16 x 16 fp32
 * accumulators, each TDPBF16PS multiplies 16 rows of 32 bf16 by 32 x 16 bf16. Its rate is
 * several times the FMA rate, so passes of many rows (batched runs, large teams) stop being
 * compute-bound; at 1-2 rows it reads the weights at about the FMA kernel's speed.
 *
 * The product is taken transposed, y^T = w x^T: the A operand is 16 weight rows (n) by 32
 * keys, loaded straight from the row-major weights with the row stride, so the weights need
 * no repacking; the B operand is x^T for 16 rows (m) and 32 keys in the pair-interleaved
 * order TDPBF16PS reads (amx_pack_x, once per call). This rounds x to bf16 (nearest even):
 * the tile unit takes no fp32 input. It is the one place where the native kernels do not
 * compute in fp32 activations (bf16 weights only; an fp32 model never gets here).
 *
 * Batch invariance: element (m, n) is accumulated in its own tile cell over the keys in
 * chunks of 32, ascending, by the same instructions whatever row of the tile m occupies,
 * how many rows the call has (missing rows are zeros in other cells) and which thread owns
 * the column block; then s = acc + b[n] and y = accumulate ? y + s : s, as elsewhere.
 * Shapes: N a multiple of 16, K of 32 (amx_fits; every supported model's projections and
 * heads are); others take the AVX-512 path. */
#define HW_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")))

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} AmxConfig;

static inline int amx_fits(int N, int K) { return N % 16 == 0 && K % 32 == 0 && K > 0; }

/* The tile configuration of every AMX kernel: 8 tiles of 16 rows x 64 bytes. A constant, not
 * a local filled before the load: GCC does not see that LDTILECFG reads its operand and may
 * drop the stores that fill a local (it did, and the tiles stayed unconfigured). */
static const AmxConfig AMX_TILES = {
    .palette = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

/* Configure this thread's tiles (each kernel releases them when done). */
static HW_AMX void amx_tiles_on(void) { _tile_loadconfig(&AMX_TILES); }

/* x [M, K] fp32 -> bf16 B tiles, one per 16 rows (padded with zeros) and 32 keys: tile
 * (mb, kc) at xp + (mb * K/32 + kc) * 512; its row r holds, for each of its 16 rows m, the
 * keys 2r and 2r + 1 of the chunk. */
static HW_AMX void amx_pack_x(const float *x, uint16_t *xp, int M, int K) {
    int MB = (M + 15) / 16, KC = K / 32;
    for (int mb = 0; mb < MB; mb++)
        for (int kc = 0; kc < KC; kc++) {
            uint32_t *t = (uint32_t *)(xp + ((size_t)mb * KC + kc) * 512);
            for (int i = 0; i < 16; i++) {
                int m = mb * 16 + i;
                uint32_t pairs[16];
                if (m < M) {
                    const float *xr = x + (size_t)m * K + (size_t)kc * 32;
                    __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(xr + 16), _mm512_loadu_ps(xr));
                    _mm512_storeu_si512(pairs, (__m512i)v);
                } else {
                    memset(pairs, 0, sizeof pairs);
                }
                for (int r = 0; r < 16; r++) t[r * 16 + i] = pairs[r];
            }
        }
}

/* One finished accumulator tile (16 weight rows n0.. by 16 x rows m0..) into y. */
static inline void amx_finish(const float *acc, const float *b, float *y, int M, int N, int n0, int m0,
                              int accumulate) {
    for (int i = 0; i < 16 && m0 + i < M; i++) {
        float *yr = y + (size_t)(m0 + i) * N + n0;
        for (int c = 0; c < 16; c++) {
            float s = acc[c * 16 + i];
            if (b) s += b[n0 + c];
            yr[c] = accumulate ? yr[c] + s : s;
        }
    }
}

#define AMX_STORE(t, buf) _tile_stored(t, buf, 64)

/* y [M, N] (+)= x [M, K] @ w^T + b with bf16 w on the tile unit (see above). Threads split
 * the column blocks; each configures its own tiles. Up to 16 rows: 3 weight tiles against
 * one x tile (tiles 0-2 accumulate, 3-5 weights, 6 x); more: 2 weight tiles against 2 x
 * tiles (0-3 accumulate, 4-5 weights, 6-7 x). Returns 0, or -1 when scratch allocation
 * failed. */
static HW_AMX int amx_linear(const float *x, const uint16_t *w, const float *b, float *y, int M, int N, int K,
                             int accumulate, int threads) {
    int MB = (M + 15) / 16, KC = K / 32, NB = N / 16;
    uint16_t *xp = (uint16_t *)aligned_alloc(64, (size_t)MB * KC * 1024);
    if (!xp) return -1;
    amx_pack_x(x, xp, M, K);
    int wide = MB >= 2;         /* 2 x tiles per step */
    int na = wide ? 2 : 3;      /* weight tiles per step */
    int groups = (NB + na - 1) / na;
    size_t ws = (size_t)K * 2;  /* bytes between weight rows */
#pragma omp parallel num_threads(threads)
    {
        amx_tiles_on();
        float acc[256] __attribute__((aligned(64)));
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int g0 = (int)((int64_t)groups * t / nt), g1 = (int)((int64_t)groups * (t + 1) / nt);
        for (int g = g0; g < g1; g++) {
            int nb0 = g * na, nas = NB - nb0 < na ? NB - nb0 : na;
            const char *a0 = (const char *)(w + (size_t)nb0 * 16 * K);
            for (int mb0 = 0; mb0 < MB; mb0 += wide ? 2 : 1) {
                const char *x0 = (const char *)(xp + (size_t)mb0 * KC * 512);
                if (!wide) {
                    _tile_zero(0);
                    _tile_zero(1);
                    _tile_zero(2);
                    for (int kc = 0; kc < KC; kc++) {
                        _tile_loadd(6, x0 + (size_t)kc * 1024, 64);
                        _tile_loadd(3, a0 + (size_t)kc * 64, ws);
                        _tile_dpbf16ps(0, 3, 6);
                        if (nas > 1) {
                            _tile_loadd(4, a0 + 16 * ws + (size_t)kc * 64, ws);
                            _tile_dpbf16ps(1, 4, 6);
                        }
                        if (nas > 2) {
                            _tile_loadd(5, a0 + 32 * ws + (size_t)kc * 64, ws);
                            _tile_dpbf16ps(2, 5, 6);
                        }
                    }
                    for (int i = 0; i < nas; i++) {
                        if (i == 0) AMX_STORE(0, acc);
                        else if (i == 1) AMX_STORE(1, acc);
                        else AMX_STORE(2, acc);
                        amx_finish(acc, b, y, M, N, (nb0 + i) * 16, mb0 * 16, accumulate);
                    }
                } else {
                    int two = mb0 + 1 < MB;
                    const char *x1 = x0 + (size_t)KC * 1024;
                    _tile_zero(0);
                    _tile_zero(1);
                    _tile_zero(2);
                    _tile_zero(3);
                    for (int kc = 0; kc < KC; kc++) {
                        _tile_loadd(4, a0 + (size_t)kc * 64, ws);
                        _tile_loadd(6, x0 + (size_t)kc * 1024, 64);
                        _tile_dpbf16ps(0, 4, 6);
                        if (two) {
                            _tile_loadd(7, x1 + (size_t)kc * 1024, 64);
                            _tile_dpbf16ps(1, 4, 7);
                        }
                        if (nas > 1) {
                            _tile_loadd(5, a0 + 16 * ws + (size_t)kc * 64, ws);
                            _tile_dpbf16ps(2, 5, 6);
                            if (two) _tile_dpbf16ps(3, 5, 7);
                        }
                    }
                    for (int i = 0; i < nas; i++)
                        for (int j = 0; j < 1 + two; j++) {
                            int c = i * 2 + j;
                            if (c == 0) AMX_STORE(0, acc);
                            else if (c == 1) AMX_STORE(1, acc);
                            else if (c == 2) AMX_STORE(2, acc);
                            else AMX_STORE(3, acc);
                            amx_finish(acc, b, y, M, N, (nb0 + i) * 16, (mb0 + j) * 16, accumulate);
                        }
                }
            }
        }
        _tile_release();
    }
    free(xp);
    return 0;
}

/* Weight formats of hw_linear: fp32 [N, K], bf16 [N, K], bf16 in dot pairs (hw_pack_pairs). */
#define W_F32 0
#define W_BF16 1
#define W_PAIRS 2

/* Where hw_linear rounds x to bf16: bf16 weights with K a multiple of 32 on the AMX tiles
 * (isa 4, amx_fits, plain layout) or on the dot pairs (isa 3, or 4 for the other shapes and
 * for weights already in pairs); weights in pairs always. */
static inline int lin_dot(int isa, int K, int wfmt) {
    return wfmt == W_PAIRS || (isa >= 3 && wfmt == W_BF16 && K % 32 == 0 && K > 0);
}
static inline int lin_amx(int isa, int N, int K, int wfmt) { return isa == 4 && wfmt == W_BF16 && amx_fits(N, K); }
int hw_linear_rounds(int N, int K, int wfmt) { return lin_amx(isa_now(), N, K, wfmt) || lin_dot(isa_now(), K, wfmt); }

/* Whether a bf16 weight [N, K] is worth reordering into dot pairs for this instruction set:
 * where hw_linear would compute it on the pairs anyway (isa 3; on AMX the tiles read the
 * plain layout). */
int hw_linear_pairs(int N, int K) { return isa_now() == 3 && N > 0 && K % 32 == 0 && K > 0; }

typedef void (*LinTiles)(const LinJob *j, int mr, int nr, int m0, int n0, int k0, int k1, float *park, int ld,
                         int first, int last, const char *pf);

/* y [M, N] = x [M, K] @ w[N, K]^T + b (fp32 x, y, b; w in format wfmt: W_F32, W_BF16 or
 * W_PAIRS). With accumulate, y += instead of y = (a residual connection without another pass
 * over y). y must not overlap x. No limit on M (MAX_ROWS in hogwild.kernels.ops is where the
 * native path stops paying off, not a bound of this code). Returns 0, -1 when scratch
 * allocation failed, or -3 for weights in dot pairs when the instruction set was pinned
 * below AVX512_BF16 (only that set computes them). */
static int linear_call(const float *x, const void *w, int wfmt, const float *b, float *y, int M, int N, int K,
                       int accumulate, int threads, const PairsNext *after) {
    if (M <= 0 || N <= 0) return 0;
    int isa = isa_now(), wide = isa >= 2, w_bf16 = wfmt != W_F32;
    if (wfmt == W_PAIRS && (isa < 3 || K % 32 != 0 || K <= 0)) return -3;
    if (lin_amx(isa, N, K, wfmt)) return amx_linear(x, (const uint16_t *)w, b, y, M, N, K, accumulate, threads);
    if (lin_dot(isa, K, wfmt))
        return pairs_linear(x, (const uint16_t *)w, wfmt == W_PAIRS, b, y, M, N, K, accumulate, threads, after);
    int es = w_bf16 ? 2 : 4;
    int lanes = wide ? 16 : 8;          /* floats per accumulator */
    int step = wide ? 64 / es : 8;      /* keys per vector step */
    int mr_max = wide ? (M >= 8 ? 8 : 4) : LIN_MR;
    int nr = wide ? lin5_panel_width(M) : lin_panel_width(M);
    LinTiles tiles = wide ? (es == 2 ? lin5_tiles_bf16 : lin5_tiles_f32) : (es == 2 ? lin_tiles_bf16 : lin_tiles_f32);
    LinJob job = {x, (const char *)w, b, y, M, N, K, K / step * step, accumulate, x};
    const LinJob *j = &job;
    void *xread = NULL; /* x as the tiles read it, where that is not x itself */
    if (wide && es == 2 && job.Kv > 0) {
        float *xeo = (float *)(xread = malloc(sizeof(float) * (size_t)M * K));
        if (!xeo) return -1;
        lin_even_odd(x, xeo, M, K, job.Kv);
        job.xv = xeo;
    }
    /* K blocks of equal size (multiples of step), as few as keep M x kc floats of x within
     * LIN_X_FLOATS (AVX2), or the x of one row tile within LIN5_X_FLOATS (AVX-512: its tiles
     * are fast enough that x must come from L1, not L2), but at least 128 keys each */
    int Kv = job.Kv, kc = Kv, kblocks = 1;
    int most = wide ? LIN5_X_FLOATS / (M < mr_max ? M : mr_max) / step * step
                    : (int64_t)M * Kv > LIN_X_FLOATS ? (LIN_X_FLOATS / M) / step * step : Kv;
    if (Kv > most) {
        if (most < 128) most = 128;
        kblocks = (Kv + most - 1) / most;
        kc = ((Kv + kblocks - 1) / kblocks + step - 1) / step * step;
        kblocks = (Kv + kc - 1) / kc;
    }
    int panels = (N + nr - 1) / nr;
    int group = LIN_W_BYTES / ((kc > step ? kc : step) * es * nr); /* panels per column group */
    if (kblocks > 1 && group > LIN_PARK_FLOATS / (M * nr * lanes)) group = LIN_PARK_FLOATS / (M * nr * lanes);
    if (group < 1) group = 1;
    if (group > panels) group = panels;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int p0 = (int)((int64_t)panels * t / nt), p1 = (int)((int64_t)panels * (t + 1) / nt);
        float *park = NULL;
        if (kblocks > 1 && p1 > p0) {
            park = (float *)malloc(sizeof(float) * (size_t)M * group * nr * lanes);
            if (!park) {
#pragma omp atomic write
                failed = 1;
            }
        }
        if (kblocks == 1 || park) {
            for (int g0 = p0; g0 < p1; g0 += group) {
                int g1 = g0 + group < p1 ? g0 + group : p1;
                int ld = (g1 - g0) * nr * lanes;
                for (int kb = 0; kb < kblocks; kb++) {
                    int k0 = kb * kc, k1 = k0 + kc < Kv ? k0 + kc : Kv;
                    for (int m0 = 0; m0 < M; m0 += mr_max) {
                        int mr = M - m0 < mr_max ? M - m0 : mr_max;
                        for (int p = g0; p < g1; p++) {
                            int n0 = p * nr, cols = N - n0 < nr ? N - n0 : nr;
                            float *pk = park ? park + (size_t)m0 * ld + (size_t)(p - g0) * nr * lanes : NULL;
                            /* the first row tile fetches the next panel's weights ahead: rows of a
                             * short panel are too short for the hardware prefetcher to find */
                            const char *pf = m0 == 0 && p + 1 < p1 && n0 + 2 * nr <= N
                                                 ? j->w + (size_t)(n0 + nr) * K * es : NULL;
                            tiles(j, mr, cols, m0, n0, k0, k1, pk, ld, kb == 0, kb == kblocks - 1, pf);
                        }
                    }
                }
            }
        }
        free(park);
    }
    free(xread);
    return failed ? -1 : 0;
}

int hw_linear(const float *x, const void *w, int wfmt, const float *b, float *y, int M, int N, int K,
              int accumulate, int threads) {
    return linear_call(x, w, wfmt, b, y, M, N, K, accumulate, threads, NULL);
}

/* ------------------------------------------------------------------ elementwise */

/* y = x / rms(x) * w, row by row over the last dimension K (fp32 throughout). */
/* Each row's index of its largest value, the first of ties, or of its first NaN if it has
 * one (what torch's max(-1).indices returns on the CPU): greedy decoding's pick from the
 * logits, rows split over threads. Per row: 8 lanes keep their largest value and its first
 * index (a strictly larger value replaces it, so a lane keeps its first), then the lanes'
 * largest, the smallest index among the lanes that hold it; a NaN anywhere sends the row to a
 * scalar scan for the first NaN. */
void hw_argmax(const float *x, int rows, int n, int64_t *out, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int r = 0; r < rows; r++) {
        const float *row = x + (size_t)r * n;
        int best = 0;
        float top = n > 0 ? row[0] : 0.0f;
        int i = 0, nan = 0;
        if (n >= 8) {
            __m256 bv = _mm256_loadu_ps(row), unord = _mm256_cmp_ps(bv, bv, _CMP_UNORD_Q);
            __m256i bi = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), idx = bi;
            const __m256i step = _mm256_set1_epi32(8);
            for (i = 8; i + 8 <= n; i += 8) {
                idx = _mm256_add_epi32(idx, step);
                __m256 v = _mm256_loadu_ps(row + i);
                __m256 gt = _mm256_cmp_ps(v, bv, _CMP_GT_OQ);
                unord = _mm256_or_ps(unord, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
                bv = _mm256_blendv_ps(bv, v, gt);
                bi = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(bi), _mm256_castsi256_ps(idx), gt));
            }
            nan = _mm256_movemask_ps(unord) != 0;
            float lv[8];
            int li[8];
            _mm256_storeu_ps(lv, bv);
            _mm256_storeu_si256((__m256i *)li, bi);
            top = lv[0];
            best = li[0];
            for (int l = 1; l < 8; l++)
                if (lv[l] > top || (lv[l] == top && li[l] < best)) {
                    top = lv[l];
                    best = li[l];
                }
        }
        for (; i < n && !nan; i++) {
            if (row[i] != row[i]) nan = 1;
            else if (row[i] > top || (i < best && row[i] == top)) {
                top = row[i];
                best = i;
            }
        }
        if (nan)
            for (best = 0; best < n && row[best] == row[best]; best++) {
            }
        out[r] = best;
    }
}

/* Rows m0 .. m1 - 1 of hw_rmsnorm. */
static void rmsnorm_rows(const float *x, const float *w, float *y, int m0, int m1, int K, float eps) {
    for (int m = m0; m < m1; m++) {
        const float *xr = x + (size_t)m * K;
        float *yr = y + (size_t)m * K;
        __m256 acc = _mm256_setzero_ps();
        int k = 0;
        for (; k + 8 <= K; k += 8) {
            __m256 v = _mm256_loadu_ps(xr + k);
            acc = _mm256_fmadd_ps(v, v, acc);
        }
        float ss = hsum8(acc);
        for (; k < K; k++) ss += xr[k] * xr[k];
        float inv = 1.0f / sqrtf(ss / (float)K + eps);
        __m256 vinv = _mm256_set1_ps(inv);
        k = 0;
        for (; k + 8 <= K; k += 8)
            _mm256_storeu_ps(yr + k, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + k), vinv),
                                                   _mm256_loadu_ps(w + k)));
        for (; k < K; k++) yr[k] = xr[k] * inv * w[k];
    }
}

/* y [M, I] = silu(gu[:, :I]) * gu[:, I:]  (the gated MLP's activation, fused gate/up input). */
/* Rows m0 .. m1 - 1 of hw_silu_mul. */
static void silu_mul_rows(const float *gu, float *y, int m0, int m1, int I) {
    const __m256 one = _mm256_set1_ps(1.0f);
    for (int m = m0; m < m1; m++) {
        const float *g = gu + (size_t)m * 2 * I, *u = g + I;
        float *yr = y + (size_t)m * I;
        int i = 0;
        for (; i + 8 <= I; i += 8) {
            __m256 gv = _mm256_loadu_ps(g + i);
            /* silu(g) = g / (1 + exp(-g)); exp of a non-positive argument either way */
            __m256 neg = _mm256_cmp_ps(gv, _mm256_setzero_ps(), _CMP_LT_OQ);
            __m256 e = exp8_nonpositive(_mm256_sub_ps(_mm256_setzero_ps(),
                                                      _mm256_andnot_ps(_mm256_set1_ps(-0.0f), gv)));
            /* g >= 0: g / (1 + e^-g);  g < 0: g e^g / (1 + e^g) */
            __m256 num = _mm256_blendv_ps(gv, _mm256_mul_ps(gv, e), neg);
            __m256 s = _mm256_div_ps(num, _mm256_add_ps(one, e));
            _mm256_storeu_ps(yr + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
        }
        for (; i < I; i++) yr[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

void hw_rmsnorm(const float *x, const float *w, float *y, int M, int K, float eps) { rmsnorm_rows(x, w, y, 0, M, K, eps); }

void hw_silu_mul(const float *gu, float *y, int M, int I) { silu_mul_rows(gu, y, 0, M, I); }

/* The decoder's norms and SiLU gate with rows split between threads, where a pass has enough
 * of them to pay for the second thread (a 16-row SmolLM2 pass: 0.4 ms of gates and 0.2 ms of
 * norms on one thread); every row is computed on its own, so the bits are the same. */
#define ROWS_PAR_MIN 8192 /* elements of a call below which one thread does it */

/* This thread's share [*m0, *m1) of M rows (all of them outside a parallel region). */
static inline void thread_rows(int M, int *m0, int *m1) {
    int nt = omp_get_num_threads(), t = omp_get_thread_num();
    *m0 = (int)((int64_t)M * t / nt);
    *m1 = (int)((int64_t)M * (t + 1) / nt);
}

static void rmsnorm_par(const float *x, const float *w, float *y, int M, int K, float eps, int threads) {
#pragma omp parallel num_threads(threads) if (M > 1 && (int64_t)M * K >= ROWS_PAR_MIN)
    {
        int m0, m1;
        thread_rows(M, &m0, &m1);
        rmsnorm_rows(x, w, y, m0, m1, K, eps);
    }
}

static void silu_mul_par(const float *gu, float *y, int M, int I, int threads) {
#pragma omp parallel num_threads(threads) if (M > 1 && (int64_t)M * I >= ROWS_PAR_MIN)
    {
        int m0, m1;
        thread_rows(M, &m0, &m1);
        silu_mul_rows(gu, y, m0, m1, I);
    }
}

/* ------------------------------------------------------------------ attention */

/* Rotate-half RoPE of one head vector by (cos, sin), times scale. */
static inline void rope_row(const float *x, const float *c, const float *s, float *out, int D, float scale) {
    int half = D / 2;
    for (int d = 0; d < half; d++) out[d] = (x[d] * c[d] - x[d + half] * s[d]) * scale;
    for (int d = half; d < D; d++) out[d] = (x[d] * c[d] + x[d - half] * s[d]) * scale;
}

/* The int8 part of the store (hogwild.core.cache, "Compact KV cache" in docs/architecture.md):
 * finished blocks (prompt, history) kept as int8 with one fp32 scale per (layer, kv head,
 * token), i.e. per head_dim values. Pool slots at or above COMPACT_SLOT address it (slot -
 * COMPACT_SLOT); below it, the full-precision pool. NULL where the store has no int8 part. */
#define COMPACT_SLOT ((int64_t)1 << 40)
typedef struct {
    int8_t *k, *v;  /* [layers, Hkv, capacity, D] */
    float *ks, *vs; /* [layers, Hkv, capacity] */
    int64_t capacity, layers;
} Compact;

/* Round-to-nearest int8 of one vector: scale = max|x| / 127, q = round_half_even(x / scale).
 * Division, not a reciprocal multiply, so that KVStore's PyTorch quantizer (the same steps in
 * fp32) gives the same bits whichever path stored a token. Returns the scale (0: all zero). */
static float q8_vector(const float *x, int8_t *q, int D) {
    float amax = 0.0f;
    for (int d = 0; d < D; d++) {
        float a = fabsf(x[d]);
        amax = a > amax ? a : amax;
    }
    float s = amax / 127.0f;
    if (!(s > 0.0f)) {
        memset(q, 0, (size_t)D);
        return 0.0f;
    }
    for (int d = 0; d < D; d++) {
        float r = nearbyintf(x[d] / s);
        q[d] = (int8_t)(r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r);
    }
    return s;
}

/* Rotations (cos and sin rows of D floats, rope_row's layout) by index: row p is row at[p] of
 * the tables, or row p itself when `at` is NULL. The native decoder passes the rotary tables
 * and each pass's positions (hogwild.kernels.native.NativePass), so no per-pass copy of cos and
 * sin rows is made; hw_attend and hw_store_kv take the rows themselves. */
typedef struct {
    const float *cos, *sin;
    const int32_t *at;
} Rot;

static inline const float *rot_row(const float *table, const int32_t *at, int p, int D) {
    return table + (size_t)(at ? at[p] : p) * D;
}

/* Write this pass's keys (rotated at their local positions, row r by rotation r of kr_rot)
 * and values into the pool. k, v [R, Hkv, D] fp32, rows kv_ld floats apart (hw_store_kv:
 * Hkv * D; the native decoder reads its fused q/k/v output in place); slots [R]; pools
 * [Hkv, capacity, D] of this layer (head_stride = capacity * D elements), fp32 or bf16. A
 * slot at or above COMPACT_SLOT goes to layer `layer` of the int8 part `pk`, quantized per
 * vector (q8_vector). Returns 0, or -2 when D > STORE_MAX_D or a compact slot comes without
 * an int8 part. */
#define STORE_MAX_D 1024
static int store_kv(const float *k, const float *v, size_t kv_ld, const int64_t *slots, const Rot *kr_rot, void *kpool,
                    void *vpool, int64_t head_stride, int bf16, int R, int Hkv, int D, const Compact *pk, int layer) {
    float tmp[STORE_MAX_D];
    if (D > STORE_MAX_D) return -2;
    for (int r = 0; r < R; r++) {
        const float *kc = rot_row(kr_rot->cos, kr_rot->at, r, D), *ks = rot_row(kr_rot->sin, kr_rot->at, r, D);
        for (int h = 0; h < Hkv; h++) {
            const float *kr = k + (size_t)r * kv_ld + (size_t)h * D, *vr = v + (size_t)r * kv_ld + (size_t)h * D;
            rope_row(kr, kc, ks, tmp, D, 1.0f);
            if (slots[r] >= COMPACT_SLOT) {
                if (!pk) return -2;
                size_t line = ((size_t)layer * Hkv + h) * (size_t)pk->capacity + (size_t)(slots[r] - COMPACT_SLOT);
                pk->ks[line] = q8_vector(tmp, pk->k + line * D, D);
                pk->vs[line] = q8_vector(vr, pk->v + line * D, D);
                continue;
            }
            size_t at = (size_t)h * head_stride + (size_t)slots[r] * D;
            if (bf16) {
                uint16_t *kp = (uint16_t *)kpool + at, *vp = (uint16_t *)vpool + at;
                for (int d = 0; d < D; d++) {
                    kp[d] = f32_to_bf16(tmp[d]);
                    vp[d] = f32_to_bf16(vr[d]);
                }
            } else {
                memcpy((float *)kpool + at, tmp, sizeof(float) * D);
                memcpy((float *)vpool + at, vr, sizeof(float) * D);
            }
        }
    }
    return 0;
}

int hw_store_kv(const float *k, const float *v, const int64_t *slots, const float *kcos, const float *ksin,
                void *kpool, void *vpool, int64_t head_stride, int bf16, int R, int Hkv, int D, const Compact *pk,
                int layer) {
    Rot rot = {kcos, ksin, NULL};
    return store_kv(k, v, (size_t)Hkv * D, slots, &rot, kpool, vpool, head_stride, bf16, R, Hkv, D, pk, layer);
}

#define UNIT_KEYS 256 /* keys per work unit: long blocks are split so all threads get work */
#define MAX_G 16
#define MAX_D 256
#define CHUNK 32
#define MAX_Q 32 /* query vectors (rows x heads of a KV head) computed together per work item (FMA path; AMX: AMX_MAX_Q) */
/* Work items a thread takes per grab: two groups, all their KV heads (items are group-major),
 * in slot order, so a thread works through neighbouring blocks of the pool. Item-by-item
 * grabs, which put both threads on the same groups at once, measured slower (SmolLM2, 16
 * rows, 1k prompt: attention 10.0-10.7 -> 8.0-8.2 ms on AMX tiles, 17.2 -> 16.4 ms with FMA;
 * whole contiguous halves were faster still on small blocks but left a thread idle behind
 * the long ones). Results do not depend on it: it decides which thread runs an item. */
#define ITEMS_PER_GRAB(Hkv) (2 * (Hkv))

/* A unit: keys of one row's view computed as one softmax. Segment 0 is pair `pair` from key
 * `first` (count0 keys); on the tile unit a unit of short pairs has further segments, whole
 * pairs, the pass's seg list from `seg` on holding each segment's pair (see attend_plan;
 * elsewhere nseg = 1). */
typedef struct {
    int row;
    int pair;
    int first; /* first key of the pair's block in this unit */
    int count; /* keys in all segments */
    int count0; /* keys in the first segment */
    int nseg;
    int seg;  /* the unit's segments' pairs: seg list [seg .. seg + nseg - 1] */
    int lane; /* the dot path may score its long segments on key tiles (attend_plan) */
} Unit;

typedef struct {
    int64_t slot; /* first pool slot the unit reads */
    int count;
    int unit;
    int nseg, count0, lane; /* the unit's segments, read from the pass's pairs: */
    const int *segp;        /* segment s is pair segp[s] */
    const int64_t *pair_slot;
    const int32_t *pair_len;
} UnitKey;

/* Segment s of a unit: its first pool slot and its number of keys. */
static inline void unit_segment(const UnitKey *k, int s, int64_t *slot, int *len) {
    *slot = s == 0 ? k->slot : k->pair_slot[k->segp[s]];
    *len = s == 0 ? k->count0 : k->pair_len[k->segp[s]];
}

/* Units ordered by the keys they read, segment by segment (a unit whose keys begin another's
 * comes right before it), then by unit index. */
static int unit_key_cmp(const void *a, const void *b) {
    const UnitKey *x = (const UnitKey *)a, *y = (const UnitKey *)b;
    for (int s = 0; s < x->nseg && s < y->nseg; s++) {
        int64_t xs, ys;
        int xn, yn;
        unit_segment(x, s, &xs, &xn);
        unit_segment(y, s, &ys, &yn);
        if (xs != ys) return xs < ys ? -1 : 1;
        if (xn != yn) return xn < yn ? -1 : 1;
    }
    if (x->nseg != y->nseg) return x->nseg < y->nseg ? -1 : 1;
    return x->unit - y->unit;
}

/* Whether unit a's keys are the first keys of unit b's (same segments, a's last one no
 * longer than b's): a can then share b's work item, its lanes masked past its own keys. */
static int unit_is_prefix(const UnitKey *a, const UnitKey *b) {
    if (a->nseg > b->nseg) return 0;
    for (int s = 0; s < a->nseg; s++) {
        int64_t as, bs;
        int an, bn;
        unit_segment(a, s, &as, &an);
        unit_segment(b, s, &bs, &bn);
        if (as != bs || (s < a->nseg - 1 ? an != bn : an > bn)) return 0;
    }
    return 1;
}

/* n rows of D values from a pool (fp32 or bf16) as fp32: the pool itself when fp32,
 * else converted into buf. Rows of one head are contiguous in the pool. */
static inline const float *rows_f32(const void *base, size_t at, int n, int D, int bf16, float *buf) {
    if (!bf16) return (const float *)base + at;
    const uint16_t *src = (const uint16_t *)base + at;
    int total = n * D, i = 0;
    for (; i + 8 <= total; i += 8) _mm256_storeu_ps(buf + i, load8_bf16(src + i));
    for (; i < total; i++) buf[i] = bf16_to_f32(src[i]);
    return buf;
}

/* n int8 rows of D values with their scales as fp32 (q * scale, per row) into buf. */
static inline const float *rows_q8(const int8_t *src, const float *scales, int n, int D, float *buf) {
    for (int j = 0; j < n; j++) {
        const int8_t *q = src + (size_t)j * D;
        float *o = buf + (size_t)j * D;
        __m256 s = _mm256_set1_ps(scales[j]);
        int d = 0;
        for (; d + 8 <= D; d += 8) {
            __m128i b = _mm_loadl_epi64((const __m128i *)(q + d));
            _mm256_storeu_ps(o + d, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), s));
        }
        for (; d < D; d++) o[d] = (float)q[d] * scales[j];
    }
    return buf;
}

/* acc[i] = acc[i] * corr[i] + sum_j p[i][j] v[j] for QB queries (rows of acc and p, strides
 * D and CHUNK) and 16 lanes of d: 2*QB accumulators stay in registers across the chunk's
 * keys; each value vector is loaded once for all QB queries. */
static inline __attribute__((always_inline)) void pv_block(float *acc, const float *corr, const float *p,
                                                           const float *vc, int n, int D, int d, int QB) {
    __m256 a[4][2];
    for (int i = 0; i < QB; i++) {
        __m256 c = _mm256_set1_ps(corr[i]);
        a[i][0] = _mm256_mul_ps(_mm256_loadu_ps(acc + (size_t)i * D + d), c);
        a[i][1] = _mm256_mul_ps(_mm256_loadu_ps(acc + (size_t)i * D + d + 8), c);
    }
    const float *vr = vc + d;
    for (int j = 0; j < n; j++, vr += D) {
        __m256 v0 = _mm256_loadu_ps(vr), v1 = _mm256_loadu_ps(vr + 8);
        for (int i = 0; i < QB; i++) {
            __m256 w = _mm256_broadcast_ss(p + i * CHUNK + j);
            a[i][0] = _mm256_fmadd_ps(w, v0, a[i][0]);
            a[i][1] = _mm256_fmadd_ps(w, v1, a[i][1]);
        }
    }
    for (int i = 0; i < QB; i++) {
        _mm256_storeu_ps(acc + (size_t)i * D + d, a[i][0]);
        _mm256_storeu_ps(acc + (size_t)i * D + d + 8, a[i][1]);
    }
}

/* Scores of two queries (rows q0, q1) against four keys: 8 accumulators, 6 loads per 8 FMAs. */
static inline void scores_2x4(const float *q0, const float *q1, const float *kc, int D, float *s0, float *s1) {
    __m256 a[8];
    for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
    const float *k0 = kc, *k1 = kc + D, *k2 = kc + 2 * D, *k3 = kc + 3 * D;
    for (int d = 0; d < D; d += 8) {
        __m256 x0 = _mm256_loadu_ps(q0 + d), x1 = _mm256_loadu_ps(q1 + d);
        __m256 y0 = _mm256_loadu_ps(k0 + d), y1 = _mm256_loadu_ps(k1 + d);
        __m256 y2 = _mm256_loadu_ps(k2 + d), y3 = _mm256_loadu_ps(k3 + d);
        a[0] = _mm256_fmadd_ps(x0, y0, a[0]);
        a[1] = _mm256_fmadd_ps(x0, y1, a[1]);
        a[2] = _mm256_fmadd_ps(x0, y2, a[2]);
        a[3] = _mm256_fmadd_ps(x0, y3, a[3]);
        a[4] = _mm256_fmadd_ps(x1, y0, a[4]);
        a[5] = _mm256_fmadd_ps(x1, y1, a[5]);
        a[6] = _mm256_fmadd_ps(x1, y2, a[6]);
        a[7] = _mm256_fmadd_ps(x1, y3, a[7]);
    }
    __m256 r = reduce8(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
    _mm_storeu_ps(s0, _mm256_castps256_ps128(r));
    _mm_storeu_ps(s1, _mm256_extractf128_ps(r, 1));
}

/* bf16 K/V read in place, without conversion buffers. 16 packed bf16 values (one 256-bit
 * load) give their even-indexed elements as fp32 by a left shift and the odd-indexed ones by
 * a mask ("eo order": per 16 lanes, 8 even then 8 odd). Queries and accumulators are kept in
 * eo order too, so dot products and value sums need no shuffles; the result is put back in
 * natural order at the end. Needs D % 16 == 0. */
static inline void eo_split(const uint16_t *p, __m256 *even, __m256 *odd) {
    __m256i v = _mm256_loadu_si256((const __m256i *)p);
    *even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    *odd = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xffff0000u)));
}

static inline void to_eo(float *row, int D) {
    float tmp[16];
    for (int d = 0; d < D; d += 16) {
        for (int j = 0; j < 8; j++) {
            tmp[j] = row[d + 2 * j];
            tmp[8 + j] = row[d + 2 * j + 1];
        }
        memcpy(row + d, tmp, sizeof(tmp));
    }
}

static inline void from_eo(const float *src, float *dst, int D) {
    for (int d = 0; d < D; d += 16)
        for (int j = 0; j < 8; j++) {
            dst[d + 2 * j] = src[d + j];
            dst[d + 2 * j + 1] = src[d + 8 + j];
        }
}

static inline void scores_2x4_bf16(const float *q0, const float *q1, const uint16_t *kb, int D, float *s0, float *s1) {
    __m256 a[8];
    for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
    for (int d = 0; d < D; d += 16) {
        __m256 x0e = _mm256_loadu_ps(q0 + d), x0o = _mm256_loadu_ps(q0 + d + 8);
        __m256 x1e = _mm256_loadu_ps(q1 + d), x1o = _mm256_loadu_ps(q1 + d + 8);
        for (int i = 0; i < 4; i++) {
            __m256 ke, ko;
            eo_split(kb + (size_t)i * D + d, &ke, &ko);
            a[i] = _mm256_fmadd_ps(x0o, ko, _mm256_fmadd_ps(x0e, ke, a[i]));
            a[4 + i] = _mm256_fmadd_ps(x1o, ko, _mm256_fmadd_ps(x1e, ke, a[4 + i]));
        }
    }
    __m256 r = reduce8(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
    _mm_storeu_ps(s0, _mm256_castps256_ps128(r));
    _mm_storeu_ps(s1, _mm256_extractf128_ps(r, 1));
}

static inline __attribute__((always_inline)) void pv_block_bf16(float *acc, const float *corr, const float *p,
                                                                const uint16_t *vb, int n, int D, int d, int QB) {
    __m256 a[4][2];
    for (int i = 0; i < QB; i++) {
        __m256 c = _mm256_set1_ps(corr[i]);
        a[i][0] = _mm256_mul_ps(_mm256_loadu_ps(acc + (size_t)i * D + d), c);
        a[i][1] = _mm256_mul_ps(_mm256_loadu_ps(acc + (size_t)i * D + d + 8), c);
    }
    const uint16_t *vr = vb + d;
    for (int j = 0; j < n; j++, vr += D) {
        __m256 ve, vo;
        eo_split(vr, &ve, &vo);
        for (int i = 0; i < QB; i++) {
            __m256 w = _mm256_broadcast_ss(p + i * CHUNK + j);
            a[i][0] = _mm256_fmadd_ps(w, ve, a[i][0]);
            a[i][1] = _mm256_fmadd_ps(w, vo, a[i][1]);
        }
    }
    for (int i = 0; i < QB; i++) {
        _mm256_storeu_ps(acc + (size_t)i * D + d, a[i][0]);
        _mm256_storeu_ps(acc + (size_t)i * D + d + 8, a[i][1]);
    }
}

/* AVX-512 loops of attend_group, for head_dim a multiple of 32 on CPUs with AVX-512 (see
 * isa_now). bf16 keys and values are read in place as on AVX2 but per 32 values ("eo32
 * order": per 32 lanes, 16 even then 16 odd), queries and accumulators kept in that order.
 *
 * Scores come in blocks of 16 dot products (4 queries x 4 keys; 2 x 8 and 1 x 16 for the
 * queries left over) of 16-lane accumulators (per lane, d ascending; bf16: the even then the
 * odd element of each pair), finished together by reduce16, whose tree sums each input the
 * same way whatever the other 15 are. Blocks at the end of a chunk repeat its last key,
 * computed and thrown away, so every score goes through the same code. Values: per key, acc = fma(p, v, acc) per element,
 * after acc *= corr, as on AVX2. */

/* [sum(a[0]), ..., sum(a[15])]: per input, lanes l and l + 2 paired, then those pairs
 * paired within each 128-bit block, then blocks 0 + 1 and 2 + 3, then the two halves. */
static inline __attribute__((always_inline)) HW_AVX512 __m512 reduce16(const __m512 *a) {
    __m512 s[8], t[4], w[2];
    for (int p = 0; p < 8; p++)
        s[p] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * p], a[2 * p + 1]), _mm512_unpackhi_ps(a[2 * p], a[2 * p + 1]));
    for (int q = 0; q < 4; q++) {
        __m512d x = _mm512_castps_pd(s[2 * q]), y = _mm512_castps_pd(s[2 * q + 1]);
        t[q] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    for (int r = 0; r < 2; r++)
        w[r] = _mm512_add_ps(_mm512_shuffle_f32x4(t[2 * r], t[2 * r + 1], 0x88),
                             _mm512_shuffle_f32x4(t[2 * r], t[2 * r + 1], 0xdd));
    return _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], 0x88), _mm512_shuffle_f32x4(w[0], w[1], 0xdd));
}

/* Scores of queries q[0..QB-1] (rows of D floats, eo32 order when bf16) against keys
 * k[0..KB-1] (pool rows), QB x KB = 16: lane i * KB + j = q[i] . k[j]. */
static inline __attribute__((always_inline)) HW_AVX512 __m512 scores5_block(const float *const *q,
                                                                            const void *const *k, int D, int bf16,
                                                                            int QB, int KB) {
    __m512 a[16];
    for (int e = 0; e < 16; e++) a[e] = _mm512_setzero_ps();
    if (bf16) {
        const __m512i odd = _mm512_set1_epi32((int)0xffff0000u);
        for (int d = 0; d < D; d += 32) {
            __m512 qe[4], qo[4];
            for (int i = 0; i < QB; i++) {
                qe[i] = _mm512_loadu_ps(q[i] + d);
                qo[i] = _mm512_loadu_ps(q[i] + d + 16);
            }
            for (int j = 0; j < KB; j++) {
                __m512i raw = _mm512_loadu_si512((const uint16_t *)k[j] + d);
                __m512 ke = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
                __m512 ko = _mm512_castsi512_ps(_mm512_and_si512(raw, odd));
                for (int i = 0; i < QB; i++)
                    a[i * KB + j] = _mm512_fmadd_ps(qo[i], ko, _mm512_fmadd_ps(qe[i], ke, a[i * KB + j]));
            }
        }
    } else {
        for (int d = 0; d < D; d += 16) {
            __m512 qv[4];
            for (int i = 0; i < QB; i++) qv[i] = _mm512_loadu_ps(q[i] + d);
            for (int j = 0; j < KB; j++) {
                __m512 kv = _mm512_loadu_ps((const float *)k[j] + d);
                for (int i = 0; i < QB; i++) a[i * KB + j] = _mm512_fmadd_ps(qv[i], kv, a[i * KB + j]);
            }
        }
    }
    return reduce16(a);
}

/* Scores of queries q0 .. q0 + QB - 1 (rows of qr) against n keys from kb, KB keys a block,
 * into rows of sc (stride CHUNK; the last block of a row also fills up to KB - 1 lanes past
 * n, inside the row, which nothing reads). */
static inline __attribute__((always_inline)) HW_AVX512 void scores5_rows(const float *qr, int q0, const void *kb,
                                                                         int n, int D, int bf16, float *sc, int QB,
                                                                         int KB) {
    size_t es = bf16 ? 2 : 4;
    const float *q[4];
    for (int i = 0; i < QB; i++) q[i] = qr + (size_t)(q0 + i) * D;
    for (int j0 = 0; j0 < n; j0 += KB) {
        const void *k[16];
        for (int j = 0; j < KB; j++) k[j] = (const char *)kb + (size_t)(j0 + j < n ? j0 + j : n - 1) * D * es;
        float s[16];
        _mm512_storeu_ps(s, scores5_block(q, k, D, bf16, QB, KB));
        for (int i = 0; i < QB; i++) memcpy(sc + (q0 + i) * CHUNK + j0, s + i * KB, KB * sizeof(float));
    }
}

/* Scores of nq queries (rows of qr) against n keys from kb (pool rows of D elements) into
 * rows of sc: 4 x 4 blocks, then 2 x 8 and 1 x 16 for the queries left, so no query slot is
 * wasted (the block shape never changes a score: reduce16 sums each input alike). */
static HW_AVX512 void scores5_chunk(const float *qr, int nq, const void *kb, int n, int D, int bf16, float *sc) {
    int q0 = 0;
    for (; q0 + 4 <= nq; q0 += 4) scores5_rows(qr, q0, kb, n, D, bf16, sc, 4, 4);
    for (; q0 + 2 <= nq; q0 += 2) scores5_rows(qr, q0, kb, n, D, bf16, sc, 2, 8);
    for (; q0 < nq; q0++) scores5_rows(qr, q0, kb, n, D, bf16, sc, 1, 16);
}

/* acc[i] = acc[i] * corr[i] + sum_j p[i][j] v[j] for QB queries and 16 * DV lanes from d:
 * QB x DV accumulators stay in registers across the chunk's keys. */
static inline __attribute__((always_inline)) HW_AVX512 void pv5_block(float *acc, const float *corr, const float *p,
                                                                      const void *vb, int bf16, int n, int D, int d,
                                                                      int QB, int DV) {
    __m512 a[4][4];
    const __m512i odd = _mm512_set1_epi32((int)0xffff0000u);
    for (int i = 0; i < QB; i++) {
        __m512 c = _mm512_set1_ps(corr[i]);
        for (int v = 0; v < DV; v++) a[i][v] = _mm512_mul_ps(_mm512_loadu_ps(acc + (size_t)i * D + d + 16 * v), c);
    }
    for (int j = 0; j < n; j++) {
        __m512 vv[4];
        if (bf16) {
            const uint16_t *vr = (const uint16_t *)vb + (size_t)j * D + d;
            for (int v = 0; v < DV; v += 2) {
                __m512i raw = _mm512_loadu_si512(vr + 16 * v);
                vv[v] = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
                vv[v + 1] = _mm512_castsi512_ps(_mm512_and_si512(raw, odd));
            }
        } else {
            for (int v = 0; v < DV; v++) vv[v] = _mm512_loadu_ps((const float *)vb + (size_t)j * D + d + 16 * v);
        }
        for (int i = 0; i < QB; i++) {
            __m512 w = _mm512_set1_ps(p[i * CHUNK + j]);
            for (int v = 0; v < DV; v++) a[i][v] = _mm512_fmadd_ps(w, vv[v], a[i][v]);
        }
    }
    for (int i = 0; i < QB; i++)
        for (int v = 0; v < DV; v++) _mm512_storeu_ps(acc + (size_t)i * D + d + 16 * v, a[i][v]);
}

#define PV5_CASE(QB, DV) \
    case QB * 8 + DV: pv5_block(acc, corr + q0, p, vb, bf16, n, D, d, QB, DV); break;

/* The values of a chunk: nq queries (rows of acc, stride D; weights in rows of p, stride
 * CHUNK), n values from vb. */
static HW_AVX512 void pv5_chunk(float *accb, const float *corr, const float *sc, const void *vb, int bf16, int n,
                                int nq, int D) {
    for (int q0 = 0; q0 < nq; q0 += 4) {
        int qb = nq - q0 < 4 ? nq - q0 : 4;
        float *acc = accb + (size_t)q0 * D;
        const float *p = sc + q0 * CHUNK;
        for (int d = 0; d < D; d += 64) {
            int dv = D - d >= 64 ? 4 : 2; /* D % 32 == 0 */
            switch (qb * 8 + dv) {
                PV5_CASE(4, 4) PV5_CASE(3, 4) PV5_CASE(2, 4) PV5_CASE(1, 4)
                PV5_CASE(4, 2) PV5_CASE(3, 2) PV5_CASE(2, 2) PV5_CASE(1, 2)
            }
        }
    }
}

static inline void to_eo32(float *row, int D) {
    float tmp[32];
    for (int d = 0; d < D; d += 32) {
        for (int j = 0; j < 16; j++) {
            tmp[j] = row[d + 2 * j];
            tmp[16 + j] = row[d + 2 * j + 1];
        }
        memcpy(row + d, tmp, sizeof(tmp));
    }
}

static inline void from_eo32(const float *src, float *dst, int D) {
    for (int d = 0; d < D; d += 32)
        for (int j = 0; j < 16; j++) {
            dst[d + 2 * j] = src[d + j];
            dst[d + 2 * j + 1] = src[d + 16 + j];
        }
}

/* A group of units reading the same keys (e.g. the prompt, seen by every row), for one KV
 * head: members x G query vectors against keys [slot, slot + count). Each key and value row
 * is read (and converted from bf16) once for all of them. Writes every member's unnormalised
 * partial result into its own slot of `part`: max score m, weight sum l, weighted values. */
static void attend_group(const float *q, size_t qld, const Unit *list, const UnitKey *members, int nm, int kh,
                         int H, int G, int D, int Hkv, const Rot *rot, const void *kbase, const void *vbase,
                         int64_t head_stride, int bf16, const Compact *pk, int layer, float scale, float *part,
                         size_t per) {
    float qr[MAX_Q * MAX_D], accb[MAX_Q * MAX_D]; /* rows of D floats */
    float sc[MAX_Q * CHUNK];                       /* rows of CHUNK floats */
    float kbuf[CHUNK * MAX_D], vbuf[CHUNK * MAX_D];
    float ms[MAX_Q], ls[MAX_Q], corr[MAX_Q];
    int nq = nm * G;
    int64_t slot0 = members[0].slot;
    int compact = slot0 >= COMPACT_SLOT; /* int8 keys: dequantized per chunk, then as fp32 */
    if (compact) bf16 = 0;
    int eo = bf16 && D % 16 == 0; /* bf16 read in place (see eo_split) */
    int wide = isa_now() >= 2 && D % 32 == 0; /* the AVX-512 loops (scores5_chunk, pv5_chunk; eo32 order) */
    for (int i = 0; i < nm; i++) {
        const Unit *u = &list[members[i].unit];
        const float *c = rot_row(rot->cos, rot->at, u->pair, D), *s = rot_row(rot->sin, rot->at, u->pair, D);
        for (int g = 0; g < G; g++) {
            float *row = qr + (size_t)(i * G + g) * D;
            rope_row(q + (size_t)u->row * qld + ((size_t)kh * G + g) * D, c, s, row, D, scale);
            if (eo && wide)
                to_eo32(row, D);
            else if (eo)
                to_eo(row, D);
        }
    }
    for (int qi = 0; qi < nq; qi++) {
        ms[qi] = -INFINITY;
        ls[qi] = 0.0f;
    }
    memset(accb, 0, sizeof(float) * (size_t)nq * D);
    size_t head = (size_t)kh * head_stride;
    size_t line0 = compact ? ((size_t)layer * Hkv + kh) * (size_t)pk->capacity + (size_t)(slot0 - COMPACT_SLOT) : 0;
    int count = members[0].count;
    int d16 = D / 16 * 16;
    for (int j0 = 0; j0 < count; j0 += CHUNK) {
        int n = count - j0 < CHUNK ? count - j0 : CHUNK;
        size_t at = head + (size_t)(slot0 + j0) * D;
        const uint16_t *kb16 = (const uint16_t *)kbase + at, *vb16 = (const uint16_t *)vbase + at;
        const float *kc, *vc;
        if (compact) {
            size_t line = line0 + (size_t)j0;
            kc = rows_q8(pk->k + line * D, pk->ks + line, n, D, kbuf);
            vc = rows_q8(pk->v + line * D, pk->vs + line, n, D, vbuf);
        } else {
            kc = eo ? NULL : rows_f32(kbase, at, n, D, bf16, kbuf);
            vc = eo ? NULL : rows_f32(vbase, at, n, D, bf16, vbuf);
        }
        /* scores: two queries x four keys at a time (AVX-512: four x four) */
        if (wide)
            scores5_chunk(qr, nq, eo ? (const void *)kb16 : (const void *)kc, n, D, bf16, sc);
        else
        for (int qi = 0; qi < nq; qi += 2) {
            int q1i = qi + 1 < nq ? qi + 1 : qi;
            const float *q0 = qr + (size_t)qi * D, *q1 = qr + (size_t)q1i * D;
            float *s0 = sc + qi * CHUNK, *s1 = sc + q1i * CHUNK;
            int j = 0;
            if (eo) {
                for (; j + 4 <= n; j += 4) scores_2x4_bf16(q0, q1, kb16 + (size_t)j * D, D, s0 + j, s1 + j);
                for (; j < n; j++) { /* q is in eo order: score against the key in eo order */
                    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
                    for (int d = 0; d < D; d += 16) {
                        __m256 ke, ko;
                        eo_split(kb16 + (size_t)j * D + d, &ke, &ko);
                        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + d + 8), ko, _mm256_fmadd_ps(_mm256_loadu_ps(q0 + d), ke, a0));
                        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q1 + d + 8), ko, _mm256_fmadd_ps(_mm256_loadu_ps(q1 + d), ke, a1));
                    }
                    s0[j] = hsum8(a0);
                    s1[j] = hsum8(a1);
                }
                continue;
            }
            if (D % 8 == 0)
                for (; j + 4 <= n; j += 4) scores_2x4(q0, q1, kc + (size_t)j * D, D, s0 + j, s1 + j);
            for (; j < n; j++) {
                float d0 = 0.0f, d1 = 0.0f;
                for (int d = 0; d < D; d++) {
                    d0 += q0[d] * kc[(size_t)j * D + d];
                    d1 += q1[d] * kc[(size_t)j * D + d];
                }
                s0[j] = d0;
                s1[j] = d1;
            }
        }
        /* online softmax: new running max; weights into sc; corr rescales what was accumulated */
        for (int qi = 0; qi < nq; qi++) {
            float *row = sc + qi * CHUNK;
            float old = ms[qi];
            int j = 0;
            __m256 vm = _mm256_set1_ps(-INFINITY);
            for (; j + 8 <= n; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(row + j));
            float lanes[8], mx = old;
            _mm256_storeu_ps(lanes, vm);
            for (int i = 0; i < 8; i++) mx = lanes[i] > mx ? lanes[i] : mx;
            for (; j < n; j++) mx = row[j] > mx ? row[j] : mx;
            corr[qi] = old == -INFINITY ? 0.0f : expf(old - mx);
            ms[qi] = mx;
            __m256 vsum = _mm256_setzero_ps(), vmx = _mm256_set1_ps(mx);
            j = 0;
            for (; j + 8 <= n; j += 8) {
                __m256 e = exp8_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(row + j), vmx));
                _mm256_storeu_ps(row + j, e);
                vsum = _mm256_add_ps(vsum, e);
            }
            float sum = hsum8(vsum);
            for (; j < n; j++) {
                row[j] = expf(row[j] - mx);
                sum += row[j];
            }
            ls[qi] = ls[qi] * corr[qi] + sum;
        }
        /* values: up to four queries x sixteen lanes per register block (AVX-512: 64 lanes) */
        if (wide)
            pv5_chunk(accb, corr, sc, eo ? (const void *)vb16 : (const void *)vc, bf16, n, nq, D);
        else
        for (int q0 = 0; q0 < nq; q0 += 4) {
            int qb = nq - q0 < 4 ? nq - q0 : 4;
            float *acc = accb + (size_t)q0 * D;
            const float *pw = sc + q0 * CHUNK;
            if (eo) {
                for (int d = 0; d < D; d += 16) {
                    switch (qb) {
                    case 4: pv_block_bf16(acc, corr + q0, pw, vb16, n, D, d, 4); break;
                    case 3: pv_block_bf16(acc, corr + q0, pw, vb16, n, D, d, 3); break;
                    case 2: pv_block_bf16(acc, corr + q0, pw, vb16, n, D, d, 2); break;
                    default: pv_block_bf16(acc, corr + q0, pw, vb16, n, D, d, 1); break;
                    }
                }
                continue;
            }
            for (int d = 0; d < d16; d += 16) {
                switch (qb) {
                case 4: pv_block(acc, corr + q0, pw, vc, n, D, d, 4); break;
                case 3: pv_block(acc, corr + q0, pw, vc, n, D, d, 3); break;
                case 2: pv_block(acc, corr + q0, pw, vc, n, D, d, 2); break;
                default: pv_block(acc, corr + q0, pw, vc, n, D, d, 1); break;
                }
            }
            for (int i = 0; i < qb; i++)
                for (int d = d16; d < D; d++) {
                    float a = acc[(size_t)i * D + d] * corr[q0 + i];
                    for (int j = 0; j < n; j++) a += pw[i * CHUNK + j] * vc[(size_t)j * D + d];
                    acc[(size_t)i * D + d] = a;
                }
        }
    }
    for (int i = 0; i < nm; i++) {
        float *base = part + per * ((size_t)members[i].unit * Hkv + kh);
        for (int g = 0; g < G; g++) {
            int qi = i * G + g;
            base[g] = ms[qi];
            base[G + g] = ls[qi];
            if (eo && wide)
                from_eo32(accb + (size_t)qi * D, base + 2 * G + (size_t)g * D, D);
            else if (eo)
                from_eo(accb + (size_t)qi * D, base + 2 * G + (size_t)g * D, D);
            else
                memcpy(base + 2 * G + (size_t)g * D, accb + (size_t)qi * D, sizeof(float) * D);
        }
    }
}

/* ------------------------------------------------------------------ AMX attention (bf16 stores)
 *
 * Where the linears run on AMX tiles (isa 4), a work item over a bf16 pool with head_dim a
 * multiple of 32 (or over its store's int8 part, see tile_group) runs on the tile unit too
 * (tile_attends); on AVX-512 BF16 without tiles (isa 3) the same rounding runs on VDPBF16PS
 * (tile_group's dot path, below the tiles' description): with many rows per pass (batched
 * runs, large teams) attention is most of what the linears left, and the FMA loops above
 * reach a fifth of the FMA peak on it. A work item is one unit of keys (at most UNIT_KEYS)
 * against its members' G queries each (nq <= AMX_MAX_Q = 3 tiles of 16 queries):
 *
 * - scores, taken transposed as in amx_linear: S^T [keys, queries] = K q^T, the A operand 16
 *   keys x 32 dims loaded straight from the pool (the unit's last partial 16 keys from a
 *   zero-padded copy, so nothing past the block is read), the B operand the rotated, scaled
 *   queries rounded to bf16 and pair-interleaved once per item;
 * - softmax over the whole unit at once (it fits: UNIT_KEYS x 32 scores): per query its max
 *   m over the unit's keys, p = exp(s - m) rounded to bf16, l = sum of the rounded p in key
 *   order. With queries in the lanes of S^T's rows these are plain vertical operations;
 * - values: acc [queries, D] = P V, the A operand P (rounded, keys pair-interleaved per query
 *   via one 16 x 16 word transpose per 32 keys), the B operand V pair-interleaved per 32 keys
 *   (keys past the unit are zeros, with p = 0), accumulated over the unit's 32-key steps in
 *   tiles; (m, l, acc) go to the same partial results attend_group writes, merged alike.
 *
 * What it changes: queries and weights are read as bf16 (as the AMX linear reads x), so rows
 * differ from the FMA path's in the last bits; keys and values are the pool's bf16 exactly,
 * and every sum is fp32. Batch invariance: each score and each value sum is one tile cell
 * accumulated over its own keys in a fixed order (dims in steps of 32, then keys in steps of
 * 32, ascending) whatever other queries share the tile; m and l are per lane; nothing
 * depends on the item's other members, the thread or where the block sits in the pool. */
#define AMX_Q 16 /* queries per tile */
/* queries per work item on the tile unit: 3 tiles, so 16 rows of a 3-query GQA group (a
 * 16-worker team, or 8 runs x 2 workers) score a shared block in one item; with 2 tiles
 * they took two, each paying the item's fixed costs (value tiles, query packing). */
#define AMX_MAX_Q (3 * AMX_Q)

/* exp(x) for x <= 0, 16 lanes: exp8_nonpositive's steps, lane for lane the same results, on
 * 512-bit registers (running exp8_nonpositive on the two halves made the kernel ~10 % slower).
 * The last step, p * 2^n, is one VSCALEFPS instead of building 2^n's bits and multiplying:
 * both are exact here (x >= -87, so p * 2^n is a normal float), so the same bits. */
static inline __attribute__((always_inline)) HW_AVX512BF16 __m512 exp16_nonpositive(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.0f);
    __mmask16 underflow = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_max_ps(x, lo);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_scalef_ps((__mmask16)~underflow, p, n);
}

/* Work buffers of tile_group, sized for head_dim up to MAX_D (the dot path uses them in its
 * own layout: qt queries as rows, st scores query-major, pt weight pairs per query). */
typedef struct {
    float *qf;      /* each query's P V row [AMX_MAX_Q, D] fp32 (the tiles'; the dot path writes its sums in place) */
    float *st;      /* scores, key-major [UNIT_KEYS + 16][AMX_MAX_Q] (a segment's last tile may
                       spill 15 rows past the unit) */
    uint16_t *qt;   /* query B tiles [3][D/32][16 rows x 32] */
    uint16_t *pt;   /* weight A tiles [3][UNIT_KEYS/32][16 x 32] */
    uint16_t *vt;   /* value B tiles [UNIT_KEYS/32][D/16][16 x 32] */
    uint16_t *rows; /* keys as bf16 rows [UNIT_KEYS][D]: an int8 unit's keys, then its values,
                       widened; a bf16 unit's last partial 16 keys, zero padded */
} AmxWork;

/* This thread's work buffers: allocated on its first AMX attention call and kept, since the
 * OpenMP threads live as long as the process, so the call of every layer and pass allocates
 * nothing (~420 KB per thread). NULL when the allocation fails. */
static const AmxWork *amx_work(void) {
    static __thread AmxWork w;
    static __thread char *mem;
    if (!mem) {
        size_t f = sizeof(float), h = sizeof(uint16_t); /* every part a multiple of 64 bytes */
        size_t parts[6] = {f * AMX_MAX_Q * MAX_D, f * (UNIT_KEYS + 16) * AMX_MAX_Q, h * 3 * MAX_D * 16,
                           h * 3 * UNIT_KEYS * 16, h * UNIT_KEYS * MAX_D, h * UNIT_KEYS * MAX_D};
        size_t total = 0;
        for (int i = 0; i < 6; i++) total += parts[i];
        if (!(mem = (char *)aligned_alloc(64, total))) return NULL;
        char *at = mem;
        w.qf = (float *)at;
        w.st = (float *)(at += parts[0]);
        w.qt = (uint16_t *)(at += parts[1]);
        w.pt = (uint16_t *)(at += parts[2]);
        w.vt = (uint16_t *)(at += parts[3]);
        w.rows = (uint16_t *)(at += parts[4]);
    }
    return &w;
}

/* n int8 rows of D values (D % 32 == 0) as bf16 rows, exactly (|q| <= 127 has 7 bits), and
 * zero rows up to the next multiple of 16, so whole 16-key tiles can be loaded. */
static inline HW_AVX512BF16 void amx_int8_rows(const int8_t *src, int n, int D, uint16_t *dst) {
    int padded = (n + 15) / 16 * 16;
    for (int j = 0; j < n && j < 32; j++) _mm_prefetch((const char *)(src + (size_t)j * D), _MM_HINT_T0);
    for (int j = 0; j < padded; j++) {
        if (j + 32 < n) _mm_prefetch((const char *)(src + (size_t)(j + 32) * D), _MM_HINT_T0);
        for (int d = 0; d < D; d += 32) {
            __m512i out = _mm512_setzero_si512();
            if (j < n) {
                __m256i b = _mm256_loadu_si256((const __m256i *)(src + (size_t)j * D + d));
                __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(b)));
                __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(b, 1)));
                out = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
            }
            _mm512_storeu_si512(dst + (size_t)j * D + d, out);
        }
    }
}

/* r[0..15], 16 rows of 16 words, transposed in registers and stored: out[c * 16 + i] =
 * word c of r[i] (pairs of rows interleaved per 128-bit lane, then pairs of pairs, then the
 * lanes gathered in two shuffles). */
static inline __attribute__((always_inline)) HW_AVX512BF16 void amx_transpose_store(const __m512i *r, uint32_t *out) {
    __m512i t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) { /* u[4i + k], lane L: word 4L + k of rows 4i .. 4i + 3 */
        u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int k = 0; k < 4; k++) {
        __m512i v0 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0x88), v1 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0xdd);
        __m512i v2 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0x88), v3 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0xdd);
        _mm512_storeu_si512(out + (size_t)k * 16, _mm512_shuffle_i32x4(v0, v2, 0x88));
        _mm512_storeu_si512(out + (size_t)(4 + k) * 16, _mm512_shuffle_i32x4(v1, v3, 0x88));
        _mm512_storeu_si512(out + (size_t)(8 + k) * 16, _mm512_shuffle_i32x4(v0, v2, 0xdd));
        _mm512_storeu_si512(out + (size_t)(12 + k) * 16, _mm512_shuffle_i32x4(v1, v3, 0xdd));
    }
}

/* Ask for rows [first, first + n) of a head's block (row_bytes each) to be fetched into
 * cache: a work item reads its keys and values once, from memory when many runs each have
 * their own prompt, so they are requested a few tiles before they are needed. */
static inline void amx_prefetch(const void *rows, int first, int n, size_t row_bytes) {
    const char *p = (const char *)rows + (size_t)first * row_bytes, *end = p + (size_t)n * row_bytes;
    for (; p < end; p += 64) _mm_prefetch(p, _MM_HINT_T0);
}

#define AMX_AHEAD 64 /* keys requested ahead of the score tiles */

/* Dims d0 .. d0 + 15 of rope_row(x, c, s) (D % 32 == 0, so they lie in one half): the same
 * operations in the same order, so the same bits, without the row going through memory. */
static inline __attribute__((always_inline)) HW_AVX512BF16 __m512 amx_rope16(const float *x, const float *c,
                                                                             const float *s, int d0, int D,
                                                                             float scale) {
    int half = D / 2;
    __m512 a = _mm512_mul_ps(_mm512_loadu_ps(x + d0), _mm512_loadu_ps(c + d0));
    if (d0 < half)
        a = _mm512_sub_ps(a, _mm512_mul_ps(_mm512_loadu_ps(x + d0 + half), _mm512_loadu_ps(s + d0)));
    else
        a = _mm512_add_ps(a, _mm512_mul_ps(_mm512_loadu_ps(x + d0 - half), _mm512_loadu_ps(s + d0)));
    return _mm512_mul_ps(a, _mm512_set1_ps(scale));
}

/* l + the 16 bf16 of b's low half (widened exactly), then + the 16 of its high half: the
 * running sum of rounded softmax weights on the tile unit (the dot path sums them with a dot
 * product against ones instead, dot_softmax). */
static inline __attribute__((always_inline)) HW_AVX512BF16 __m512 add_bf16_halves(__m512 l, __m512i b) {
    __m512 lo = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(b)), 16));
    __m512 hi = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(b, 1)), 16));
    return _mm512_add_ps(_mm512_add_ps(l, lo), hi);
}

/* Dims d0 .. d0 + 31 of a rotated, scaled query (amx_rope16) as 32 bf16 in natural order,
 * nearest even: what both the tiles and the dot path score with. */
static inline __attribute__((always_inline)) HW_AVX512BF16 __m512i tile_q32(const float *x, const float *c,
                                                                           const float *s, int d0, int D,
                                                                           float scale) {
    return (__m512i)_mm512_cvtne2ps_pbh(amx_rope16(x, c, s, d0 + 16, D, scale), amx_rope16(x, c, s, d0, D, scale));
}

/* Dims d .. d + 15 (d % 16 == 0) of x * c + rotate_half(x) * s, rotate_half(x) = [-x[h:],
 * x[:h]] (h = D / 2), with c and s those dims' cos and sin: in the first half x * c - x[d + h]
 * * s, which rounds as adding the negated product (negation is exact), without negating. */
static inline __attribute__((always_inline)) HW_AVX512BF16 __m512 dot_rope16(const float *x, int d, int D, __m512 c,
                                                                             __m512 s) {
    __m512 a = _mm512_mul_ps(_mm512_loadu_ps(x + d), c);
    return d < D / 2 ? _mm512_sub_ps(a, _mm512_mul_ps(_mm512_loadu_ps(x + d + D / 2), s))
                     : _mm512_add_ps(a, _mm512_mul_ps(_mm512_loadu_ps(x + d - D / 2), s));
}

/* The G queries qx[q0 .. q0 + G - 1] of a member rotated for one segment's pair (c, s) and
 * scaled: (x * c + rotate_half(x) * s) * scale per dim, each step rounded (rope_row's values:
 * x * c - x' * s is the same sum), as bf16 rows of D in qt, nearest even; c and s are loaded
 * once for the member's G queries (a 16-worker row's short blocks are 33 segments, each
 * rotated for every member). */
static inline HW_AVX512BF16 void dot_rotate(const float *const *qx, int q0, int G, const float *c, const float *s,
                                            int D, float scale, uint16_t *qt) {
    __m512 sc = _mm512_set1_ps(scale);
    for (int d = 0; d < D; d += 32) {
        __m512 c0 = _mm512_loadu_ps(c + d), c1 = _mm512_loadu_ps(c + d + 16);
        __m512 s0 = _mm512_loadu_ps(s + d), s1 = _mm512_loadu_ps(s + d + 16);
        for (int g = 0; g < G; g++) {
            const float *x = qx[q0 + g];
            __m512 r0 = dot_rope16(x, d, D, c0, s0), r1 = dot_rope16(x, d + 16, D, c1, s1);
            r0 = _mm512_mul_ps(r0, sc);
            r1 = _mm512_mul_ps(r1, sc);
            _mm512_storeu_si512(qt + (size_t)(q0 + g) * D + d, (__m512i)_mm512_cvtne2ps_pbh(r1, r0));
        }
    }
}

/* The dot path (isa 3, AVX-512 BF16 without tiles): tile_group's rounding with VDPBF16PS,
 * laid out for few queries as well as many: scores and weights query-major, so the softmax
 * runs along keys (16 a vector) and spends nothing on empty query lanes, as the tiles'
 * key-major columns would with the 6 queries of a 2-worker row of a 3-query GQA group.
 * Scores per query row: DOT_ROW floats (a unit's keys, and a block's spill). */
#define DOT_ROW (UNIT_KEYS + 16)
#define LANE_KEYS 16 /* a query's segment of at least this many keys is scored on key tiles */
/* ... when its row's view has at least this many blocks: a team of 4 or more workers in the
 * combined layout (each teammate adds its step and a marker), so at least 12 queries read
 * each key of the team's prompt. Making a key tile costs about as much as scoring it for 6
 * queries, and its extra pass over the keys does not overlap their reads from memory: for
 * 8 x 2 runs with prompts of their own (6 queries a key) key tiles measured 7-8 % slower
 * than dot_scores, for a 16-worker team 7-19 % faster (bench/attention_views.py, SmolLM2's
 * head_dim 64, 1 and 2 threads). */
#define LANE_MIN_PAIRS 10
#define ROW_VALUES_AHEAD 32 /* a row-scored segment's values are fetched ahead below this many keys */

/*
 * Scores of queries qi[q0] .. qi[q0 + QB - 1] (bf16 rows of D in qb) against the n keys at
 * k0 (bf16 rows of D), KB keys a block, QB x KB = 16 (a block past n repeats key n - 1,
 * scored and dropped): lane i * KB + j of a block = VDPBF16PS steps over dims 0, 32, .. < D,
 * ascending, then reduce16's tree, so the block shape never changes a score. Stored
 * query-major, rows of DOT_ROW (the last block of a row may fill up to KB - 1 floats past n,
 * which the next segment overwrites or nothing reads).
 */
static inline __attribute__((always_inline)) HW_AVX512BF16 void dot_scores_rows(const uint16_t *qb, const int *qi,
                                                                                int q0, const uint16_t *k0, int n,
                                                                                int D, float *st, int QB, int KB) {
    const uint16_t *qr[4];
    for (int i = 0; i < QB; i++) qr[i] = qb + (size_t)qi[q0 + i] * D;
    for (int j0 = 0; j0 < n; j0 += KB) {
        const uint16_t *kr[16];
        for (int j = 0; j < KB; j++) kr[j] = k0 + (size_t)(j0 + j < n ? j0 + j : n - 1) * D;
        __m512 a[16];
        for (int e = 0; e < 16; e++) a[e] = _mm512_setzero_ps();
        for (int d = 0; d < D; d += 32) {
            __m512i qv[4];
            for (int i = 0; i < QB; i++) qv[i] = _mm512_loadu_si512(qr[i] + d);
            for (int j = 0; j < KB; j++) {
                __m512i kv = _mm512_loadu_si512(kr[j] + d);
                for (int i = 0; i < QB; i++)
                    a[i * KB + j] = _mm512_dpbf16_ps(a[i * KB + j], (__m512bh)qv[i], (__m512bh)kv);
            }
        }
        float sc[16];
        _mm512_storeu_ps(sc, reduce16(a));
        for (int i = 0; i < QB; i++) memcpy(st + (size_t)qi[q0 + i] * DOT_ROW + j0, sc + i * KB, KB * sizeof(float));
    }
}

/* Scores of the nq queries listed in qi against a segment's n keys: 4 x 4 blocks, then
 * 2 x 8 and 1 x 16. */
static HW_AVX512BF16 void dot_scores(const uint16_t *qb, const int *qi, int nq, const uint16_t *k0, int n, int D,
                                     float *st) {
    int q0 = 0;
    for (; q0 + 4 <= nq; q0 += 4) dot_scores_rows(qb, qi, q0, k0, n, D, st, 4, 4);
    for (; q0 + 2 <= nq; q0 += 2) dot_scores_rows(qb, qi, q0, k0, n, D, st, 2, 8);
    for (; q0 < nq; q0++) dot_scores_rows(qb, qi, q0, k0, n, D, st, 1, 16);
}

/* Keys j0 .. j1 - 1 (j0 a multiple of 16) of a segment's n keys (bf16 rows of D at k0) as
 * key tiles for lane_scores: per 16 keys, D / 2 rows of 16 lanes, lane l of row i = dims 2i,
 * 2i + 1 of the tile's key l (a 32-bit pair), zeros past n; keys j0 .. j0 + 15 at kt, the
 * next 16 at kt + 8 * D words, and so on.
 * The keys usually come from memory (a work item is the only reader of its keys in a layer):
 * they are requested KEYS_AHEAD keys ahead, so those of the next tiles arrive while these
 * are scored, and the values of these keys (v0, rows of D; NULL: none) into L2 for after the
 * softmax. */
#define KEYS_AHEAD 128
static HW_AVX512BF16 void key_tiles(const uint16_t *k0, const uint16_t *v0, int j0, int j1, int n, int D,
                                    uint16_t *kt) {
    int pairs = D / 2, first = j0;
    size_t row_bytes = (size_t)D * 2;
    if (j0 == 0) amx_prefetch(k0, 0, n < KEYS_AHEAD ? n : KEYS_AHEAD, row_bytes);
    for (; j0 < j1; j0 += 16) {
        int ahead = j0 + KEYS_AHEAD;
        if (ahead < n) amx_prefetch(k0, ahead, n - ahead < 16 ? n - ahead : 16, row_bytes);
        if (v0) {
            const char *p = (const char *)(v0 + (size_t)j0 * D), *end = p + (size_t)(n - j0 < 16 ? n - j0 : 16) * row_bytes;
            for (; p < end; p += 64) _mm_prefetch(p, _MM_HINT_T1);
        }
        uint32_t *tile = (uint32_t *)kt + (size_t)(j0 - first) * pairs;
        for (int c0 = 0; c0 < pairs; c0 += 16) {
            __m512i r[16];
            for (int l = 0; l < 16; l++)
                r[l] = j0 + l < n ? _mm512_loadu_si512(k0 + (size_t)(j0 + l) * D + 2 * c0) : _mm512_setzero_si512();
            amx_transpose_store(r, tile + (size_t)c0 * 16);
        }
    }
}

/* Scores of queries qi[q0 ..] (QB of them) against TB key tiles at kt (a segment's tiles t0 ..
 * t0 + TB - 1, for where they go in st): a lane
 * per key, acc = VDPBF16PS(acc, the query's dims 2i, 2i + 1 broadcast, the keys' pair row i)
 * for i = 0 .. D / 2 - 1 in order, nothing summed across lanes: a key's score is the same
 * bits whichever tile, block or segment length it comes in. */
static inline __attribute__((always_inline)) HW_AVX512BF16 void lane_scores_block(const uint16_t *qb, const int *qi,
                                                                                  int q0, const uint16_t *kt, int t0,
                                                                                  int D, float *st, int QB, int TB) {
    int pairs = D / 2;
    const uint32_t *qr[4];
    const uint32_t *kr = (const uint32_t *)kt; /* tile t0 */
    __m512 a[4][6];
    for (int i = 0; i < QB; i++) {
        qr[i] = (const uint32_t *)(qb + (size_t)qi[q0 + i] * D);
        for (int t = 0; t < TB; t++) a[i][t] = _mm512_setzero_ps();
    }
    for (int c = 0; c < pairs; c++) {
        __m512i kv[6];
        for (int t = 0; t < TB; t++) kv[t] = _mm512_loadu_si512(kr + ((size_t)t * pairs + c) * 16);
        for (int i = 0; i < QB; i++) {
            __m512i qv = _mm512_set1_epi32((int)qr[i][c]);
            for (int t = 0; t < TB; t++) a[i][t] = _mm512_dpbf16_ps(a[i][t], (__m512bh)qv, (__m512bh)kv[t]);
        }
    }
    for (int i = 0; i < QB; i++)
        for (int t = 0; t < TB; t++) _mm512_storeu_ps(st + (size_t)qi[q0 + i] * DOT_ROW + (t0 + t) * 16, a[i][t]);
}

#define LANE_SCORES(QB, TB) \
    case QB * 8 + TB: lane_scores_block(qb, qi, q0, kt, t0, D, st, QB, TB); break;

#define LANE_TILES 6 /* key tiles made and scored at a time (12 KB at head_dim 64: they stay in L1) */

/* Scores of the nq queries listed in qi against a segment's n keys (bf16 rows of D at k0,
 * values at v0 or NULL for key_tiles' prefetch): LANE_TILES key tiles at a time made
 * (key_tiles, into kt) and scored by every query, in blocks of 4 queries; the last tile's
 * lanes past the keys score 0 and spill up to 15 floats past n, as dot_scores' blocks do. */
static HW_AVX512BF16 void lane_scores(const uint16_t *qb, const int *qi, int nq, const uint16_t *k0,
                                      const uint16_t *v0, int n, int D, uint16_t *kt, float *st) {
    int tiles = (n + 15) / 16;
    for (int t0 = 0; t0 < tiles; t0 += LANE_TILES) {
        int TB = tiles - t0 < LANE_TILES ? tiles - t0 : LANE_TILES;
        key_tiles(k0, v0, t0 * 16, (t0 + TB) * 16 < n ? (t0 + TB) * 16 : n, n, D, kt);
        for (int q0 = 0; q0 < nq; q0 += 4) {
            int QB = nq - q0 < 4 ? nq - q0 : 4;
            switch (QB * 8 + TB) {
                LANE_SCORES(4, 6) LANE_SCORES(4, 5) LANE_SCORES(4, 4) LANE_SCORES(4, 3) LANE_SCORES(4, 2)
                LANE_SCORES(4, 1) LANE_SCORES(3, 6) LANE_SCORES(3, 5) LANE_SCORES(3, 4) LANE_SCORES(3, 3)
                LANE_SCORES(3, 2) LANE_SCORES(3, 1) LANE_SCORES(2, 6) LANE_SCORES(2, 5) LANE_SCORES(2, 4)
                LANE_SCORES(2, 3) LANE_SCORES(2, 2) LANE_SCORES(2, 1) LANE_SCORES(1, 6) LANE_SCORES(1, 5)
                LANE_SCORES(1, 4) LANE_SCORES(1, 3) LANE_SCORES(1, 2) LANE_SCORES(1, 1)
            }
        }
    }
}

/* Values of keys j and j + 1, dims d .. d + 31, interleaved per dim (a row of the tiles' B
 * operand): *lo dims d .. d + 15, *hi d + 16 .. d + 31; zeros for keys past count. */
static inline __attribute__((always_inline)) HW_AVX512BF16 void value_pairs(const uint16_t *const *vrow, int count,
                                                                            int j, int d, __m512i *lo, __m512i *hi) {
    const __m512i lo_idx = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38,
                                            6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    const __m512i hi_idx = _mm512_set_epi16(63, 31, 62, 30, 61, 29, 60, 28, 59, 27, 58, 26, 57, 25, 56, 24, 55, 23,
                                            54, 22, 53, 21, 52, 20, 51, 19, 50, 18, 49, 17, 48, 16);
    __m512i va = j < count ? _mm512_loadu_si512(vrow[j] + d) : _mm512_setzero_si512();
    __m512i vb = j + 1 < count ? _mm512_loadu_si512(vrow[j + 1] + d) : _mm512_setzero_si512();
    *lo = _mm512_permutex2var_epi16(va, lo_idx, vb);
    *hi = _mm512_permutex2var_epi16(va, hi_idx, vb);
}

/* qf rows q0 .. q0 + QB - 1, dims 16 * dt0 .. 16 * (dt0 + ND) - 1: per 16-dim block, the
 * unit's key pairs in order (steps s, pairs t), acc = VDPBF16PS(acc, the query's weight pair
 * (pp, as dot_softmax packed it: pair s * 16 + t of query qi at qi * UNIT_KEYS / 2 + s * 16
 * + t), the values' pair row): the rows of vt, or with vt NULL the same rows made from the
 * value rows on the way (value_pairs), which costs less than writing and reading vt when
 * one or two blocks of queries use them. Either way the same operands in the same order. */
static inline __attribute__((always_inline)) HW_AVX512BF16 void dot_pv_block(const uint32_t *pp, const uint16_t *vt,
                                                                             const uint16_t *const *vrow, int count,
                                                                             int steps, int DT, int q0, int dt0,
                                                                             float *const *out, int QB, int ND) {
    __m512 a[4][4];
    const uint32_t *pw[4];
    for (int i = 0; i < QB; i++) {
        int qi = q0 + i;
        pw[i] = pp + (size_t)qi * (UNIT_KEYS / 2);
        for (int c = 0; c < ND; c++) a[i][c] = _mm512_setzero_ps();
    }
    for (int s = 0; s < steps; s++)
        for (int t = 0; t < 16; t++) {
            __m512i v[4];
            if (vt) {
                const uint16_t *row = vt + ((size_t)s * DT + dt0) * 512 + t * 32;
                for (int c = 0; c < ND; c++) v[c] = _mm512_loadu_si512(row + (size_t)c * 512);
            } else {
                for (int c = 0; c < ND; c += 2)
                    value_pairs(vrow, count, s * 32 + 2 * t, (dt0 + c) * 16, &v[c], &v[c + 1]);
            }
            for (int i = 0; i < QB; i++) {
                __m512i wp = _mm512_set1_epi32((int)pw[i][s * 16 + t]);
                for (int c = 0; c < ND; c++) a[i][c] = _mm512_dpbf16_ps(a[i][c], (__m512bh)wp, (__m512bh)v[c]);
            }
        }
    for (int i = 0; i < QB; i++)
        for (int c = 0; c < ND; c++) _mm512_storeu_ps(out[q0 + i] + (size_t)(dt0 + c) * 16, a[i][c]);
}

/* The softmax of the dot path over a unit's scores (query-major rows of st, DOT_ROW each),
 * what the tiles compute, per query along its keys: the scores of int8 keys times each key's
 * scale; m = the max over the keys the query sees (valid[qi]; an earlier member's lanes past
 * its own keys are left out, as masked there); e = exp(s - m) rounded to bf16 (nearest even),
 * l = the sum of the rounded e (VDPBF16PS against bf16 ones: lane i adds keys 2i and 2i + 1
 * of each 32, 16 lanes, then reduced: an order of its own, fixed per query; one instruction
 * where widening the halves took seven); the weights for P V as bf16 pairs of keys (2t,
 * 2t + 1) per query, pp[qi * UNIT_KEYS / 2 + t], zeros past its keys up to steps * 32 (int8
 * values: e times each value's scale before the rounding, as there). */
static HW_AVX512BF16 void dot_softmax(float *st, int nq, const int *valid, int steps, const float *kscale,
                                      const float *vscale, float *ms, float *ls, uint32_t *pp) {
    for (int qi = 0; qi < nq; qi++) {
        float *row = st + (size_t)qi * DOT_ROW;
        int n = valid[qi];
        if (kscale)
            for (int j = 0; j < n; j++) row[j] *= kscale[j];
        __m512 mv = _mm512_set1_ps(-INFINITY);
        int j = 0;
        for (; j + 16 <= n; j += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(row + j));
        if (j < n) mv = _mm512_max_ps(mv, _mm512_mask_loadu_ps(mv, (__mmask16)((1u << (n - j)) - 1), row + j));
        float m = _mm512_reduce_max_ps(mv);
        __m512 vm = _mm512_set1_ps(m), l = _mm512_setzero_ps();
        const __m512i ones = _mm512_set1_epi16(0x3f80); /* bf16 1.0: l's lanes sum pairs of keys */
        uint32_t *out = pp + (size_t)qi * (UNIT_KEYS / 2);
        int s = 0;
        if (!vscale) /* whole steps of 32 keys: no masks (the same values as the masked loop) */
            for (; s * 32 + 32 <= n; s++) {
                __m512 e0 = exp16_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row + s * 32), vm));
                __m512 e1 = exp16_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row + s * 32 + 16), vm));
                __m512i b = (__m512i)_mm512_cvtne2ps_pbh(e1, e0);
                l = _mm512_dpbf16_ps(l, (__m512bh)b, (__m512bh)ones);
                _mm512_storeu_si512(out + s * 16, b);
            }
        for (; s < steps; s++) {
            __m512 e[2];
            __mmask16 in[2];
            for (int h = 0; h < 2; h++) {
                int left = n - (s * 32 + h * 16);
                in[h] = left >= 16 ? (__mmask16)0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
                __m512 x = _mm512_maskz_loadu_ps(in[h], row + s * 32 + h * 16);
                e[h] = _mm512_maskz_mov_ps(in[h], exp16_nonpositive(_mm512_sub_ps(x, vm)));
            }
            __m512i b = (__m512i)_mm512_cvtne2ps_pbh(e[1], e[0]); /* keys s * 32 .. + 31, in order */
            l = _mm512_dpbf16_ps(l, (__m512bh)b, (__m512bh)ones);
            if (vscale) { /* weights of int8 values: times each value's scale (zero past the keys) */
                __m512 s0 = _mm512_maskz_loadu_ps(in[0], vscale + s * 32);
                __m512 s1 = _mm512_maskz_loadu_ps(in[1], vscale + s * 32 + 16);
                b = (__m512i)_mm512_cvtne2ps_pbh(_mm512_mul_ps(e[1], s1), _mm512_mul_ps(e[0], s0));
            }
            _mm512_storeu_si512(out + s * 16, b);
        }
        ms[qi] = m;
        ls[qi] = _mm512_reduce_add_ps(l);
    }
}

#define DOT_PV(QB, ND) \
    case QB * 8 + ND: dot_pv_block(pp, vt, vrow, count, steps, DT, q0, dt0, out, QB, ND); break;

/* acc = P V for all nq queries of an item, query qi's D sums to out[qi] (its row of the
 * units' partial results: written there once, not copied): blocks of 4 queries x 4 (or 2)
 * 16-dim blocks; the value pairs from vt (filled by the caller) or, vt NULL, made on the way. */
static HW_AVX512BF16 void dot_pv(const uint32_t *pp, const uint16_t *vt, const uint16_t *const *vrow, int count,
                                 int steps, int DT, int nq, float *const *out) {
    for (int q0 = 0; q0 < nq; q0 += 4) {
        int qb = nq - q0 < 4 ? nq - q0 : 4;
        for (int dt0 = 0; dt0 < DT; dt0 += 4) {
            int nd = DT - dt0 >= 4 ? 4 : 2; /* DT = D / 16 is even */
            switch (qb * 8 + nd) {
                DOT_PV(4, 4) DOT_PV(3, 4) DOT_PV(2, 4) DOT_PV(1, 4)
                DOT_PV(4, 2) DOT_PV(3, 2) DOT_PV(2, 2) DOT_PV(1, 2)
            }
        }
    }
}

/* The tiles' softmax over a unit's scores (key-major rows of st, AMX_MAX_Q lanes each):
 * int8 keys' scales applied, an earlier member's lanes past its keys masked, then per lane
 * the max m, the weights rounded to bf16 (l = their sum in key order) and the weights
 * pair-interleaved per query into pt (the A tiles of P). */
static HW_AMX void amx_softmax(const AmxWork *w, const UnitKey *members, int nm, int G, int nqt, int count,
                               int steps, int compact, const float *kscale, const float *vscale, float *ms,
                               float *ls) {
    if (compact) /* scores of int8 keys times each key's scale */
        for (int j = 0; j < count; j++)
            for (int qt = 0; qt < nqt; qt++) {
                float *row = w->st + (size_t)j * AMX_MAX_Q + qt * AMX_Q;
                _mm512_storeu_ps(row, _mm512_mul_ps(_mm512_loadu_ps(row), _mm512_set1_ps(kscale[j])));
            }
    /* a member whose keys end earlier: its lanes past them out of the softmax (weight 0) */
    for (int i = 0; i < nm - 1; i++)
        for (int j = members[i].count; j < count; j++)
            for (int g = 0; g < G; g++) w->st[(size_t)j * AMX_MAX_Q + i * G + g] = -INFINITY;
    /* softmax over the unit: max per lane, weights rounded to bf16, l = their sum in key order;
     * weights pair-interleaved per query (A tiles of P) */
    const __m512i pair_idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7,
                                              22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (int qt = 0; qt < nqt; qt++) {
        const float *col = w->st + qt * AMX_Q;
        __m512 m = _mm512_set1_ps(-INFINITY), l = _mm512_setzero_ps();
        for (int j = 0; j < count; j++) m = _mm512_max_ps(m, _mm512_loadu_ps(col + (size_t)j * AMX_MAX_Q));
        for (int s = 0; s < steps; s++) {
            __m512i words[16];
            for (int t = 0; t < 16; t++) {
                int j = s * 32 + 2 * t;
                __m512 e0 = j < count ? exp16_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(col + (size_t)j * AMX_MAX_Q), m))
                                      : _mm512_setzero_ps();
                __m512 e1 = j + 1 < count
                                ? exp16_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(col + (size_t)(j + 1) * AMX_MAX_Q), m))
                                : _mm512_setzero_ps();
                __m512i b = (__m512i)_mm512_cvtne2ps_pbh(e1, e0); /* e0's 16 bf16, then e1's */
                l = add_bf16_halves(l, b);
                if (compact) /* the weights the int8 values take: times each value's scale */
                    b = (__m512i)_mm512_cvtne2ps_pbh(_mm512_mul_ps(e1, _mm512_set1_ps(j + 1 < count ? vscale[j + 1] : 0.0f)),
                                                     _mm512_mul_ps(e0, _mm512_set1_ps(j < count ? vscale[j] : 0.0f)));
                words[t] = _mm512_permutexvar_epi16(pair_idx, b);
            }
            amx_transpose_store(words, (uint32_t *)(w->pt + ((size_t)qt * (UNIT_KEYS / 32) + s) * 512));
        }
        _mm512_storeu_ps(ms + qt * AMX_Q, m);
        _mm512_storeu_ps(ls + qt * AMX_Q, l);
    }
}

/* acc = P V on the tiles, four 16-dim tiles at a time over the unit's 32-key steps, into qf
 * (a query per row of D floats). */
static HW_AMX void amx_pv(const AmxWork *w, int nqt, int steps, int DT, int D) {
    for (int qt = 0; qt < nqt; qt++)
        for (int dt0 = 0; dt0 < DT; dt0 += 4) {
            int nd = DT - dt0 < 4 ? DT - dt0 : 4;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int s = 0; s < steps; s++) {
                const uint16_t *vs = w->vt + ((size_t)s * DT + dt0) * 512;
                _tile_loadd(4, w->pt + ((size_t)qt * (UNIT_KEYS / 32) + s) * 512, 64);
                _tile_loadd(5, vs, 64);
                _tile_dpbf16ps(0, 4, 5);
                if (nd > 1) {
                    _tile_loadd(6, vs + 512, 64);
                    _tile_dpbf16ps(1, 4, 6);
                }
                if (nd > 2) {
                    _tile_loadd(7, vs + 1024, 64);
                    _tile_dpbf16ps(2, 4, 7);
                }
                if (nd > 3) {
                    _tile_loadd(5, vs + 1536, 64);
                    _tile_dpbf16ps(3, 4, 5);
                }
            }
            /* into qf, a query per row of D floats: the tiles go out together and the rows
             * are copied once all have landed (read back one tile at a time, each load
             * waited for its tile store) */
            float *stage = w->qf + (size_t)qt * AMX_Q * D + (size_t)dt0 * 16;
            _tile_stored(0, stage, D * 4);
            if (nd > 1) _tile_stored(1, stage + 16, D * 4);
            if (nd > 2) _tile_stored(2, stage + 32, D * 4);
            if (nd > 3) _tile_stored(3, stage + 48, D * 4);
        }
}

/* One work item on the tile unit (see above), or with `amx` 0 on the dot path (lane_scores or
 * dot_scores per query and segment, dot_softmax, dot_pv: the same roundings, sums in orders
 * of their own): members' queries against the keys of the last member's unit (its segments, each scored with every member's query rotated for that
 * segment's pair; an earlier member, whose keys are the first of those, has its lanes masked
 * past them) in KV head kh of a bf16 pool, or of layer `layer` of the int8 part `pk` for
 * slots from COMPACT_SLOT on (one segment); writes each member's (m, l, acc) into `part` as
 * attend_group does.
 * Int8 blocks: the unit's int8 keys, then values, are widened to bf16 exactly; each score
 * is multiplied by its key's scale after the tile product, and each weight by its value's
 * scale before it is rounded for the P V tiles (l sums the unscaled rounded weights). With
 * `amx`, the caller has loaded the tile configuration (8 tiles of 16 x 64 B). */
static HW_AMX void tile_group(const float *q, size_t qld, const Unit *list, const UnitKey *members, int nm,
                              int kh, int H, int G, int D, int Hkv, const Rot *rot, const uint16_t *kbase,
                              const uint16_t *vbase, int64_t head_stride, const Compact *pk, int layer, float scale,
                              float *part, size_t per, const AmxWork *w, int amx) {
    int nq = nm * G, nqt = (nq + AMX_Q - 1) / AMX_Q, KS = D / 32, DT = D / 16;
    const UnitKey *lead = &members[nm - 1]; /* the longest: the others' keys begin its keys */
    int count = lead->count, steps = (count + 31) / 32;
    size_t row_bytes = (size_t)D * 2;
    int compact = lead->slot >= COMPACT_SLOT; /* one segment then (attend_plan) */
    const uint16_t *vrow[UNIT_KEYS];          /* each key's value row */
    const int8_t *v8 = NULL;
    const float *kscale = NULL, *vscale = NULL;
    if (compact) {
        size_t line = ((size_t)layer * Hkv + kh) * (size_t)pk->capacity + (size_t)(lead->slot - COMPACT_SLOT);
        amx_int8_rows(pk->k + line * D, count, D, w->rows);
        for (int j = 0; j < count; j++) vrow[j] = w->rows + (size_t)j * D; /* its values replace the keys there */
        v8 = pk->v + line * D;
        kscale = pk->ks + line;
        vscale = pk->vs + line;
    }
    const float *qx[AMX_MAX_Q], *qc[AMX_MAX_Q], *qs[AMX_MAX_Q];
    for (int qi = 0; qi < nq; qi++)
        qx[qi] = q + (size_t)list[members[qi / G].unit].row * qld + ((size_t)kh * G + qi % G) * D;
    /* per segment: its queries, then its scores S^T, 16 keys a tile, into rows at + .. of st
     * (rows are keys, lanes queries; a partial last tile spills zero-key rows that the next
     * segment overwrites). Keys are requested AMX_AHEAD ahead, values as their keys are
     * scored (they are read after the softmax). */
    for (int sg = 0, at = 0; sg < lead->nseg; sg++) {
        int64_t slot;
        int n;
        unit_segment(lead, sg, &slot, &n);
        /* queries: rotated per member's pair of this segment and scaled (rope_row's steps, 16
         * dims at a time, in registers), then bf16 pairs as TDPBF16PS's B operand; a member
         * whose keys end before this segment gets zeros (its lanes are masked below) */
        for (int mi = 0; mi < nm; mi++) {
            int pair = members[mi].nseg > sg ? members[mi].segp[sg] : -1;
            for (int g = 0; g < G; g++) {
                qc[mi * G + g] = pair < 0 ? NULL : rot_row(rot->cos, rot->at, pair, D);
                qs[mi * G + g] = pair < 0 ? NULL : rot_row(rot->sin, rot->at, pair, D);
            }
        }
        /* the dot path: bf16 rows of D, in natural order, for the members that read this
         * segment; a query is scored on key tiles (lane_scores) when its own member's
         * segment has at least LANE_KEYS keys and its row's view LANE_MIN_PAIRS blocks, else
         * by dot_scores: the choice depends on the row's own view only, not on the longer
         * unit whose work item it shares nor on the rows it shares it with */
        int lane_q[AMX_MAX_Q], row_q[AMX_MAX_Q], n_lane = 0, n_row = 0, row_keys = 0;
        if (!amx)
            for (int mi = 0; mi < nm; mi++) {
                int q0 = mi * G;
                if (!qc[q0]) continue;
                dot_rotate(qx, q0, G, qc[q0], qs[q0], D, scale, w->qt);
                int64_t own_slot;
                int own;
                unit_segment(&members[mi], sg, &own_slot, &own);
                for (int g = 0; g < G; g++) {
                    if (own >= LANE_KEYS && members[mi].lane) {
                        lane_q[n_lane++] = q0 + g;
                    } else {
                        row_q[n_row++] = q0 + g;
                        row_keys = own > row_keys ? own : row_keys;
                    }
                }
            }
        else
        for (int qt = 0; qt < nqt; qt++)
            for (int ks = 0; ks < KS; ks++) {
                __m512i rows[16];
                for (int c = 0; c < AMX_Q; c++) {
                    int qi = qt * AMX_Q + c;
                    rows[c] = qi < nq && qc[qi] ? tile_q32(qx[qi], qc[qi], qs[qi], ks * 32, D, scale)
                                                : _mm512_setzero_si512();
                }
                amx_transpose_store(rows, (uint32_t *)(w->qt + ((size_t)qt * KS + ks) * 512));
            }
        const uint16_t *k0 = compact ? w->rows : kbase + (size_t)kh * head_stride + (size_t)slot * D;
        const uint16_t *v0 = compact ? NULL : vbase + (size_t)kh * head_stride + (size_t)slot * D;
        if (!compact) {
            for (int j = 0; j < n; j++) vrow[at + j] = v0 + (size_t)j * D;
            if (amx || n_row) /* key_tiles requests its own */
                amx_prefetch(k0, 0, n < AMX_AHEAD ? n : AMX_AHEAD, row_bytes);
            /* and the values of a short one (read after the softmax): too short a stream for the
             * hardware to follow; a long one's it does follow, and fetching all of it by hand at
             * once held the loads up (8 x 2 runs 3-6 % slower) */
            if (!amx && !n_lane && n < ROW_VALUES_AHEAD)
                for (const char *p = (const char *)v0, *end = p + (size_t)n * row_bytes; p < end; p += 64)
                    _mm_prefetch(p, _MM_HINT_T1);
        }
        if (!amx) {
            if (n_lane) /* w->vt is free until the values are laid out after the softmax */
                lane_scores(w->qt, lane_q, n_lane, k0, v0, n, D, w->vt, w->st + at);
            if (n_row) dot_scores(w->qt, row_q, n_row, k0, row_keys, D, w->st + at);
            at += n;
            continue;
        }
        for (int kt = 0; kt * 16 < n; kt++) {
            const uint16_t *a = k0 + (size_t)kt * 16 * D;
            int have = n - kt * 16, ahead = kt * 16 + AMX_AHEAD;
            if (compact) {
                amx_prefetch(v8, kt * 16, have < 16 ? have : 16, (size_t)D);
            } else {
                if (ahead < n) amx_prefetch(k0, ahead, n - ahead < 16 ? n - ahead : 16, row_bytes);
                amx_prefetch(v0, kt * 16, have < 16 ? have : 16, row_bytes);
            }
            if (have < 16 && !compact) { /* int8 rows were padded with zeros when widened */
                memcpy(w->rows, a, (size_t)have * row_bytes);
                memset(w->rows + (size_t)have * D, 0, (size_t)(16 - have) * row_bytes);
                a = w->rows;
            }
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            for (int ks = 0; ks < KS; ks++) {
                _tile_loadd(3, a + ks * 32, row_bytes);
                _tile_loadd(4, w->qt + (size_t)ks * 512, 64);
                _tile_dpbf16ps(0, 3, 4);
                if (nqt > 1) {
                    _tile_loadd(5, w->qt + ((size_t)KS + ks) * 512, 64);
                    _tile_dpbf16ps(1, 3, 5);
                }
                if (nqt > 2) {
                    _tile_loadd(6, w->qt + ((size_t)2 * KS + ks) * 512, 64);
                    _tile_dpbf16ps(2, 3, 6);
                }
            }
            float *srow = w->st + (size_t)(at + kt * 16) * AMX_MAX_Q;
            _tile_stored(0, srow, AMX_MAX_Q * 4);
            if (nqt > 1) _tile_stored(1, srow + AMX_Q, AMX_MAX_Q * 4);
            if (nqt > 2) _tile_stored(2, srow + 2 * AMX_Q, AMX_MAX_Q * 4);
        }
        at += n;
    }
    float ms[AMX_MAX_Q], ls[AMX_MAX_Q];
    if (!amx) {
        int valid[AMX_MAX_Q];
        for (int qi = 0; qi < nq; qi++) valid[qi] = members[qi / G].count;
        dot_softmax(w->st, nq, valid, steps, compact ? kscale : NULL, compact ? vscale : NULL, ms, ls,
                    (uint32_t *)w->pt);
    } else {
        amx_softmax(w, members, nm, G, nqt, count, steps, compact, kscale, vscale, ms, ls);
    }
    /* values pair-interleaved per 32 keys and 16 dims (B tiles), zeros past the unit; the dot
     * path with at most 2 blocks of 4 queries makes them on the way instead (dot_pv_block) */
    if (compact) amx_int8_rows(v8, count, D, w->rows);
    int fill_vt = amx || nq > 8;
    for (int s = 0; s < steps && fill_vt; s++)
        for (int t = 0; t < 16; t++)
            for (int d = 0; d < D; d += 32) {
                uint16_t *tile = w->vt + ((size_t)s * DT + d / 16) * 512 + t * 32;
                __m512i lo, hi;
                value_pairs(vrow, count, s * 32 + 2 * t, d, &lo, &hi);
                _mm512_storeu_si512(tile, lo);
                _mm512_storeu_si512(tile + 512, hi);
            }
    /* acc = P V, four 16-dim tiles at a time over the unit's 32-key steps, into each query's
     * row of `part` (the dot path's stores; the tiles' go through qf) */
    float *acc[AMX_MAX_Q];
    for (int qi = 0; qi < nq; qi++) {
        float *base = part + per * ((size_t)members[qi / G].unit * Hkv + kh);
        base[qi % G] = ms[qi];
        base[G + qi % G] = ls[qi];
        acc[qi] = base + 2 * G + (size_t)(qi % G) * D;
    }
    if (!amx) {
        dot_pv((const uint32_t *)w->pt, fill_vt ? w->vt : NULL, vrow, count, steps, DT, nq, acc);
    } else {
        amx_pv(w, nqt, steps, DT, D);
        for (int qi = 0; qi < nq; qi++) memcpy(acc[qi], w->qf + (size_t)qi * D, (size_t)D * sizeof(float));
    }
}

/* 1 when hw_attend runs a head layout over a bf16 pool through tile_group in the current set
 * (AMX tiles or the AVX-512 BF16 dot path; queries and weights then rounded to bf16), the
 * int8 blocks of its compact store too. */
int hw_attend_rounds(int D, int bf16) { return isa_now() >= 3 && bf16 && D % 32 == 0 && D <= MAX_D; }

/* The work items of hw_attend when hw_attend_rounds: each thread runs its items (bf16 and
 * int8 blocks alike) in its own work buffers (amx_work), on the tiles (`amx`: each thread
 * loads the tile configuration; groups in slot order, ITEMS_PER_GRAB at a time) or on the dot
 * path (groups costliest first, `order`, one group's heads at a time, the last threads x
 * heads items singly: a 16-worker pass has a few big items, and the thread that drew the last
 * group kept the other waiting). Threads take items from a shared counter. Returns 0 or -1
 * (a thread's buffers could not be allocated). */
static HW_AMX int tile_attends(const float *q, size_t qld, const Unit *list, const UnitKey *keys,
                               const int *group_start, const int *order, int items, int H, int G, int D, int Hkv,
                               const Rot *rot, const void *kbase, const void *vbase, int64_t head_stride,
                               const Compact *pk, int layer, float scale, float *part, size_t per, int threads,
                               int amx) {
    int failed = 0, grab = amx ? ITEMS_PER_GRAB(Hkv) : Hkv;
    /* the last items one at a time on the dot path (the cheapest, as they are ordered): a
     * group's heads per grab keep its segment tables in one core's cache (every item taken
     * singly was 7 % slower at long steps), but the thread that drew the last group kept the
     * others waiting for up to all its heads */
    int tail = amx ? 0 : threads * Hkv, next = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        const AmxWork *w = amx_work();
        failed = !w;
        if (amx) amx_tiles_on();
        for (;;) {
            int take = items - __atomic_load_n(&next, __ATOMIC_RELAXED) > tail ? grab : 1;
            int it0 = __atomic_fetch_add(&next, take, __ATOMIC_RELAXED);
            if (it0 >= items) break;
            for (int it = it0; it < it0 + take && it < items; it++) {
                int gr = amx ? it / Hkv : order[it / Hkv], kh = it % Hkv;
                int first = group_start[gr], nm = group_start[gr + 1] - first;
                if (w)
                    tile_group(q, qld, list, keys + first, nm, kh, H, G, D, Hkv, rot,
                               (const uint16_t *)kbase, (const uint16_t *)vbase, head_stride, pk, layer, scale, part,
                               per, w, amx);
            }
        }
        if (amx) _tile_release();
    }
    return failed ? -1 : 0;
}

/* Whether attend_group's fixed-size buffers hold this head layout (rotate-half RoPE needs an
 * even head_dim). hogwild.kernels.supports_attention is the same test on the Python side. */
static int heads_supported(int H, int Hkv, int D) {
    return Hkv > 0 && H % Hkv == 0 && H / Hkv <= MAX_G && D > 0 && D <= MAX_D && D % 2 == 0;
}

/* The work of hw_attend for one pass (it depends on the views, not on the layer, so the
 * decoder builds it once per pass): the units in row order, their keys sorted by slot,
 * the groups of units reading the same keys, and `part`, the units' partial results. */
typedef struct {
    int rows, groups;
    Unit *list;
    UnitKey *keys;
    int *seg;         /* each unit's segments' pairs (Unit.seg) */
    int *group_start; /* [groups + 1] into keys */
    int *order;       /* the groups, costliest first (the dot path's schedule) */
    int *row_unit;    /* [rows + 1] into list */
    float *part;      /* [units, Hkv, per] */
    size_t per;       /* floats per unit and KV head: G (m), G (l), G x D (weighted values) */
} AttendPlan;

static void attend_plan_free(AttendPlan *pl) {
    free(pl->list);
    free(pl->keys);
    free(pl->seg);
    free(pl->group_start);
    free(pl->order);
    free(pl->row_unit);
    free(pl->part);
    memset(pl, 0, sizeof(*pl));
}

/* Pairs shorter than this fill units of short pairs on the tile unit (attend_plan). */
#define SHORT_KEYS 32

/* A group's estimated work, for the dot path's schedule: its queries times keys, plus a
 * rotation per member and segment weighed as ROTATE_KEYS of those (measured at head_dim 64
 * on a 16-worker pass: rotating a member's 3 queries for a segment takes about 85 cycles, a
 * query's score, weight and P V for one key about 5.6). Only the order of the items depends
 * on it, never a result. */
#define ROTATE_KEYS 16
typedef struct {
    int64_t cost;
    int group;
} GroupCost;

static int group_cost_cmp(const void *a, const void *b) {
    const GroupCost *x = (const GroupCost *)a, *y = (const GroupCost *)b;
    if (x->cost != y->cost) return x->cost > y->cost ? -1 : 1;
    return x->group - y->group;
}

/* A short pair of a row as attend_plan orders them: by the block it reads (its pair_key: the
 * block's id, which names it wherever the pool puts it), then its length, then its place. */
typedef struct {
    int64_t key;
    int len, pair;
} ShortPair;

static int short_pair_cmp(const void *a, const void *b) {
    const ShortPair *x = (const ShortPair *)a, *y = (const ShortPair *)b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->pair - y->pair;
}

/* Cut every pair into units of at most UNIT_KEYS keys and group the units reading the same
 * keys, a work item taking at most MAX_Q queries (AMX_MAX_Q on the tile unit, `amx`; G per
 * member). Returns 0, -1 when an allocation fails (pl then holds nothing), or -2 for int8
 * slots without a compact part.
 *
 * On the tile unit and the dot path (tile_group), a row's pairs shorter than SHORT_KEYS (in
 * the full-precision pool) are not units of their own: ordered by the blocks they read
 * (pair_key: the blocks' ids; NULL: their slots), then length, then their place in the view,
 * they fill units of up to UNIT_KEYS keys, one segment each, after the row's other units. A
 * team's markers ("unfinished" after each other worker's step, the section headers) and
 * short steps then cost no work item and no partial result of their own; and since softmax
 * does not care in which order a row's keys come, the order by block makes the short units
 * of a team's rows read the same keys (each row sees
 * every worker's step and the same markers, only at other positions, so in another order):
 * they share one work item, each row's query rotated per segment for its own position, as
 * the rows sharing a prompt do. A unit whose keys begin another's (a row that sees fewer of
 * the short blocks, or a shorter last one) joins that one's work item, its lanes masked past
 * its own keys. All of it depends only on the row's own view, so a row's result stays batch
 * invariant; the masking gives the bits the unit's own item would (weights 0 add +0). The
 * order is the order of the row's keys in its softmax and P V sums, so it must not come from
 * the pool: where other runs share the pool, a run's blocks sit (and move) elsewhere, and
 * ordered by slot a 2-worker team's answers changed with the batch (Qwen2.5-Coder-0.5B, `hogwild
 * eval` at concurrency 1 and 8 on Zen 4); block ids follow the run's own creation order. */
static int attend_plan(AttendPlan *pl, int R, int Hkv, int G, int D, const int32_t *row_start,
                       const int64_t *pair_slot, const int32_t *pair_len, const int64_t *pair_key, int has_compact,
                       int amx) {
    int item_q = amx ? AMX_MAX_Q : MAX_Q;
    memset(pl, 0, sizeof(*pl));
    if (!has_compact)
        for (int p = 0; p < row_start[R]; p++)
            if (pair_slot[p] >= COMPACT_SLOT) return -2;
    int units = 0, pairs = row_start[R];
    for (int p = 0; p < pairs; p++) units += (pair_len[p] + UNIT_KEYS - 1) / UNIT_KEYS;
    int alloc = units > 0 ? units : 1;
    pl->rows = R;
    pl->per = (size_t)G * (D + 2);
    pl->list = (Unit *)malloc(sizeof(Unit) * alloc);
    pl->keys = (UnitKey *)malloc(sizeof(UnitKey) * alloc);
    pl->seg = (int *)malloc(sizeof(int) * (alloc + pairs));
    pl->group_start = (int *)malloc(sizeof(int) * (alloc + 1));
    pl->order = (int *)malloc(sizeof(int) * alloc);
    pl->row_unit = (int *)malloc(sizeof(int) * (R + 1));
    pl->part = (float *)malloc(sizeof(float) * pl->per * (size_t)Hkv * alloc);
    ShortPair *shorts = (ShortPair *)malloc(sizeof(ShortPair) * (pairs > 0 ? pairs : 1));
    if (!pl->list || !pl->keys || !pl->seg || !pl->group_start || !pl->order || !pl->row_unit || !pl->part ||
        !shorts) {
        free(shorts);
        attend_plan_free(pl);
        return -1;
    }
    Unit *list = pl->list;
    UnitKey *keys = pl->keys;
    int u = 0, nseg = 0;
    for (int r = 0; r < R; r++) {
        pl->row_unit[r] = u;
        int ns = 0, lane = row_start[r + 1] - row_start[r] >= LANE_MIN_PAIRS;
        for (int p = row_start[r]; p < row_start[r + 1]; p++) {
            int len = pair_len[p];
            if (amx && len > 0 && len < SHORT_KEYS && pair_slot[p] < COMPACT_SLOT) {
                shorts[ns++] = (ShortPair){pair_key ? pair_key[p] : pair_slot[p], len, p};
                continue;
            }
            for (int first = 0; first < len; first += UNIT_KEYS) {
                int n = len - first < UNIT_KEYS ? len - first : UNIT_KEYS;
                list[u] = (Unit){r, p, first, n, n, 1, nseg, lane};
                pl->seg[nseg++] = p;
                u++;
            }
        }
        qsort(shorts, ns, sizeof(ShortPair), short_pair_cmp);
        for (int i = 0, open = -1; i < ns; i++) {
            int len = shorts[i].len, p = shorts[i].pair;
            if (open >= 0 && list[open].count + len <= UNIT_KEYS) {
                list[open].nseg++;
                list[open].count += len;
            } else {
                open = u;
                list[u++] = (Unit){r, p, 0, len, len, 1, nseg, lane};
            }
            pl->seg[nseg++] = p;
        }
    }
    free(shorts);
    pl->row_unit[R] = u;
    units = u;
    for (int i = 0; i < units; i++) {
        const Unit *un = &list[i];
        keys[i] = (UnitKey){pair_slot[un->pair] + un->first, un->count, i, un->nseg, un->count0, un->lane,
                            pl->seg + un->seg, pair_slot, pair_len};
    }
    qsort(keys, units, sizeof(UnitKey), unit_key_cmp);
    int max_members = item_q / G > 0 ? item_q / G : 1;
    int groups = 0;
    for (int i = 0; i < units; i++) {
        int same = i > 0 && i - pl->group_start[groups - 1] < max_members &&
                   (amx ? unit_is_prefix(&keys[i - 1], &keys[i])
                               : keys[i].slot == keys[i - 1].slot && keys[i].count == keys[i - 1].count);
        if (!same) pl->group_start[groups++] = i;
    }
    pl->group_start[groups] = units;
    pl->groups = groups;
    /* costliest first: queries x keys, and a rotation per member and segment */
    GroupCost *cost = (GroupCost *)malloc(sizeof(GroupCost) * (groups > 0 ? groups : 1));
    if (!cost) {
        attend_plan_free(pl);
        return -1;
    }
    for (int g = 0; g < groups; g++) {
        int nm = pl->group_start[g + 1] - pl->group_start[g];
        const UnitKey *lead = &keys[pl->group_start[g + 1] - 1];
        cost[g] = (GroupCost){(int64_t)nm * G * lead->count + (int64_t)nm * lead->nseg * ROTATE_KEYS, g};
    }
    qsort(cost, groups, sizeof(GroupCost), group_cost_cmp);
    for (int g = 0; g < groups; g++) pl->order[g] = cost[g].group;
    free(cost);
    return 0;
}

/* hw_attend over a plan built for these rows and views (attend_plan, `amx` as
 * hw_attend_rounds decides); returns 0 or -1 (a thread's work buffers could not be allocated). */
static int attend_planned(const AttendPlan *pl, const float *q, size_t qld, float *out, int H, int Hkv, int D,
                          const Rot *rot, const void *kbase, const void *vbase,
                          int64_t head_stride, int bf16, const Compact *pk, int layer, float scale, int threads) {
    int G = H / Hkv, R = pl->rows, items = pl->groups * Hkv;
    const Unit *list = pl->list;
    const UnitKey *keys = pl->keys;
    const int *group_start = pl->group_start, *row_unit = pl->row_unit;
    float *part = pl->part;
    size_t per = pl->per;
    if (hw_attend_rounds(D, bf16)) {
        if (tile_attends(q, qld, list, keys, group_start, pl->order, items, H, G, D, Hkv, rot, kbase,
                         vbase, head_stride, pk, layer, scale, part, per, threads, isa_now() == 4) != 0)
            return -1;
    } else {
#pragma omp parallel for schedule(dynamic, ITEMS_PER_GRAB(Hkv)) num_threads(threads)
        for (int it = 0; it < items; it++) {
            int gr = it / Hkv, kh = it % Hkv;
            int first = group_start[gr], nm = group_start[gr + 1] - first;
            attend_group(q, qld, list, keys + first, nm, kh, H, G, D, Hkv, rot, kbase, vbase, head_stride,
                         bf16, pk, layer, scale, part, per);
        }
    }
    /* merge the units of each row: weights exp(m_u - max) */
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int it = 0; it < R * Hkv; it++) {
        int r = it / Hkv, kh = it % Hkv;
        for (int g = 0; g < G; g++) {
            float *o = out + ((size_t)r * H + (size_t)kh * G + g) * D;
            float best = -INFINITY;
            for (int un = row_unit[r]; un < row_unit[r + 1]; un++) {
                float mu = part[per * ((size_t)un * Hkv + kh) + g];
                best = mu > best ? mu : best;
            }
            float den = 0.0f;
            memset(o, 0, sizeof(float) * D);
            if (best == -INFINITY) continue; /* a row that sees nothing (not produced by the engine) */
            for (int un = row_unit[r]; un < row_unit[r + 1]; un++) {
                const float *bp = part + per * ((size_t)un * Hkv + kh);
                if (bp[g] == -INFINITY) continue;
                float wgt = expf(bp[g] - best);
                den += wgt * bp[G + g];
                const float *acc = bp + 2 * G + (size_t)g * D;
                for (int d = 0; d < D; d++) o[d] += wgt * acc[d];
            }
            float inv = 1.0f / den;
            for (int d = 0; d < D; d++) o[d] *= inv;
        }
    }
    return 0;
}

/* Attention of R rows over their views, for one layer.
 *
 * q [R, H, D] fp32, un-rotated. Row r sees pairs row_start[r] .. row_start[r+1]-1; pair p is
 * one view entry: keys at pool slots pair_slot[p] .. + pair_len[p] - 1 (already limited to
 * what the row may see), scored with the query rotated by (pair_cos[p], pair_sin[p]).
 * Pools: [Hkv, capacity, D] of this layer; a pair whose slots are at or above COMPACT_SLOT
 * reads layer `layer` of the int8 part `pk` instead (a block never spans both; -2 without
 * `pk`). out [R, H, D] fp32. Returns 0, -1 when a scratch allocation fails, or -2 for a head layout beyond the fixed-size work buffers
 * (more than MAX_G query heads per KV head, head_dim above MAX_D or odd). Any number of rows
 * and pairs: scratch is allocated per call.
 *
 * Work: each pair is cut into units of at most UNIT_KEYS keys (on the tile unit a row's short
 * pairs, ordered by slot, fill units of their own, see attend_plan); units that read the same keys (the prompt,
 * history steps, markers seen by several rows) are computed together, so a shared block is
 * read once per layer however many rows see it; partial results of a row's units are merged
 * by log-sum-exp at the end.
 *
 * Batch invariance: a row's result depends on its own pairs and the keys they read, never on
 * which other rows share the call or a work item, nor on where its blocks sit in the pool.
 * Units are cut from each pair's own start; every query of a work item is scored, soft-maxed
 * and accumulated on its own (the 2 x 4 score blocks and 4-query value blocks share loads,
 * not sums; so do AVX-512's 16-score blocks, whose reduce16 sums each dot product by one
 * tree); a row's units are merged in its own order. The dot products' order depends on the
 * instruction set (AVX-512 for head_dim % 32 == 0 where the CPU has it, see scores5_block;
 * else AVX2) and on head_dim, never on the batch; value sums take the same steps in both.
 * With AMX or AVX512_BF16 and a bf16 pool (hw_attend_rounds) every work item runs in
 * tile_group, on the tile unit or the dot path, int8 blocks of the compact store included:
 * per tile cell or dot-product lane, as invariant as the rest; on the dot path a query's
 * scores of a segment come from key tiles or from dot_scores by its own row's view
 * (LANE_KEYS, LANE_MIN_PAIRS), never by the rows it shares a work item with. */
int hw_attend_keyed(const float *q, float *out, int R, int H, int Hkv, int D, const int32_t *row_start,
                    const int64_t *pair_slot, const int32_t *pair_len, const int64_t *pair_key, const float *pair_cos,
                    const float *pair_sin, const void *kbase, const void *vbase, int64_t head_stride, int bf16,
                    const Compact *pk, int layer, float scale, int threads) {
    if (!heads_supported(H, Hkv, D)) return -2;
    AttendPlan pl;
    int rc = attend_plan(&pl, R, Hkv, H / Hkv, D, row_start, pair_slot, pair_len, pair_key, pk != NULL,
                         hw_attend_rounds(D, bf16));
    if (rc != 0) return rc;
    Rot rot = {pair_cos, pair_sin, NULL};
    rc = attend_planned(&pl, q, (size_t)H * D, out, H, Hkv, D, &rot, kbase, vbase, head_stride, bf16, pk, layer,
                        scale, threads);
    attend_plan_free(&pl);
    return rc;
}

/* hw_attend_keyed with short pairs ordered by slot (pair_key NULL): invariant only while a
 * row's short blocks keep their order in the pool (bench scripts and older callers). */
int hw_attend(const float *q, float *out, int R, int H, int Hkv, int D, const int32_t *row_start,
              const int64_t *pair_slot, const int32_t *pair_len, const float *pair_cos, const float *pair_sin,
              const void *kbase, const void *vbase, int64_t head_stride, int bf16, const Compact *pk, int layer,
              float scale, int threads) {
    return hw_attend_keyed(q, out, R, H, Hkv, D, row_start, pair_slot, pair_len, NULL, pair_cos, pair_sin, kbase,
                           vbase, head_stride, bf16, pk, layer, scale, threads);
}

/* ------------------------------------------------------------------ whole decoder stack */

/* One weight matrix [N, K] of the decoder in its own format (hogwild.kernels.native.Matrix):
 * fmt is ggml's type id: 0 fp32, 30 bf16 (both for hw_linear), FMT_PAIRS (hogwild's own: bf16
 * in dot pairs, hw_pack_pairs; hw_linear too), or a quantized block format
 * of hogwild_quant.c (hw_qlinear, with its per-tensor scale and exact corrections grouped by
 * output column: fix_start [N + 1], fix_j, fix_delta; NULL: none). b: fp32 bias or NULL. */
typedef struct {
    const void *w;
    const float *b;
    const int32_t *fix_start;
    const int32_t *fix_j;
    const float *fix_delta;
    int fmt;
    float scale;
} HwMat;

#define FMT_PAIRS 1030 /* no ggml type id: those are small */

/* in hogwild_quant.c; weak, so that this file alone still builds and loads (bench/kernel_rows.py
 * compiles it on its own), quantized matrices then being refused */
int hw_qlinear(const float *x, const void *w, int fmt, float scale, const int32_t *fix_start, const int32_t *fix_j,
               const float *fix_delta, const float *b, float *y, int M, int N, int K, int accumulate, int threads)
    __attribute__((weak));

/* y [M, N] (+)= x [M, K] @ m^T + b whatever m's format: hw_linear for fp32 and bf16, hw_qlinear
 * for the block formats. Each is batch invariant, so the decoder is whatever the mix.
 * `next` [next_N, next_K]: the call that follows on the same rows (NULL: none or not right
 * after), whose first weights a call on dot pairs fetches ahead when those are dot pairs too.
 * Returns 0, -1 (scratch allocation failed), -2 (a format not built in) or -3 (dot pairs
 * below AVX512_BF16, see hw_linear). */
static int linear_any(const HwMat *m, const HwMat *next, int next_N, int next_K, const float *x, float *y, int M,
                      int N, int K, int accumulate, int threads) {
    if (m->fmt == 0 || m->fmt == 30 || m->fmt == FMT_PAIRS) {
        PairsNext after = {next ? (const uint16_t *)next->w : NULL, next_N, next_K};
        return linear_call(x, m->w, m->fmt == 0 ? W_F32 : m->fmt == 30 ? W_BF16 : W_PAIRS, m->b, y, M, N, K, accumulate,
                           threads, next && next->fmt == FMT_PAIRS && next_K % 32 == 0 ? &after : NULL);
    }
    if (!hw_qlinear) return -2;
    return hw_qlinear(x, m->w, m->fmt, m->scale, m->fix_start, m->fix_j, m->fix_delta, m->b, y, M, N, K, accumulate,
                      threads);
}

int hw_linear_any(const HwMat *m, const float *x, float *y, int M, int N, int K, int accumulate, int threads) {
    return linear_any(m, NULL, 0, 0, x, y, M, N, K, accumulate, threads);
}

/* One layer's weights (as prepared by hogwild.kernels.native). q/k/v: either fused, in
 * qkv[0] with qkv[1].w == NULL, or three matrices (a GGUF may store v in another format than
 * q and k); likewise gate/up. Norm weights fp32; NULL where absent. */
typedef struct {
    HwMat qkv[3];
    HwMat o;
    HwMat gate_up[2];
    HwMat down;
    const float *ln_in;
    const float *ln_post;
    const float *q_norm; /* per-head RMSNorm of q and k (Qwen3), else NULL */
    const float *k_norm;
} LayerWeights;

typedef struct {
    int hidden, heads, kv_heads, head_dim, inter;
    int kv_bf16, threads;
    float eps, scale;
} Dims;

/* What one pass attends to (hogwild.kernels.native.NativePass, filled per pass by
 * hogwild.core.attention.KernelPlan). */
typedef struct {
    int rows;
    const int64_t *slots;
    const float *rope_cos, *rope_sin; /* the rotary tables, a row of D per position */
    const int32_t *k_at;              /* each row's new key: its position in the tables */
    const int32_t *row_start;
    const int64_t *pair_slot;
    const int32_t *pair_len;
    const int32_t *pair_at;  /* each pair's query rotation: its position in the tables */
    const int64_t *pair_key; /* the block each pair reads, by id (attend_plan's order of short pairs) */
} PassInfo;

/* Floats of scratch hw_decode_layers needs for `rows` rows. */
int64_t hw_decode_scratch(const Dims *dm, int rows) {
    int64_t qd = (int64_t)dm->heads * dm->head_dim, kd = (int64_t)dm->kv_heads * dm->head_dim;
    return (int64_t)rows * (dm->hidden + (qd + 2 * kd) + qd + kd + kd + qd + 4 * (int64_t)dm->inter);
}

/* One layer l for the pass's rows (hw_decode_layers), attention on the pass's plan `pl`;
 * `following`: the next layer's weights (NULL for the last), whose q/k/v the down projection
 * fetches ahead. */
static int decode_layer(float *x, const LayerWeights *w, const LayerWeights *following, int l, const Dims *dm,
                        const PassInfo *ps, const AttendPlan *pl, void *k_pool, void *v_pool, int64_t layer_stride,
                        int64_t head_stride, const Compact *pk, float *scratch) {
    int R = ps->rows, H = dm->heads, Hkv = dm->kv_heads, D = dm->head_dim, E = dm->hidden, I = dm->inter;
    int qd = H * D, kd = Hkv * D, qkvd = qd + 2 * kd;
    float *h = scratch;                  /* [R, E] normed input */
    float *qkv = h + (size_t)R * E;      /* [R, qkvd] */
    float *q = qkv + (size_t)R * qkvd;   /* [R, H, D] */
    float *k = q + (size_t)R * qd;       /* [R, Hkv, D] */
    float *v = k + (size_t)R * kd;       /* [R, Hkv, D] */
    float *att = v + (size_t)R * kd;     /* [R, H, D] */
    float *gu = att + (size_t)R * qd;    /* [R, 2I] */
    float *act = gu + (size_t)R * 2 * I; /* [R, I] */
    float *up = act + (size_t)R * I;     /* [R, I]: up, when separate from the gate */
    size_t es = dm->kv_bf16 ? 2 : 4;
    int rc;
    char *kl = (char *)k_pool + (size_t)l * layer_stride * es, *vl = (char *)v_pool + (size_t)l * layer_stride * es;
    /* the pool lines this layer's new keys and values go to (hw_store_kv), on their way while
     * q/k/v are computed: scattered over the pool, they were missed one by one in the store
     * (8 us of a 16-row SmolLM2 layer's store where 2 us compute it) */
    for (int r = 0; r < R; r++)
        if (ps->slots[r] < COMPACT_SLOT)
            for (int hk = 0; hk < Hkv; hk++) {
                size_t at = ((size_t)hk * head_stride + (size_t)ps->slots[r] * D) * es;
                for (size_t b = 0; b < (size_t)D * es; b += 64) {
                    _mm_prefetch(kl + at + b, _MM_HINT_T1);
                    _mm_prefetch(vl + at + b, _MM_HINT_T1);
                }
            }
    rmsnorm_par(x, w->ln_in, h, R, E, dm->eps, dm->threads);
    int t = dm->threads, split_gu = w->gate_up[1].w != NULL;
    size_t q_ld = (size_t)qd, kv_ld = (size_t)kd; /* floats from one row of q (of k, v) to the next */
    if (w->qkv[1].w) {
        if ((rc = linear_any(&w->qkv[0], &w->qkv[1], kd, E, h, q, R, qd, E, 0, t)) != 0) return rc;
        if ((rc = linear_any(&w->qkv[1], &w->qkv[2], kd, E, h, k, R, kd, E, 0, t)) != 0) return rc;
        if ((rc = linear_any(&w->qkv[2], NULL, 0, 0, h, v, R, kd, E, 0, t)) != 0) return rc;
    } else {
        if ((rc = linear_any(&w->qkv[0], NULL, 0, 0, h, qkv, R, qkvd, E, 0, t)) != 0) return rc;
        if (!w->q_norm && !w->k_norm) {
            /* read in place, rows qkvd apart: a copy into q, k and v ran on one thread, and
             * its stores waited on lines the other core had read in the layer before */
            q = qkv, k = qkv + qd, v = qkv + qd + kd;
            q_ld = kv_ld = (size_t)qkvd;
        } else { /* the per-head norms below take contiguous rows */
            for (int r = 0; r < R; r++) {
                const float *src = qkv + (size_t)r * qkvd;
                memcpy(q + (size_t)r * qd, src, sizeof(float) * qd);
                memcpy(k + (size_t)r * kd, src + qd, sizeof(float) * kd);
                memcpy(v + (size_t)r * kd, src + qd + kd, sizeof(float) * kd);
            }
        }
    }
    if (w->q_norm) rmsnorm_par(q, w->q_norm, q, R * H, D, dm->eps, dm->threads);
    if (w->k_norm) rmsnorm_par(k, w->k_norm, k, R * Hkv, D, dm->eps, dm->threads);
    Rot key_rot = {ps->rope_cos, ps->rope_sin, ps->k_at}, query_rot = {ps->rope_cos, ps->rope_sin, ps->pair_at};
    if ((rc = store_kv(k, v, kv_ld, ps->slots, &key_rot, kl, vl, head_stride, dm->kv_bf16, R, Hkv, D, pk, l)) != 0)
        return rc;
    if ((rc = attend_planned(pl, q, q_ld, att, H, Hkv, D, &query_rot, kl, vl, head_stride, dm->kv_bf16, pk,
                             l, dm->scale, dm->threads)) != 0)
        return rc;
    if ((rc = linear_any(&w->o, &w->gate_up[0], split_gu ? I : 2 * I, E, att, x, R, E, qd, 1, t)) != 0) return rc;
    rmsnorm_par(x, w->ln_post, h, R, E, dm->eps, dm->threads);
    if (split_gu) { /* separate gate and up: side by side per row, as fused */
        if ((rc = linear_any(&w->gate_up[0], &w->gate_up[1], I, E, h, act, R, I, E, 0, t)) != 0) return rc;
        if ((rc = linear_any(&w->gate_up[1], &w->down, E, I, h, up, R, I, E, 0, t)) != 0) return rc;
        for (int r = 0; r < R; r++) {
            memcpy(gu + (size_t)r * 2 * I, act + (size_t)r * I, sizeof(float) * I);
            memcpy(gu + (size_t)r * 2 * I + I, up + (size_t)r * I, sizeof(float) * I);
        }
    } else if ((rc = linear_any(&w->gate_up[0], &w->down, E, I, h, gu, R, 2 * I, E, 0, t)) != 0) {
        return rc;
    }
    silu_mul_par(gu, act, R, I, dm->threads);
    /* the next layer's q/k/v (or q) follows, after a norm */
    const HwMat *nq = following ? &following->qkv[0] : NULL;
    return linear_any(&w->down, nq, following && following->qkv[1].w ? qd : qkvd, E, act, x, R, E, I, 1, t);
}

/* Run every layer for the pass's rows: x [rows, hidden] fp32 is the residual stream, updated
 * in place. Pools are [layers, kv_heads, capacity, head_dim]; layer_stride and head_stride in
 * elements; `pk` is the store's int8 part (NULL: none; slots at or above COMPACT_SLOT use
 * it). Any number of rows (the caller's scratch is sized by hw_decode_scratch, the rest is
 * allocated per call). Returns 0; -2, before touching anything, for a head layout the
 * attention kernel does not support or int8 slots without `pk`; -1 when scratch could not be
 * allocated, -2 for a weight format not built in or -3 for dot pairs below AVX512_BF16 (x is then partly updated;
 * hogwild.kernels.native checks formats first).
 *
 * Every step is batch invariant (hw_linear, hw_qlinear, hw_attend; norms, gate and key storage are per
 * row), so a row's output is the same bits whichever rows share the pass. */
int hw_decode_layers(float *x, const LayerWeights *layers, int num_layers, const Dims *dm, const PassInfo *ps,
                     void *k_pool, void *v_pool, int64_t layer_stride, int64_t head_stride, const Compact *pk,
                     float *scratch) {
    int H = dm->heads, Hkv = dm->kv_heads, D = dm->head_dim;
    if (!heads_supported(H, Hkv, D)) return -2;
    /* the views are the same in every layer: one attention plan (and partial buffer) per pass */
    AttendPlan pl;
    int rc = attend_plan(&pl, ps->rows, Hkv, H / Hkv, D, ps->row_start, ps->pair_slot, ps->pair_len, ps->pair_key,
                         pk != NULL, hw_attend_rounds(D, dm->kv_bf16));
    for (int l = 0; l < num_layers && rc == 0; l++)
        rc = decode_layer(x, &layers[l], l + 1 < num_layers ? &layers[l + 1] : NULL, l, dm, ps, &pl, k_pool, v_pool,
                          layer_stride, head_stride, pk, scratch);
    attend_plan_free(&pl);
    return rc;
}
