// zlib (Debian: zlib1g-dev): gzip reading of the Fashion-MNIST IDX files, PNG deflate and CRC32.
#include <zlib.h>
