/* The corrections of nanolily.engine.corrections fused into one pass per tile (docs/pipeline.md).
 *
 * nanolily.native compiles this file with the system's C compiler on first use and calls
 * nl_correct_tile through ctypes; it computes what nanolily.engine.pipeline's eager PyTorch path
 * computes for one tile, to float rounding (tests/engine/test_native.py):
 *
 *     y = x + strength (y - x)                      (when strength != 1)
 *     y = clamp(protect_highlights(x, y), 0, 1)     (or clamp(y, 0, 1))
 *     y = denoise(y, denoise)                       (when denoise > 0)
 *     out = clamp(y, 0, 1) on the crop [top, top + oh) x [left, left + ow)
 *
 * The denoiser's half-resolution maps are small and planar; its bilinear upsampling is done row by
 * row on the fly, so no full-size coefficient map is ever written. Images are float32 with any
 * strides, given in elements as (row, column, channel). No global state: tiles may run in threads.
 */
#include <string.h>

#include "exp_neg.h"

#define LR 0.299f
#define LG 0.587f
#define LB 0.114f

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }
static inline float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* corrections.protect_highlights for one value, then clamped to [0, 1]. */
static inline float protect(float x, float y, float knee) {
    float room = x * (knee - 1.0f) + (1.0f - knee);
    room = room < (1.0f - knee) * 1e-6f ? (1.0f - knee) * 1e-6f : room;
    float u = clampf((y - 1.0f + room) / room, 0.0f, 9.0f);
    float s = 1.0f / (1.0f + exp_neg(-2.0f * u)); /* sigmoid(2u) */
    float c = (s - 1.0f) * room * 2.0f + 1.0f;    /* t + r tanh(u) */
    return clampf(y < c ? y : c, 0.0f, 1.0f);
}

/* Mean over a (2r+1)^2 window with edge replication: in (h, w) -> out (h, w); tmp holds (h, w + 2r). Sums
 * run in corrections.box_filter's order (columns, then rows, each from the first offset to the last). */
static void box(const float *in, float *out, float *tmp, int h, int w, int r) {
    const float area = (float)((2 * r + 1) * (2 * r + 1));
    long pw = w + 2 * r;
    float *pad = tmp + (long)h * w; /* one padded row */
    for (int i = 0; i < h; i++) {
        const float *row = in + (long)i * w;
        float *t = tmp + (long)i * w;
        for (int j = 0; j < r; j++) pad[j] = row[0], pad[pw - 1 - j] = row[w - 1];
        memcpy(pad + r, row, sizeof(float) * w);
        for (int j = 0; j < w; j++) t[j] = pad[j] + pad[j + 1];
        for (int d = 2; d <= 2 * r; d++)
            for (int j = 0; j < w; j++) t[j] += pad[j + d];
    }
    for (int i = 0; i < h; i++) {
        float *o = out + (long)i * w;
        const float *a = tmp + (long)clampi(i - r, 0, h - 1) * w, *b = tmp + (long)clampi(i - r + 1, 0, h - 1) * w;
        for (int j = 0; j < w; j++) o[j] = a[j] + b[j];
        for (int d = -r + 2; d <= r; d++) {
            const float *t = tmp + (long)clampi(i + d, 0, h - 1) * w;
            for (int j = 0; j < w; j++) o[j] += t[j];
        }
        for (int j = 0; j < w; j++) o[j] /= area;
    }
}

/* He et al.'s guided filter's smoothed coefficients (corrections.guided_coefficients) for the guide g and
 * n sources src[k] (n = 0: g guides itself), each map (h, w): a[k], b[k] get a * g + b's coefficients. */
static void guided(const float *g, const float *const *src, int n, int h, int w, int r, float eps,
                   float **a, float **b, float *work) {
    long size = (long)h * w;
    float *mean_i = work, *mean_ii = work + size, *mp = work + 2 * size, *mip = work + 3 * size;
    float *prod = work + 4 * size, *tmp = work + 5 * size;
    for (long p = 0; p < size; p++) prod[p] = g[p] * g[p];
    box(g, mean_i, tmp, h, w, r);
    box(prod, mean_ii, tmp, h, w, r);
    for (int k = 0; k < (n ? n : 1); k++) {
        const float *mean_p = mean_i, *mean_ip = mean_ii;
        if (n) {
            for (long p = 0; p < size; p++) prod[p] = g[p] * src[k][p];
            box(src[k], mp, tmp, h, w, r);
            box(prod, mip, tmp, h, w, r);
            mean_p = mp;
            mean_ip = mip;
        }
        for (long p = 0; p < size; p++) {
            float ak = (mean_ip[p] - mean_i[p] * mean_p[p]) / (mean_ii[p] - mean_i[p] * mean_i[p] + eps);
            prod[p] = ak;
            mip[p] = mean_p[p] - ak * mean_i[p];
        }
        box(prod, a[k], tmp, h, w, r);
        box(mip, b[k], tmp, h, w, r);
    }
}

static inline float lerp(float start, float end, float weight) { return start + weight * (end - start); }

