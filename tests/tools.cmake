# The offline tools (vapo-sample, vapo-interpolate, vapo-score) end to end on a
# small random model written by make-test-model: output sizes, determinism
# (sample k is the same image whatever the batch), idx/PNG/folder inputs,
# AUROC, and clear errors (exit 1 or 2, never a crash) for bad inputs.
add_executable(make-test-model ${CMAKE_SOURCE_DIR}/train/tools/make-test-model.c ${VAPO_TRAIN_COMMON})
target_include_directories(make-test-model PRIVATE ${CMAKE_SOURCE_DIR}/train)
target_link_libraries(make-test-model PRIVATE vapo vapo_opt)

set(VAPO_TOOLS_WORK ${CMAKE_BINARY_DIR}/tools-test)
set(VAPO_TOOLS_MODEL ${VAPO_TOOLS_WORK}/tiny.safetensors)
file(MAKE_DIRECTORY ${VAPO_TOOLS_WORK})
add_test(NAME tools_make_model
         COMMAND $<TARGET_FILE:make-test-model> ${VAPO_TOOLS_MODEL} --seed 7
         WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(tools_make_model PROPERTIES FIXTURES_SETUP vapo_tools_model TIMEOUT 60)

if(EXISTS /usr/bin/python3 AND TARGET vapo-sample AND TARGET vapo-interpolate AND TARGET vapo-score)
  foreach(group sample interpolate score errors)
    add_test(NAME tools_${group}
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/tools_test.py ${group}
                     --model ${VAPO_TOOLS_MODEL}
                     --sample $<TARGET_FILE:vapo-sample>
                     --interpolate $<TARGET_FILE:vapo-interpolate>
                     --score $<TARGET_FILE:vapo-score>
                     --make-model $<TARGET_FILE:make-test-model>
                     --work ${VAPO_TOOLS_WORK}
             WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
    set_tests_properties(tools_${group} PROPERTIES FIXTURES_REQUIRED vapo_tools_model TIMEOUT 300
                         ENVIRONMENT "VAPO_BUILD_DIR=${CMAKE_BINARY_DIR}")
  endforeach()
else()
  message(STATUS "vapo: ✗ /usr/bin/python3 or a tool is missing: the tools_* tests are not run")
endif()

# Every program's command line, table-driven (cli_test.py): the same usage
# errors (exit 2, message, usage line), --config with wrong types, --help, and
# --device cuda:7 named in a clear error.
if(EXISTS /usr/bin/python3 AND TARGET vapo-train AND TARGET vapo-sample AND TARGET vapo-interpolate AND TARGET vapo-score)
  set(VAPO_CLI_PROGRAMS train=$<TARGET_FILE:vapo-train> sample=$<TARGET_FILE:vapo-sample>
      interpolate=$<TARGET_FILE:vapo-interpolate> score=$<TARGET_FILE:vapo-score>)
  if(TARGET vapo-serve)
    list(APPEND VAPO_CLI_PROGRAMS serve=$<TARGET_FILE:vapo-serve>)
  endif()
  add_test(NAME cli COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/cli_test.py --model ${VAPO_TOOLS_MODEL}
                            --work ${CMAKE_BINARY_DIR}/cli-test ${VAPO_CLI_PROGRAMS}
           WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
  set_tests_properties(cli PROPERTIES FIXTURES_REQUIRED vapo_tools_model TIMEOUT 300)
endif()

# docker/entrypoint.sh and docker/healthcheck.sh with the real vapo-serve (no
# Docker needed); the server part is skipped when vapo-serve is not built.
add_test(NAME tools_docker_entrypoint
         COMMAND /bin/bash ${CMAKE_CURRENT_SOURCE_DIR}/test_tools_docker.sh ${CMAKE_BINARY_DIR} ${VAPO_TOOLS_MODEL}
         WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(tools_docker_entrypoint PROPERTIES FIXTURES_REQUIRED vapo_tools_model TIMEOUT 60)

# The image itself: scripts/container-test.sh builds the CPU image with podman
# and runs it (as root, with Debian's mirror; ~1 min with a warm layer cache,
# ~8 with a cold one). Run when VAPO_CONTAINER_TEST=1, which scripts/test.sh
# (and so CI) sets; skipped with a message elsewhere. RUN_SERIAL: its compile
# next to the OpenMP tests would oversubscribe a 2-core machine.
add_test(NAME container COMMAND /bin/bash ${PROJECT_SOURCE_DIR}/scripts/container-test.sh --ctest)
set_tests_properties(container PROPERTIES LABELS container SKIP_RETURN_CODE 77 TIMEOUT 1800 RUN_SERIAL TRUE)
