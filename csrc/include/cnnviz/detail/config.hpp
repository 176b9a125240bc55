// Compiler glue shared by the CPU (.cpp) and CUDA (.cu) builds of the kernels.
#pragma once

// Marks functions callable from both host and device code: the math of a kernel is written once
// and compiled by the C++ compiler for the CPU kernel and by nvcc for the CUDA twin.
#if defined(__CUDACC__)
#define CNNVIZ_HD __host__ __device__
#else
#define CNNVIZ_HD
#endif
