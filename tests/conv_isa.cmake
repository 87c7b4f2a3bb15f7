# test_backend_ops and test_conv_winograd again with the narrower direct
# convolutions forced, as CPUs without AVX-512 (avx2) or without AVX2 (sse2,
# any x86-64) run them; and test_backend_ops with Winograd F(2x2, 3x3) on every
# 3x3 convolution (VAPO_CPU_WINOGRAD=on), against its naive references.
foreach(isa avx2 sse2)
  foreach(prog test_backend_ops test_conv_winograd)
    add_test(NAME ${prog}_${isa} COMMAND ${prog} WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
    set_tests_properties(${prog}_${isa} PROPERTIES ENVIRONMENT "VAPO_CPU_CONV=${isa};OMP_WAIT_POLICY=passive")
  endforeach()
endforeach()
add_test(NAME test_backend_ops_winograd COMMAND test_backend_ops WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(test_backend_ops_winograd PROPERTIES ENVIRONMENT "VAPO_CPU_WINOGRAD=on;OMP_WAIT_POLICY=passive")
