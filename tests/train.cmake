# Tests that need the trainer's optimiser: end-to-end training on 2-D points,
# and one training step across backends (CPU vs host composition, CUDA vs CPU).
foreach(name train2d train_step_parity)
  add_executable(${name} ${CMAKE_CURRENT_SOURCE_DIR}/${name}.c ${CMAKE_SOURCE_DIR}/train/trainer/optim.c)
  target_include_directories(${name} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/train)
  target_link_libraries(${name} PRIVATE vapo)
  add_test(NAME ${name} COMMAND ${name} WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
  set_tests_properties(${name} PROPERTIES ENVIRONMENT "OMP_WAIT_POLICY=passive")
endforeach()

# vapo-train --resume is bit-exact (runs the real program on Fashion-MNIST).
# ctest's default timeout (1500 s), as train2d: ~7 minutes on an idle 2-core machine, 10+ on a busy one
add_test(NAME train_resume COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/train_resume_test.py
         $<TARGET_FILE:vapo-train>)
set_tests_properties(train_resume PROPERTIES ENVIRONMENT "OMP_WAIT_POLICY=passive" TIMEOUT 1500)

# vapo-train saves its last steps before the final grid and calibration (a tiny folder dataset).
add_test(NAME train_final_save COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/train_final_save_test.py
         $<TARGET_FILE:vapo-train>)
set_tests_properties(train_final_save PROPERTIES ENVIRONMENT "OMP_WAIT_POLICY=passive" TIMEOUT 120)

# vapo-train --select fd's judge and Frechet distance (train/trainer/quality.c) against PyTorch's.
add_executable(train_quality ${CMAKE_CURRENT_SOURCE_DIR}/train_quality.c ${CMAKE_SOURCE_DIR}/train/trainer/quality.c)
target_include_directories(train_quality PRIVATE ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/train)
target_link_libraries(train_quality PRIVATE vapo)
add_test(NAME train_quality COMMAND train_quality ${CMAKE_SOURCE_DIR}/models/fmnist-judge.safetensors
         ${CMAKE_CURRENT_SOURCE_DIR}/data/judge_fixture.json)

# vapo-train --select fd keeps the EMA weights with the lowest FD (a few steps of the real program).
add_test(NAME train_select COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/train_select_test.py
         $<TARGET_FILE:vapo-train> ${CMAKE_SOURCE_DIR}/models/fmnist-judge.safetensors)
set_tests_properties(train_select PROPERTIES ENVIRONMENT "OMP_WAIT_POLICY=passive" TIMEOUT 600 SKIP_RETURN_CODE 77)
