/* PNG's row filters undone (PNG specification, section 9), for nanolily.io.png's 16-bit reader: pypng
 * does it in Python, byte by byte for the Paeth and average filters, which takes most of a minute for
 * an 8K photo.
 *
 * in: rows of 1 + row_bytes bytes (the filter type, then the filtered bytes); out: the rows of
 * row_bytes bytes they encode; bpp: bytes per pixel. Returns 0, or 1 + the first row whose filter type
 * is not one of PNG's five.
 */
#include <string.h>

long nl_png_unfilter(const unsigned char *in, long rows, long row_bytes, int bpp, unsigned char *out) {
    for (long r = 0; r < rows; r++) {
        const unsigned char *f = in + r * (row_bytes + 1) + 1;
        unsigned char *x = out + r * row_bytes;
        const unsigned char *up = r ? x - row_bytes : NULL;  /* the row above, already decoded */
        switch (f[-1]) {
        case 0:
            memcpy(x, f, row_bytes);
            break;
        case 1:  /* sub: the byte a pixel to the left */
            for (long i = 0; i < row_bytes; i++)
                x[i] = f[i] + (i >= bpp ? x[i - bpp] : 0);
            break;
        case 2:  /* up */
            for (long i = 0; i < row_bytes; i++)
                x[i] = f[i] + (up ? up[i] : 0);
            break;
        case 3:  /* average of left and up */
            for (long i = 0; i < row_bytes; i++)
                x[i] = f[i] + (((i >= bpp ? x[i - bpp] : 0) + (up ? up[i] : 0)) >> 1);
            break;
        case 4:  /* Paeth: whichever of left, up and upper left is closest to left + up - upper left */
            for (long i = 0; i < row_bytes; i++) {
                int a = i >= bpp ? x[i - bpp] : 0, b = up ? up[i] : 0, c = up && i >= bpp ? up[i - bpp] : 0;
                int pa = b > c ? b - c : c - b, pb = a > c ? a - c : c - a, pc = a + b - 2 * c;
                pc = pc < 0 ? -pc : pc;
                x[i] = f[i] + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
            }
            break;
        default:
            return r + 1;
        }
    }
    return 0;
}