/* One half-resolution row `src` (w values) upsampled 2x along the columns (bilinear, align_corners=False,
 * edges replicated, as corrections.upsample2): o[0 .. 2w). */
static void widen(const float *src, int w, float *o) {
    o[0] = src[0];
    for (int j = 1; j < w; j++) o[2 * j] = lerp(src[j], src[j - 1], 0.25f);
    for (int j = 0; j < w - 1; j++) o[2 * j + 1] = lerp(src[j], src[j + 1], 0.25f);
    o[2 * w - 1] = src[w - 1];
}

/* n values of x and y (contiguous) through the strength and highlight protection, clamped: o (which may
 * be y). One loop per case, so that each vectorises. */
static void protect_run(const float *x, const float *y, float *o, int n, float strength, int protect_on,
                        float knee) {
    if (strength != 1.0f) {
        for (int k = 0; k < n; k++) o[k] = x[k] + strength * (y[k] - x[k]);
        y = o;
    }
    if (protect_on)
        for (int k = 0; k < n; k++) o[k] = protect(x[k], y[k], knee);
    else
        for (int k = 0; k < n; k++) o[k] = clampf(y[k], 0.0f, 1.0f);
}

/* Whether an image's pixels are interleaved (channels-last: channel stride 1, column stride 3), so that a
 * row is one contiguous run of 3 n values. */
static inline int interleaved(long sw, long sc) { return sw == 3 && sc == 1; }

/* Row i's columns [j0, j0 + n) of a strided (row, column, channel) image, gathered channel by channel:
 * dst[c * n + j]. */
static void gather(const float *t, long sh, long sw, long sc, int i, int j0, int n, float *dst) {
    const float *p = t + i * sh + j0 * sw;
    if (interleaved(sw, sc)) {
        for (int j = 0; j < n; j++) dst[j] = p[3 * j], dst[n + j] = p[3 * j + 1], dst[2 * n + j] = p[3 * j + 2];
        return;
    }
    for (int c = 0; c < 3; c++)
        for (int j = 0; j < n; j++) dst[c * n + j] = p[j * sw + c * sc];
}

/* The inverse of gather, into row i from column 0. */
static void scatter(const float *src, float *t, long sh, long sw, long sc, int i, int n) {
    float *p = t + i * sh;
    if (interleaved(sw, sc)) {
        for (int j = 0; j < n; j++) p[3 * j] = src[j], p[3 * j + 1] = src[n + j], p[3 * j + 2] = src[2 * n + j];
        return;
    }
    for (int c = 0; c < 3; c++)
        for (int j = 0; j < n; j++) p[j * sw + c * sc] = src[c * n + j];
}

/* The scratch floats nl_correct_tile needs for a height x width tile: the tile after highlight protection
 * (planar, 3 x height x width), the half-resolution luma, B - Y, R - Y and 6 coefficient maps, the guided
 * filter's work (6 maps and a padded row), three widened rows of the 6 coefficient maps, and row buffers
 * (x, y, a row of output). The caller allocates it once. */
long nl_correct_tile_scratch(int height, int width, float denoise, int r_luma, int r_chroma) {
    long h = (height + 1) / 2, w = (width + 1) / 2, rmax = r_luma > r_chroma ? r_luma : r_chroma;
    long rows = 9 * (long)width;
    return denoise > 0.0f ? 3L * height * width + 15 * h * w + w + 2 * rmax + 3 * 6 * 2 * w + rows : rows;
}

