# CUDA kernels (include/l2l/kernels/cuda.h), include()d from
# src/kernels/CMakeLists.txt when L2L_HAVE_CUDA. The test links the CPU kernels
# (the reference) and the CPU AdamW (src/kernels/adamw.cmake).
set(L2L_KERNELS_CUDA_DIR ${CMAKE_CURRENT_LIST_DIR})
l2l_library(l2l_kernels_cuda
  SOURCES
    ${L2L_KERNELS_CUDA_DIR}/host_util.cc
    ${L2L_KERNELS_CUDA_DIR}/handles.cc
    ${L2L_KERNELS_CUDA_DIR}/gemm.cu
    ${L2L_KERNELS_CUDA_DIR}/layernorm.cu
    ${L2L_KERNELS_CUDA_DIR}/attention.cu
    ${L2L_KERNELS_CUDA_DIR}/rope.cu
    ${L2L_KERNELS_CUDA_DIR}/pointwise.cu
    ${L2L_KERNELS_CUDA_DIR}/embedding.cu
    ${L2L_KERNELS_CUDA_DIR}/cross_entropy.cu
    ${L2L_KERNELS_CUDA_DIR}/adamw.cu
    ${L2L_KERNELS_CUDA_DIR}/sum_squares.cu
  DEPS l2l_core l2l_device CUDA::cudart CUDA::cublas)
# Warn about device-side issues nvcc knows of; lambdas in kernels need nothing extra.
target_compile_options(l2l_kernels_cuda PRIVATE
  "$<$<COMPILE_LANGUAGE:CUDA>:-Wreorder;-Xptxas=-warn-spills>")

if(L2L_BUILD_TESTS)
  l2l_test(kernels_cuda_test
    SOURCES ${L2L_KERNELS_CUDA_DIR}/cuda_kernels_test.cc
    DEPS l2l_kernels_cuda l2l_kernels l2l_kernels_adamw
    LABELS gpu)
  # The reference is a host loop in long double, not kernels::SumSquares (whose
  # summation order differs). Prints L2L_GPU_TESTS_SKIPPED when no GPU is
  # visible, so ctest reports "Skipped", not "Passed".
  l2l_test(kernels_cuda_sum_squares_test
    SOURCES ${L2L_KERNELS_CUDA_DIR}/sum_squares_test.cc
    DEPS l2l_kernels_cuda
    LABELS gpu)
  set_tests_properties(kernels_cuda_sum_squares_test PROPERTIES
                       SKIP_REGULAR_EXPRESSION "L2L_GPU_TESTS_SKIPPED")
endif()
