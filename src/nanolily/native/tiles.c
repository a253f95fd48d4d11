/* NanoLILY's tile forward: the first convolution with its instance norm and leaky ReLU, the stride-2
 * convolution, the second norm and leaky ReLU, the composed decoder's convolution (both convolutions in
 * Winograd's form) and its border terms, and the output stage (skip connection, pixel shuffle, border fix,
 * frequency mix, tanh, residual), one pass each, where eager PyTorch makes about twenty passes over each
 * tile's maps. OpenMP threads, from the same runtime as PyTorch's own (nanolily.native checks), split each
 * pass by rows. */

#include <math.h>
#include <stdlib.h>
#include <string.h>

int omp_get_thread_num(void); /* the OpenMP runtime's (libgomp's), declared here: no omp.h needed to build */

#include "exp_neg.h"

#define WIDTH 32  /* the spatial branch's width: the first map's channels */
#define CHUNKS 16 /* row chunks per image for the norm statistics: a fixed order, so results do not depend on threads */
#define LANES 8   /* floats per vector: GCC / Clang vector extensions, AVX2 registers with -march=native */

typedef float vec __attribute__((vector_size(LANES * sizeof(float))));
typedef float vec_unaligned __attribute__((vector_size(LANES * sizeof(float)), aligned(sizeof(float))));
#define LOAD(p) (*(const vec_unaligned *)(p))
#define STORE(p, v) (*(vec_unaligned *)(p) = (v))

static inline float sum_lanes(vec v) {
    float s = 0;
    for (int l = 0; l < LANES; l++) s += v[l];
    return s;
}

static inline float tanh_fast(float v) {
    float e = exp_neg(-2.0f * fabsf(v));
    float t = (1.0f - e) / (1.0f + e);
    return v < 0 ? -t : t;
}

/* Mean and 1/sqrt(var + eps) per (image, channel) from per-chunk sums of (v - ref) and (v - ref)^2 */
static void finish_stats(const double *sums, const float *ref, int B, int C, long n, float eps, float *mean,
                         float *rstd) {
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            double s = 0, q = 0;
            for (int k = 0; k < CHUNKS; k++) {
                s += sums[((long)(b * CHUNKS + k) * 2) * C + c];
                q += sums[((long)(b * CHUNKS + k) * 2 + 1) * C + c];
            }
            double m = s / n, var = q / n - m * m;
            mean[b * C + c] = (float)(ref[b * C + c] + m);
            rstd[b * C + c] = (float)(1.0 / sqrt((var > 0 ? var : 0) + eps));
        }
}

/* t (B, n, C) channels-last, in place: (t - mean) * rstd, then leaky ReLU */
static void normalize(float *t, int B, long n, int C, const float *mean, const float *rstd, float slope,
                      int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int job = 0; job < B * CHUNKS; job++) {
        int b = job / CHUNKS, k = job % CHUNKS;
        const float *m = mean + b * C, *r = rstd + b * C;
        for (long i = n * k / CHUNKS; i < n * (k + 1) / CHUNKS; i++) {
            float *v = t + ((long)b * n + i) * C;
            for (int c = 0; c < C; c++) {
                float u = (v[c] - m[c]) * r[c];
                v[c] = u < 0 ? u * slope : u;
            }
        }
    }
}

/* conv_in (3 -> WIDTH, 3x3, zero padding 1) at pixel (y, xx) of one image, written to out[0..WIDTH) */
static inline void conv_in_pixel(const float *x, long sc, long sh, long sw, int H, int W, int y, int xx,
                                 const float *wt, const float *bias, float *out) {
    vec acc[WIDTH / LANES];
    for (int k = 0; k < WIDTH / LANES; k++) acc[k] = LOAD(bias + k * LANES);
    for (int ky = 0; ky < 3; ky++) {
        int yy = y + ky - 1;
        if (yy < 0 || yy >= H) continue;
        for (int kx = 0; kx < 3; kx++) {
            int xs = xx + kx - 1;
            if (xs < 0 || xs >= W) continue;
            for (int ci = 0; ci < 3; ci++) {
                float v = x[ci * sc + yy * sh + xs * sw];
                const float *w = wt + ((ky * 3 + kx) * 3 + ci) * WIDTH;
                for (int k = 0; k < WIDTH / LANES; k++) acc[k] += v * LOAD(w + k * LANES);
            }
        }
    }
    for (int k = 0; k < WIDTH / LANES; k++) STORE(out + k * LANES, acc[k]);
}

