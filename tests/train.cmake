# End-to-end training on 2-D points; needs the trainer's optimiser.
add_executable(train2d ${CMAKE_CURRENT_SOURCE_DIR}/train2d.c ${CMAKE_SOURCE_DIR}/train/trainer/optim.c)
target_include_directories(train2d PRIVATE ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/train)
target_link_libraries(train2d PRIVATE vapo)
add_test(NAME train2d COMMAND train2d WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})

# vapo-train --resume is bit-exact (runs the real program on Fashion-MNIST).
add_test(NAME train_resume COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/train_resume_test.py
         $<TARGET_FILE:vapo-train>)
set_tests_properties(train_resume PROPERTIES ENVIRONMENT "OMP_WAIT_POLICY=passive" TIMEOUT 600)
