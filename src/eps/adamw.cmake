# AdamW kernels of the eager parameter server; include()d from
# src/eps/CMakeLists.txt. The flags are part of the kernels' contract (see
# include/l2l/eps/adamw.h): no FMA contraction, so the vector body and the
# scalar tail round identically (chunking-independent results); sqrt without
# errno and GCC's dynamic cost model, so the loops vectorise at -O2.
find_package(Threads REQUIRED)
l2l_library(l2l_adamw
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/adamw.cc
  DEPS l2l_core OpenMP::OpenMP_CXX Threads::Threads)
target_compile_options(l2l_adamw PRIVATE -ffp-contract=off -fno-math-errno
  $<$<CXX_COMPILER_ID:GNU>:-ftree-vectorize -fvect-cost-model=dynamic>)
if(L2L_BUILD_TESTS)
  l2l_test(adamw_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/adamw_test.cc
           DEPS l2l_adamw l2l_core OpenMP::OpenMP_CXX)
endif()
