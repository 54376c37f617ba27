# l2l_library(NAME SOURCES ... DEPS ...): one library per module, include/ public.
function(l2l_library name)
  cmake_parse_arguments(A "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${A_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR}/include)
  target_link_libraries(${name} PUBLIC ${A_DEPS})
endfunction()

# Where MPI tests need special flags to run as root or above the core count.
set(L2L_MPIEXEC ${PROJECT_SOURCE_DIR}/launch/mpiexec-local.sh)

# l2l_test(NAME SOURCES ... DEPS ... [NP n ...] [TIMEOUT s] [LABELS ...]): a
# GoogleTest binary registered with ctest. With NP it is an MPI test linked
# with l2l_mpi_test_main (src/comm/mpi_test_main.cc) and gets one ctest entry
# per rank count.
function(l2l_test name)
  if(NOT L2L_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(A "" "TIMEOUT" "SOURCES;DEPS;NP;LABELS" ${ARGN})
  add_executable(${name} ${A_SOURCES})
  if(A_NP)
    target_link_libraries(${name} PRIVATE ${A_DEPS} l2l_mpi_test_main)
  else()
    target_link_libraries(${name} PRIVATE ${A_DEPS} GTest::gtest GTest::gtest_main)
  endif()
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 300)
  endif()
  if(A_NP)
    foreach(np ${A_NP})
      add_test(NAME ${name}_np${np} COMMAND ${L2L_MPIEXEC} ${np} $<TARGET_FILE:${name}>)
      set_tests_properties(${name}_np${np} PROPERTIES TIMEOUT ${A_TIMEOUT} PROCESSORS ${np}
                           LABELS "mpi;${A_LABELS}")
    endforeach()
  else()
    add_test(NAME ${name} COMMAND ${name})
    set_tests_properties(${name} PROPERTIES TIMEOUT ${A_TIMEOUT} LABELS "unit;${A_LABELS}")
  endif()
endfunction()
