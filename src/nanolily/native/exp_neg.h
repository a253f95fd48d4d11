/* Shared by the package's C files (nanolily.native builds them with it). */
#ifndef NANOLILY_EXP_NEG_H
#define NANOLILY_EXP_NEG_H

#include <string.h>

/* exp(x) for x in [-87, 0] (Cephes' expf: range reduction by ln 2, degree-5 polynomial; ~1 ulp), branch-free
 * and without library calls, so that the compiler vectorises the loops that call it. */
static inline float exp_neg(float x) {
    x = x < -87.0f ? -87.0f : x;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float e = p * r * r + r + 1.0f;
    int bits = ((int)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return e * scale;
}

#endif
