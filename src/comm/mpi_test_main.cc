// main() for MPI GoogleTest binaries (l2l_test with NP): MPI is up around
// RUN_ALL_TESTS, only rank 0 prints, and every rank exits with the same
// verdict (the worst over ranks), so mpirun's exit code is the job's.
// Per-binary setup belongs in a ::testing::Environment, which runs after MPI
// is initialised.
#include <gtest/gtest.h>
#include <mpi.h>

#include "l2l/comm/mpi_comm.h"

int main(int argc, char** argv) {
  l2l::MpiRuntime mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  if (mpi.world_rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int rc = RUN_ALL_TESTS();
  MPI_Allreduce(MPI_IN_PLACE, &rc, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return rc;
}
