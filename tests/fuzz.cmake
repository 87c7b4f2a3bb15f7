# Fuzzing in the test suite: a short libFuzzer run of every harness in
# tests/fuzz (scripts/fuzz.sh), each a test labelled `fuzz`. They need clang
# with libFuzzer (scripts/setup.sh installs it) and are skipped, saying so,
# without. The harnesses build in their own clang tree under this build folder.
set(VAPO_FUZZ_SECONDS 25 CACHE STRING "Seconds each fuzz test runs its harness")
if(NOT VAPO_FUZZ)
  set(fuzz_env "VAPO_FUZZ_BUILD=${CMAKE_BINARY_DIR}/fuzz-build")
  add_test(NAME fuzz_build COMMAND bash ${CMAKE_SOURCE_DIR}/scripts/fuzz.sh --build-only)
  set_tests_properties(fuzz_build PROPERTIES ENVIRONMENT "${fuzz_env}" FIXTURES_SETUP vapo_fuzz
                       SKIP_RETURN_CODE 77 TIMEOUT 900 LABELS fuzz)
  foreach(t png b64 json opt ckpt generate interpolate energy)
    add_test(NAME fuzz_${t} COMMAND bash ${CMAKE_SOURCE_DIR}/scripts/fuzz.sh --no-build ${VAPO_FUZZ_SECONDS} ${t})
    math(EXPR fuzz_timeout "${VAPO_FUZZ_SECONDS} + 120")
    set_tests_properties(fuzz_${t} PROPERTIES ENVIRONMENT "${fuzz_env}" FIXTURES_REQUIRED vapo_fuzz
                         SKIP_RETURN_CODE 77 TIMEOUT ${fuzz_timeout} LABELS fuzz)
  endforeach()
endif()