/* conv_in_pixel at (y, xx) and (y, xx + 1), both off the left and right borders: each weight load
 * serves two pixels (the single-pixel loop is bound by loads, not arithmetic) */
static inline void conv_in_pair(const float *x, long sc, long sh, long sw, int H, int y, int xx, const float *wt,
                                const float *bias, float *out) {
    vec a[WIDTH / LANES], b[WIDTH / LANES];
    for (int k = 0; k < WIDTH / LANES; k++) a[k] = b[k] = LOAD(bias + k * LANES);
    for (int ky = 0; ky < 3; ky++) {
        int yy = y + ky - 1;
        if (yy < 0 || yy >= H) continue;
        for (int kx = 0; kx < 3; kx++)
            for (int ci = 0; ci < 3; ci++) {
                const float *p = x + ci * sc + yy * sh + (xx + kx - 1) * sw;
                float u = p[0], v = p[sw];
                const float *w = wt + ((ky * 3 + kx) * 3 + ci) * WIDTH;
                for (int k = 0; k < WIDTH / LANES; k++) {
                    vec wv = LOAD(w + k * LANES);
                    a[k] += u * wv;
                    b[k] += v * wv;
                }
            }
    }
    for (int k = 0; k < WIDTH / LANES; k++) STORE(out + k * LANES, a[k]), STORE(out + WIDTH + k * LANES, b[k]);
}

/* out (B, H, W, WIDTH) = leaky_relu(instance_norm(conv_in(x))); x (B, 3, H, W) with element strides
 * sb, sc, sh, sw; wt [ky][kx][ci][co]. The norm's sums are shifted by each channel's value at the centre
 * pixel, which keeps them well conditioned where |mean| >> std. */
void nl_first_stage(const float *x, long sb, long sc, long sh, long sw, int B, int H, int W, const float *wt,
                    const float *bias, float slope, float eps, float *out, int threads) {
    long n = (long)H * W;
    float *ref = malloc(sizeof(float) * B * WIDTH * 3);
    double *sums = malloc(sizeof(double) * B * CHUNKS * 2 * WIDTH);
    float *mean = ref + B * WIDTH, *rstd = mean + B * WIDTH;
    for (int b = 0; b < B; b++)
        conv_in_pixel(x + b * sb, sc, sh, sw, H, W, H / 2, W / 2, wt, bias, ref + b * WIDTH);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int job = 0; job < B * CHUNKS; job++) {
        int b = job / CHUNKS, k = job % CHUNKS;
        const float *xb = x + b * sb, *r = ref + b * WIDTH;
        double s[WIDTH] = {0}, q[WIDTH] = {0};
        for (int y = H * k / CHUNKS; y < H * (k + 1) / CHUNKS; y++) {
            float rs[WIDTH] = {0}, rq[WIDTH] = {0};  /* one row's sums: 224 terms are safe in float */
            float *row = out + ((long)b * n + (long)y * W) * WIDTH;
            for (int xx = 0; xx < W; xx++) {
                if (xx > 0 && xx + 2 < W) {
                    conv_in_pair(xb, sc, sh, sw, H, y, xx, wt, bias, row + xx * WIDTH);
                    xx++;
                } else {
                    conv_in_pixel(xb, sc, sh, sw, H, W, y, xx, wt, bias, row + xx * WIDTH);
                }
            }
            for (int xx = 0; xx < W; xx++)
                for (int co = 0; co < WIDTH; co++) {
                    float dv = row[xx * WIDTH + co] - r[co];
                    rs[co] += dv;
                    rq[co] += dv * dv;
                }
            for (int co = 0; co < WIDTH; co++) s[co] += rs[co], q[co] += rq[co];
        }
        memcpy(sums + (long)job * 2 * WIDTH, s, sizeof s);
        memcpy(sums + ((long)job * 2 + 1) * WIDTH, q, sizeof q);
    }
    finish_stats(sums, ref, B, WIDTH, n, eps, mean, rstd);
    normalize(out, B, n, WIDTH, mean, rstd, slope, threads);
    free(sums);
    free(ref);
}

