# CPU AdamW kernels (include/l2l/kernels/adamw.h), include()d from
# src/kernels/CMakeLists.txt: a library of their own so that the flags apply
# to adamw.cc alone. The flags are part of the kernels' contract: no FMA
# contraction, so the vector body and the scalar tail round identically
# (chunking-independent results, and bitwise the CUDA kernels, which avoid FMA
# too); sqrt without errno and GCC's dynamic cost model, so the loops
# vectorise at -O2.
find_package(Threads REQUIRED)
l2l_library(l2l_kernels_adamw
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/adamw.cc
  DEPS l2l_core OpenMP::OpenMP_CXX Threads::Threads)
target_compile_options(l2l_kernels_adamw PRIVATE -ffp-contract=off -fno-math-errno
  $<$<CXX_COMPILER_ID:GNU>:-ftree-vectorize -fvect-cost-model=dynamic>)
if(L2L_BUILD_TESTS)
  l2l_test(adamw_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/adamw_test.cc
           DEPS l2l_kernels_adamw l2l_core OpenMP::OpenMP_CXX)
endif()
