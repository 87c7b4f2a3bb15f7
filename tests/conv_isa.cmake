# test_backend_ops again with the narrower direct convolutions forced, as CPUs
# without AVX-512 (avx2) or without AVX2 (sse2, any x86-64) run them.
foreach(isa avx2 sse2)
  add_test(NAME test_backend_ops_${isa} COMMAND test_backend_ops WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
  set_tests_properties(test_backend_ops_${isa} PROPERTIES ENVIRONMENT "VAPO_CPU_CONV=${isa};OMP_WAIT_POLICY=passive")
endforeach()
