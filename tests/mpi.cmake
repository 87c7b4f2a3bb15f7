# Data-parallel vapo-train under mpirun: 2 ranks follow one process, rerun
# bit-exact, rank 0 alone writes, resume across rank counts. Exit 77 =
# skipped (a build without MPI, or no mpirun).
if(MPI_C_FOUND)
  set(VAPO_MPIRUN ${MPIEXEC_EXECUTABLE})
else()
  set(VAPO_MPIRUN "")
endif()
add_test(NAME train_mpi COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/train_mpi_test.py
         $<TARGET_FILE:vapo-train> "${VAPO_MPIRUN}")
set_tests_properties(train_mpi PROPERTIES ENVIRONMENT "OMP_WAIT_POLICY=passive;OMP_NUM_THREADS=1"
                     SKIP_RETURN_CODE 77 TIMEOUT 300)
