# The GPU bundle made from this build (scripts/gpu-bundle.sh, no second
# build) and a CPU dry run of bench/gpu_check.sh --prebuilt on it; label
# gpu-bundle (ctest -L gpu-bundle). About 10 s and 2 minutes (its budget).
find_program(VAPO_PATCHELF patchelf)
if(VAPO_PATCHELF AND TARGET vapo-serve AND EXISTS /usr/bin/python3)
  set(VAPO_BUNDLE_TEST_DIR ${CMAKE_BINARY_DIR}/gpu-bundle-test)
  add_test(NAME gpu_bundle
           COMMAND /bin/bash ${CMAKE_CURRENT_SOURCE_DIR}/gpu_bundle_test.sh bundle ${CMAKE_BINARY_DIR}
                   ${VAPO_BUNDLE_TEST_DIR})
  set_tests_properties(gpu_bundle PROPERTIES FIXTURES_SETUP vapo_gpu_bundle LABELS gpu-bundle TIMEOUT 300)
  add_test(NAME gpu_check_dry_run
           COMMAND /bin/bash ${CMAKE_CURRENT_SOURCE_DIR}/gpu_bundle_test.sh dry-run ${VAPO_BUNDLE_TEST_DIR}
                   ${CMAKE_BINARY_DIR}/gpu-check-dry-run)
  set_tests_properties(gpu_check_dry_run PROPERTIES FIXTURES_REQUIRED vapo_gpu_bundle LABELS gpu-bundle
                       TIMEOUT 300 ENVIRONMENT "OMP_WAIT_POLICY=passive")
else()
  message(STATUS "vapo: ✗ patchelf, vapo-serve or /usr/bin/python3 missing: the gpu_bundle tests are not run")
endif()
