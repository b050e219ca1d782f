// AVX-512 with VPOPCNTDQ: the same source as bconv_avx512.cpp, with the one-instruction popcount.
#define BNAS_VPOPCNT
#include "bconv_avx512.cpp"