/* t (B, n, C) channels-last, in place: leaky_relu(instance_norm(t)), shifted by the middle pixel's values */
void nl_norm_lrelu(float *t, int B, long n, int C, float slope, float eps, int threads) {
    float *ref = malloc(sizeof(float) * B * C * 3);
    double *sums = malloc(sizeof(double) * B * CHUNKS * 2 * C);
    float *mean = ref + B * C, *rstd = mean + B * C;
    for (int b = 0; b < B; b++) memcpy(ref + b * C, t + ((long)b * n + n / 2) * C, sizeof(float) * C);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int job = 0; job < B * CHUNKS; job++) {
        int b = job / CHUNKS, k = job % CHUNKS;
        const float *r = ref + b * C;
        double *s = sums + (long)job * 2 * C, *q = s + C;
        for (int c = 0; c < C; c++) s[c] = q[c] = 0;
        for (long i = n * k / CHUNKS; i < n * (k + 1) / CHUNKS; i++) {
            const float *v = t + ((long)b * n + i) * C;
            for (int c = 0; c < C; c++) {
                double dv = v[c] - r[c];
                s[c] += dv;
                q[c] += dv * dv;
            }
        }
    }
    finish_stats(sums, ref, B, C, n, eps, mean, rstd);
    normalize(t, B, n, C, mean, rstd, slope, threads);
    free(sums);
    free(ref);
}

/* The skip connection (WIDTH -> 3, 3x3, zero padding; skip [ky][kx][co][ci]) at pixel (y, xx) of s1
 * (H, W, WIDTH), or with pair at (y, xx) and (y, xx + 1), both off the left and right borders; into
 * v[c][xx] (and v[c][xx + 1]) */
static inline void skip_pixels(const float *s1, const float *skip, int H, int W, int y, int xx, int pair, float *v) {
    vec a[3] = {{0}}, b[3] = {{0}};
    for (int ky = 0; ky < 3; ky++) {
        int yy = y + ky - 1;
        if (yy < 0 || yy >= H) continue;
        for (int kx = 0; kx < 3; kx++) {
            int xs = xx + kx - 1;
            if (!pair && (xs < 0 || xs >= W)) continue;
            const float *s = s1 + ((long)yy * W + xs) * WIDTH, *w = skip + (ky * 3 + kx) * 3 * WIDTH;
            for (int ci = 0; ci < WIDTH; ci += LANES) {
                vec sa = LOAD(s + ci), sb = pair ? LOAD(s + WIDTH + ci) : sa;
                for (int c = 0; c < 3; c++) {
                    vec wv = LOAD(w + c * WIDTH + ci);
                    a[c] += sa * wv;
                    if (pair) b[c] += sb * wv;
                }
            }
        }
    }
    for (int c = 0; c < 3; c++) {
        v[c * W + xx] = sum_lanes(a[c]);
        if (pair) v[c * W + xx + 1] = sum_lanes(b[c]);
    }
}

/* out (B, 3, H, W) = x + tanh(pixel_shuffle(phases) + conv3x3(s1, skip) - border fix + mix @ freq):
 *   x (B, 3, H, W) with element strides sb, sc, sh, sw; phases (B, H/2, W/2, P) channels-last, channel
 *   4c + 2p + q holding output pixel (2i + p, 2j + q) of channel c; s1 (B, H, W, WIDTH); skip
 *   [ky][kx][co][ci], zero padding; fix (B, 12, L): what to subtract from the top row, the
 *   bottom row, the left column and the right column, 3 channels each; freq (B, 3, H, W); mix (3, 3). */
