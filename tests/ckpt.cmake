# Checkpoint files checked by an independent reader and writer: Debian's Python
# with numpy (not a pyenv python3 on PATH, which may lack numpy). Exit 77 = skipped.
set(VAPO_SYSTEM_PYTHON /usr/bin/python3)
if(EXISTS ${VAPO_SYSTEM_PYTHON})
  add_test(NAME ckpt_python
           COMMAND ${VAPO_SYSTEM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/ckpt_python_check.py $<TARGET_FILE:test_ckpt>
           WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
  set_tests_properties(ckpt_python PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 60)
else()
  message(STATUS "vapo: ✗ ${VAPO_SYSTEM_PYTHON} not found: the ckpt_python test is not run")
endif()