int nl_correct_tile(const float *x, long xsh, long xsw, long xsc, const float *y, long ysh, long ysw, long ysc,
                    int height, int width, float strength, int protect_on, float knee, float denoise,
                    float luma_eps, int r_luma, int r_chroma, float *out, long osh, long osw, long osc,
                    int top, int left, int oh, int ow, float *buf, long buf_floats) {
    int h = (height + 1) / 2, w = (width + 1) / 2, rmax = r_luma > r_chroma ? r_luma : r_chroma;
    long plane = (long)height * width, half = (long)h * w, wide = 2 * (long)w;
    int dn = denoise > 0.0f;
    if (buf_floats < nl_correct_tile_scratch(height, width, denoise, r_luma, r_chroma)) return 1; /* checked by the caller */
    float *xr = buf, *yr = xr + 3 * (long)width, *orow = yr + 3 * (long)width;
    if (!dn) {
        for (int i = top; i < top + oh; i++) {
            if (interleaved(xsw, xsc) && interleaved(ysw, ysc) && interleaved(osw, osc)) {
                /* element-wise: the interleaved rows as they are */
                protect_run(x + i * xsh + left * 3, y + i * ysh + left * 3, out + (i - top) * osh, 3 * ow, strength,
                            protect_on, knee);
                continue;
            }
            gather(x, xsh, xsw, xsc, i, left, ow, xr);
            gather(y, ysh, ysw, ysc, i, left, ow, yr);
            protect_run(xr, yr, orow, 3 * ow, strength, protect_on, knee);
            scatter(orow, out, osh, osw, osc, i - top, ow);
        }
        return 0;
    }
    float *img = orow + 3 * (long)width, *luma = img + 3 * plane, *cb = luma + half, *cr = cb + half;
    float *coef = cr + half, *work = coef + 6 * half, *ring = work + 6 * half + w + 2 * rmax;
    for (int i = 0; i < height; i++) {
        if (interleaved(xsw, xsc) && interleaved(ysw, ysc)) { /* element-wise on the rows as they are */
            protect_run(x + i * xsh, y + i * ysh, yr, 3 * width, strength, protect_on, knee);
            gather(yr, 0, 3, 1, 0, 0, width, orow);
        } else {
            gather(x, xsh, xsw, xsc, i, 0, width, xr);
            gather(y, ysh, ysw, ysc, i, 0, width, yr);
            protect_run(xr, yr, orow, 3 * width, strength, protect_on, knee);
        }
        for (int c = 0; c < 3; c++) memcpy(img + c * plane + (long)i * width, orow + c * width, sizeof(float) * width);
    }
    /* 2x2 means (an odd last row or column repeated), rows first as corrections.pool2, then BT.601 */
    for (int i = 0; i < h; i++) {
        int i0 = 2 * i, i1 = 2 * i + 1 < height ? 2 * i + 1 : 2 * i;
        for (int j = 0; j < w; j++) {
            int j0 = 2 * j, j1 = 2 * j + 1 < width ? 2 * j + 1 : 2 * j;
            float v[3];
            for (int c = 0; c < 3; c++) {
                const float *p = img + c * plane;
                float r0 = p[(long)i0 * width + j0] + p[(long)i1 * width + j0];
                float r1 = p[(long)i0 * width + j1] + p[(long)i1 * width + j1];
                v[c] = (r0 + r1) * 0.25f;
            }
            float l = LR * v[0] + LG * v[1] + LB * v[2];
            long p = (long)i * w + j;
            luma[p] = l;
            cb[p] = v[2] - l;
            cr[p] = v[0] - l;
        }
    }
    /* the coefficients in (Y, B - Y, R - Y), then in RGB with the strength folded in */
    float *a_y = coef, *a_cb = coef + half, *a_cr = coef + 2 * half;
    float *b_y = coef + 3 * half, *b_cb = coef + 4 * half, *b_cr = coef + 5 * half;
    float *a_l[1] = {a_y}, *b_l[1] = {b_y}, *a_c[2] = {a_cb, a_cr}, *b_c[2] = {b_cb, b_cr};
    const float *chroma[2] = {cb, cr};
    guided(luma, NULL, 0, h, w, r_luma, luma_eps, a_l, b_l, work);
    guided(luma, chroma, 2, h, w, r_chroma, luma_eps, a_c, b_c, work);
    for (int set = 0; set < 2; set++) {
        float *l = coef + 3 * set * half, *u = l + half, *v = l + 2 * half; /* Y, B - Y, R - Y -> R, G, B */
        for (long p = 0; p < half; p++) {
            float r = v[p] + l[p], b = u[p] + l[p];
            float g = (l[p] - LR * r - LB * b) / LG;
            l[p] = r * denoise;
            u[p] = g * denoise;
            v[p] = b * denoise;
        }
    }
    /* the 6 maps' half-resolution rows widened as needed, three kept (k - 1, k, k + 1) */
    int kept[3] = {-1, -1, -1};
    float keep = 1.0f - denoise;
    for (int i = top; i < top + oh; i++) {
        /* output row i is half-resolution row k lerped towards row k - 1 (even i) or k + 1 (odd i) */
        int k = i / 2, other = i % 2 ? (k + 1 < h ? k + 1 : k) : (k > 0 ? k - 1 : k);
        int rows[2] = {k, other};
        float *wrow[2];
        for (int s = 0; s < 2; s++) {
            float *slot = ring + (long)(rows[s] % 3) * 6 * wide;
            if (kept[rows[s] % 3] != rows[s]) {
                for (int m = 0; m < 6; m++) widen(coef + m * half + (long)rows[s] * w, w, slot + m * wide);
                kept[rows[s] % 3] = rows[s];
            }
            wrow[s] = slot;
        }
        const float *r = img + (long)i * width + left, *g = r + plane, *b = g + plane;
        for (int c = 0; c < 3; c++) {
            const float *ak = wrow[0] + c * wide + left, *ao = wrow[1] + c * wide + left;
            const float *bk = wrow[0] + (3 + c) * wide + left, *bo = wrow[1] + (3 + c) * wide + left;
            const float *px = img + c * plane + (long)i * width + left;
            float *o = orow + c * ow;
            for (int j = 0; j < ow; j++) {
                float l = r[j] * LR + g[j] * LG + b[j] * LB;
                float v = lerp(bk[j], bo[j], 0.25f) + lerp(ak[j], ao[j], 0.25f) * l + keep * px[j];
                o[j] = clampf(v, 0.0f, 1.0f);
            }
        }
        scatter(orow, out, osh, osw, osc, i - top, ow);
    }
    return 0;
}