void nl_tile_output(const float *x, long sb, long sc, long sh, long sw, const float *phases, int P, const float *s1,
                    const float *skip, const float *fix, long fix_len, const float *freq, const float *mix, int B,
                    int H, int W, float *out, int threads) {
    long n = (long)H * W;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int job = 0; job < B * H; job++) {
        int b = job / H, y = job % H;
        float v[3][W];
        for (int xx = 0; xx < W; xx++) {
            if (xx > 0 && xx + 2 < W)  /* constant pair arguments: one specialised loop each */
                skip_pixels(s1 + (long)b * n * WIDTH, skip, H, W, y, xx++, 1, &v[0][0]);
            else
                skip_pixels(s1 + (long)b * n * WIDTH, skip, H, W, y, xx, 0, &v[0][0]);
        }
        const float *ph = phases + ((long)b * (H / 2) + y / 2) * (W / 2) * P + 2 * (y % 2);
        for (int c = 0; c < 3; c++)
            for (int xx = 0; xx < W; xx++) v[c][xx] += ph[(xx / 2) * P + 4 * c + (xx % 2)];
        for (int c = 0; c < 3; c++) {
            const float *f = fix + (long)b * 12 * fix_len;
            if (y == 0)
                for (int xx = 0; xx < W; xx++) v[c][xx] -= f[c * fix_len + xx];
            if (y == H - 1)
                for (int xx = 0; xx < W; xx++) v[c][xx] -= f[(3 + c) * fix_len + xx];
            v[c][0] -= f[(6 + c) * fix_len + y];
            v[c][W - 1] -= f[(9 + c) * fix_len + y];
            const float *fr = freq + ((long)b * 3) * n + (long)y * W;
            const float *xr = x + b * sb + c * sc + y * sh;
            float *o = out + ((long)b * 3 + c) * n + (long)y * W;
            for (int xx = 0; xx < W; xx++) {
                float t = v[c][xx] + mix[3 * c] * fr[xx] + mix[3 * c + 1] * fr[n + xx] + mix[3 * c + 2] * fr[2 * n + xx];
                o[xx] = xr[xx * sw] + tanh_fast(t);
            }
        }
    }
}

/* The composed decoder's border terms (SpatialBranch.border_terms): out (B, 12, L), 3 channels for each
 * of the top row, bottom row, left column and right column, from d (B, h, w, Cd) channels-last, up the
 * transposed convolution's weight (Cd, WIDTH, 4, 4) with its bias, conv the last convolution's weight
 * (3, WIDTH, 3, 3). Each side's ring of up(d) just outside the image comes from d's outermost line
 * through one row (or column) of up's kernel; conv's outer taps read it. The column rings' two ends are
 * the corners, which belong to the top and bottom rows: zero there. L >= 2 max(h, w); the shorter
 * sides' tails are zero. */
void nl_border_terms(const float *d, int B, int h, int w, int Cd, const float *up, const float *up_bias,
                     const float *conv, float *out, long L, int threads) {
    float *taps = malloc(sizeof(float) * 4 * 4 * Cd * WIDTH);  /* [side][t][i][o] */
    for (int side = 0; side < 4; side++)
        for (int t = 0; t < 4; t++) {
            int tap = side == 0 ? t : side == 1 ? 12 + t : side == 2 ? 4 * t : 4 * t + 3;  /* [ky][kx] */
            for (int i = 0; i < Cd; i++)
                for (int o = 0; o < WIDTH; o++)
                    taps[((side * 4 + t) * Cd + i) * WIDTH + o] = up[((long)i * WIDTH + o) * 16 + tap];
        }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int job = 0; job < B * 4; job++) {
        int b = job / 4, side = job % 4, len = side < 2 ? w : h;
        float *ring = malloc(sizeof(float) * (2 * len + 2) * WIDTH);  /* [m][o] */
        for (int m = 0; m < 2 * len + 2; m++) {
            vec acc[WIDTH / LANES];
            for (int v = 0; v < WIDTH / LANES; v++) acc[v] = LOAD(up_bias + v * LANES);
            for (int t = m % 2; t < 4; t += 2) {  /* m = 2j + t */
                int j = (m - t) / 2;
                if (j < 0 || j >= len) continue;
                long pixel = side == 0 ? j : side == 1 ? (long)(h - 1) * w + j : side == 2 ? (long)j * w : (long)j * w + w - 1;
                const float *line = d + ((long)b * h * w + pixel) * Cd, *k = taps + (side * 4 + t) * Cd * WIDTH;
                for (int i = 0; i < Cd; i++)
                    for (int v = 0; v < WIDTH / LANES; v++) acc[v] += line[i] * LOAD(k + i * WIDTH + v * LANES);
            }
            int corner = side >= 2 && (m == 0 || m == 2 * len + 1);
            for (int v = 0; v < WIDTH / LANES; v++) STORE(ring + m * WIDTH + v * LANES, corner ? (vec){0} : acc[v]);
        }
        float k[3][3][WIDTH];  /* conv's outer taps on this side: [c][u][o] */
        for (int c = 0; c < 3; c++)
            for (int u = 0; u < 3; u++)
                for (int o = 0; o < WIDTH; o++)
                    k[c][u][o] = conv[((long)c * WIDTH + o) * 9 + (side == 0 ? u : side == 1 ? 6 + u : side == 2 ? 3 * u : 3 * u + 2)];
        for (int c = 0; c < 3; c++) {
            float *dst = out + ((long)b * 12 + side * 3 + c) * L;
            for (long m = 0; m < L; m++) {
                vec acc = {0};
                if (m < 2 * len)
                    for (int u = 0; u < 3; u++)
                        for (int o = 0; o < WIDTH; o += LANES) acc += LOAD(ring + (m + u) * WIDTH + o) * LOAD(&k[c][u][o]);
                dst[m] = sum_lanes(acc);
            }
        }
        free(ring);
    }
    free(taps);
}

