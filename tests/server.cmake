# vapo-serve integration tests: Python (Debian's /usr/bin/python3) talking real
# HTTP to a server on a free loopback port, with a random tiny model that
# train/tools/make-test-model writes. Each script starts its own servers and kills them at
# exit. Exit code 77 = skipped (server_page without chromium).
if(TARGET vapo-serve AND EXISTS /usr/bin/python3)
  set(VAPO_SERVER_TEST_ARGS
      --serve $<TARGET_FILE:vapo-serve>
      --make-model $<TARGET_FILE:make-test-model>
      --openapi ${CMAKE_SOURCE_DIR}/openapi/openapi.yaml
      --artefacts ${CMAKE_BINARY_DIR}/test-artefacts)
  foreach(name server_api server_load server_goodput server_shutdown server_page server_security server_slow)
    add_test(NAME ${name}
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/${name}.py ${VAPO_SERVER_TEST_ARGS}
             WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
    set_tests_properties(${name} PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77 LABELS server)
  endforeach()
  # batch invariance: vapo-serve's PNGs against vapo-sample's when the tool is built
  add_test(NAME server_invariance
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/server_invariance.py ${VAPO_SERVER_TEST_ARGS}
                   $<$<TARGET_EXISTS:vapo-sample>:--sample> $<$<TARGET_EXISTS:vapo-sample>:$<TARGET_FILE:vapo-sample>>
           WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
  set_tests_properties(server_invariance PROPERTIES TIMEOUT 300 LABELS server ENVIRONMENT "OMP_WAIT_POLICY=passive")
  # timed against the server's own speed estimate: alone, so no other test changes the speed mid-run
  set_tests_properties(server_goodput PROPERTIES RUN_SERIAL TRUE ENVIRONMENT "OMP_WAIT_POLICY=passive")
  # latency classes: score latency against the server's own chunk time, on the bundled model
  add_test(NAME server_latency
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/server_latency.py ${VAPO_SERVER_TEST_ARGS}
           WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
  set_tests_properties(server_latency PROPERTIES TIMEOUT 300 LABELS server RUN_SERIAL TRUE
                       ENVIRONMENT "OMP_WAIT_POLICY=passive")
elseif(NOT TARGET vapo-serve)
  message(STATUS "vapo: ✗ vapo-serve not built: the server tests are not run")
endif()