/* ---- 3x3 convolutions (zero padding 1) in Winograd's minimal filtering form ----
 * Each 4x4 block of outputs comes from a window of inputs in a transformed domain, where the sum over input
 * channels is one product per window point instead of nine per output pixel (Lavin and Gray, 2016).
 * Stride 1: F(4x4, 3x3), a 6x6 window, 36 points instead of 144 products (points 0, +-1, +-2). Stride 2:
 * a 9x9 window per side split into its 4 even samples (the kernel's middle tap) and its 5 odd ones (the
 * outer taps, an F(4, 2) on points 0, +-1, 2), 81 points instead of 144. Rounding grows to a few 1e-6 of
 * the outputs' scale. The window transforms run on vectors of input channels (channels-last maps), the
 * channel sums on vectors of 16 output channels, six blocks at a time. */

#define WINO_OUT 4    /* outputs per block side */
#define WINO_CO 16    /* output channels per pass: two vectors */
#define WINO_NT 6     /* blocks per inner product: 12 accumulators, 2 weight vectors and 1 broadcast in registers */
#define WINO_MAXN 9   /* the largest window side */

/* stride 1: B^T v on v[0..5] */
static inline void wino_in6(const vec *v, vec *r) {
    vec a = v[4] - v[2], b = v[3] - v[1];
    r[0] = 4 * v[0] - 5 * v[2] + v[4];
    r[1] = (v[3] + v[4]) - 4 * (v[1] + v[2]);
    r[2] = (v[4] - v[3]) + 4 * (v[1] - v[2]);
    r[3] = a + 2 * b;
    r[4] = a - 2 * b;
    r[5] = 4 * v[1] - 5 * v[3] + v[5];
}

/* stride 1: A^T m on m[0..5] */
static inline void wino_out6(const vec *m, vec *r) {
    vec s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
    r[0] = m[0] + s12 + s34;
    r[1] = d12 + 2 * d34;
    r[2] = s12 + 4 * s34;
    r[3] = d12 + 8 * d34 + m[5];
}

/* stride 2: v[0..8] = inputs 2y - 1 .. 2y + 7 of outputs y..y+3; the even samples as they are, then F(4, 2)'s
 * B^T on the odd ones */
static inline void wino_in9(const vec *v, vec *r) {
    vec o0 = v[0], o1 = v[2], o2 = v[4], o3 = v[6], o4 = v[8];
    r[0] = v[1], r[1] = v[3], r[2] = v[5], r[3] = v[7];
    r[4] = 2 * o0 - o1 - 2 * o2 + o3;
    r[5] = o3 - o2 - 2 * o1;
    r[6] = 2 * o1 - 3 * o2 + o3;
    r[7] = o3 - o1;
    r[8] = 2 * o1 - o2 - 2 * o3 + o4;
}

/* stride 2: the even points' sums plus F(4, 2)'s A^T on the odd ones */
static inline void wino_out9(const vec *m, vec *r) {
    vec s = m[5] + m[6], d = m[5] - m[6];
    r[0] = m[0] + m[4] + s + m[7];
    r[1] = m[1] + d + 2 * m[7];
    r[2] = m[2] + s + 4 * m[7];
    r[3] = m[3] + d + 8 * m[7] + m[8];
}

/* The weight transform's rows, one per distinct window point along a side (over the kernel's taps 0, 1, 2):
 * stride 1, F(4x4, 3x3)'s G; stride 2, the middle tap (shared by the four even points), then F(4, 2)'s G on
 * the outer taps. */
static const float WINO_G6[6][3] = {{1.f / 4, 0, 0},           {-1.f / 6, -1.f / 6, -1.f / 6}, {-1.f / 6, 1.f / 6, -1.f / 6},
                                    {1.f / 24, 1.f / 12, 1.f / 6}, {1.f / 24, -1.f / 12, 1.f / 6}, {0, 0, 1}};
static const float WINO_G9[6][3] = {{0, 1, 0},          {1.f / 2, 0, 0}, {-1.f / 2, 0, -1.f / 2}, {-1.f / 6, 0, 1.f / 6},
                                    {1.f / 6, 0, 1.f / 3}, {0, 0, 1}};

/* u [6][6][Ci][Co] = G g G^T for each (co, ci) kernel g of weight (Co, Ci, 3, 3): nl_conv3x3's weights */
void nl_winograd_weights(const float *weight, int Ci, int Co, int stride, float *u, int threads) {
    const float (*G)[3] = stride == 1 ? WINO_G6 : WINO_G9;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int co = 0; co < Co; co++)
        for (int ci = 0; ci < Ci; ci++) {
            const float *g = weight + ((long)co * Ci + ci) * 9;
            float t[6][3];
            for (int i = 0; i < 6; i++)
                for (int j = 0; j < 3; j++) t[i][j] = G[i][0] * g[j] + G[i][1] * g[3 + j] + G[i][2] * g[6 + j];
            for (int i = 0; i < 6; i++)
                for (int j = 0; j < 6; j++)
                    u[((long)(i * 6 + j) * Ci + ci) * Co + co] = t[i][0] * G[j][0] + t[i][1] * G[j][1] + t[i][2] * G[j][2];
        }
}

/* m[t][0..16) = sum over ci of v[t][ci] u[ci][0..16), for nt <= NT blocks t (v's blocks vs floats apart, m's
 * ms, u's rows Co). Always NT blocks' sums, in registers; past nt they repeat the last block, unstored. */
static inline void wino_products(const float *v, long vs, const float *u, int Ci, int Co, int nt, float *m, long ms) {
    const float *vt[WINO_NT];
    vec a[WINO_NT][2];
    for (int t = 0; t < WINO_NT; t++) vt[t] = v + (t < nt ? t : nt - 1) * vs, a[t][0] = a[t][1] = (vec){0};
    for (int ci = 0; ci < Ci; ci++) {
        vec u0 = LOAD(u + (long)ci * Co), u1 = LOAD(u + (long)ci * Co + LANES);
        for (int t = 0; t < WINO_NT; t++) {
            float s = vt[t][ci];
            a[t][0] += s * u0;
            a[t][1] += s * u1;
        }
    }
    for (int t = 0; t < nt; t++) STORE(m + t * ms, a[t][0]), STORE(m + t * ms + LANES, a[t][1]);
}

/* nl_conv3x3's scratch, in floats, for inputs W wide */
long nl_conv3x3_scratch(int W, int Ci, int stride, int threads) {
    long n = stride == 1 ? 6 : 9, blocks = ((W + stride - 1) / stride + WINO_OUT - 1) / WINO_OUT;
    return (long)threads * n * n * blocks * (Ci + WINO_CO);
}

/* One row of 4x4 output blocks, y0 .. y0 + 3, of one image (nl_conv3x3): n, the window side, is a constant
 * in each inlined copy. v and m: the thread's scratch. */
static inline __attribute__((always_inline)) void wino_row(const float *db, int H, int W, int Ci, const int n, int y0,
                                                           const float *u, const int *type, const float *bias, int Co,
                                                           float *ob, int h, int w, float *v, float *m, const float *zero) {
    const int np = n * n, stride = n == 6 ? 1 : 2, blocks = (w + WINO_OUT - 1) / WINO_OUT;
    for (int t = 0; t < blocks; t++) {  /* v [blocks][n][n][Ci] = B^T window B */
        const float *p[WINO_MAXN][WINO_MAXN];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                int y = y0 * stride - 1 + i, x = t * WINO_OUT * stride - 1 + j;
                p[i][j] = y >= 0 && y < H && x >= 0 && x < W ? db + ((long)y * W + x) * Ci : zero;
            }
        for (int c = 0; c < Ci; c += LANES) {
            vec rowt[WINO_MAXN][WINO_MAXN];
            for (int i = 0; i < n; i++) {  /* each window row times B */
                vec row[WINO_MAXN];
                for (int j = 0; j < n; j++) row[j] = LOAD(p[i][j] + c);
                n == 6 ? wino_in6(row, rowt[i]) : wino_in9(row, rowt[i]);
            }
            for (int j = 0; j < n; j++) {  /* then B^T times each column */
                vec col[WINO_MAXN], res[WINO_MAXN];
                for (int i = 0; i < n; i++) col[i] = rowt[i][j];
                n == 6 ? wino_in6(col, res) : wino_in9(col, res);
                for (int i = 0; i < n; i++) STORE(v + ((long)t * np + i * n + j) * Ci + c, res[i]);
            }
        }
    }
    for (int g = 0; g < Co; g += WINO_CO) {
        for (int k = 0; k < np; k++)  /* m [blocks][n][n][16]: the channel sums */
            for (int t = 0; t < blocks; t += WINO_NT)
                wino_products(v + ((long)t * np + k) * Ci, (long)np * Ci, u + (long)(type[k / n] * 6 + type[k % n]) * Ci * Co + g,
                              Ci, Co, blocks - t < WINO_NT ? blocks - t : WINO_NT, m + ((long)t * np + k) * WINO_CO,
                              (long)np * WINO_CO);
        for (int t = 0; t < blocks; t++)  /* A^T m A + bias, into the outputs that exist */
            for (int half = 0; half < 2; half++) {
                const float *mt = m + (long)t * np * WINO_CO + half * LANES;
                vec cols[WINO_MAXN][WINO_OUT], res[WINO_OUT];
                for (int i = 0; i < n; i++) {  /* each row of sums times A */
                    vec row[WINO_MAXN];
                    for (int j = 0; j < n; j++) row[j] = LOAD(mt + (i * n + j) * WINO_CO);
                    n == 6 ? wino_out6(row, cols[i]) : wino_out9(row, cols[i]);
                }
                vec bv = LOAD(bias + g + half * LANES);
                for (int j = 0; j < WINO_OUT; j++) {
                    vec col[WINO_MAXN];
                    for (int i = 0; i < n; i++) col[i] = cols[i][j];
                    n == 6 ? wino_out6(col, res) : wino_out9(col, res);
                    for (int i = 0; i < WINO_OUT; i++) {
                        int y = y0 + i, x = t * WINO_OUT + j;
                        if (y < h && x < w) STORE(ob + ((long)y * w + x) * Co + g + half * LANES, res[i] + bv);
                    }
                }
            }
    }
}

/* out (B, h, w, Co) = conv2d(d, weight, bias, stride, padding=1), h = ceil(H / stride): d (B, H, W, Ci)
 * channels-last, u the weight (Co, Ci, 3, 3) by nl_winograd_weights; stride 1 or 2; Ci a multiple of LANES,
 * Co of WINO_CO; scratch: nl_conv3x3_scratch(W, ...) floats. Work: one row of 4x4 output blocks. */
void nl_conv3x3(const float *d, int B, int H, int W, int Ci, int stride, const float *u, const float *bias, int Co,
                float *out, float *scratch, int threads) {
    int n = stride == 1 ? 6 : 9, h = (H + stride - 1) / stride, w = (W + stride - 1) / stride;
    int rows = (h + WINO_OUT - 1) / WINO_OUT, blocks = (w + WINO_OUT - 1) / WINO_OUT;
    long per_thread = nl_conv3x3_scratch(W, Ci, stride, 1);
    float *zero = calloc(Ci, sizeof(float));
    int type[WINO_MAXN];  /* window point -> row of G: stride 2's even points share one */
    for (int i = 0; i < n; i++) type[i] = stride == 1 ? i : i < 4 ? 0 : i - 3;
#pragma omp parallel num_threads(threads)
    {
        float *v = scratch + per_thread * omp_get_thread_num(), *m = v + (long)n * n * blocks * Ci;
#pragma omp for schedule(static)
        for (int job = 0; job < B * rows; job++) {
            const float *db = d + (long)(job / rows) * H * W * Ci;
            float *ob = out + (long)(job / rows) * h * w * Co;
            if (stride == 1)
                wino_row(db, H, W, Ci, 6, (job % rows) * WINO_OUT, u, type, bias, Co, ob, h, w, v, m, zero);
            else
                wino_row(db, H, W, Ci, 9, (job % rows) * WINO_OUT, u, type, bias, Co, ob, h, w, v, m, zero);
        }
    }
    free(zero);
}
